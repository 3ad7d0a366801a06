//! The reference SBC: a B2BUA between a carrier trunk (UDP, RTP, national
//! numbers) and the Teams Direct Routing hub (mutual TLS, SRTP, E.164).
//!
//! Policy only: the SIP mechanics (transactions, dialogs, ACK, CANCEL,
//! BYE, 481) are the [`crate::sip::ua::UserAgent`]'s. Here: admission,
//! number normalisation, routing and failover order, the progress filter,
//! and the bridge between the legs of a [`call::Call`] with its media
//! relay. Toward the hub the SBC keeps its OPTIONS going to every proxy
//! (behaviour §2) and fails an INVITE over to the next proxy on a final
//! 408/503/504, a timeout without any answer, or a transport failure
//! (behaviour §9.40–41).

mod call;
pub mod numbers;
pub mod register;

use crate::direct_routing::{hub_hop, sbc_options};
use crate::driver::{HostSetup, Role};
use crate::media::{PortAllocator, RelayCommand, RelayDriver, RelayEvent, RelayStats};
use crate::problems::ProblemLog;
use crate::sip::endpoint::EndpointConfig;
use crate::sip::rng::{SeededRng, Shard};
use crate::sip::session::{RefreshMethod, SessionConfig, SessionTimerConfig};
use crate::sip::transaction::{TimerConfig, TransactionKey};
use crate::sip::transport::{Network, Tap, TlsListen, TransportConfig, TransportKind};
use crate::sip::ua::{UaConfig, UaCounts, UaEvent, UserAgent};
use crate::sip::wire::Method;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What the SBC allows when it carries out transfers itself: with REFER
/// listed the hub sends REFER (behaviour §5, case 9.43).
pub const SBC_ALLOW: &str = "INVITE,ACK,OPTIONS,CANCEL,BYE,REFER,NOTIFY";
/// Without REFER the hub transfers on its own side or with an INVITE
/// carrying Replaces (case 9.44); NOTIFY "must still be listed" (§5).
pub const SBC_ALLOW_NO_REFER: &str = "INVITE,ACK,OPTIONS,CANCEL,BYE,NOTIFY";

/// How the SBC takes part in transfers the hub asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransferMode {
    /// REFER in Allow: the SBC answers the hub's REFER with 202, calls the
    /// Refer-To back through the hub, reports progress in NOTIFY and
    /// re-bridges the PSTN leg to the new Teams leg (behaviour §5).
    #[default]
    Refer,
    /// No REFER in Allow: the hub transfers internally or replaces the
    /// dialog with an INVITE carrying Replaces, which the SBC accepts.
    HubOnly,
    /// REFER in Allow, passed on to the carrier as a REFER (where the
    /// carrier's Allow lists REFER, else carried out as `Refer`): the
    /// carrier's switch calls the SBC back on a URI standing for the
    /// Refer-To, which the SBC sends to the hub as the Refer-To with the
    /// Referred-By unchanged; the carrier's NOTIFYs go to the hub.
    Carrier,
}
pub const SBC_AGENT: &str = "drlab-sbc/0.1";

#[derive(Debug, Clone)]
pub struct SbcConfig {
    /// The FQDN paired with the tenant, in the certificate, Contact and Via.
    pub fqdn: String,
    /// The address the SIP listeners bind (0.0.0.0 for all).
    pub listen_ip: IpAddr,
    /// The address for SDP and media sockets; `None`: what the FQDN
    /// resolves to at start.
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
    /// Media ports: each call takes two RTP ports (one per leg) and their
    /// RTCP neighbours. Must not overlap another party's range on one host.
    pub media_ports: RangeInclusive<u16>,
    /// How long leg b may ring unanswered before the SBC CANCELs it and
    /// answers leg a 408 (a B2BUA's Timer C, RFC 3261 §16.6 step 11: > 3 min).
    pub max_ringing: Duration,
    /// Whether the SBC handles REFER itself (the default) or leaves
    /// transfers to the hub.
    pub transfers: TransferMode,
    /// Pass P-Asserted-Identity (and Privacy) from the hub on to the
    /// carrier, which is then in our trust domain (RFC 3325 §5); off: the
    /// carrier gets neither PAI nor more than `Privacy: id` for a hidden
    /// caller.
    pub forward_identity: bool,
    /// Pass the hub's History-Info on to the carrier (RFC 7044).
    pub forward_history: bool,
    /// How the SBC refreshes the sessions it refreshes (RFC 4028): re-INVITE,
    /// or UPDATE where the peer's Allow lists it (the hub's does not).
    pub session_refresh: RefreshMethod,
    /// Media bypass toward Teams (the gateway's `MediaBypass`, behaviour
    /// §7): the Teams leg is ICE-lite with one host candidate, answers every
    /// STUN check and sends none, and keeps its credentials from the first
    /// 18x to the 200 (case 9.57).
    pub media_bypass: bool,
    /// An answered call whose relay receives nothing from either leg for
    /// this long (not on hold) is ended on both legs; `None`: never.
    pub media_timeout: Option<Duration>,
    /// A registration trunk: REGISTER to the carrier with these
    /// credentials, which also answer the carrier's challenges to our
    /// INVITEs; `None`: static-IP peering.
    pub registration: Option<register::RegistrationConfig>,
    /// Further gateways of the carrier (`host` or `host:port`, 5060 by
    /// default), tried in order after `carrier_host:carrier_port` for
    /// outbound calls (on 408/503/504, a timeout or a transport failure),
    /// each watched with OPTIONS; they may send calls too.
    pub carrier_gateways: Vec<String>,
    /// Further addresses (or names) the carrier sends calls from that are
    /// not routes. With `carrier_host` and the gateways they make the
    /// carrier-side ACL: an INVITE on the carrier side from any other
    /// source gets 403 and a log line, and nothing is routed.
    pub carrier_sources: Vec<String>,
    /// How the carrier writes numbers (see [`numbers::NumberRules`]).
    pub number_rules: numbers::NumberRules,
    /// What the SBC admits: calls at once, calls in setup, request rates.
    pub limits: Limits,
    pub timers: TimerConfig,
    pub seed: u64,
}

/// Admission limits: an SBC on the public internet must keep the calls it
/// holds when more arrive than it can carry (see `docs/security.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Calls held at once (in setup, talking or ending); an INVITE beyond
    /// gets `503` with `Retry-After` (RFC 3261 §21.5.4), so a carrier or
    /// the hub tries another route (the hub does, case 9.41).
    pub max_calls: usize,
    /// Calls in setup at once (leg a's INVITE not yet answered finally).
    pub max_calls_in_setup: usize,
    /// Retry-After of those 503s, in seconds.
    pub retry_after_secs: u32,
    /// While every message for T1 waited longer than this between its
    /// arrival and its turn, a new INVITE is answered 503 (see
    /// [`crate::sip::endpoint::Overload`]); `None`: never.
    pub max_queue_delay: Option<Duration>,
    /// Per-source request rates, before any transaction is made; `None`:
    /// unlimited.
    pub rates: Option<crate::sip::endpoint::RateLimits>,
    /// Connections the TLS listener accepts: handshake and idle timeouts,
    /// caps per address and in all.
    pub streams: crate::sip::transport::StreamLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_calls: 2000,
            max_calls_in_setup: 200,
            retry_after_secs: 5,
            // Well under T1 (500 ms): an INVITE answered later than that
            // has been sent again, and both copies join the backlog.
            max_queue_delay: Some(Duration::from_millis(200)),
            rates: Some(crate::sip::endpoint::RateLimits::default()),
            // The hub opens a few connections per proxy and sends OPTIONS
            // on them every minute: 15 idle minutes is a dead peer.
            streams: crate::sip::transport::StreamLimits {
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Some(Duration::from_secs(900)),
                max_per_source: Some(32),
                max_total: Some(512),
            },
        }
    }
}

impl SbcConfig {
    /// Why this configuration cannot run on `shards` SIP cores, if it
    /// cannot ([`run_sbc_sharded`]).
    pub fn check_shards(&self, shards: usize) -> Result<(), String> {
        if shards <= 1 {
            return Ok(());
        }
        if shards > MAX_SHARDS {
            return Err(format!("{shards} SIP cores: at most {MAX_SHARDS}"));
        }
        check_shard_ports(&self.media_ports, shards)
    }

    /// The configuration of core `shard`: an equal part of the media ports
    /// (whole RTP/RTCP pairs; the last core also takes what is left) and of
    /// every per-source rate (rounded up): calls spread evenly over the
    /// cores by Call-ID, one source's too, so the cores together admit
    /// what one would. `max_calls` and `max_calls_in_setup` stay whole:
    /// the cores count them together ([`CoreLoad`]).
    pub fn for_shard(&self, shard: Shard) -> SbcConfig {
        let mut c = self.clone();
        if shard.count <= 1 {
            return c;
        }
        c.media_ports = shard_ports(&self.media_ports, shard);
        if let Some(r) = c.limits.rates.as_mut() {
            shard_rates(r, shard.count);
        }
        c
    }
}

/// Whether `ports` hold an RTP/RTCP pair for each of `shards` cores.
fn check_shard_ports(ports: &RangeInclusive<u16>, shards: usize) -> Result<(), String> {
    let (first, last) = (*ports.start(), *ports.end());
    // RTP on even ports (the allocator rounds an odd start up).
    let even = usize::from(first) + usize::from(first % 2);
    let pairs = (usize::from(last) + 1).saturating_sub(even) / 2;
    if pairs < shards {
        return Err(format!(
            "{shards} SIP cores share media_ports {first}-{last}: fewer than one RTP/RTCP pair each"
        ));
    }
    Ok(())
}

/// Core `shard`'s part of `ports`: an even number of them (whole pairs),
/// the last core also taking what is left.
fn shard_ports(ports: &RangeInclusive<u16>, shard: Shard) -> RangeInclusive<u16> {
    let (first, last) = (usize::from(*ports.start()), usize::from(*ports.end()));
    let first = first + first % 2;
    let per = ((last + 1).saturating_sub(first) / shard.count.max(1)) & !1;
    let start = first + shard.index * per;
    let end = match shard.index + 1 == shard.count {
        true => last,
        false => (start + per).saturating_sub(1),
    };
    start.min(65535) as u16..=end.min(65535) as u16
}

/// One core's part of every rate: a `count`th, bursts rounded up.
fn shard_rates(r: &mut crate::sip::endpoint::RateLimits, count: usize) {
    for rate in [
        &mut r.invite,
        &mut r.register,
        &mut r.options,
        &mut r.other,
        &mut r.unknown_source,
        &mut r.unknown_total,
    ] {
        rate.per_second /= count as f64;
        rate.burst = rate.burst.div_ceil(count as u32);
    }
}

/// SIP cores one SBC runs at most.
pub const MAX_SHARDS: usize = 64;

/// What the SBC holds and has done, for steps, consoles and tests.
#[derive(Debug, Clone, Default)]
pub struct SbcView {
    /// The transports are bound and the SIP core has started.
    pub listening: bool,
    /// Last answer to our OPTIONS, per hub proxy (0 = failed to send).
    pub hub_options: BTreeMap<String, u16>,
    pub calls_started: u64,
    pub calls_ended: u64,
    /// Calls moved to a new Teams leg (REFER carried out, or replaced).
    pub transfers: u64,
    /// Calls held now (set up, talking or being torn down).
    pub live_calls: usize,
    /// The relays of the latest calls (at most 16), for failure reports.
    pub relays: VecDeque<Arc<Mutex<RelayStats>>>,
    pub ua: UaCounts,
    /// Media ports allocated now (RTP ports; each keeps its RTCP neighbour).
    pub media_ports: usize,
    /// Relay tasks whose sockets are open now.
    pub relays_open: usize,
    pub problems: ProblemLog,
    /// The registration with the carrier (a registration trunk), and how
    /// many REGISTERs went out and were accepted.
    pub registration: Option<register::RegistrationState>,
    pub registers_sent: u64,
    pub registrations: u64,
    /// Carrier gateways whose last OPTIONS failed.
    pub gateways_down: Vec<String>,
    /// New INVITEs answered 503 by overload control.
    pub shed: u64,
    /// What the admission gate refused (see [`Limits::rates`]).
    pub admission: Option<crate::sip::endpoint::AdmissionStats>,
    /// One record per call that is over (at most [`MAX_RECORDS`]; the
    /// `records` file writer drains them), and how many were dropped.
    pub records: VecDeque<crate::records::CallRecord>,
    pub records_dropped: u64,
    /// Each SIP core's share of the counts above that are levels, not
    /// totals (`live_calls`, `ua`, `media_ports`, `relays_open`, `shed`,
    /// `admission`): each core sets its own, the fields above are their sum.
    pub shards: Vec<ShardCounts>,
}

/// One SIP core's levels (see [`SbcView::shards`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardCounts {
    pub live_calls: usize,
    pub ua: UaCounts,
    pub media_ports: usize,
    pub relays_open: usize,
    pub shed: u64,
    pub admission: Option<crate::sip::endpoint::AdmissionStats>,
}

impl SbcView {
    /// Set core `index`'s levels and the totals from all of them.
    fn set_shard(&mut self, index: usize, count: usize, levels: ShardCounts) {
        if self.shards.len() != count {
            self.shards.resize(count, ShardCounts::default());
        }
        self.shards[index] = levels;
        let s = &self.shards;
        self.live_calls = s.iter().map(|c| c.live_calls).sum();
        self.media_ports = s.iter().map(|c| c.media_ports).sum();
        self.relays_open = s.iter().map(|c| c.relays_open).sum();
        self.shed = s.iter().map(|c| c.shed).sum();
        self.ua = UaCounts {
            sessions: s.iter().map(|c| c.ua.sessions).sum(),
            transactions: s.iter().map(|c| c.ua.transactions).sum(),
            sessions_reaped: s.iter().map(|c| c.ua.sessions_reaped).sum(),
        };
        self.admission = s.iter().filter_map(|c| c.admission).reduce(|a, b| {
            crate::sip::endpoint::AdmissionStats {
                busy: a.busy + b.busy,
                dropped: a.dropped + b.dropped,
                unknown_admitted: a.unknown_admitted + b.unknown_admitted,
            }
        });
    }
}

/// Call records kept in the view before the oldest are dropped (counted).
pub const MAX_RECORDS: usize = 100_000;

/// Settings a lab can change on a running SBC, to show how the hub treats a
/// misconfigured one (a real SBC is otherwise driven by its peers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SbcCommand {
    /// Send OPTIONS to the hub proxies (the default) or stop.
    SendOptions(bool),
    /// Turn a deliberate fault on.
    Fault(SbcFault),
    /// Take part in transfers this way from now on (what `hub.transfers`
    /// sets in the configuration file).
    Transfers(TransferMode),
    /// Refresh sessions this way from now on (`session_refresh`).
    SessionRefresh(RefreshMethod),
    /// Offer and answer ICE-lite toward Teams from now on
    /// (`hub.media_bypass`), or not.
    MediaBypass(bool),
    /// End calls without media after this long (`media_timeout_secs`), or
    /// (`None`) never.
    MediaTimeout(Option<Duration>),
}

/// Deliberate misconfigurations, each the mistake a real SBC makes, so a
/// scenario can show the hub catching it. None is on unless a lab asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SbcFault {
    /// Answer the hub's SRTP offer with plain RTP and no crypto line
    /// (the hub must end the call and send no media: behaviour §3.3).
    PlainRtpToTeams,
    /// Fail an inbound call over to the next hub proxy on any failure,
    /// 603 included (case 9.42 forbids retrying after 603).
    RetryEveryFailure,
    /// Ignore Retry-After from a hub proxy and keep using it (case 9.41).
    IgnoreRetryAfter,
    /// Put the Teams leg on hold with `a=sendonly`, which the hub does not
    /// understand (case 9.50), instead of `a=inactive`.
    HoldWithSendonly,
    /// Never send the session refreshes it owes (RFC 4028; case 9.52).
    NoSessionRefresh,
    /// BYE the Teams leg as soon as it has sent the INVITE a REFER asked
    /// for, before the transfer completes (case 9.47).
    ByeBeforeTransferCompletes,
    /// Answer REFER with 202 but send no NOTIFY (case 9.47).
    NoTransferNotify,
    /// Rewrite the Referred-By of the INVITE a REFER asks for (dropping
    /// its `x-tt`), where it must be copied byte for byte (case 9.45).
    RewriteReferredBy,
    /// Refresh sessions with UPDATE even where the peer's Allow does not
    /// list it (the hub's does not: behaviour §6).
    RefreshWithUnallowedUpdate,
    /// Answer an ICE restart (new ice-ufrag/ice-pwd in a re-INVITE) with
    /// the old credentials (case 9.49: the SBC must restart ICE).
    NoIceRestart,
}

/// The names the SBC sends to, resolved once at start.
fn names(config: &SbcConfig) -> Vec<String> {
    let mut n = config.hub_fqdns.clone();
    n.push(config.carrier_host.clone());
    n.extend(
        config
            .carrier_gateways
            .iter()
            .map(|g| host_of(g).to_string()),
    );
    n.extend(config.carrier_sources.iter().cloned());
    if config.advertised_ip.is_none() {
        n.push(config.fqdn.clone());
    }
    n
}

/// The host of a `host[:port]` gateway.
fn host_of(gateway: &str) -> &str {
    gateway.rsplit_once(':').map_or(gateway, |(h, _)| h)
}

/// Run the SBC until its host stops.
pub async fn run_sbc<N: Network>(
    net: N,
    config: SbcConfig,
    view: Arc<Mutex<SbcView>>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    // Nobody changes its settings: the channel stays open, never used.
    let (_keep, commands) = mpsc::unbounded_channel();
    run_sbc_with(net, config, view, commands, tap).await
}

/// [`run_sbc`] taking settings from `commands` while it runs.
pub async fn run_sbc_with<N: Network>(
    net: N,
    config: SbcConfig,
    view: Arc<Mutex<SbcView>>,
    commands: mpsc::UnboundedReceiver<SbcCommand>,
    tap: Option<Arc<dyn Tap>>,
) -> std::io::Result<()> {
    let (transport, ua) = sbc_setup(&config);
    let setup = HostSetup {
        transport,
        ua,
        names: names(&config),
        rng: SeededRng::for_host(config.seed, &config.fqdn),
    };
    let (ports, media) = (media_ports(&config, Shard::ONE)?, RelayDriver::new());
    let (health, loads) = (Arc::default(), Arc::from([CoreLoad::default()]));
    let sbc = Sbc::new(config, view, ports, media.live(), Shard::ONE, health, loads);
    crate::driver::run(net, setup, sbc, commands, media, tap).await
}

/// [`run_sbc_with`] on `shards` SIP cores sharing the sockets
/// ([`crate::driver::run_sharded`]): calls are spread over the cores by
/// Call-ID, and on a multi-thread runtime the cores run in parallel. Each
/// core takes an equal part of the media ports and of the per-source rates
/// ([`SbcConfig::for_shard`]); `max_calls` counts all cores' calls; core 0
/// sends the OPTIONS and registers, and what they find is shared
/// ([`Health`]); settings from `commands` go to every core. One core is
/// [`run_sbc_with`] exactly.
pub async fn run_sbc_sharded<N: Network>(
    net: N,
    config: SbcConfig,
    view: Arc<Mutex<SbcView>>,
    mut commands: mpsc::UnboundedReceiver<SbcCommand>,
    tap: Option<Arc<dyn Tap>>,
    shards: usize,
) -> std::io::Result<()> {
    if shards <= 1 {
        return run_sbc_with(net, config, view, commands, tap).await;
    }
    config.check_shards(shards).map_err(std::io::Error::other)?;
    let (transport, ua) = sbc_setup(&config);
    let mut setups = Vec::with_capacity(shards);
    let health: Arc<Mutex<Health>> = Arc::default();
    let loads: Arc<[CoreLoad]> = (0..shards).map(|_| CoreLoad::default()).collect();
    let mut inboxes = Vec::with_capacity(shards);
    for index in 0..shards {
        let shard = Shard {
            index,
            count: shards,
        };
        let c = config.for_shard(shard);
        let (ports, media) = (media_ports(&c, shard)?, RelayDriver::new());
        let (inbox, rx) = mpsc::unbounded_channel();
        inboxes.push(inbox);
        setups.push(crate::driver::ShardSetup {
            ua: ua.clone(),
            rng: SeededRng::for_host(config.seed, &shard_name(&config.fqdn, shard))
                .for_shard(shard),
            role: Sbc::new(
                c,
                view.clone(),
                ports,
                media.live(),
                shard,
                health.clone(),
                loads.clone(),
            ),
            commands: rx,
            media,
        });
    }
    // Settings already given apply before any core starts; later ones
    // reach every core in the order given.
    let broadcast = move |c: SbcCommand, inboxes: &[mpsc::UnboundedSender<SbcCommand>]| {
        for inbox in inboxes {
            let _ = inbox.send(c.clone());
        }
    };
    while let Ok(c) = commands.try_recv() {
        broadcast(c, &inboxes);
    }
    tokio::spawn(async move {
        while let Some(c) = commands.recv().await {
            broadcast(c, &inboxes);
        }
    });
    crate::driver::run_sharded(net, transport, &names(&config), setups, route, tap).await
}

/// Core 0 is the host's own name (what one core draws from); the others
/// are named after it.
fn shard_name(fqdn: &str, shard: Shard) -> String {
    match shard.index {
        0 => fqdn.to_string(),
        n => format!("{fqdn} core {n}"),
    }
}

/// The SBC's transports and UA configuration, shared by all its cores.
fn sbc_setup(config: &SbcConfig) -> (TransportConfig, UaConfig) {
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
    tc.limits = config.limits.streams;
    let mut endpoint = EndpointConfig::new(config.fqdn.clone());
    endpoint.timers = config.timers;
    endpoint.user_agent = Some(SBC_AGENT.into());
    let mut session = SessionConfig::new(format!(
        "<sip:{}:{};transport=tls>",
        config.fqdn, config.tls_listen_port
    ));
    // RFC 4028 on every leg that supports it (the hub always offers it on
    // non-bypass calls, behaviour §6); when the hub names no refresher,
    // the hub refreshes.
    session.timer = Some(SessionTimerConfig {
        refresh_with: config.session_refresh,
        ..SessionTimerConfig::default()
    });
    // RFC 3891: the hub's INVITE with Replaces (a call queue, case 9.48)
    // comes with Require: replaces.
    session.supported = vec!["replaces".into()];
    (tc, UaConfig { endpoint, session })
}

/// Media ports at random from the seeded stream (issue 14: an off-path
/// host must not guess a call's ports from the last call's).
fn media_ports(config: &SbcConfig, shard: Shard) -> std::io::Result<PortAllocator> {
    Ok(PortAllocator::new(config.media_ports.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?
        .random(SeededRng::for_host(
            config.seed,
            &format!("{} media ports", shard_name(&config.fqdn, shard)),
        )))
}

/// Which core a transport event belongs to ([`run_sbc_sharded`]): a
/// message by its Call-ID, except an INVITE that names another dialog (its
/// `Replaces`, RFC 3891) or calls back a Refer-To token of ours
/// (`TransferMode::Carrier`), which goes where that dialog or token lives.
/// The rest of such an INVITE's dialog follows it there ([`Route::Pin`]:
/// its own Call-ID is the peer's, hashed elsewhere). What has no Call-ID,
/// and refused handshakes, go to core 0 (they are reported once); a
/// closed connection to every core.
fn route(
    event: &crate::sip::transport::TransportEvent,
    count: usize,
    pinned: &dyn Fn(&str) -> Option<usize>,
) -> crate::driver::Route {
    use crate::driver::Route;
    use crate::sip::rng::shard_of;
    use crate::sip::transport::TransportEvent;
    let (message, source) = match event {
        TransportEvent::Message {
            message, source, ..
        } => (message, source),
        TransportEvent::ConnectionClosed { .. } => return Route::All,
        TransportEvent::Malformed { .. } | TransportEvent::TlsRefused { .. } => {
            return Route::Shard(0)
        }
    };
    let own = message.call_id().map(|c| shard_of(c, count)).unwrap_or(0);
    let elsewhere = |core: usize| match core == own {
        true => Route::Shard(core),
        false => Route::Pin(core),
    };
    let initial = message.to_header().is_ok_and(|to| to.tag().is_none());
    if message.method() == Some(&Method::Invite) && initial {
        // Only the hub replaces dialogs (the core refuses Replaces from
        // anyone else): nobody else makes a pin this way. The replaced
        // dialog may itself be pinned (a call replaced twice).
        let replaces = message.headers.get("Replaces");
        if let Some(replaces) = replaces.filter(|_| source.transport == TransportKind::Tls) {
            let call_id = replaces.split(';').next().unwrap_or_default().trim();
            return elsewhere(pinned(call_id).unwrap_or_else(|| shard_of(call_id, count)));
        }
        // Parsed only where the token can be (not for every new call).
        let user = (message.request_uri())
            .filter(|u| u.contains(call::REFER_TOKEN))
            .and_then(|u| crate::sip::wire::Uri::parse(u).ok())
            .and_then(|u| u.user().map(str::to_string));
        if let Some(token) = user.filter(|u| u.starts_with(call::REFER_TOKEN)) {
            return elsewhere(shard_of(&token, count));
        }
    }
    Route::Shard(own)
}

/// The calls one SIP core holds, as of its last turn: the others add them
/// to their own when they admit a call against `max_calls`. (Two cores
/// admitting in the same instant may pass the limit by one call each, for
/// the moment until their next turn; one core counts exactly.)
#[derive(Debug, Default)]
pub(crate) struct CoreLoad {
    calls: AtomicUsize,
    in_setup: AtomicUsize,
}

/// What the SBC knows of its peers' health, shared by its SIP cores: what
/// the OPTIONS found (core 0 sends them) and the proxies that asked to be
/// left alone (any core hears it).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Carrier gateways whose last OPTIONS failed (no answer, a transport
    /// error or a 5xx).
    pub(crate) gateway_down: std::collections::BTreeSet<String>,
    /// Hub proxies whose last answer to our OPTIONS was a 2xx.
    hubs_up: std::collections::BTreeSet<String>,
    /// Hub proxies not to send INVITEs to until then: they answered 503
    /// with Retry-After (case 9.41), to whichever core.
    avoid_until: BTreeMap<String, Instant>,
    /// The realm the carrier's registrar challenged with (core 0
    /// registers; every core answers INVITE challenges with it).
    realm: Option<String>,
}

/// The SBC's policy state: calls, media ports, OPTIONS to the hub.
pub(crate) struct Sbc {
    config: SbcConfig,
    view: Arc<Mutex<SbcView>>,
    ip: IpAddr,
    ports: PortAllocator,
    calls: call::Calls,
    by_session: BTreeMap<crate::sip::session::SessionId, u64>,
    next_call: u64,
    media_out: VecDeque<RelayCommand>,
    relays_open: Arc<AtomicUsize>,
    next_options: Option<Instant>,
    options_enabled: bool,
    options_keys: BTreeMap<TransactionKey, String>,
    options_seq: u32,
    faults: std::collections::BTreeSet<SbcFault>,
    /// URIs the carrier was REFERred to, standing for the hub's Refer-To
    /// (`TransferMode::Carrier`), by their user part.
    refer_targets: BTreeMap<String, call::ReferTarget>,
    /// The registration with the carrier, once started.
    registration: Option<register::Registration>,
    /// The carrier-side ACL: `carrier_host` and `carrier_gateways`,
    /// resolved once at start (never mid-decision).
    pub(crate) carrier_ips: Vec<IpAddr>,
    /// What the OPTIONS found (core 0 sends them; every core reads it),
    /// and the OPTIONS out to each gateway.
    health: Arc<Mutex<Health>>,
    /// Every core's calls, this one's at `shard.index`.
    loads: Arc<[CoreLoad]>,
    gateway_keys: BTreeMap<TransactionKey, String>,
    /// When the SBC started: call records count from here.
    pub(crate) started_at: Option<Instant>,
    /// When the endpoint has an overload episode to tell of, as of the
    /// last turn (see [`Sbc::observe`]).
    overload_due: Option<Instant>,
    /// Which of the host's SIP cores this is ([`run_sbc_sharded`]).
    shard: Shard,
}

impl Sbc {
    fn new(
        config: SbcConfig,
        view: Arc<Mutex<SbcView>>,
        ports: PortAllocator,
        relays_open: Arc<AtomicUsize>,
        shard: Shard,
        health: Arc<Mutex<Health>>,
        loads: Arc<[CoreLoad]>,
    ) -> Self {
        Sbc {
            loads,
            shard,
            ip: config
                .advertised_ip
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            config,
            view,
            ports,
            calls: call::Calls::default(),
            by_session: BTreeMap::new(),
            next_call: 0,
            media_out: VecDeque::new(),
            relays_open,
            next_options: None,
            options_enabled: true,
            faults: Default::default(),
            refer_targets: BTreeMap::new(),
            options_keys: BTreeMap::new(),
            options_seq: 0,
            registration: None,
            carrier_ips: Vec::new(),
            health,
            gateway_keys: BTreeMap::new(),
            started_at: None,
            overload_due: None,
        }
    }

    /// Every carrier gateway as `host:port`, the primary first.
    pub(crate) fn gateways(&self) -> Vec<String> {
        let primary = format!("{}:{}", self.config.carrier_host, self.config.carrier_port);
        std::iter::once(primary)
            .chain(self.config.carrier_gateways.iter().map(|g| {
                if g.contains(':') {
                    g.clone()
                } else {
                    format!("{g}:5060")
                }
            }))
            .collect()
    }

    /// OPTIONS to every carrier gateway (only where there is more than
    /// one: health decides the order of routes, RFC 3261 §11).
    fn send_gateway_options(&mut self, now: Instant, ua: &mut UserAgent) {
        if self.config.carrier_gateways.is_empty() {
            return;
        }
        let fqdn = self.config.fqdn.clone();
        let contact = format!("<sip:{}:{}>", self.ip, self.config.carrier_listen_port);
        for gateway in self.gateways() {
            let m = crate::sip::session::RequestBuilder::new(
                Method::Options,
                format!("sip:{gateway}"),
                format!("<sip:{fqdn}>"),
                format!("<sip:{gateway}>"),
            )
            .contact(contact.clone())
            .header("Allow", self.allow())
            .build(ua.rng(), &fqdn);
            let hop = crate::sip::session::Hop::Uri(format!("sip:{gateway}"));
            match ua.send_request(now, m, hop) {
                Ok(key) => {
                    self.gateway_keys.insert(key, gateway);
                }
                Err(e) => {
                    self.gateway_health(&gateway, false, format!("OPTIONS not sent: {e}"));
                }
            }
        }
    }

    /// Note a gateway's health; a change is logged.
    fn gateway_health(&mut self, gateway: &str, up: bool, why: String) {
        let (changed, down) = {
            let mut h = self.health();
            let changed = if up {
                h.gateway_down.remove(gateway)
            } else {
                h.gateway_down.insert(gateway.to_string())
            };
            (changed, h.gateway_down.iter().cloned().collect())
        };
        if changed {
            let state = if up { "up again" } else { "down" };
            self.problem(
                "gateway",
                format!("carrier gateway {gateway} {state}: {why}"),
            );
        }
        self.view().gateways_down = down;
    }

    /// The carrier's gateway as a hop (where REGISTERs go).
    fn carrier_hop(&self) -> crate::sip::session::Hop {
        crate::sip::session::Hop::Uri(format!(
            "sip:{}:{}",
            self.config.carrier_host, self.config.carrier_port
        ))
    }

    /// Start registering (RFC 3261 §10.2) and give the session layer the
    /// credentials for the carrier's INVITE challenges (§22.2).
    fn start_registration(&mut self, now: Instant, ua: &mut UserAgent) {
        let Some(config) = self.config.registration.clone() else {
            return;
        };
        let contact = format!(
            "<sip:{}@{}:{}>",
            config.username, self.ip, self.config.carrier_listen_port
        );
        let mut r = register::Registration::new(config, contact);
        r.start(now);
        self.registration = Some(r);
        self.registration_due(now, ua);
    }

    fn registration_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let hop = self.carrier_hop();
        let host = self.config.fqdn.clone();
        let Some(r) = self.registration.as_mut() else {
            return;
        };
        if let Err(e) = r.on_timeout(now, ua, &hop, &host) {
            self.problem("register", e);
        }
        self.sync_logins(ua);
    }

    /// The credentials answer INVITE challenges for the realm the carrier
    /// named (or the one configured).
    /// (Core 0 registers and learns the realm; the other cores take it
    /// from [`Health`] on their next event.)
    fn sync_logins(&mut self, ua: &mut UserAgent) {
        let Some(config) = &self.config.registration else {
            return;
        };
        let learned = match &self.registration {
            Some(r) => r.realm(),
            None => self.health().realm.clone(),
        };
        let Some(realm) = config.realm.clone().or(learned) else {
            return;
        };
        if self.registration.is_some() && self.shard.count > 1 {
            self.health().realm = Some(realm.clone());
        }
        // Looked at before it is changed: the configuration is shared with
        // the sessions under way, and a change copies it.
        if !(ua.session_config().logins.iter()).any(|l| l.realm == realm) {
            ua.session_config_mut()
                .logins
                .push(crate::sip::session::DigestLogin {
                    realm,
                    username: config.username.clone(),
                    password: config.password.clone(),
                });
        }
    }

    /// The calls the other cores held at their last turn, and those of
    /// them in setup (0 and 0 on one core).
    pub(crate) fn other_cores(&self) -> (usize, usize) {
        (self.loads.iter().enumerate())
            .filter(|(i, _)| *i != self.shard.index)
            .fold((0, 0), |(calls, setup), (_, l)| {
                (
                    calls + l.calls.load(Ordering::Relaxed),
                    setup + l.in_setup.load(Ordering::Relaxed),
                )
            })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn view(&self) -> std::sync::MutexGuard<'_, SbcView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, kind: &'static str, p: String) {
        self.view().problems.push(kind, p);
    }

    /// An overload episode is two problem lines, not one per INVITE shed:
    /// when shedding starts, and once none was shed for a quiet spell.
    fn tell_overload(&mut self, now: Instant, ua: &mut UserAgent) {
        use crate::sip::endpoint::{OverloadNote, OVERLOAD_QUIET};
        let limit = self.config.limits.max_queue_delay.unwrap_or_default();
        let why = match ua.overload_note(now) {
            Some(OverloadNote::Started { waited }) => format!(
                "new INVITEs answered 503: every request for T1 waited over {} ms for its turn, the last {} ms (limits.max_queue_delay_ms)",
                limit.as_millis(),
                waited.as_millis()
            ),
            Some(OverloadNote::Ended { shed }) => format!(
                "over: {shed} new INVITEs were answered 503, none in the last {} s",
                OVERLOAD_QUIET.as_secs()
            ),
            None => return,
        };
        self.problem("overload", why);
    }

    /// The Allow the SBC writes everywhere: the hub picks its transfer
    /// method from it (behaviour §5).
    fn allow(&self) -> &'static str {
        match self.config.transfers {
            TransferMode::Refer | TransferMode::Carrier => SBC_ALLOW,
            TransferMode::HubOnly => SBC_ALLOW_NO_REFER,
        }
    }

    /// OPTIONS to every hub proxy (behaviour §2: the SBC starts the exchange;
    /// Contact carries the FQDN, never an IP), and to the carrier's gateways.
    fn send_options(&mut self, now: Instant, ua: &mut UserAgent) {
        // One core pings for all of them (their health is shared): the
        // hub and the gateways see one OPTIONS per interval, however many.
        if !self.options_enabled || self.shard.index != 0 {
            self.next_options = None;
            return;
        }
        self.next_options = Some(now + self.config.options_interval);
        self.send_gateway_options(now, ua);
        self.options_seq += 1;
        let fqdn = self.config.fqdn.clone();
        let port = self.config.tls_listen_port;
        let hub_port = self.config.hub_port;
        for hub in self.config.hub_fqdns.clone() {
            let m = sbc_options(&fqdn, port, &hub, hub_port, self.options_seq)
                .header("Allow", self.allow())
                .build(ua.rng(), &fqdn);
            match ua.send_request(now, m, hub_hop(&hub, hub_port)) {
                Ok(key) => {
                    self.options_keys.insert(key, hub);
                }
                Err(e) => self.problem("options", format!("OPTIONS to {hub}: {e}")),
            }
        }
    }

    fn on_out_of_dialog(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        key: TransactionKey,
        method: Option<Method>,
        carrier_side: bool,
    ) {
        match method {
            // The carrier's health check says whether calls can go through
            // us: while no hub proxy answers our OPTIONS (at start, or
            // the hub unreachable), 503, so the carrier routes elsewhere
            // rather than into calls that cannot reach Teams.
            // (Only while we send OPTIONS: with them off we know nothing.)
            Some(Method::Options)
                if carrier_side && self.options_enabled && self.health().hubs_up.is_empty() =>
            {
                let headers = vec![(
                    "Retry-After".to_string(),
                    self.config.limits.retry_after_secs.to_string(),
                )];
                ua.reply(now, &key, 503, "Service Unavailable", headers);
            }
            Some(Method::Options) => {
                let headers = vec![
                    ("Allow".to_string(), self.allow().to_string()),
                    ("Accept".to_string(), "application/sdp".to_string()),
                ];
                ua.reply(now, &key, 200, "OK", headers);
            }
            // RFC 3261 §8.2.1: a method we do not implement.
            _ => {
                let allow = vec![("Allow".to_string(), self.allow().to_string())];
                ua.reply(now, &key, 501, "Not Implemented", allow);
            }
        }
    }
}

impl Role for Sbc {
    type Command = SbcCommand;
    type MediaCommand = RelayCommand;
    type MediaEvent = RelayEvent;

    fn start(&mut self, now: Instant, ua: &mut UserAgent) {
        self.started_at = Some(now);
        self.view().listening = true;
        if self.config.advertised_ip.is_none() {
            if let Ok(ip) = ua.routing().address(&self.config.fqdn) {
                self.ip = ip;
            }
        }
        let sources: Vec<String> = std::iter::once(self.config.carrier_host.clone())
            .chain(
                self.config
                    .carrier_gateways
                    .iter()
                    .map(|g| host_of(g).to_string()),
            )
            .chain(self.config.carrier_sources.iter().cloned())
            .collect();
        for name in sources {
            match ua.routing().address(&name) {
                Ok(ip) if !self.carrier_ips.contains(&ip) => self.carrier_ips.push(ip),
                Ok(_) => {}
                Err(e) => self.problem("acl", format!("carrier gateway {name}: {e}")),
            }
        }
        // The admission gate trusts the configured peers: the carrier's
        // addresses and the hub proxies' (resolved now, at start).
        ua.set_overload(self.config.limits.max_queue_delay.map(|d| {
            crate::sip::endpoint::Overload {
                max_queue_delay: d,
                // T1: a sender that heard nothing in that time sends again.
                interval: self.config.timers.t1,
                retry_after_secs: self.config.limits.retry_after_secs,
            }
        }));
        if let Some(rates) = self.config.limits.rates.clone() {
            let mut gate = crate::sip::endpoint::Admission::new(rates);
            self.carrier_ips.iter().for_each(|ip| gate.trust(*ip));
            for hub in &self.config.hub_fqdns {
                if let Ok(ip) = ua.routing().address(hub) {
                    gate.trust(ip);
                }
            }
            ua.set_admission(Some(gate));
        }
        if self.options_enabled {
            self.send_options(now, ua);
        }
        // One registration per trunk (RFC 3261 §10): core 0's.
        if self.shard.index == 0 {
            self.start_registration(now, ua);
        }
    }

    fn on_event(&mut self, now: Instant, event: UaEvent, ua: &mut UserAgent) {
        if self.shard.index != 0 && self.config.registration.is_some() {
            self.sync_logins(ua);
        }
        match event {
            UaEvent::Session { id, event } => self.on_session(now, ua, id, event),
            UaEvent::Request {
                key,
                request,
                source,
                ..
            } => {
                let carrier_side = source.transport != TransportKind::Tls;
                self.on_out_of_dialog(now, ua, key, request.method().cloned(), carrier_side)
            }
            UaEvent::Response { key, response } => {
                let hop = self.carrier_hop();
                let host = self.config.fqdn.clone();
                let register = self
                    .registration
                    .as_mut()
                    .and_then(|r| r.on_response(now, ua, &hop, &host, &key, &response));
                if let Some(result) = register {
                    if let Err(e) = result {
                        self.problem("register", e);
                    }
                    self.sync_logins(ua);
                    return;
                }
                if let Some(code) = response.status().filter(|c| *c >= 200) {
                    if let Some(gateway) = self.gateway_keys.remove(&key) {
                        let why = format!("OPTIONS answered {code}");
                        return self.gateway_health(&gateway, code < 500, why);
                    }
                    if let Some(hub) = self.options_keys.remove(&key) {
                        if (200..300).contains(&code) {
                            self.health().hubs_up.insert(hub.clone());
                        } else {
                            self.health().hubs_up.remove(&hub);
                        }
                        self.view().hub_options.insert(hub, code);
                    }
                }
            }
            UaEvent::Failed { key, reason } => {
                let register = self
                    .registration
                    .as_mut()
                    .and_then(|r| r.on_failed(now, &key, reason.clone()));
                if let Some(line) = register {
                    return self.problem("register", line);
                }
                if let Some(gateway) = self.gateway_keys.remove(&key) {
                    let why = reason.unwrap_or_else(|| "no answer to OPTIONS".into());
                    return self.gateway_health(&gateway, false, why);
                }
                if let Some(hub) = self.options_keys.remove(&key) {
                    self.health().hubs_up.remove(&hub);
                    self.view().hub_options.insert(hub.clone(), 0);
                    let why = reason.unwrap_or_else(|| "no answer".into());
                    self.problem("options", format!("OPTIONS to {hub}: {why}"));
                }
            }
            UaEvent::Refused { request, code, why } => self.problem(
                "rejected",
                format!("rejected {} with {code}: {why}", request.summary()),
            ),
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
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: SbcCommand, ua: &mut UserAgent) {
        match command {
            SbcCommand::SendOptions(false) => {
                self.options_enabled = false;
                self.next_options = None;
            }
            SbcCommand::SendOptions(true) => {
                self.options_enabled = true;
                if self.next_options.is_none() {
                    self.send_options(now, ua);
                }
            }
            SbcCommand::Fault(f) => {
                if let Some(t) = ua.session_config_mut().timer.as_mut() {
                    match f {
                        SbcFault::NoSessionRefresh => t.refresh = false,
                        SbcFault::RefreshWithUnallowedUpdate => {
                            t.refresh_with = RefreshMethod::UpdateAlways
                        }
                        _ => {}
                    }
                }
                self.faults.insert(f);
            }
            SbcCommand::Transfers(mode) => self.config.transfers = mode,
            SbcCommand::MediaBypass(on) => self.config.media_bypass = on,
            SbcCommand::MediaTimeout(t) => self.config.media_timeout = t,
            SbcCommand::SessionRefresh(how) => {
                self.config.session_refresh = how;
                if let Some(t) = ua.session_config_mut().timer.as_mut() {
                    t.refresh_with = how;
                }
            }
        }
    }

    fn on_media(&mut self, now: Instant, event: RelayEvent, ua: &mut UserAgent) {
        self.on_relay(now, ua, event);
    }

    fn on_timeout(&mut self, now: Instant, ua: &mut UserAgent) {
        if self.next_options.is_some_and(|t| t <= now) {
            self.send_options(now, ua);
        }
        if self
            .registration
            .as_ref()
            .and_then(|r| r.poll_timeout())
            .is_some_and(|t| t <= now)
        {
            self.registration_due(now, ua);
        }
        self.calls_due(now, ua);
        if self.overload_due.is_some_and(|t| t <= now) {
            self.overload_due = None;
            self.tell_overload(now, ua);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.next_wake();
        let register = self.registration.as_ref().and_then(|r| r.poll_timeout());
        calls
            .into_iter()
            .chain(self.next_options)
            .chain(register)
            .chain(self.overload_due)
            .min()
    }

    fn poll_media(&mut self) -> Option<RelayCommand> {
        self.media_out.pop_front()
    }

    fn observe(&mut self, ua: &UserAgent) {
        let (calls, ports) = (self.calls.len(), self.ports.in_use());
        if let Some(load) = self.loads.get(self.shard.index) {
            load.calls.store(calls, Ordering::Relaxed);
            load.in_setup.store(self.calls.flagged(), Ordering::Relaxed);
        }
        let open = self.relays_open.load(Ordering::SeqCst);
        // poll_timeout has no UA: the endpoint's overload news is a timer.
        self.overload_due = ua.endpoint().overload_due();
        let shed = ua.endpoint().stats().shed;
        let levels = ShardCounts {
            live_calls: calls,
            ua: ua.counts(),
            media_ports: ports,
            relays_open: open,
            shed,
            admission: ua.endpoint().admission().map(|a| a.stats()),
        };
        let shard = self.shard;
        let mut v = self.view();
        v.set_shard(shard.index, shard.count, levels);
        if let Some(r) = &self.registration {
            v.registration = Some(r.state.clone());
            v.registers_sent = r.sent;
            v.registrations = r.registered;
        }
    }
}

#[cfg(test)]
mod shard_tests {
    use super::*;
    use crate::driver::Route;
    use crate::sip::rng::shard_of;
    use crate::sip::transport::{Source, TransportEvent};
    use crate::sip::wire::Message;

    #[allow(clippy::disallowed_methods)] // a receive time nobody reads
    fn event(text: &str) -> TransportEvent {
        event_over(text, TransportKind::Udp)
    }

    #[allow(clippy::disallowed_methods)] // a receive time nobody reads
    fn event_over(text: &str, transport: TransportKind) -> TransportEvent {
        let raw = text.replace('\n', "\r\n").into_bytes();
        let addr: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        TransportEvent::Message {
            message: Message::parse(&raw).unwrap(),
            raw,
            source: Source {
                transport,
                local: addr,
                remote: addr,
                connection: None,
                peer_names: Arc::default(),
            },
            received: Instant::now(),
        }
    }

    fn invite(call_id: &str, uri_user: &str, to_tag: &str, extra: &str) -> TransportEvent {
        invite_over(TransportKind::Udp, call_id, uri_user, to_tag, extra)
    }

    fn invite_over(
        transport: TransportKind,
        call_id: &str,
        uri_user: &str,
        to_tag: &str,
        extra: &str,
    ) -> TransportEvent {
        event_over(&format!(
            "INVITE sip:{uri_user}@sbc.example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@y>{to_tag}\nCall-ID: {call_id}\nCSeq: 1 INVITE\nMax-Forwards: 70\n{extra}Content-Length: 0\n\n"
        ), transport)
    }

    /// Call-IDs that hash to each of three cores.
    fn ids() -> [String; 3] {
        let mut found: [Option<String>; 3] = Default::default();
        for n in 0.. {
            let id = format!("{n}@peer");
            let slot = &mut found[shard_of(&id, 3)];
            if slot.is_none() {
                *slot = Some(id);
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        found.map(Option::unwrap)
    }

    #[test]
    fn messages_go_where_their_call_id_hashes() {
        for (core, id) in ids().iter().enumerate() {
            assert_eq!(
                route(&invite(id, "+4989", "", ""), 3, &|_| None),
                Route::Shard(core)
            );
            let bye = event(&format!(
                "BYE sip:x@sbc.example.com SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@y>;tag=2\nCall-ID: {id}\nCSeq: 2 BYE\nContent-Length: 0\n\n"
            ));
            assert_eq!(route(&bye, 3, &|_| None), Route::Shard(core));
        }
    }

    #[test]
    fn an_invite_that_replaces_goes_to_the_replaced_dialog_and_pins_its_own() {
        let [a, b, c] = ids();
        let tls = TransportKind::Tls;
        let replaces = format!("Replaces: {b};to-tag=7;from-tag=8\n");
        let hub = invite_over(tls, &a, "+4989", "", &replaces);
        assert_eq!(route(&hub, 3, &|_| None), Route::Pin(1));
        // The replaced dialog was pinned itself (a call replaced before).
        let pinned_b = |id: &str| (id == b).then_some(2);
        assert_eq!(route(&hub, 3, &pinned_b), Route::Pin(2));
        // Where the two hash alike, no pin is needed.
        let same = format!("Replaces: {a};to-tag=7;from-tag=8\n");
        let same = invite_over(tls, &a, "+4989", "", &same);
        assert_eq!(route(&same, 3, &|_| None), Route::Shard(0));
        // A re-INVITE (To has a tag) is in its own dialog already.
        let reinvite = invite_over(tls, &a, "+4989", ";tag=5", &replaces);
        assert_eq!(route(&reinvite, 3, &|_| None), Route::Shard(0));
        // Only the hub replaces: from the carrier's side, no pin.
        let udp = invite(&c, "+4989", "", &replaces);
        assert_eq!(route(&udp, 3, &|_| None), Route::Shard(2));
    }

    #[test]
    fn a_carrier_calling_back_a_refer_token_goes_to_the_core_that_made_it() {
        let [a, ..] = ids();
        for core in 0..3 {
            let shard = Shard {
                index: core,
                count: 3,
            };
            let token = SeededRng::new(3)
                .for_shard(shard)
                .owned_token(call::REFER_TOKEN, 16);
            let want = if core == 0 {
                Route::Shard(0)
            } else {
                Route::Pin(core)
            };
            assert_eq!(
                route(&invite(&a, &token, "", ""), 3, &|_| None),
                want,
                "{token}"
            );
        }
    }

    #[test]
    fn closed_connections_go_to_every_core_refusals_to_the_first() {
        let remote: SocketAddr = "192.0.2.9:5061".parse().unwrap();
        let closed = TransportEvent::ConnectionClosed {
            connection: crate::sip::transport::ConnectionId(1),
            transport: TransportKind::Tls,
            remote,
        };
        assert_eq!(route(&closed, 3, &|_| None), Route::All);
        let refused = TransportEvent::TlsRefused {
            remote,
            inbound: true,
            reason: "bad certificate".into(),
        };
        assert_eq!(route(&refused, 3, &|_| None), Route::Shard(0));
    }

    /// The parts of `ports` three cores take, as (first, last).
    fn thirds(ports: RangeInclusive<u16>) -> Vec<(u16, u16)> {
        (0..3)
            .map(|index| shard_ports(&ports, Shard { index, count: 3 }))
            .map(|r| (*r.start(), *r.end()))
            .collect()
    }

    #[test]
    fn each_core_takes_its_part_of_the_ports_and_rates_and_none_overlap() {
        let ranges = thirds(40000..=40999);
        assert_eq!(ranges, [(40000, 40331), (40332, 40663), (40664, 40999)]);
        // An odd start: every part still begins on an even (RTP) port.
        let parts = thirds(40001..=40008);
        assert_eq!(parts, [(40002, 40003), (40004, 40005), (40006, 40008)]);
        for (a, b) in parts {
            assert!(PortAllocator::new(a..=b).is_ok(), "{a}-{b}");
        }
        let whole = crate::sip::endpoint::RateLimits::default();
        let mut part = whole.clone();
        shard_rates(&mut part, 3);
        assert!((part.invite.per_second * 3.0 - whole.invite.per_second).abs() < 1e-9);
        assert_eq!(
            part.unknown_total.burst,
            whole.unknown_total.burst.div_ceil(3)
        );
    }

    #[test]
    fn too_many_cores_for_the_ports_is_refused_with_the_reason() {
        assert_eq!(check_shard_ports(&(40000..=40007), 4), Ok(()));
        assert!(check_shard_ports(&(40001..=40008), 4).is_err());
        let e = check_shard_ports(&(40000..=40007), 5).unwrap_err();
        assert!(e.contains("media_ports 40000-40007"), "{e}");
    }
}
