//! A second SBC in the tenant, for the hub's failover cases (behaviour §4,
//! cases 9.33–9.36): it keeps its OPTIONS going to every hub proxy so the
//! hub counts it healthy, answers the hub's OPTIONS, and answers every
//! INVITE the way its script says. It never carries a call: it is there to
//! fail, so the hub's choice of the next SBC can be watched.

use sbc::direct_routing::{hub_hop, sbc_options};
use sbc::driver::{HostSetup, NoMedia, Role};
use sbc::sip::endpoint::EndpointConfig;
use sbc::sip::rng::SeededRng;
use sbc::sip::session::{Reply, SessionConfig, SessionEvent, SessionId};
use sbc::sip::transaction::TimerConfig;
use sbc::sip::transport::{Network, Tap, TlsListen, TransportConfig};
use sbc::sip::ua::{UaConfig, UaCounts, UaEvent, UserAgent};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How the scripted SBC answers the hub's INVITEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteScript {
    /// A final failure at once (after the stack's 100 Trying).
    Reject(u16),
    /// 180 Ringing at once, the failure a second later.
    RingThenReject(u16),
    /// Nothing past 100 Trying: the hub's FailoverTimeSeconds runs out.
    Silent,
}

#[derive(Clone)]
pub struct ScriptedSbcConfig {
    pub fqdn: String,
    pub tls_listen_port: u16,
    pub hub_fqdns: Vec<String>,
    pub hub_port: u16,
    pub tls_server: Arc<rustls::ServerConfig>,
    pub tls_client: Arc<rustls::ClientConfig>,
    pub script: InviteScript,
    pub options_interval: Duration,
    pub timers: TimerConfig,
    pub seed: u64,
}

/// What the scripted SBC saw and holds.
#[derive(Debug, Clone, Default)]
pub struct ScriptedSbcView {
    /// INVITEs received from the hub, by the proxy that sent them.
    pub invites: Vec<String>,
    /// CANCELs that ended one of them.
    pub cancelled: u32,
    pub ua: UaCounts,
}

struct ScriptedSbc {
    config: ScriptedSbcConfig,
    view: Arc<Mutex<ScriptedSbcView>>,
    next_options: Option<Instant>,
    options_seq: u32,
    /// Sessions rung, and when each is refused.
    due: BTreeMap<SessionId, Instant>,
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        500 => "Server Internal Error",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        603 => "Decline",
        _ => "Failed",
    }
}

impl ScriptedSbc {
    fn view(&self) -> std::sync::MutexGuard<'_, ScriptedSbcView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send_options(&mut self, now: Instant, ua: &mut UserAgent) {
        self.next_options = Some(now + self.config.options_interval);
        self.options_seq += 1;
        let (fqdn, port) = (self.config.fqdn.clone(), self.config.tls_listen_port);
        let hub_port = self.config.hub_port;
        for hub in self.config.hub_fqdns.clone() {
            let m =
                sbc_options(&fqdn, port, &hub, hub_port, self.options_seq).build(ua.rng(), &fqdn);
            let _ = ua.send_request(now, m, hub_hop(&hub, hub_port));
        }
    }

    fn reject(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, code: u16) {
        let mut reply = Reply::new(code, reason_phrase(code));
        if code == 503 {
            reply = reply.header("Retry-After", "30");
        }
        let _ = ua.reject(now, id, reply);
    }
}

impl Role for ScriptedSbc {
    type Command = ();
    type MediaCommand = ();
    type MediaEvent = ();

    fn start(&mut self, now: Instant, ua: &mut UserAgent) {
        self.send_options(now, ua);
    }

    fn on_event(&mut self, now: Instant, event: UaEvent, ua: &mut UserAgent) {
        match event {
            UaEvent::Session { id, event } => match event {
                SessionEvent::Incoming { source, .. } => {
                    let from = source.peer_names.first().cloned().unwrap_or_default();
                    self.view().invites.push(from);
                    match self.config.script {
                        InviteScript::Reject(code) => self.reject(now, ua, id, code),
                        InviteScript::RingThenReject(_) => {
                            let _ = ua.provisional(now, id, 0, Reply::new(180, "Ringing"));
                            self.due.insert(id, now + Duration::from_secs(1));
                        }
                        InviteScript::Silent => {}
                    }
                }
                SessionEvent::Ended { reason } => {
                    self.due.remove(&id);
                    if reason == sbc::sip::session::EndReason::Cancelled {
                        self.view().cancelled += 1;
                    }
                }
                _ => {}
            },
            UaEvent::Request { key, .. } => {
                // OPTIONS from the hub (and anything else out of dialog).
                ua.reply(now, &key, 200, "OK", Vec::new());
            }
            _ => {}
        }
    }

    fn on_command(&mut self, _now: Instant, _command: (), _ua: &mut UserAgent) {}

    fn on_media(&mut self, _now: Instant, _event: (), _ua: &mut UserAgent) {}

    fn on_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        if self.next_options.is_some_and(|t| t <= now) {
            self.send_options(now, ua);
        }
        let due: Vec<SessionId> = self
            .due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.due.remove(&id);
            if let InviteScript::RingThenReject(code) = self.config.script {
                self.reject(now, ua, id, code);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.due.values().copied().chain(self.next_options).min()
    }

    fn poll_media(&mut self) -> Option<()> {
        None
    }

    fn observe(&mut self, ua: &UserAgent) {
        self.view().ua = ua.counts();
    }
}

/// Run the scripted SBC until its host stops.
pub async fn run_scripted_sbc<N: Network>(
    net: N,
    config: ScriptedSbcConfig,
    view: Arc<Mutex<ScriptedSbcView>>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.tls = Some(TlsListen {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), config.tls_listen_port),
        config: config.tls_server.clone(),
        allowed_client_names: Some(config.hub_fqdns.clone()),
    });
    tc.tls_client = Some(config.tls_client.clone());
    let mut endpoint = EndpointConfig::new(config.fqdn.clone());
    endpoint.timers = config.timers;
    let session = SessionConfig::new(format!(
        "<sip:{}:{};transport=tls>",
        config.fqdn, config.tls_listen_port
    ));
    let setup = HostSetup {
        transport: tc,
        ua: UaConfig { endpoint, session },
        names: config.hub_fqdns.clone(),
        rng: SeededRng::for_host(config.seed, &config.fqdn),
    };
    let role = ScriptedSbc {
        config,
        view,
        next_options: None,
        options_seq: 0,
        due: BTreeMap::new(),
    };
    // Nobody commands it: the channel stays open, never used.
    let (_keep, commands) = mpsc::unbounded_channel();
    sbc::driver::run(net, setup, role, commands, NoMedia::default(), tap).await
}
