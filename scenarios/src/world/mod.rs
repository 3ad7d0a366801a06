//! The simulated world: a turmoil `Sim` holding a topology of parties (the
//! three hub proxies and their media processor, the carrier trunk and PSTN
//! phones, a scripted tester; [`topology`]) and a system under test (the
//! SBC; [`sut`]), each a host with its own address, all driven from one
//! seed.

pub mod real;
pub mod sut;
pub mod topology;

pub use sut::{ReferenceSbc, SutContext, SutState, SystemUnderTest};
pub use topology::{phone_host, CARRIER, MEDIA_PROCESSOR};

use crate::tester::{TesterCommand, TesterView, TESTER};
use carrier_sim::trunk::{CarrierCommand, CarrierView};
use drlab_sim::pki::TestPki;
use sbc::b2bua::SbcView;
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::tls::{client_config_at, roots, server_config_at, SimulatedClock};
use sbc::sip::transport::{Impairments, Recorder, Tap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{HubCommand, HubView, TeamsUser, Tenant};
use tokio::sync::mpsc;

pub const SBC_FQDN: &str = "sbc.example.com";
/// The wall-clock second simulated time starts at (pinned for determinism).
pub const EPOCH_SECS: u32 = 1_800_000_000;

/// How a world is built. Defaults are the reference lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub seed: u64,
    /// The SBC FQDN registered in the tenant.
    pub sbc_fqdn: String,
    pub phones: Vec<String>,
    pub teams_users: Vec<TeamsUser>,
    /// One-way latency on every link.
    pub latency: Duration,
    /// How this seed varies every link's latency (see [`LinkProfile`]).
    pub links: LinkProfile,
    /// The simulator's step: every host runs once per tick, and every
    /// time in a trace is a multiple of it. turmoil steps every host every
    /// tick, idle or not, so the tick sets the cost of simulated time.
    /// 5 ms (the default) runs the suite about 2.4 times as fast as 2 ms
    /// did, with every scenario passing and every snapshot the same but
    /// for its timestamps (docs/benchmarks.md). SIP's timers (T1 500 ms),
    /// the audio's 20 ms frames and the reference links' 10 ms latency
    /// are all multiples of it; a latency that is not arrives at the next
    /// tick, and jitter finer than 5 ms is not seen.
    pub tick: Duration,
    /// The longest a scenario may run, in simulated time.
    pub duration: Duration,
    /// Audio frames each far end sends per call (20 ms each); the default
    /// keeps them talking until the call ends.
    pub media_frames: u32,
    /// The SBC's certificate: a [`drlab_sim::pki::variants`] name ("good"
    /// by default; "expired", "client-auth-only"... for the hub to refuse).
    pub sbc_certificate: String,
    /// The session interval the hub asks for (RFC 4028; 1800 by default).
    pub session_expires: u32,
    /// A second SBC in the tenant, in a voice route of higher priority
    /// than the SBC's: outbound calls try it first (failover cases).
    pub second_sbc: Option<SecondSbc>,
    /// The SBC's gateway has MediaBypass on: the world gets a Teams client
    /// host per fork ([`TEAMS_CLIENTS`]), and the SBC is set for bypass.
    pub media_bypass: bool,
    /// How the carrier trunk admits the SBC (see [`Trunk`]).
    pub trunk: Trunk,
    /// What the SBC admits: calls at once, calls in setup, request rates.
    pub limits: sbc::b2bua::Limits,
    /// The SBC takes calls from the attacker's address (a carrier source
    /// gone wild) rather than treating it as unknown.
    pub attacker_trusted: bool,
    /// Record every SIP message and media packet (the trace, the pcap);
    /// off for long runs (`drlab soak`), whose trace is no ladder.
    pub trace: bool,
    /// Run on real sockets and the wall clock around an SBC the lab does
    /// not simulate (see [`real`]); `None`: the simulated world.
    pub real: Option<real::RealLab>,
    /// SIP cores of the reference SBC ([`sbc::b2bua::run_sbc_sharded`]).
    pub sbc_shards: usize,
    /// The FQDN the scenario registered when a lab file names the SBC
    /// otherwise: steps that name the SBC by it mean `sbc_fqdn`.
    pub sbc_alias: Option<String>,
}

/// The carrier trunk's mode: static-IP peering (the default), or a
/// registration trunk with digest credentials; and whom the SBC takes
/// calls from on its carrier side.
#[derive(Debug, Clone, Default)]
pub struct Trunk {
    /// The carrier's registrar and authenticator; `None`: static-IP.
    pub auth: Option<carrier_sim::trunk::TrunkAuth>,
    /// The password the SBC is configured with (the carrier's, unless a
    /// scenario gets it wrong).
    pub sbc_password: Option<String>,
    /// The SBC admits calls from the carrier's own address only (not from
    /// the scripted tester standing in as a second gateway).
    pub strict_acl: bool,
    /// A second carrier gateway ([`GATEWAY2`]) with the same phones,
    /// which the SBC tries first: `carrier.example.net` is then its
    /// second route.
    pub second_gateway: bool,
    /// The SBC's number rules for this carrier.
    pub number_rules: sbc::b2bua::numbers::NumberRules,
}

/// The carrier's other gateway, in worlds with two.
pub const GATEWAY2: &str = "carrier2.example.net";

/// The registration trunk's credentials in the lab.
pub const TRUNK_USER: &str = "sbc1";
pub const TRUNK_PASSWORD: &str = "s3cr3t-Pa55";
pub const TRUNK_REALM: &str = "carrier.example.net";

/// The Teams clients of a media bypass world, one per fork the hub rings.
pub const TEAMS_CLIENTS: [&str; 2] = ["client1.teams.example.com", "client2.teams.example.com"];

/// How a seed varies the world's links, for swarm testing (`drlab certify
/// --seeds`): every latency the scenario sets is scaled, and each packet
/// gets up to `jitter` more (turmoil draws it per message from the seed,
/// exponentially: most packets near the low end).
///
/// Seed 1 is the reference world: latencies as the scenario says, no
/// jitter; its traces are the snapshots. Other seeds scale by 0.5–2.0 and
/// add 0–6 ms of jitter per link. Audio frames are 20 ms apart and cross
/// up to three links (phone → SBC → hub bridge → SBC → media processor in
/// a transfer): with under 20/3 ms per link no frame can overtake the one
/// before it, so the audio checks may insist on order. (Seed 7 of the
/// first sweep, at 15 ms, reordered frames over two links.) Loss and
/// reordering on purpose belong to the impairment steps. SIP messages sent
/// close together may overtake each other on UDP, as they do on real
/// networks (TCP and TLS keep their order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkProfile {
    /// Latency multiplier in thousandths.
    pub scale_permille: u32,
    pub jitter: Duration,
}

impl LinkProfile {
    pub const REFERENCE: LinkProfile = LinkProfile {
        scale_permille: 1000,
        jitter: Duration::ZERO,
    };

    /// The profile of `seed`: a stream of its own, so the variation does
    /// not move any other value drawn from the seed.
    pub fn for_seed(seed: u64) -> LinkProfile {
        if seed == 1 {
            return LinkProfile::REFERENCE;
        }
        let mut rng = sbc::sip::rng::SeededRng::for_host(seed, "link-profile");
        LinkProfile {
            scale_permille: 500 + rng.next_u32() % 1501,
            jitter: Duration::from_millis(u64::from(rng.next_u32() % 7)),
        }
    }

    /// The lowest one-way latency of a link the scenario gives `base`.
    pub fn latency(&self, base: Duration) -> Duration {
        base * self.scale_permille / 1000
    }

    /// The highest: the lowest plus the jitter.
    pub fn max_latency(&self, base: Duration) -> Duration {
        self.latency(base) + self.jitter
    }
}

impl std::fmt::Display for LinkProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "latency ×{}.{:03}, jitter up to {} ms",
            self.scale_permille / 1000,
            self.scale_permille % 1000,
            self.jitter.as_millis()
        )
    }
}

/// A window in which the link between two hosts holds its streams.
#[derive(Debug, Clone)]
struct StreamOutage {
    a: String,
    b: String,
    from: Duration,
    to: Duration,
    held: bool,
}

/// The tenant's other SBC: scripted to fail (see
/// [`drlab_sim::scripted_sbc`]), or a host that is down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondSbc {
    pub fqdn: String,
    /// `None`: the host is down (the hub cannot connect).
    pub script: Option<drlab_sim::scripted_sbc::InviteScript>,
    /// `true`: in a voice route of its own, tried before the SBC's;
    /// `false`: in the SBC's route, ordered by health and chance.
    pub first: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            seed: 1,
            sbc_fqdn: SBC_FQDN.into(),
            phones: vec!["+4930123456".into(), "+4930654321".into()],
            teams_users: vec![
                TeamsUser {
                    // Alice has blocked the second PSTN phone (case 9.31).
                    blocked: vec!["+4930654321".into()],
                    ..TeamsUser::new("+4989000001", "Alice")
                },
                TeamsUser::new("+4989000002", "Bob"),
                TeamsUser {
                    // Disabled, number still assigned (case 9.60).
                    enabled: false,
                    ..TeamsUser::new("+4989000003", "Carol")
                },
                TeamsUser {
                    // Calls out without caller ID (case 9.55).
                    hide_caller_id: true,
                    ..TeamsUser::new("+4989000004", "Dave")
                },
            ],
            latency: Duration::from_millis(10),
            links: LinkProfile::REFERENCE,
            tick: Duration::from_millis(5),
            duration: Duration::from_secs(3600),
            media_frames: 100_000,
            sbc_certificate: "good".into(),
            second_sbc: None,
            session_expires: 1800,
            media_bypass: false,
            trunk: Trunk::default(),
            limits: Default::default(),
            attacker_trusted: false,
            trace: true,
            real: None,
            sbc_shards: 1,
            sbc_alias: None,
        }
    }
}

#[derive(Debug)]
pub struct LabError(pub String);

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

/// The parties installed after the tester and the second SBC: the Teams
/// clients of a bypass world, the carrier's second gateway.
struct Rest {
    client_hosts: Vec<(
        String,
        (
            drlab_sim::MediaHostHandle,
            mpsc::UnboundedReceiver<drlab_sim::ProbeOpen>,
        ),
    )>,
    gateway2: bool,
}

/// What the attacker's host is built from, kept until it is needed.
struct AttackerHost {
    view: Arc<Mutex<crate::attacker::AttackerView>>,
    sbc: String,
    ip: Arc<Mutex<Option<std::net::IpAddr>>>,
    commands: topology::Once<crate::attacker::Attack>,
}

type Gateway = (
    Arc<Mutex<CarrierView>>,
    mpsc::UnboundedSender<CarrierCommand>,
);

fn install_rest<P: topology::Place>(
    place: &mut P,
    rest: Rest,
    installed: &mut topology::Installed,
    tap: &Arc<dyn Tap>,
    media_tap: &Arc<dyn Tap>,
    impairments: &Impairments,
) -> Option<Gateway> {
    for (name, channel) in rest.client_hosts {
        let handle = topology::install_media_host(place, &name, media_tap, impairments, channel);
        installed.probes_live.push(handle.live.clone());
        installed.hosts_after.push(name);
    }
    rest.gateway2.then(|| {
        // Its own phone ports: both gateways' phones share hosts.
        let c = carrier_sim::trunk::CarrierConfig {
            fqdn: GATEWAY2.into(),
            media_ports: 30000..=30999,
            ..installed.carrier_config.clone()
        };
        installed.hosts_after.push(GATEWAY2.into());
        topology::install_trunk(place, c, tap, media_tap, impairments)
    })
}

/// The SBC's certificate, key and trust anchor as PEM text, for an SBC
/// that reads files (the process target).
pub struct SbcFiles {
    pub certificate: String,
    pub key: String,
    pub trust: String,
}

/// What runs the world: turmoil's simulation, or a real-socket lab.
pub enum Engine {
    Sim(Box<turmoil::Sim<'static>>),
    Real(real::RealWorld),
}

impl Engine {
    /// Time since the world started: simulated, or the wall clock's.
    pub fn elapsed(&self) -> Duration {
        match self {
            Engine::Sim(s) => s.elapsed(),
            Engine::Real(r) => r.elapsed(),
        }
    }

    /// A host's address (unspecified for a name the world does not have).
    pub fn lookup(&self, host: &str) -> IpAddr {
        match self {
            Engine::Sim(s) => s.lookup(host),
            Engine::Real(r) => r
                .lookup(host)
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        }
    }

    /// Crash a host (its tasks and sockets gone); simulated worlds only.
    pub fn crash(&mut self, host: &str) -> Result<(), String> {
        self.sim("crashing a host").map_err(|e| e.0)?.crash(host);
        Ok(())
    }

    /// Restart a host (its program starts anew); simulated worlds only.
    pub fn bounce(&mut self, host: &str) -> Result<(), String> {
        self.sim("restarting a host").map_err(|e| e.0)?.bounce(host);
        Ok(())
    }

    /// The simulation, for what only a simulated world can do (crash a
    /// host, hold a link); an error that says so in a real lab.
    pub fn sim(&mut self, what: &str) -> Result<&mut turmoil::Sim<'static>, LabError> {
        match self {
            Engine::Sim(s) => Ok(s),
            Engine::Real(_) => Err(LabError(real::sim_only(what))),
        }
    }
}

pub struct Lab {
    pub config: LabConfig,
    pub sim: Engine,
    /// Every SIP message, decrypted.
    pub recorder: Recorder,
    /// Every media datagram (RTP, RTCP, STUN) as sent.
    pub media: Recorder,
    /// What the links do to datagrams (set by the impairment steps).
    pub impairments: Impairments,
    /// Outages of streams (TCP, TLS) still to begin or end: turmoil holds
    /// the link between the two hosts for the window, so what is sent then
    /// arrives late, not never (a stream's loss is its retransmission).
    stream_outages: Vec<StreamOutage>,
    pub hub: Arc<Mutex<HubView>>,
    pub carrier: Arc<Mutex<CarrierView>>,
    pub sut: Box<dyn SystemUnderTest>,
    pub hub_commands: mpsc::UnboundedSender<HubCommand>,
    pub carrier_commands: mpsc::UnboundedSender<CarrierCommand>,
    /// The scripted client with the SBC's certificate.
    pub tester: Arc<Mutex<TesterView>>,
    tester_commands: mpsc::UnboundedSender<TesterCommand>,
    /// The tester's host until its first command (see [`Lab::tester_send`]).
    tester_host: Option<topology::PendingHost>,
    /// Audio probes running on the media hosts.
    pub probes_live: Vec<Arc<AtomicUsize>>,
    /// Host names in ladder order.
    pub hosts: Vec<String>,
    /// The tenant's second SBC, when the scenario has one.
    pub second_sbc: Option<Arc<Mutex<drlab_sim::scripted_sbc::ScriptedSbcView>>>,
    /// The hostile host of the security scenarios, and what it sent and
    /// got; trace events to or from it left out of the trace.
    pub attacker: Arc<Mutex<crate::attacker::AttackerView>>,
    attack_commands: mpsc::UnboundedSender<crate::attacker::Attack>,
    pub attacker_ignored: Arc<std::sync::atomic::AtomicU64>,
    /// The attacker's host until its first attack (see [`Lab::attack`]).
    attacker_host: Option<AttackerHost>,
    /// The carrier's second gateway, when the scenario has one.
    pub gateway2: Option<(
        Arc<Mutex<CarrierView>>,
        mpsc::UnboundedSender<CarrierCommand>,
    )>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lab(seed {}, {:?} simulated)",
            self.config.seed,
            self.sim.elapsed()
        )
    }
}

/// What every party holds: the no-state-left check reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    pub sbc: Option<SutState>,
    /// Calls, sessions and transactions over the hub's proxies.
    pub hub: (usize, usize, usize),
    pub hub_media_ports: usize,
    pub carrier: (usize, usize, usize),
    pub carrier_media_ports: usize,
    pub probes: usize,
    /// Sessions and transactions of the tenant's second SBC, if any.
    pub second_sbc: (usize, usize),
}

impl Holdings {
    pub fn is_empty(&self) -> bool {
        self.sbc.as_ref().is_none_or(|s| *s == SutState::default())
            && self.hub == (0, 0, 0)
            && self.hub_media_ports == 0
            && self.carrier == (0, 0, 0)
            && self.carrier_media_ports == 0
            && self.probes == 0
            && self.second_sbc == (0, 0)
    }
}

impl std::fmt::Display for Holdings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = &self.sbc {
            write!(
                f,
                "SBC: {} calls, {} sessions, {} transactions, {} media ports, {} relays open; ",
                s.calls, s.sessions, s.transactions, s.media_ports, s.relays_open
            )?;
        }
        write!(
            f,
            "hub: {} calls, {} sessions, {} transactions, {} media ports; \
             carrier: {} calls, {} sessions, {} transactions, {} media ports; {} audio probes running",
            self.hub.0,
            self.hub.1,
            self.hub.2,
            self.hub_media_ports,
            self.carrier.0,
            self.carrier.1,
            self.carrier.2,
            self.carrier_media_ports,
            self.probes
        )?;
        if self.second_sbc != (0, 0) {
            write!(
                f,
                "; second SBC: {} sessions, {} transactions",
                self.second_sbc.0, self.second_sbc.1
            )?;
        }
        Ok(())
    }
}

/// A tap that keeps nothing ([`LabConfig::trace`] off).
struct NoTrace;

impl Tap for NoTrace {
    fn record(&self, _: sbc::sip::transport::TraceEvent) {}
}

impl Lab {
    /// The reference lab with drlab's own SBC under test.
    pub fn new(config: LabConfig) -> Result<Lab, LabError> {
        Self::with_sut(config, Box::new(ReferenceSbc::default()))
    }

    pub fn with_sut(config: LabConfig, sut: Box<dyn SystemUnderTest>) -> Result<Lab, LabError> {
        let err = |e: &dyn std::fmt::Display| LabError(e.to_string());
        let pki = TestPki::new().map_err(|e| err(&e))?;
        let root = roots(&[pki.root()]).map_err(|e| err(&e))?;
        let hub_id = pki.hub().map_err(|e| err(&e))?;
        let variants = drlab_sim::pki::variants(&config.sbc_fqdn, EPOCH_SECS.into());
        let spec = variants
            .iter()
            .find(|(n, _, _)| *n == config.sbc_certificate)
            .map(|(_, s, _)| s.clone())
            .ok_or_else(|| {
                let names: Vec<&str> = variants.iter().map(|(n, _, _)| *n).collect();
                LabError(format!(
                    "no certificate variant {:?}; there are: {}",
                    config.sbc_certificate,
                    names.join(", ")
                ))
            })?;
        let sbc_id = pki.leaf(&spec).map_err(|e| err(&e))?;

        let recorder = Recorder::default();
        // The attacker's traffic stays out of the trace (see crate::attacker).
        let inner: Arc<dyn Tap> = if config.trace {
            Arc::new(recorder.clone())
        } else {
            Arc::new(NoTrace)
        };
        let filter = crate::attacker::FilterTap::new(inner);
        let (attacker_ip, attacker_ignored) = (filter.ignore.clone(), filter.ignored.clone());
        let sbc_seen: real::Seen = Arc::default();
        let tap: Arc<dyn Tap> = match &config.real {
            None => Arc::new(filter),
            // The SBC keeps no trace the lab can read: its peers' tell it.
            Some(r) => Arc::new(real::MirrorTap::new(
                Arc::new(filter),
                r.plan(&config.sbc_fqdn, &config.phones),
                &config.sbc_fqdn,
                sbc_seen.clone(),
            )),
        };
        let media = Recorder::default();
        let media_tap: Arc<dyn Tap> = if config.trace {
            Arc::new(media.clone())
        } else {
            Arc::new(NoTrace)
        };
        let impairments = Impairments::new(config.seed);
        // The system under test first: host addresses follow registration order.
        // Certificates are judged by the world's clock, not the machine's.
        let clock: Arc<dyn rustls::time_provider::TimeProvider> = match &config.real {
            None => Arc::new(SimulatedClock {
                epoch_secs: EPOCH_SECS.into(),
            }),
            // A real SBC judges our certificates by its own clock.
            Some(_) => Arc::new(rustls::time_provider::DefaultTimeProvider),
        };
        let ctx = SutContext {
            fqdn: config.sbc_fqdn.clone(),
            tls_server: server_config_at(&sbc_id, root.clone(), clock.clone())
                .map_err(|e| err(&e))?,
            tls_client: client_config_at(&sbc_id, root.clone(), clock.clone())
                .map_err(|e| err(&e))?,
            carrier_host: if config.trunk.second_gateway {
                GATEWAY2.into()
            } else {
                CARRIER.into()
            },
            carrier_port: 5060,
            seed: config.seed,
            tap: tap.clone(),
            media_tap: media_tap.clone(),
            impairments: impairments.clone(),
            media_bypass: config.media_bypass,
            registration: config.trunk.auth.as_ref().map(|a| {
                sbc::b2bua::register::RegistrationConfig {
                    domain: CARRIER.into(),
                    username: a.username.clone(),
                    password: config
                        .trunk
                        .sbc_password
                        .clone()
                        .unwrap_or_else(|| a.password.clone()),
                    realm: None,
                    expires: 3600,
                }
            }),
            number_rules: config.trunk.number_rules.clone(),
            shards: config.sbc_shards,
            limits: config.limits.clone(),
            carrier_gateways: if config.trunk.second_gateway {
                vec![format!("{CARRIER}:5060")]
            } else {
                Vec::new()
            },
            carrier_sources: if config.trunk.strict_acl {
                Vec::new()
            } else {
                vec![TESTER.to_string()]
            }
            .into_iter()
            .chain(
                config
                    .attacker_trusted
                    .then(|| crate::attacker::ATTACKER.to_string()),
            )
            .collect(),
        };
        let (sbcs, routes) = match &config.second_sbc {
            Some(second) => (
                vec![second.fqdn.clone(), config.sbc_fqdn.clone()],
                if second.first {
                    vec![vec![second.fqdn.clone()], vec![config.sbc_fqdn.clone()]]
                } else {
                    vec![]
                },
            ),
            None => (vec![config.sbc_fqdn.clone()], vec![]),
        };
        let tenant = Tenant {
            sbcs,
            sbc_port: config.real.as_ref().map_or(5061, |r| r.sbc_tls_port),
            users: config.teams_users.clone(),
            routes,
            forward_pai: Vec::new(),
            forward_call_history: Vec::new(),
            media_bypass: if config.media_bypass {
                vec![config.sbc_fqdn.clone()]
            } else {
                Vec::new()
            },
        };
        let hub_view = HubView::new(&tenant);
        // Teams clients (media bypass): their handles now, their hosts last.
        let client_hosts: Vec<(String, _)> = if config.media_bypass {
            TEAMS_CLIENTS
                .iter()
                .map(|c| (c.to_string(), drlab_sim::media_host_channel()))
                .collect()
        } else {
            Vec::new()
        };
        let hub_tls = teams_sim::hub::tls::hub_configs(
            &hub_id,
            &[pki.root()],
            &teams_sim::hub::tls::HubTls::default(),
            hub_view.tls_notes.clone(),
            clock.clone(),
        )
        .map_err(|e| err(&e))?;
        let parties = topology::Parties {
            hub_view: Arc::new(Mutex::new(hub_view)),
            tenant,
            sbc_fqdn: config.sbc_fqdn.clone(),
            sbc_carrier_port: config.real.as_ref().map_or(5060, |r| r.sbc_carrier_port),
            phones: config.phones.clone(),
            media_frames: config.media_frames,
            session_expires: config.session_expires,
            hub_tls,
            tester_tls: (
                client_config_at(&sbc_id, root.clone(), clock.clone()).map_err(|e| err(&e))?,
                client_config_at(&hub_id, root, clock.clone()).map_err(|e| err(&e))?,
            ),
            seed: config.seed,
            trunk_auth: config.trunk.auth.clone(),
            clients: client_hosts
                .iter()
                .map(|(name, (handle, _))| (name.clone(), handle.clone()))
                .collect(),
        };
        let attacker = Arc::new(Mutex::new(crate::attacker::AttackerView::default()));
        let (attack_tx, attack_rx) = topology::once::<crate::attacker::Attack>();
        let rest = Rest {
            client_hosts,
            gateway2: config.trunk.second_gateway,
        };
        let (sim, installed, second_sbc, gateway2, tester_host) = match &config.real {
            None => {
                let mut sim = turmoil::Builder::new()
                    .rng_seed(config.seed)
                    .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS.into()))
                    .simulation_duration(config.duration)
                    .tick_duration(config.tick)
                    .min_message_latency(config.links.latency(config.latency))
                    .max_message_latency(config.links.max_latency(config.latency))
                    .udp_capacity(4096)
                    .build();
                // The system under test first: host addresses follow
                // registration order.
                sut.install(&mut sim, &ctx);
                let mut installed = topology::install(
                    &mut sim,
                    &parties,
                    tap.clone(),
                    media_tap.clone(),
                    &impairments,
                );
                let tester_host =
                    topology::defer_tester(&mut sim, &parties, &mut installed, tap.clone());
                // Last, so that no other host's address moves.
                let second_sbc = match &config.second_sbc {
                    Some(second) => {
                        let id = pki.good(&[second.fqdn.as_str()]).map_err(|e| err(&e))?;
                        let root = roots(&[pki.root()]).map_err(|e| err(&e))?;
                        let tls = (
                            server_config_at(&id, root.clone(), clock.clone())
                                .map_err(|e| err(&e))?,
                            client_config_at(&id, root, clock.clone()).map_err(|e| err(&e))?,
                        );
                        let view = topology::install_second_sbc(
                            &mut sim,
                            second,
                            tls,
                            config.seed,
                            tap.clone(),
                        );
                        installed.hosts_after.push(second.fqdn.clone());
                        Some(view)
                    }
                    None => None,
                };
                let gateway2 = install_rest(
                    &mut sim,
                    rest,
                    &mut installed,
                    &tap,
                    &media_tap,
                    &impairments,
                );
                (
                    Engine::Sim(Box::new(sim)),
                    installed,
                    second_sbc,
                    gateway2,
                    Some(tester_host),
                )
            }
            Some(lab) => {
                let unsupported = [
                    (config.second_sbc.is_some(), "a second SBC in the tenant"),
                    (config.media_bypass, "media bypass (its Teams clients)"),
                    (config.trunk.second_gateway, "a second carrier gateway"),
                    (config.trunk.auth.is_some(), "a registration trunk"),
                    (config.sbc_certificate != "good", "a certificate variant"),
                    // The process target's sbc.toml carries neither.
                    (
                        config.limits != sbc::b2bua::Limits::default(),
                        "admission limits of the scenario's own",
                    ),
                    (
                        !config.trunk.number_rules.to_e164.is_empty()
                            || !config.trunk.number_rules.from_e164.is_empty(),
                        "number rules of the scenario's own",
                    ),
                ];
                if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
                    return Err(LabError(real::sim_only(what)));
                }
                let plan = lab.plan(&config.sbc_fqdn, &config.phones);
                let mut hosts = real::RealHosts::new(plan);
                let mut listens: Vec<(String, u16, bool)> = HUB_FQDNS
                    .iter()
                    .map(|h| (h.to_string(), 5061, true))
                    .collect();
                listens.push((CARRIER.into(), 5060, false));
                hosts.check_free(&listens).map_err(LabError)?;
                let sbc_files = SbcFiles {
                    certificate: sbc_id
                        .chain
                        .iter()
                        .map(|c| drlab_sim::pki::pem("CERTIFICATE", c.as_ref()))
                        .collect(),
                    key: drlab_sim::pki::pem("PRIVATE KEY", sbc_id.key.secret_der()),
                    trust: drlab_sim::pki::pem("CERTIFICATE", pki.root().as_ref()),
                };
                let mut installed = topology::install(
                    &mut hosts,
                    &parties,
                    tap.clone(),
                    media_tap.clone(),
                    &impairments,
                );
                topology::install_tester(&mut hosts, &parties, &mut installed, tap.clone());
                let gateway2 = install_rest(
                    &mut hosts,
                    rest,
                    &mut installed,
                    &tap,
                    &media_tap,
                    &impairments,
                );
                let world = hosts
                    .start(real::wall_clock(), sbc_seen)
                    .map_err(LabError)?;
                // The far ends first, as for an SBC already running: its
                // first OPTIONS finds the hub listening.
                let hub = SocketAddr::new(world.lookup(HUB_FQDNS[0]).unwrap_or(lab.sbc_ip), 5061);
                real::wait_for_local_listener(hub, Duration::from_secs(5)).map_err(LabError)?;
                sut.start(&ctx, lab, &sbc_files).map_err(LabError)?;
                (Engine::Real(world), installed, None, gateway2, None)
            }
        };
        let mut hosts = installed.hosts_before.clone();
        hosts.push(config.sbc_fqdn.clone());
        hosts.extend(installed.hosts_after.clone());
        debug_assert!(hosts.iter().any(|h| h == TESTER));
        let attacker_target = config.sbc_fqdn.clone();
        Ok(Lab {
            config,
            sim,
            recorder,
            media,
            impairments,
            stream_outages: Vec::new(),
            hub: installed.hub,
            carrier: installed.carrier,
            sut,
            hub_commands: installed.hub_commands,
            carrier_commands: installed.carrier_commands,
            tester: installed.tester,
            tester_commands: installed.tester_commands,
            tester_host,
            probes_live: installed.probes_live,
            hosts,
            second_sbc,
            gateway2,
            attacker_host: Some(AttackerHost {
                view: attacker.clone(),
                sbc: attacker_target,
                ip: attacker_ip,
                commands: attack_rx,
            }),
            attacker,
            attack_commands: attack_tx,
            attacker_ignored,
        })
    }

    /// A host as a step names it: the scenario's SBC FQDN is the lab
    /// file's SBC (`--target external`); any other name is itself.
    pub fn host_named(&self, name: &str) -> String {
        match &self.config.sbc_alias {
            Some(alias) if alias.eq_ignore_ascii_case(name) => self.config.sbc_fqdn.clone(),
            _ => name.to_string(),
        }
    }

    /// The SBC's SIP ports: toward the carrier (UDP) and toward Teams
    /// (TLS); a real lab's file may set others than 5060 and 5061.
    pub fn sbc_ports(&self) -> (u16, u16) {
        self.config
            .real
            .as_ref()
            .map_or((5060, 5061), |r| (r.sbc_carrier_port, r.sbc_tls_port))
    }

    /// Start an attack; the attacker's host joins the world with its
    /// first one. Every host is stepped every tick, idle or not, so a
    /// host that only the security scenarios use is not in the others'
    /// worlds: one host fewer in ten made a simulated call ~15 % faster
    /// (docs/benchmarks.md). It joins last: no other host's address moves.
    pub fn attack(&mut self, attack: crate::attacker::Attack) -> Result<(), LabError> {
        // A real lab has no attacker: say so, as for any simulation-only step.
        let sim = self.sim.sim("an attacking host")?;
        if let Some(host) = self.attacker_host.take() {
            let AttackerHost {
                view,
                sbc,
                ip,
                commands,
            } = host;
            // Not a column of the ladder: its traffic is not in the trace.
            sim.host(crate::attacker::ATTACKER, move || {
                let (view, sbc, ip) = (view.clone(), sbc.clone(), ip.clone());
                let rx = topology::take(&commands);
                async move { Ok(crate::attacker::run_attacker(sbc, rx, view, ip).await?) }
            });
        }
        self.attack_commands
            .send(attack)
            .map_err(|_| LabError("the attacker has stopped".into()))
    }

    /// Bring the tester's host into a simulated world, if not there yet:
    /// for its first command, or for a step that names it (a link's
    /// latency, an outage: turmoil has no link to a host not yet there).
    fn join_tester(&mut self) {
        if let (Some(install), Engine::Sim(sim)) = (self.tester_host.take(), &mut self.sim) {
            install(sim);
        }
    }

    /// Hand the scripted tester a message to send; in a simulated world its
    /// host joins with the first one (its address was taken in order at
    /// the start, see [`topology::defer_tester`]).
    pub fn tester_send(&mut self, command: TesterCommand) -> Result<(), LabError> {
        self.join_tester();
        self.tester_commands
            .send(command)
            .map_err(|_| LabError("the tester has stopped".into()))
    }

    /// The reference SBC's view, when the SBC under test is ours.
    pub fn sbc_view(&self) -> Option<Arc<Mutex<SbcView>>> {
        self.sut.view()
    }

    /// Time since the world started: simulated, or the wall clock's in a
    /// real lab.
    pub fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Step the world until `done` holds, at most `limit` of simulated time.
    /// A host that failed ends the run with its error.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Lab) -> bool,
    ) -> Result<bool, LabError> {
        if let Engine::Real(_) = self.sim {
            return self.wait_until(limit, done);
        }
        let until = self.now() + limit;
        while self.now() < until {
            if done(self) {
                return Ok(true);
            }
            self.outages_due();
            if let Engine::Sim(sim) = &mut self.sim {
                sim.step()
                    .map_err(|e| LabError(format!("simulation stopped: {e}")))?;
            }
        }
        Ok(done(self))
    }

    /// [`Lab::run_until`] in a real lab: the parties run on their own;
    /// look every 5 ms, for the limit times the lab's time scale.
    fn wait_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Lab) -> bool,
    ) -> Result<bool, LabError> {
        let scale = self.config.real.as_ref().map_or(1, |r| r.time_scale.max(1));
        let until = self.now() + limit * scale;
        loop {
            if done(self) {
                return Ok(true);
            }
            if let Engine::Real(world) = &self.sim {
                if let Some(failure) = world.failure() {
                    return Err(LabError(format!("a party of the lab stopped: {failure}")));
                }
            }
            if self.now() >= until {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Host names for a party as steps name it: `the SBC`, `the hub` (its
    /// three proxies), `the carrier` (the trunk and its PSTN phones), `the
    /// media processor`, or a host name.
    pub fn party(&self, name: &str) -> Result<Vec<String>, LabError> {
        let hosts: Vec<String> = match name {
            "the SBC" => vec![self.config.sbc_fqdn.clone()],
            "the hub" => HUB_FQDNS.iter().map(|s| s.to_string()).collect(),
            // The trunk and its phones: on a real trunk the media comes
            // from the carrier's network too.
            "the carrier" => self
                .hosts
                .iter()
                .filter(|h| h.as_str() == CARRIER || h.ends_with(&format!(".{CARRIER}")))
                .cloned()
                .collect(),
            "the media processor" => vec![MEDIA_PROCESSOR.into()],
            "the Teams clients" => (self.hosts.iter())
                .filter(|h| TEAMS_CLIENTS.contains(&h.as_str()))
                .cloned()
                .collect(),
            host if self.hosts.iter().any(|h| h == host) => vec![host.to_string()],
            other => {
                return Err(LabError(format!(
                    "no party {other:?}; hosts are: {}",
                    self.hosts.join(", ")
                )))
            }
        };
        Ok(hosts)
    }

    /// Fix the one-way latency between two parties (both directions), as
    /// this seed's [`LinkProfile`] varies it.
    pub fn set_latency(&mut self, a: &str, b: &str, latency: Duration) -> Result<(), LabError> {
        let links = self.config.links;
        let (xs, ys) = (self.party(a)?, self.party(b)?);
        if xs.iter().chain(&ys).any(|h| h == TESTER) {
            self.join_tester();
        }
        let sim = self.sim.sim("setting a link's latency")?;
        for x in &xs {
            for y in &ys {
                let (x, y) = (x.as_str(), y.as_str());
                sim.set_link_latency(x, y, links.latency(latency));
                if links.jitter > Duration::ZERO {
                    sim.set_link_max_message_latency(x, y, links.max_latency(latency));
                }
            }
        }
        Ok(())
    }

    /// Impair the datagrams from `a` to `b` (and from `b` to `a` when
    /// `both_ways`) with `change`: see [`sbc::sip::transport::impair`].
    pub fn impair(
        &mut self,
        a: &str,
        b: &str,
        both_ways: bool,
        change: impl Fn(&mut sbc::sip::transport::impair::Impairment),
    ) -> Result<(), LabError> {
        // A real SBC's own datagrams would cross no impairment.
        self.sim.sim("impairing a link")?;
        for x in self.party(a)? {
            for y in self.party(b)? {
                let (x, y) = (self.sim.lookup(x.as_str()), self.sim.lookup(y.as_str()));
                self.impairments.update(x, y, &change);
                if both_ways {
                    self.impairments.update(y, x, &change);
                }
            }
        }
        Ok(())
    }

    /// Take the link between `a` and `b` down from `from` to `to` (world
    /// time): datagrams sent then are lost both ways, streams wait.
    pub fn outage(
        &mut self,
        a: &str,
        b: &str,
        from: Duration,
        to: Duration,
    ) -> Result<(), LabError> {
        if to <= from {
            return Err(LabError(format!(
                "an outage must end after it starts ({from:?} to {to:?})"
            )));
        }
        self.impair(a, b, true, |m| m.outages.push((from, to)))?;
        let (xs, ys) = (self.party(a)?, self.party(b)?);
        if xs.iter().chain(&ys).any(|h| h == TESTER) {
            self.join_tester();
        }
        for x in xs {
            for y in &ys {
                self.stream_outages.push(StreamOutage {
                    a: x.clone(),
                    b: y.clone(),
                    from,
                    to,
                    held: false,
                });
            }
        }
        Ok(())
    }

    /// Begin and end the stream outages whose time has come.
    fn outages_due(&mut self) {
        let now = self.now();
        let Engine::Sim(sim) = &self.sim else {
            return;
        };
        self.stream_outages.retain_mut(|o| {
            if !o.held && now >= o.from {
                sim.hold(o.a.as_str(), o.b.as_str());
                o.held = true;
            }
            if o.held && now >= o.to {
                sim.release(o.a.as_str(), o.b.as_str());
                return false;
            }
            true
        });
    }

    /// Let `d` of simulated time pass.
    pub fn run_for(&mut self, d: Duration) -> Result<(), LabError> {
        self.run_until(d, |_| false).map(|_| ())
    }

    /// What every party holds now.
    pub fn holdings(&self) -> Holdings {
        let hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        let carrier = self.carrier.lock().unwrap_or_else(|e| e.into_inner());
        // Both gateways of a two-gateway carrier count as the carrier.
        let (g_calls, g_sessions, g_transactions, g_ports) =
            self.gateway2.as_ref().map_or((0, 0, 0, 0), |(v, _)| {
                let v = v.lock().unwrap_or_else(|e| e.into_inner());
                (
                    v.live_calls,
                    v.ua.sessions,
                    v.ua.transactions,
                    v.media_ports,
                )
            });
        let sum = |f: &dyn Fn(&teams_sim::hub::ProxyState) -> usize| {
            hub.proxies.values().map(f).sum::<usize>()
        };
        Holdings {
            sbc: self.sut.state(),
            hub: (
                sum(&|p| p.calls),
                sum(&|p| p.ua.sessions),
                sum(&|p| p.ua.transactions),
            ),
            // A port freed but still filed under its proxy counts as held.
            hub_media_ports: hub.media_ports.in_use().max(hub.media_owners.len()),
            carrier: (
                carrier.live_calls + g_calls,
                carrier.ua.sessions + g_sessions,
                carrier.ua.transactions + g_transactions,
            ),
            carrier_media_ports: carrier.media_ports + g_ports,
            probes: self
                .probes_live
                .iter()
                .map(|l| l.load(Ordering::SeqCst))
                .sum(),
            second_sbc: self.second_sbc.as_ref().map_or((0, 0), |v| {
                let ua = v.lock().unwrap_or_else(|e| e.into_inner()).ua;
                (ua.sessions, ua.transactions)
            }),
        }
    }

    /// The address → name map of every host, for traces.
    pub fn names(&self) -> Vec<(IpAddr, String)> {
        let mut names: Vec<(IpAddr, String)> = self
            .hosts
            .iter()
            .map(|h| (self.sim.lookup(h.as_str()), h.clone()))
            .collect();
        if let Engine::Real(world) = &self.sim {
            // An address of no party of the lab is the SBC's: one that
            // connects from another address than it listens on (several
            // on one machine) is still the SBC in the ladder.
            for ip in world.foreign() {
                names.push((ip, self.config.sbc_fqdn.clone()));
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tester's host joins with its first command; a step that names
    /// it before (a latency, an outage) brings it in rather than asking
    /// turmoil for a link that does not exist yet (a panic).
    #[test]
    fn naming_the_tester_before_it_sends_brings_its_host_in() {
        let mut lab = Lab::new(LabConfig::default()).unwrap();
        lab.set_latency(TESTER, "the SBC", Duration::from_millis(30))
            .unwrap();
        let mut lab = Lab::new(LabConfig::default()).unwrap();
        lab.outage(
            TESTER,
            "the hub",
            Duration::from_millis(100),
            Duration::from_millis(300),
        )
        .unwrap();
        lab.run_for(Duration::from_millis(500)).unwrap();
    }

    #[test]
    fn seed_one_is_the_reference_and_other_seeds_stay_in_the_profile() {
        assert_eq!(LinkProfile::for_seed(1), LinkProfile::REFERENCE);
        let profiles: Vec<LinkProfile> = (2..200).map(LinkProfile::for_seed).collect();
        for p in &profiles {
            assert!((500..=2000).contains(&p.scale_permille), "{p}");
            assert!(p.jitter <= Duration::from_millis(6), "{p}");
        }
        assert_eq!(LinkProfile::for_seed(7), LinkProfile::for_seed(7));
        let scales: std::collections::BTreeSet<u32> =
            profiles.iter().map(|p| p.scale_permille).collect();
        let jitters: std::collections::BTreeSet<Duration> =
            profiles.iter().map(|p| p.jitter).collect();
        assert!(scales.len() > 100 && jitters.len() == 7);
        let p = LinkProfile {
            scale_permille: 1400,
            jitter: Duration::from_millis(12),
        };
        assert_eq!(p.to_string(), "latency ×1.400, jitter up to 12 ms");
        assert_eq!(
            p.latency(Duration::from_millis(150)),
            Duration::from_millis(210)
        );
        assert_eq!(
            p.max_latency(Duration::from_millis(150)),
            Duration::from_millis(222)
        );
    }

    /// The gaps between each OPTIONS the SBC sends to a hub proxy and the
    /// proxy's 200: one trip across the link, as the profile sets it.
    fn options_trips(links: LinkProfile) -> Vec<f64> {
        let mut lab = Lab::new(LabConfig {
            seed: 3,
            links,
            ..LabConfig::default()
        })
        .unwrap();
        lab.run_for(Duration::from_secs(65)).unwrap();
        let sent = crate::trace::sent_messages(&lab.recorder.events(), &lab.names());
        let mut trips = Vec::new();
        for (i, s) in sent.iter().enumerate() {
            if s.from != SBC_FQDN || s.label() != "OPTIONS" {
                continue;
            }
            let call_id = s.message().and_then(|m| m.call_id().ok().map(String::from));
            let answer = sent[i..].iter().find(|r| {
                r.to == SBC_FQDN
                    && r.label() == "200 OK (OPTIONS)"
                    && r.message().and_then(|m| m.call_id().ok().map(String::from)) == call_id
            });
            if let Some(a) = answer {
                trips.push(a.at_ms - s.at_ms);
            }
        }
        assert!(trips.len() >= 6, "{trips:?}");
        trips
    }

    #[test]
    fn a_profile_scales_the_links_and_adds_jitter() {
        let reference = options_trips(LinkProfile::REFERENCE);
        assert!(
            reference.iter().all(|t| (10.0..=11.0).contains(t)),
            "{reference:?}"
        );
        let doubled = options_trips(LinkProfile {
            scale_permille: 2000,
            jitter: Duration::ZERO,
        });
        assert!(
            doubled.iter().all(|t| (20.0..=21.0).contains(t)),
            "{doubled:?}"
        );
        let jittery = options_trips(LinkProfile {
            scale_permille: 2000,
            jitter: Duration::from_millis(15),
        });
        assert!(
            jittery.iter().all(|t| (20.0..=36.0).contains(t)),
            "{jittery:?}"
        );
        assert!(jittery.iter().any(|t| *t > 21.0), "{jittery:?}");
    }
}
