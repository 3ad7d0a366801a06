//! The hub proxy: configuration, the shared view, commands, and the role
//! that runs on [`sbc::driver`]. Policy only — tenant rules, Teams' SDP
//! personality, forks, Microsoft's timers and refusals — on the SIP
//! stack's user agent; what an SBC sends is judged from its bytes
//! ([`raw`], [`rules`]).

mod calls;
pub mod causes;
pub mod failover;
mod options;
pub mod raw;
mod refusal;
pub mod rules;
pub mod tls;

pub use refusal::{reason_phrase, Refusal, RefusalPolicy};

use drlab_sim::far_end::Answering;
use drlab_sim::{MediaStats, ProbeCommand, ProbeDriver};
use sbc::driver::{HostSetup, Role};
use sbc::media::PortAllocator;
use sbc::media::{RelayCommand, RelayDriver, RelayEvent};
use sbc::problems::ProblemLog;
use sbc::sip::endpoint::EndpointConfig;
use sbc::sip::rng::SeededRng;
use sbc::sip::session::{Refresher, SessionConfig, SessionId, SessionTimerConfig};
use sbc::sip::transaction::TimerConfig;
use sbc::sip::transport::{Network, Tap, TlsListen, TransportConfig};
use sbc::sip::ua::{UaConfig, UaCounts, UaEvent, UserAgent};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the hub writes in User-Agent and Server (observed format:
/// `Microsoft.PSTNHub.SIPProxy v.<build> i.<region>.<instance>`).
pub const HUB_AGENT: &str = "Microsoft.PSTNHub.SIPProxy v.2020.7.31.1 i.EUWE.3";
/// The hub's Allow (observed): no REFER, UPDATE or PRACK.
pub const HUB_ALLOW: &str = "INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY";
/// How many calls and refusals a view keeps (the counters keep counting).
pub const VIEW_HISTORY: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsUser {
    /// E.164 with `+`.
    pub number: String,
    pub name: String,
    /// `false`: disabled in the tenant while the number is still assigned
    /// (case 9.60: 403 with Q.850 cause 63).
    pub enabled: bool,
    /// Callers (E.164 with `+`) on the user's blocked list (case 9.31).
    pub blocked: Vec<String>,
    /// The user's calls go out without caller ID: From
    /// `anonymous@anonymous.invalid` (case 9.55).
    pub hide_caller_id: bool,
    /// Call forwarding: calls to the user go on to this E.164 number
    /// through the tenant's SBCs (case 9.54).
    pub forward_to: Option<String>,
}

impl TeamsUser {
    /// An enabled user who blocks nobody and shows their number.
    pub fn new(number: &str, name: &str) -> Self {
        TeamsUser {
            number: number.into(),
            name: name.into(),
            enabled: true,
            blocked: Vec::new(),
            hide_caller_id: false,
            forward_to: None,
        }
    }
}

/// One tenant's Direct Routing configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// SBC FQDNs paired with the tenant (`New-CsOnlinePSTNGateway -Fqdn`).
    pub sbcs: Vec<String>,
    /// The SBCs' `SipSignalingPort`.
    pub sbc_port: u16,
    pub users: Vec<TeamsUser>,
    /// Voice routes in priority order, each a list of the SBCs it may use
    /// (`OnlinePstnGatewayList`); empty: one route with every SBC.
    pub routes: Vec<Vec<String>>,
    /// SBCs whose gateway has `ForwardPai` on (default off): the hub's
    /// INVITEs to them carry P-Asserted-Identity, and `Privacy: id` when
    /// the caller is hidden (behaviour §3.3, case 9.53).
    pub forward_pai: Vec<String>,
    /// SBCs whose gateway has `ForwardCallHistory` on (default off): a
    /// forwarded call's INVITE to them carries History-Info (case 9.54).
    pub forward_call_history: Vec<String>,
    /// SBCs whose gateway has `MediaBypass` on (default off): their calls'
    /// media goes between the SBC and the Teams clients, which run full ICE
    /// as the controlling agent against the SBC's ICE-lite candidate
    /// (behaviour §7); their INVITEs must offer ICE candidates (case 9.26).
    pub media_bypass: Vec<String>,
}

impl Tenant {
    /// The voice routes outbound calls take, in priority order.
    pub fn voice_routes(&self) -> Vec<Vec<String>> {
        if self.routes.is_empty() {
            vec![self.sbcs.clone()]
        } else {
            self.routes.clone()
        }
    }
}

#[derive(Clone)]
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
    /// The media processor: its host name (resolved at start, written in
    /// SDP) and the handle that opens probes on it.
    pub media_host: String,
    pub media: drlab_sim::MediaHostHandle,
    /// Audio frames the media processor sends per call (20 ms each).
    pub media_frames: u32,
    /// How many of the user's Teams endpoints ring (each 180 has its own To-tag).
    pub forks: usize,
    /// Answer early with one 183 and SDP and start media before the 200
    /// (non-bypass ringback from the media processor).
    pub early_media: bool,
    /// When the Teams user rings and answers.
    pub answering: Answering,
    /// How long the hub waits for the ACK of its 200 before ending the call
    /// (Direct Routing: about 4 s).
    pub no_ack_timeout: Duration,
    pub options_interval: Duration,
    /// Silence after which an SBC is demoted: 5 minutes with
    /// `SendSipOptions` (behaviour §2, NEW), 3 in the original rule (MON).
    pub demote_after: Duration,
    /// Statuses and Q.850 causes where the sources leave them open.
    pub refusals: RefusalPolicy,
    /// The session interval the hub asks for and lowers longer ones to
    /// (RFC 4028; 1800 s in the traces Microsoft shows).
    pub session_expires: u32,
    /// `FailoverTimeSeconds`: an outbound INVITE without 18x by then is
    /// CANCELled and the next SBC tried (default 10 s).
    pub failover_time: Duration,
    /// `FailoverResponseCodes`: finals that move a call to the next SBC
    /// when no 18x came first (default 408, 503, 504).
    pub failover_codes: Vec<u16>,
    /// The Teams clients of a media bypass call, one media host per fork
    /// (name and handle): each checks the SBC's candidate with ICE as the
    /// controlling agent and sends SRTP to it directly (behaviour §7).
    /// Empty: the media processor's host stands in for every client (the
    /// real-socket lab).
    pub clients: Vec<(String, drlab_sim::MediaHostHandle)>,
    /// An answered call from which no audio arrives for this long (not on
    /// hold) is ended with a BYE (case 9.58: "about 10 to 20 seconds" with
    /// no media or no ICE success); `None`: never.
    pub media_timeout: Option<Duration>,
    /// The tenant's other proxies (other datacenters, other source
    /// addresses): a connection failure is retried from one of them.
    pub peers: Vec<(String, mpsc::UnboundedSender<HubCommand>)>,
    pub timers: TimerConfig,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SbcStatus {
    /// Configured, no OPTIONS seen yet (dashboard: "Warning, no SIP options").
    NoOptions,
    /// The SBC sent OPTIONS; the hub's own OPTIONS are not yet answered.
    OptionsReceived,
    /// Both directions answered: the dashboard shows Active.
    Active,
    /// No OPTIONS reached any proxy for `demote_after` (behaviour §2: tried
    /// last, but still tried before a call fails).
    Demoted,
}

impl SbcStatus {
    /// What the Health Dashboard shows (behaviour §2).
    pub fn dashboard(&self) -> &'static str {
        match self {
            SbcStatus::NoOptions => "Warning, no SIP options",
            SbcStatus::OptionsReceived => "OPTIONS received, hub OPTIONS not yet answered",
            SbcStatus::Active => "Active",
            SbcStatus::Demoted => "Demoted",
        }
    }

    /// Routing order: healthy SBCs first, demoted ones last (behaviour §4).
    pub fn routing_rank(&self) -> u8 {
        match self {
            SbcStatus::Active => 0,
            SbcStatus::OptionsReceived => 1,
            SbcStatus::NoOptions => 2,
            SbcStatus::Demoted => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbcHealth {
    pub status: SbcStatus,
    pub options_from_sbc: u32,
    pub options_to_sbc_answered: u32,
    /// Per proxy: whether it has heard the SBC's OPTIONS within the window.
    pub heard_by: BTreeMap<String, bool>,
    /// The dashboard's TLS warning: the certificate expires within 30 days.
    pub certificate_warning: Option<String>,
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
    /// A number of its own, in the order calls were made.
    pub serial: u64,
    pub proxy: String,
    pub call_id: String,
    pub direction: CallDirection,
    pub user: String,
    pub remote_number: String,
    pub state: CallState,
    /// The SBC ACKed the hub's 200 (inbound calls).
    pub acked: bool,
    /// Outbound: each failed attempt, in order (`<sbc>: <why>`).
    pub attempts: Vec<String>,
    /// What the media processor received and sent on this call.
    pub media: Arc<Mutex<MediaStats>>,
}

/// How the hub carried out a Teams user's transfer (behaviour §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferHow {
    /// REFER to the SBC (REFER in its Allow, case 9.43).
    Refer,
    /// Inside Teams, invisible to the SBC (no REFER in its Allow, 9.44).
    Internal,
    /// An INVITE with Replaces to the SBC (a call queue, case 9.48).
    Replaces,
}

/// One transfer and how it ended (`None` while under way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: u64,
    pub from_user: String,
    pub to_user: String,
    pub how: TransferHow,
    /// REFER: the Refer-To and Referred-By values the hub sent.
    pub refer_to: Option<String>,
    pub referred_by: Option<String>,
    pub outcome: Option<Result<(), String>>,
}

/// What one proxy holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyState {
    pub ua: UaCounts,
    pub calls: usize,
}

/// What the tenant's proxies have seen, shared by all of them.
#[derive(Debug, Clone)]
pub struct HubView {
    /// The proxies whose listeners are bound and that have started.
    pub listening: BTreeSet<String>,
    pub sbcs: BTreeMap<String, SbcHealth>,
    /// The latest calls (at most [`VIEW_HISTORY`]).
    pub calls: VecDeque<HubCallView>,
    pub calls_total: u64,
    /// The latest refusals (at most [`VIEW_HISTORY`]): the proxy, the
    /// status it answered and why; and how many in all.
    pub refusals: VecDeque<(String, u16, Refusal)>,
    pub refusals_total: u64,
    /// Protocol problems the hub met (bad messages, TLS failures), for reports.
    pub problems: ProblemLog,
    pub proxies: BTreeMap<String, ProxyState>,
    /// Media processor ports (49152–53247, Direct Routing plan), shared by
    /// the proxies as their media processor is.
    pub media_ports: PortAllocator,
    /// Which proxy took each media port: a proxy that restarts has lost
    /// its calls, and its media processor sessions end with them (see
    /// [`HubView::allocate_media`]).
    pub media_owners: BTreeMap<u16, String>,
    /// TLS connections refused, with the rule broken (at most
    /// [`VIEW_HISTORY`]), and how many in all.
    pub tls_refusals: VecDeque<(String, std::net::SocketAddr, tls::TlsRule)>,
    pub tls_refusals_total: u64,
    /// What the TLS verifiers noticed (certificates close to expiry).
    pub tls_notes: tls::SharedTlsNotes,
    /// Users (by number) who take no call now, and the status every proxy
    /// answers for them (486 busy, 603 declined).
    pub refusing: BTreeMap<String, u16>,
    /// Proxies answering SBC INVITEs 503 with this Retry-After (seconds).
    pub overloaded: BTreeMap<String, u32>,
    /// What the hub holds against the SBC: its obligations broken (a retry
    /// within Retry-After, a retry after 603: cases 9.41, 9.42).
    pub sbc_violations: Vec<String>,
    /// The latest transfers (at most [`VIEW_HISTORY`]) and how many in all.
    pub transfers: VecDeque<TransferRecord>,
    pub transfers_total: u64,
    /// SBCs with `ForwardPai` on now (from the tenant, changed live as
    /// `Set-CsOnlinePSTNGateway` would).
    pub forward_pai: std::collections::BTreeSet<String>,
    /// SBCs with `ForwardCallHistory` on now.
    pub forward_call_history: std::collections::BTreeSet<String>,
    /// Users (by number) whose calls are forwarded, and where to.
    pub forwarding: BTreeMap<String, String>,
    /// A deliberate fault: Teams clients check the SBC's candidate with a
    /// password that is not the SBC's (media bypass), as a broken client
    /// would; the SBC must refuse the checks (RFC 8489 §9.1.3: 401).
    pub ice_wrong_password: bool,
    /// Until when each (SBC, proxy) pair must see no INVITE (Retry-After).
    pub(crate) backoff: Vec<(String, String, Instant)>,
    /// Calls declined with 603: (caller, callee, when).
    pub(crate) declined: Vec<(String, String, Instant)>,
}

impl HubView {
    /// A media processor port for a call of `proxy`.
    pub fn allocate_media(&mut self, proxy: &str) -> Option<u16> {
        let port = self.media_ports.allocate()?;
        self.media_owners.insert(port, proxy.to_string());
        Some(port)
    }

    /// A call's media processor port, free again (and no proxy's).
    pub fn release_media(&mut self, port: u16) {
        self.media_owners.remove(&port);
        self.media_ports.release(port);
    }

    /// `proxy` (re)started with no calls: the media processor ports its
    /// earlier life held are free again (a crashed proxy's sessions are
    /// gone; the processor times them out).
    pub fn release_media_of(&mut self, proxy: &str) {
        let ports: Vec<u16> = (self.media_owners.iter())
            .filter(|(_, p)| p.as_str() == proxy)
            .map(|(port, _)| *port)
            .collect();
        for port in ports {
            self.media_owners.remove(&port);
            self.media_ports.release(port);
        }
    }

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
                        heard_by: BTreeMap::new(),
                        certificate_warning: None,
                    },
                )
            })
            .collect();
        HubView {
            listening: BTreeSet::new(),
            sbcs,
            calls: VecDeque::new(),
            calls_total: 0,
            refusals: VecDeque::new(),
            refusals_total: 0,
            problems: ProblemLog::default(),
            proxies: BTreeMap::new(),
            media_ports: PortAllocator::new(49152..=53247).expect("a valid range"),
            media_owners: BTreeMap::new(),
            tls_refusals: VecDeque::new(),
            tls_refusals_total: 0,
            tls_notes: Default::default(),
            refusing: BTreeMap::new(),
            overloaded: BTreeMap::new(),
            sbc_violations: Vec::new(),
            transfers: VecDeque::new(),
            transfers_total: 0,
            forward_pai: tenant.forward_pai.iter().cloned().collect(),
            forward_call_history: tenant.forward_call_history.iter().cloned().collect(),
            forwarding: tenant
                .users
                .iter()
                .filter_map(|u| Some((u.number.clone(), u.forward_to.clone()?)))
                .collect(),
            backoff: Vec::new(),
            declined: Vec::new(),
            ice_wrong_password: false,
        }
    }

    /// A transfer by id, if still in the view.
    pub fn transfer_mut(&mut self, id: u64) -> Option<&mut TransferRecord> {
        self.transfers.iter_mut().rev().find(|t| t.id == id)
    }

    /// A call by serial, if still in the view.
    pub fn call_mut(&mut self, serial: u64) -> Option<&mut HubCallView> {
        self.calls.iter_mut().rev().find(|c| c.serial == serial)
    }
}

/// What a certification step asks the hub to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubCommand {
    /// A Teams user dials a PSTN number.
    Dial { user: String, number: String },
    /// A Teams user hangs up their call.
    HangUp { user: String },
    /// A Teams user puts their call on hold (`a=inactive`) or resumes it;
    /// or (`None`) the hub refreshes it with the same description.
    Reinvite {
        user: String,
        direction: Option<sbc::sip::sdp::Direction>,
    },
    /// A Teams user transfers their call to another Teams user (name or
    /// number): by REFER when the SBC allows it, else inside Teams.
    Transfer { user: String, to: String },
    /// Teams user `agent` picks up `user`'s call (a call queue): the hub
    /// replaces the SBC's dialog with an INVITE carrying Replaces (case
    /// 9.48); with `unknown_dialog`, one naming a dialog the SBC lacks.
    PickUp {
        user: String,
        agent: String,
        unknown_dialog: bool,
    },
    /// The same, from another proxy that does not hold the user's call
    /// (an outbound call may have gone out from any proxy); not passed on.
    HangUpHere { user: String },
    /// From now on, Teams users ring and answer this way.
    Answering(Answering),
    /// A Teams user (name or number) refuses calls with this status (486
    /// busy, 603 decline), or (`None`) takes them again.
    Refuses { user: String, status: Option<u16> },
    /// A proxy answers SBC INVITEs 503 with this Retry-After, or (`None`)
    /// serves again.
    Overload {
        proxy: String,
        retry_after: Option<u32>,
    },
    /// Another proxy could not reach an SBC: try it from here (behaviour
    /// §4, FO: retried from another datacenter).
    Continue(failover::Outbound),
    /// From now on Teams clients check the SBC with a wrong password (a
    /// deliberate fault, media bypass), or (`false`) with the right one.
    IceWrongPassword(bool),
    /// A Teams user's media bypass call moves to a media processor (it went
    /// to an endpoint that cannot take media directly): the hub re-INVITEs
    /// the SBC with new ICE credentials (case 9.49).
    MoveToMediaProcessor { user: String },
    /// End answered calls that carry no media after this long (case 9.58),
    /// or (`None`) never; every proxy takes it.
    MediaTimeout(Option<Duration>),
    /// The same, from the proxy that was told; not passed on.
    MediaTimeoutHere(Option<Duration>),
}

/// Run one proxy until its host stops. Every SIP message it sends or
/// receives goes to `tap`, if given.
pub async fn run_proxy<N: Network>(
    net: N,
    config: HubConfig,
    view: Arc<Mutex<HubView>>,
    commands: mpsc::UnboundedReceiver<HubCommand>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.tls = Some(TlsListen {
        addr: SocketAddr::new(config.listen_ip, config.listen_port),
        config: config.tls_server.clone(),
        // The tenant check happens on the SIP layer, against Contact (§1).
        allowed_client_names: None,
    });
    tc.tls_client = Some(config.tls_client.clone());
    let ip = match config.advertised_ip {
        Some(ip) => ip,
        None => net.resolve(&config.fqdn, config.listen_port).await?.ip(),
    };
    let mut endpoint = EndpointConfig::new(ip.to_string());
    endpoint.timers = config.timers;
    endpoint.user_agent = Some(HUB_AGENT.into());
    // Observed: the hub writes every header name in upper case.
    endpoint.upper_case_headers = true;
    let mut session = SessionConfig::new(format!("<sip:{}:5061>", config.internal_name));
    // Behaviour §6: the hub always offers the session timer on non-bypass
    // calls; the SBC refreshes the calls it sent (refresher=uac in the
    // hub's 200, as KB-IN shows), the hub the ones it sent unless the SBC
    // names itself.
    session.timer = Some(SessionTimerConfig {
        interval: config.session_expires,
        min_se: 90,
        request_refresher: None,
        uas_choice: Refresher::Uac,
        refresh: true,
        refresh_with: Default::default(),
    });
    // The hub judges new INVITEs by its own rules (rules.rs), not the stack's.
    session.uas_checks = false;
    // Its own Record-Route on its INVITEs is not a hop of its route set.
    session.own_routes = vec![config.fqdn.clone()];
    let mut names = config.tenant.sbcs.clone();
    names.push(config.media_host.clone());
    names.extend(config.clients.iter().map(|(host, _)| host.clone()));
    let setup = HostSetup {
        transport: tc,
        ua: UaConfig { endpoint, session },
        names,
        rng: SeededRng::for_host(config.seed, &config.fqdn),
    };
    let media = HubMedia {
        probes: ProbeDriver::new(
            std::iter::once((config.media_host.clone(), config.media.clone()))
                .chain(config.clients.iter().cloned())
                .collect(),
        ),
        relays: RelayDriver::new(),
    };
    let mut proxy = Proxy::new(config, view);
    proxy.own_ip = Some(ip);
    sbc::driver::run(net, setup, proxy, commands, media, tap).await
}

/// What the hub's media does: the media processor's probes (a Teams
/// user's audio), and relays on the proxy's own address that bridge two
/// SBC legs (a transfer to a PSTN number goes back out through an SBC).
pub enum HubMediaCommand {
    Probe(ProbeCommand),
    /// Boxed: a relay plan is far larger than a probe command.
    Relay(Box<RelayCommand>),
}

struct HubMedia {
    probes: ProbeDriver,
    relays: RelayDriver,
}

impl<N: Network> sbc::driver::MediaDriver<N> for HubMedia {
    type Command = HubMediaCommand;
    type Event = RelayEvent;

    async fn execute(&mut self, net: &N, command: HubMediaCommand) {
        match command {
            HubMediaCommand::Probe(p) => {
                sbc::driver::MediaDriver::<N>::execute(&mut self.probes, net, p).await
            }
            HubMediaCommand::Relay(r) => {
                sbc::driver::MediaDriver::<N>::execute(&mut self.relays, net, *r).await
            }
        }
    }

    fn events(&mut self) -> &mut mpsc::UnboundedReceiver<RelayEvent> {
        sbc::driver::MediaDriver::<N>::events(&mut self.relays)
    }
}

pub(crate) struct Proxy {
    config: HubConfig,
    view: Arc<Mutex<HubView>>,
    media_ip: Option<IpAddr>,
    /// The Teams clients' addresses, in the order of `config.clients`.
    client_ips: Vec<IpAddr>,
    /// The calls, by their first session, with their timers indexed.
    calls: sbc::driver::timed::TimedMap<SessionId, calls::HubCall>,
    next_media: u64,
    media_out: VecDeque<ProbeCommand>,
    relay_out: VecDeque<RelayCommand>,
    /// The proxy's own address: where its bridge relays listen.
    own_ip: Option<IpAddr>,
    /// Bridges between two SBC legs, by relay id.
    bridges: BTreeMap<u64, calls::Bridge>,
    next_relay: u64,
    /// Next hub→SBC OPTIONS per SBC FQDN (started by the SBC's first OPTIONS, §9.13).
    pings: BTreeMap<String, options::Ping>,
    /// When this proxy last heard each SBC's OPTIONS (its own clock), for
    /// SBCs it still counts as heard.
    heard: BTreeMap<String, Instant>,
}

impl Proxy {
    fn new(config: HubConfig, view: Arc<Mutex<HubView>>) -> Self {
        Proxy {
            config,
            view,
            media_ip: None,
            client_ips: Vec::new(),
            calls: Default::default(),
            next_media: 0,
            media_out: VecDeque::new(),
            relay_out: VecDeque::new(),
            own_ip: None,
            bridges: BTreeMap::new(),
            next_relay: 0,
            pings: BTreeMap::new(),
            heard: BTreeMap::new(),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, HubView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, kind: &'static str, line: String) {
        let l = format!("{}: {line}", self.config.fqdn);
        self.view().problems.push(kind, l);
    }

    /// A tenant user by name or number.
    fn tenant_user(&self, who: &str) -> Option<TeamsUser> {
        self.config
            .tenant
            .users
            .iter()
            .find(|u| u.name == who || u.number == who)
            .cloned()
    }
}

impl Role for Proxy {
    type Command = HubCommand;
    type MediaCommand = HubMediaCommand;
    type MediaEvent = RelayEvent;

    fn start(&mut self, _now: Instant, ua: &mut UserAgent) {
        let fqdn = self.config.fqdn.clone();
        {
            let mut view = self.view();
            view.release_media_of(&fqdn);
            view.listening.insert(fqdn.clone());
        }
        self.media_ip = ua.routing().address(&self.config.media_host).ok();
        self.client_ips = (self.config.clients.iter())
            .filter_map(|(host, _)| ua.routing().address(host).ok())
            .collect();
    }

    fn on_event(&mut self, now: Instant, event: UaEvent, ua: &mut UserAgent) {
        match event {
            UaEvent::Session { id, event } => self.on_session(now, ua, id, event),
            UaEvent::Request {
                key,
                request,
                raw,
                source,
            } => match request.method() {
                Some(sbc::sip::wire::Method::Options) => {
                    self.on_options(now, ua, key, &request, &raw, &source)
                }
                _ => {
                    ua.reply(now, &key, 501, "Not Implemented", vec![]);
                }
            },
            UaEvent::Response { key, response } => self.on_ping_response(&key, &response),
            UaEvent::Failed { key, reason } => {
                let why = reason.unwrap_or_else(|| "no answer (408)".into());
                self.on_ping_failure(&key, &why);
            }
            UaEvent::Refused { .. } => {}
            UaEvent::Malformed { error, source } => self.problem(
                "malformed",
                format!("malformed from {}: {error}", source.remote),
            ),
            UaEvent::TlsRefused {
                remote,
                inbound,
                reason,
            } => {
                let dir = if inbound { "from" } else { "to" };
                self.problem("tls", format!("TLS {dir} {remote} refused: {reason}"));
                let rule = tls::TlsRule::from_reason(&reason);
                let fqdn = self.config.fqdn.clone();
                let mut v = self.view();
                v.tls_refusals.push_back((fqdn, remote, rule));
                if v.tls_refusals.len() > VIEW_HISTORY {
                    v.tls_refusals.pop_front();
                }
                v.tls_refusals_total += 1;
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: HubCommand, ua: &mut UserAgent) {
        match command {
            HubCommand::Dial { user, number } => self.dial(now, ua, &user, &number),
            HubCommand::HangUp { user } => {
                if !self.hang_up(now, ua, &user) {
                    for (_, tx) in &self.config.peers {
                        let _ = tx.send(HubCommand::HangUpHere { user: user.clone() });
                    }
                }
            }
            HubCommand::Reinvite { user, direction } => {
                if !self.reinvite_user(now, ua, &user, direction) {
                    self.problem("reinvite", format!("no call of {user} on this proxy"));
                }
            }
            HubCommand::Transfer { user, to } => {
                if !self.transfer(now, ua, &user, &to) {
                    self.problem(
                        "transfer",
                        format!("no answered call of {user} on this proxy"),
                    );
                }
            }
            HubCommand::PickUp {
                user,
                agent,
                unknown_dialog,
            } => {
                if !self.pick_up(now, ua, &user, &agent, unknown_dialog) {
                    self.problem(
                        "pick-up",
                        format!("no answered call of {user} on this proxy"),
                    );
                }
            }
            HubCommand::HangUpHere { user } => {
                self.hang_up(now, ua, &user);
            }
            HubCommand::Answering(a) => self.config.answering = a,
            HubCommand::IceWrongPassword(on) => self.view().ice_wrong_password = on,
            HubCommand::MoveToMediaProcessor { user } => {
                if !self.move_to_media_processor(now, ua, &user) {
                    self.problem("move", format!("no bypass call of {user} on this proxy"));
                }
            }
            HubCommand::MediaTimeout(t) => {
                self.config.media_timeout = t;
                for (_, tx) in &self.config.peers {
                    let _ = tx.send(HubCommand::MediaTimeoutHere(t));
                }
            }
            HubCommand::MediaTimeoutHere(t) => self.config.media_timeout = t,
            HubCommand::Continue(plan) => self.attempt(now, ua, plan),
            HubCommand::Overload { proxy, retry_after } => {
                let mut v = self.view();
                match retry_after {
                    Some(secs) => v.overloaded.insert(proxy, secs),
                    None => v.overloaded.remove(&proxy),
                };
            }
            HubCommand::Refuses { user, status } => {
                let Some(number) = self.tenant_user(&user).map(|u| u.number) else {
                    return self.problem("refuses", format!("no Teams user {user}"));
                };
                let mut v = self.view();
                match status {
                    Some(code) => v.refusing.insert(number, code),
                    None => v.refusing.remove(&number),
                };
            }
        }
    }

    fn on_media(&mut self, now: Instant, event: RelayEvent, ua: &mut UserAgent) {
        self.on_relay(now, ua, event);
    }

    fn on_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        self.ping_due(now, ua);
        self.silence_due(now);
        self.calls_due(now, ua);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.next_wake();
        let pings = self.pings.values().map(|p| p.next);
        let silence = self.heard.values().map(|t| *t + self.config.demote_after);
        calls.into_iter().chain(pings).chain(silence).min()
    }

    fn poll_media(&mut self) -> Option<HubMediaCommand> {
        if let Some(r) = self.relay_out.pop_front() {
            return Some(HubMediaCommand::Relay(Box::new(r)));
        }
        self.media_out.pop_front().map(HubMediaCommand::Probe)
    }

    fn observe(&mut self, ua: &UserAgent) {
        let state = ProxyState {
            ua: ua.counts(),
            calls: self.calls.len(),
        };
        let fqdn = self.config.fqdn.clone();
        self.view().proxies.insert(fqdn, state);
    }
}
