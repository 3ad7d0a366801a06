//! The reference SBC: a B2BUA between a carrier trunk (UDP, RTP, national
//! numbers) and the Teams Direct Routing hub (mutual TLS, SRTP, E.164).
//!
//! Each call has two legs with their own dialogs: leg `a` is the side that
//! sent us the INVITE, leg `b` the side we call. Media is relayed by a
//! [`crate::media::MediaRelay`] with one port per leg. Toward the hub the
//! SBC keeps its OPTIONS going to every proxy (behaviour §2) and fails an
//! INVITE over to the next proxy on 408/503/504 or a transport failure
//! (behaviour §9.40–41).

mod call;
pub mod numbers;

use crate::media::RelayStats;
use crate::sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use crate::sip::rng::SeededRng;
use crate::sip::transaction::{response_to, TimerConfig, TransactionKey};
use crate::sip::transport::{
    Network, SipTransport, Tap, Target, TlsListen, TransportConfig, TransportKind,
};
use crate::sip::wire::{Message, Method};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What the SBC allows (no REFER yet: the hub then transfers on its own side).
pub const SBC_ALLOW: &str = "INVITE,ACK,OPTIONS,CANCEL,BYE";
pub const SBC_AGENT: &str = "drlab-sbc/0.1";

#[derive(Debug, Clone)]
pub struct SbcConfig {
    /// The FQDN paired with the tenant, in the certificate, Contact and Via.
    pub fqdn: String,
    /// The address the SIP listeners bind (0.0.0.0 for all).
    pub listen_ip: IpAddr,
    /// The address for SDP and media; `None`: what the FQDN resolves to.
    pub advertised_ip: Option<IpAddr>,
    /// The carrier trunk's address and its number format.
    pub carrier_host: String,
    pub carrier_port: u16,
    pub country_code: String,
    /// Where the SBC listens for the carrier (UDP).
    pub carrier_listen_port: u16,
    /// The hub proxies, tried in order (sip, sip2, sip3).
    pub hub_fqdns: Vec<String>,
    pub hub_port: u16,
    /// The SBC's `SipSignalingPort` (TLS).
    pub tls_listen_port: u16,
    pub tls_server: Arc<rustls::ServerConfig>,
    pub tls_client: Arc<rustls::ClientConfig>,
    /// Direct Routing expects one OPTIONS a minute.
    pub options_interval: Duration,
    /// First media port; each call takes four (two per leg, RTP even).
    pub media_port_base: u16,
    pub seed: u64,
}

#[derive(Debug, Clone, Default)]
pub struct SbcView {
    /// Last answer to our OPTIONS, per hub proxy (0 = failed to send).
    pub hub_options: BTreeMap<String, u16>,
    pub calls_started: u32,
    pub calls_ended: u32,
    pub relays: Vec<Arc<Mutex<RelayStats>>>,
    pub problems: Vec<String>,
}

pub(crate) struct Sbc<N: Network> {
    net: N,
    config: SbcConfig,
    endpoint: Endpoint<N>,
    view: Arc<Mutex<SbcView>>,
    ip: IpAddr,
    calls: Vec<call::Call>,
    next_media_port: u16,
    next_options: Instant,
    options_keys: BTreeMap<TransactionKey, String>,
    options_seq: u32,
}

/// Run the SBC until its host stops.
pub async fn run_sbc<N: Network>(
    net: N,
    config: SbcConfig,
    view: Arc<Mutex<SbcView>>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let ip = match config.advertised_ip {
        Some(ip) => ip,
        None => net
            .resolve(&config.fqdn, config.tls_listen_port)
            .await?
            .ip(),
    };
    let any = config.listen_ip;
    let mut tc = TransportConfig::new(config.fqdn.clone());
    tc.udp = Some(SocketAddr::new(any, config.carrier_listen_port));
    tc.tls = Some(TlsListen {
        addr: SocketAddr::new(any, config.tls_listen_port),
        config: config.tls_server.clone(),
        // Only the hub's proxies may open connections to the Teams side.
        allowed_client_names: Some(config.hub_fqdns.clone()),
    });
    tc.tls_client = Some(config.tls_client.clone());
    let (transport, events) = SipTransport::start(net.clone(), tc, tap).await?;
    let ep = EndpointConfig {
        via_host: config.fqdn.clone(),
        timers: TimerConfig::default(),
        user_agent: Some(SBC_AGENT.into()),
    };
    let rng = SeededRng::for_host(config.seed, &config.fqdn);
    let endpoint = Endpoint::new(transport, events, ep, rng);
    let next_media_port = config.media_port_base;
    let mut sbc = Sbc {
        net,
        config,
        endpoint,
        view,
        ip,
        calls: Vec::new(),
        next_media_port,
        next_options: Instant::now(),
        options_keys: BTreeMap::new(),
        options_seq: 0,
    };
    loop {
        let event = sbc.endpoint.next_event(Some(sbc.next_options)).await;
        sbc.on_event(event).await;
    }
}

impl<N: Network> Sbc<N> {
    fn view(&self) -> std::sync::MutexGuard<'_, SbcView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, p: String) {
        self.view().problems.push(p);
    }

    async fn hub_target(&self, fqdn: &str) -> std::io::Result<Target> {
        let addr = self.net.resolve(fqdn, self.config.hub_port).await?;
        Ok(Target {
            transport: TransportKind::Tls,
            addr,
            server_name: Some(fqdn.to_string()),
        })
    }

    async fn on_event(&mut self, e: EndpointEvent) {
        match e {
            EndpointEvent::Request {
                key,
                request,
                source,
            } => match request.method() {
                Some(Method::Invite) => self.on_invite(key, request, source).await,
                Some(Method::Bye) => self.on_bye(key, request),
                Some(Method::Options) => {
                    let mut ok = response_to(&request, 200, "OK", Some(&self.endpoint.rng.tag()));
                    ok.headers.push("Allow", SBC_ALLOW);
                    ok.headers.push("Accept", "application/sdp");
                    self.endpoint.respond(&key, ok);
                }
                _ => {
                    let resp = response_to(
                        &request,
                        501,
                        "Not Implemented",
                        Some(&self.endpoint.rng.tag()),
                    );
                    self.endpoint.respond(&key, resp);
                }
            },
            EndpointEvent::Response { key, response } => {
                if let Some(fqdn) = self.options_keys.get(&key).cloned() {
                    if let Some(code) = response.status().filter(|c| *c >= 200) {
                        self.options_keys.remove(&key);
                        self.view().hub_options.insert(fqdn, code);
                    }
                } else {
                    self.on_response(key, response).await;
                }
            }
            EndpointEvent::Timeout { key } => {
                self.on_leg_failure(key, 408, "Request Timeout").await
            }
            EndpointEvent::SendFailed { key, reason } => {
                if let Some(fqdn) = self.options_keys.remove(&key) {
                    self.view().hub_options.insert(fqdn.clone(), 0);
                    self.problem(format!("OPTIONS to {fqdn}: {reason}"));
                } else {
                    self.problem(format!("send failed: {reason}"));
                    self.on_leg_failure(key, 503, "Service Unavailable").await;
                }
            }
            EndpointEvent::Cancelled { key } => self.on_cancelled(key),
            EndpointEvent::Ack { .. } => {}
            EndpointEvent::Server { .. } => {}
            EndpointEvent::Malformed { error, source } => {
                self.problem(format!("malformed from {}: {error}", source.remote))
            }
            EndpointEvent::TlsRefused {
                remote,
                inbound,
                reason,
            } => {
                let dir = if inbound { "from" } else { "to" };
                self.problem(format!("TLS {dir} {remote} refused: {reason}"));
            }
            EndpointEvent::Wake => self.send_options().await,
        }
    }

    /// OPTIONS to every hub proxy (behaviour §2: the SBC starts the exchange;
    /// Contact carries the FQDN, never an IP).
    async fn send_options(&mut self) {
        self.next_options = Instant::now() + self.config.options_interval;
        self.options_seq += 1;
        let fqdn = self.config.fqdn.clone();
        let port = self.config.tls_listen_port;
        for hub in self.config.hub_fqdns.clone() {
            let mut m = Message::request(
                Method::Options,
                format!("sip:{hub}:{}", self.config.hub_port),
            );
            m.headers.push("Max-Forwards", "70");
            m.headers.push(
                "From",
                format!("<sip:{fqdn}:{port}>;tag={}", self.endpoint.rng.tag()),
            );
            m.headers
                .push("To", format!("<sip:{hub}:{}>", self.config.hub_port));
            m.headers.push("Call-ID", self.endpoint.rng.call_id(&fqdn));
            m.headers
                .push("CSeq", format!("{} OPTIONS", self.options_seq));
            m.headers
                .push("Contact", format!("<sip:{fqdn}:{port};transport=tls>"));
            m.headers.push("Allow", SBC_ALLOW);
            match self.hub_target(&hub).await {
                Ok(target) => match self.endpoint.send_request(m, target) {
                    Ok(key) => {
                        self.options_keys.insert(key, hub);
                    }
                    Err(e) => self.problem(format!("OPTIONS to {hub}: {e}")),
                },
                Err(e) => self.problem(format!("cannot resolve {hub}: {e}")),
            }
        }
    }

    fn allocate_ports(&mut self) -> (u16, u16) {
        let p = self.next_media_port;
        self.next_media_port = if p > 65000 {
            self.config.media_port_base
        } else {
            p + 4
        };
        (p, p + 2)
    }
}
