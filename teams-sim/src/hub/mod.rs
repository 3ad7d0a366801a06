//! The hub proxy: configuration, the shared view, commands, the run loop.

mod calls;
mod options;
mod refusal;
pub mod rules;

pub use refusal::Refusal;

use sbc::media::{MediaStats, ProbeOpen};
use sbc::sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use sbc::sip::rng::SeededRng;
use sbc::sip::transaction::TimerConfig;
use sbc::sip::transport::{Network, SipTransport, Tap, TlsListen, TransportConfig};
use sbc::sip::wire::Message;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the hub writes in User-Agent and Server (observed format:
/// `Microsoft.PSTNHub.SIPProxy v.<build> i.<region>.<instance>`).
pub const HUB_AGENT: &str = "Microsoft.PSTNHub.SIPProxy v.2020.7.31.1 i.EUWE.3";
/// The hub's Allow (observed): no REFER, UPDATE or PRACK.
pub const HUB_ALLOW: &str = "INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsUser {
    /// E.164 with `+`.
    pub number: String,
    pub name: String,
}

/// One tenant's Direct Routing configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// SBC FQDNs paired with the tenant (`New-CsOnlinePSTNGateway -Fqdn`).
    pub sbcs: Vec<String>,
    /// The SBCs' `SipSignalingPort`.
    pub sbc_port: u16,
    pub users: Vec<TeamsUser>,
}

pub struct HubConfig {
    /// This proxy's public name (`sip.pstnhub.microsoft.com`).
    pub fqdn: String,
    /// The address and TLS port it listens on (5061 for Microsoft's proxies).
    pub listen_ip: IpAddr,
    pub listen_port: u16,
    /// The address written in its Via; `None`: what `fqdn` resolves to.
    pub advertised_ip: Option<IpAddr>,
    /// The name it uses in its own From/Contact (`sip-du-a-eu.pstnhub.microsoft.com`).
    pub internal_name: String,
    pub tenant: Tenant,
    pub tls_server: Arc<rustls::ServerConfig>,
    pub tls_client: Arc<rustls::ClientConfig>,
    /// The media processor host's name, and the channel that opens probes on it.
    pub media_host: String,
    pub media: mpsc::UnboundedSender<ProbeOpen>,
    /// Audio frames the media processor sends per call (20 ms each).
    pub media_frames: u32,
    /// How many of the user's Teams endpoints ring (each 180 has its own To-tag).
    pub forks: usize,
    /// Answer early with one 183 and SDP and start media before the 200
    /// (non-bypass ringback from the media processor).
    pub early_media: bool,
    /// From INVITE to 180, and from 180 to the Teams user answering.
    pub ring_delay: Duration,
    pub answer_delay: Duration,
    /// How long the hub waits for the ACK of its 200 before ending the call
    /// (Direct Routing: about 4 s).
    pub no_ack_timeout: Duration,
    pub options_interval: Duration,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbcStatus {
    /// Configured, no OPTIONS seen yet (dashboard: "Warning, no SIP options").
    NoOptions,
    /// The SBC sent OPTIONS; the hub's own OPTIONS are not yet answered.
    OptionsReceived,
    /// Both directions answered: the dashboard shows Active.
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbcHealth {
    pub status: SbcStatus,
    pub options_from_sbc: u32,
    pub options_to_sbc_answered: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// PSTN → Teams (the SBC sent the INVITE).
    Inbound,
    /// Teams → PSTN (the hub sent the INVITE).
    Outbound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    Setup,
    Ringing,
    Answered,
    /// Ended, with who ended it or the final status.
    Ended(String),
}

#[derive(Debug, Clone)]
pub struct HubCallView {
    pub proxy: String,
    pub call_id: String,
    pub direction: CallDirection,
    pub user: String,
    pub remote_number: String,
    pub state: CallState,
    /// The SBC ACKed the hub's 200 (inbound calls).
    pub acked: bool,
    /// What the media processor received and sent on this call.
    pub media: Arc<Mutex<MediaStats>>,
}

/// What the tenant's proxies have seen, shared by all of them.
#[derive(Debug, Clone, Default)]
pub struct HubView {
    pub sbcs: BTreeMap<String, SbcHealth>,
    pub calls: Vec<HubCallView>,
    pub refusals: Vec<(String, Refusal)>,
    /// Protocol problems the hub met (bad messages, TLS failures), for reports.
    pub problems: Vec<String>,
    next_media_port: u16,
}

impl HubView {
    pub fn new(tenant: &Tenant) -> Self {
        let sbcs = tenant
            .sbcs
            .iter()
            .map(|f| {
                (
                    f.clone(),
                    SbcHealth {
                        status: SbcStatus::NoOptions,
                        options_from_sbc: 0,
                        options_to_sbc_answered: 0,
                    },
                )
            })
            .collect();
        HubView {
            sbcs,
            next_media_port: 49152,
            ..Default::default()
        }
    }

    /// Media processor ports: 49152–53247 (Direct Routing plan), two per call.
    fn allocate_media_port(&mut self) -> u16 {
        let p = self.next_media_port;
        self.next_media_port = if p >= 53244 { 49152 } else { p + 2 };
        p
    }
}

/// What a certification step asks the hub to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubCommand {
    /// A Teams user dials a PSTN number.
    Dial { user: String, number: String },
    /// A Teams user hangs up their call.
    HangUp { user: String },
}

pub(crate) struct Proxy<N: Network> {
    net: N,
    config: HubConfig,
    endpoint: Endpoint<N>,
    view: Arc<Mutex<HubView>>,
    calls: Vec<calls::HubCall>,
    /// Next hub→SBC OPTIONS per SBC FQDN (started by the SBC's first OPTIONS, §9.13).
    pings: BTreeMap<String, options::Ping>,
}

/// Run one proxy until its host stops. Every SIP message it sends or
/// receives goes to `tap`, if given.
pub async fn run_proxy<N: Network>(
    net: N,
    config: HubConfig,
    view: Arc<Mutex<HubView>>,
    mut commands: mpsc::UnboundedReceiver<HubCommand>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let ip = match config.advertised_ip {
        Some(ip) => ip,
        None => net.resolve(&config.fqdn, config.listen_port).await?.ip(),
    };
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.tls = Some(TlsListen {
        addr: SocketAddr::new(config.listen_ip, config.listen_port),
        config: config.tls_server.clone(),
        // The tenant check happens on the SIP layer, against Contact (§1).
        allowed_client_names: None,
    });
    tc.tls_client = Some(config.tls_client.clone());
    let (transport, events) = SipTransport::start(net.clone(), tc, tap).await?;
    let ep_config = EndpointConfig {
        via_host: ip.to_string(),
        timers: TimerConfig::default(),
        user_agent: None,
    };
    let rng = SeededRng::for_host(config.seed, &config.fqdn);
    let endpoint = Endpoint::new(transport, events, ep_config, rng);
    let mut proxy = Proxy {
        net,
        config,
        endpoint,
        view,
        calls: Vec::new(),
        pings: BTreeMap::new(),
    };
    let mut commands_open = true;
    loop {
        let wake = proxy.next_wake();
        let input = tokio::select! {
            biased;
            c = commands.recv(), if commands_open => match c {
                Some(c) => Input::Command(c),
                None => Input::NoMoreCommands,
            },
            e = proxy.endpoint.next_event(wake) => Input::Sip(e),
        };
        match input {
            Input::Command(c) => proxy.on_command(c).await,
            Input::Sip(e) => proxy.on_event(e).await,
            Input::NoMoreCommands => commands_open = false,
        }
    }
}

enum Input {
    Command(HubCommand),
    Sip(EndpointEvent),
    NoMoreCommands,
}

impl<N: Network> Proxy<N> {
    fn next_wake(&self) -> Option<Instant> {
        let calls = self.calls.iter().filter_map(|c| c.wake());
        let pings = self.pings.values().map(|p| p.next);
        calls.chain(pings).min()
    }

    fn view(&self) -> std::sync::MutexGuard<'_, HubView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn on_command(&mut self, c: HubCommand) {
        match c {
            HubCommand::Dial { user, number } => self.dial(&user, &number).await,
            HubCommand::HangUp { user } => self.hang_up(&user),
        }
    }

    async fn on_event(&mut self, e: EndpointEvent) {
        match e {
            EndpointEvent::Request {
                key,
                request,
                source,
            } => match request.method() {
                Some(sbc::sip::wire::Method::Options) => {
                    self.on_options(key, request, source).await
                }
                Some(sbc::sip::wire::Method::Invite) => self.on_invite(key, request, source).await,
                Some(sbc::sip::wire::Method::Bye) => self.on_bye(key, request),
                _ => {
                    let resp =
                        sbc::sip::transaction::response_to(&request, 501, "Not Implemented", None);
                    self.respond(&key, resp);
                }
            },
            EndpointEvent::Ack { request, .. } => self.on_ack(&request),
            EndpointEvent::Response { key, response } => self.on_response(key, response).await,
            EndpointEvent::Timeout { key } => self.on_failure(&key, "408 timeout"),
            EndpointEvent::SendFailed { key, reason } => {
                self.on_failure(&key, &format!("send failed: {reason}"))
            }
            EndpointEvent::Cancelled { key } => self.on_cancelled(&key),
            // The hub's own 4 s ACK timer (calls.rs) ends unacknowledged calls
            // long before the transaction's Timer L would.
            EndpointEvent::Server { .. } => {}
            EndpointEvent::Malformed { error, source } => self.view().problems.push(format!(
                "{}: malformed from {}: {error}",
                self.config.fqdn, source.remote
            )),
            EndpointEvent::TlsRefused {
                remote,
                inbound,
                reason,
            } => {
                let dir = if inbound { "from" } else { "to" };
                self.view().problems.push(format!(
                    "{}: TLS {dir} {remote} refused: {reason}",
                    self.config.fqdn
                ))
            }
            EndpointEvent::Wake => {
                self.on_wake().await;
            }
        }
    }

    async fn on_wake(&mut self) {
        let now = Instant::now();
        self.ping_due(now).await;
        self.calls_due(now);
    }

    /// Send a response with the hub's header style (upper-case names, Server).
    fn respond(&mut self, key: &sbc::sip::transaction::TransactionKey, mut resp: Message) {
        resp.headers.push("Server", HUB_AGENT);
        shout(&mut resp);
        self.endpoint.respond(key, resp);
    }
}

/// The hub writes header names in upper case (`FROM:`, `CSEQ:`), as observed.
pub(crate) fn shout(m: &mut Message) {
    if !m.headers.contains("Content-Length") {
        // Serialisation fills in the value; the name keeps the hub's case.
        m.headers.push("Content-Length", "0");
    }
    for h in &mut m.headers.0 {
        h.name = h.name.to_ascii_uppercase();
    }
}
