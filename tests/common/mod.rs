//! A lab on the operating system's sockets: the hub proxy (mutual TLS) and
//! its media processor, the reference SBC, and optionally the carrier
//! trunk with one phone, each on its own loopback address (127.<lab>.0.x)
//! so that labs in parallel tests never share an address or a port range.
//! The same role code as the simulated suites; only the `Network` differs.

// Wall-clock deadlines for tests on real sockets, or a fake clock's origin.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone};
use drlab_sim::far_end::Answering;
use drlab_sim::pki::TestPki;
use drlab_sim::{media_host, media_host_channel, MediaHostHandle};
use sbc::b2bua::{run_sbc_sharded, SbcConfig, SbcView};
use sbc::sip::transaction::TimerConfig;
use sbc::sip::transport::tls::{client_config, roots, server_config};
use sbc::sip::transport::TokioNet;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{run_proxy, HubCommand, HubConfig, HubView, SbcStatus, TeamsUser, Tenant};
use tokio::sync::mpsc;

pub struct Addrs {
    pub hub: IpAddr,
    pub sbc: IpAddr,
    pub carrier: IpAddr,
}

impl Addrs {
    pub fn for_lab(lab: u8) -> Addrs {
        let a = |x| IpAddr::V4(Ipv4Addr::new(127, lab, 0, x));
        Addrs {
            hub: a(2),
            sbc: a(3),
            carrier: a(4),
        }
    }
}

pub struct RealLab {
    pub hub: Arc<Mutex<HubView>>,
    pub sbc: Arc<Mutex<SbcView>>,
    pub mp: MediaHostHandle,
    pub net: TokioNet,
    pub addrs: Addrs,
    pub sbc_udp: u16,
    pub hub_commands: mpsc::UnboundedSender<HubCommand>,
}

pub struct Options {
    pub lab: u8,
    /// Where the SBC's carrier is (SIPp, or our trunk).
    pub carrier_ip: Option<IpAddr>,
    pub carrier_port: u16,
    pub timers: TimerConfig,
    pub answering: Answering,
    pub media_frames: u32,
    pub sbc_media_ports: std::ops::RangeInclusive<u16>,
    /// The SBC's gateway has MediaBypass on (hub and SBC alike).
    pub media_bypass: bool,
    /// A registration trunk: what the SBC registers with, and what the
    /// carrier asks for.
    pub registration: Option<sbc::b2bua::register::RegistrationConfig>,
    pub carrier_auth: Option<carrier_sim::trunk::TrunkAuth>,
    /// The SBC's SIP cores (`sbc --shards`).
    pub sbc_shards: usize,
}

impl Options {
    pub fn new(lab: u8) -> Self {
        Options {
            lab,
            carrier_ip: None,
            carrier_port: 5060,
            timers: TimerConfig::default(),
            answering: Answering {
                ring_after: Duration::from_millis(100),
                answer_after: Duration::from_millis(200),
            },
            media_frames: 25,
            sbc_media_ports: 40000..=44999,
            media_bypass: false,
            registration: None,
            carrier_auth: None,
            sbc_shards: 1,
        }
    }
}

pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hub proxy and the SBC (carrier side UDP 5060 on its address).
pub fn start_hub_and_sbc(o: &Options) -> RealLab {
    let addrs = Addrs::for_lab(o.lab);
    let pki = TestPki::new().unwrap();
    let root = roots(&[pki.root()]).unwrap();
    let hub_id = pki.hub().unwrap();
    let sbc_id = pki.good(&["sbc.example.com"]).unwrap();
    let hosts: BTreeMap<String, IpAddr> = [
        ("sip.pstnhub.microsoft.com", addrs.hub),
        ("mp.pstnhub.microsoft.com", addrs.hub),
        ("sbc.example.com", addrs.sbc),
        ("carrier.example.net", o.carrier_ip.unwrap_or(addrs.carrier)),
        ("phone.carrier.example.net", addrs.carrier),
    ]
    .into_iter()
    .map(|(n, a)| (n.to_string(), a))
    .collect();
    let net = TokioNet::with_hosts(hosts);
    let tenant = Tenant {
        sbcs: vec!["sbc.example.com".into()],
        sbc_port: 5061,
        users: vec![
            TeamsUser::new("+4989000001", "Alice"),
            TeamsUser::new("+4989000002", "Bob"),
        ],
        routes: vec![],
        forward_pai: vec![],
        forward_call_history: vec![],
        media_bypass: match o.media_bypass {
            true => vec!["sbc.example.com".into()],
            false => vec![],
        },
    };
    let view = HubView::new(&tenant);
    let (hub_server, hub_client) = teams_sim::hub::tls::hub_configs(
        &hub_id,
        &[pki.root()],
        &Default::default(),
        view.tls_notes.clone(),
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
    .unwrap();
    let hub_view = Arc::new(Mutex::new(view));
    let (mp, mp_rx) = media_host_channel();
    tokio::spawn(media_host(net.clone(), addrs.hub, mp_rx, mp.live.clone()));
    let (hub_commands, hub_rx) = mpsc::unbounded_channel();
    let hub = HubConfig {
        fqdn: "sip.pstnhub.microsoft.com".into(),
        listen_ip: addrs.hub,
        listen_port: 5061,
        advertised_ip: Some(addrs.hub),
        internal_name: "sip-du-a-eu.pstnhub.microsoft.com".into(),
        tenant,
        tls_server: hub_server,
        tls_client: hub_client,
        media_host: "mp.pstnhub.microsoft.com".into(),
        media: mp.clone(),
        media_frames: o.media_frames,
        forks: 2,
        early_media: true,
        answering: o.answering,
        no_ack_timeout: Duration::from_secs(4),
        options_interval: Duration::from_secs(60),
        demote_after: Duration::from_secs(300),
        refusals: Default::default(),
        session_expires: 1800,
        failover_time: Duration::from_secs(10),
        failover_codes: vec![408, 503, 504],
        clients: Vec::new(),
        media_timeout: None,
        peers: Vec::new(),
        timers: o.timers,
        seed: 1,
    };
    let (v, n) = (hub_view.clone(), net.clone());
    tokio::spawn(async move {
        if let Err(e) = run_proxy(n, hub, v, hub_rx, None).await {
            eprintln!("teams-sim stopped: {e}");
        }
    });
    // The SBC starts with OPTIONS to the hub (and the next ones only a
    // minute later): let the hub listen first.
    let listening = std::net::SocketAddr::new(addrs.hub, 5061);
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&listening, Duration::from_millis(100)).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "teams-sim never listened on {listening}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sbc_view = Arc::new(Mutex::new(SbcView::default()));
    let sbc = SbcConfig {
        fqdn: "sbc.example.com".into(),
        listen_ip: addrs.sbc,
        advertised_ip: Some(addrs.sbc),
        carrier_host: "carrier.example.net".into(),
        carrier_port: o.carrier_port,
        country_code: "49".into(),
        carrier_listen_port: 5060,
        hub_fqdns: vec!["sip.pstnhub.microsoft.com".into()],
        hub_port: 5061,
        tls_listen_port: 5061,
        tls_server: server_config(&sbc_id, root.clone()).unwrap(),
        tls_client: client_config(&sbc_id, root).unwrap(),
        options_interval: Duration::from_secs(60),
        media_ports: o.sbc_media_ports.clone(),
        max_ringing: Duration::from_secs(180),
        transfers: Default::default(),
        forward_identity: true,
        forward_history: true,
        session_refresh: Default::default(),
        media_bypass: o.media_bypass,
        media_timeout: None,
        registration: o.registration.clone(),
        carrier_gateways: Vec::new(),
        carrier_sources: Vec::new(),
        number_rules: Default::default(),
        // No overload control: these labs send waves of calls at once
        // from a debug build, often with T1 cut to 50 ms, and expect every
        // call answered; by the SBC's rule that is a standing queue, and
        // it would shed them (a soak wave timed out so in CI). Overload
        // control has its unit tests and the load lab's figures.
        limits: sbc::b2bua::Limits {
            max_queue_delay: None,
            ..Default::default()
        },
        timers: o.timers,
        seed: 1,
    };
    let (v, n, shards) = (sbc_view.clone(), net.clone(), o.sbc_shards);
    tokio::spawn(async move {
        let (_keep, commands) = mpsc::unbounded_channel();
        if let Err(e) = run_sbc_sharded(n, sbc, v, commands, None, shards).await {
            eprintln!("sbc stopped: {e}");
        }
    });
    RealLab {
        hub: hub_view,
        sbc: sbc_view,
        mp,
        net,
        addrs,
        sbc_udp: 5060,
        hub_commands,
    }
}

/// A multi-thread runtime of two workers, as the labs run on.
pub fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Block until something accepts TCP connections on `addr` (10 s at most).
pub fn wait_listening(addr: std::net::SocketAddr) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "nothing listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub struct Carrier {
    pub view: Arc<Mutex<CarrierView>>,
    pub commands: mpsc::UnboundedSender<CarrierCommand>,
    pub phones: MediaHostHandle,
}

impl Carrier {
    /// A PSTN phone calls `to`.
    pub fn call(&self, from: &str, to: &str) {
        let (from, to) = (from.into(), to.into());
        self.commands
            .send(CarrierCommand::Call { from, to })
            .unwrap();
    }

    /// The phone `number` hangs up (its oldest call).
    pub fn hang_up(&self, number: &str) {
        let number = number.into();
        self.commands
            .send(CarrierCommand::HangUp { number })
            .unwrap();
    }
}

/// Our carrier trunk with one phone, on the lab's carrier address.
pub fn start_carrier(lab: &RealLab, o: &Options) -> Carrier {
    let (phones, rx) = media_host_channel();
    tokio::spawn(media_host(
        lab.net.clone(),
        lab.addrs.carrier,
        rx,
        phones.live.clone(),
    ));
    let view = Arc::new(Mutex::new(CarrierView::default()));
    let (commands, carrier_rx) = mpsc::unbounded_channel();
    let config = CarrierConfig {
        fqdn: "carrier.example.net".into(),
        listen_port: o.carrier_port,
        sbc_host: "sbc.example.com".into(),
        sbc_port: lab.sbc_udp,
        country_code: "49".into(),
        phones: vec![Phone {
            number: "+4930123456".into(),
            media_host: "phone.carrier.example.net".into(),
            media: phones.clone(),
        }],
        answering: o.answering,
        media_frames: o.media_frames,
        media_ports: 20000..=29999,
        timers: o.timers,
        auth: o.carrier_auth.clone(),
        seed: 1,
    };
    tokio::spawn(run_trunk(
        lab.net.clone(),
        config,
        view.clone(),
        carrier_rx,
        None,
    ));
    Carrier {
        view,
        commands,
        phones,
    }
}

pub async fn until_active(lab: &RealLab) {
    let active = || {
        lab.hub
            .lock()
            .unwrap()
            .sbcs
            .get("sbc.example.com")
            .is_some_and(|h| h.status == SbcStatus::Active)
    };
    wait_for(
        "the hub to mark the SBC active",
        Duration::from_secs(10),
        active,
    )
    .await;
}

/// Everything the three parties hold: calls, sessions, transactions,
/// media ports, open relays and running probes.
pub fn held(lab: &RealLab, carrier: Option<&Carrier>) -> BTreeMap<&'static str, usize> {
    let s = lab.sbc.lock().unwrap().clone();
    let h = lab.hub.lock().unwrap();
    let mut m = BTreeMap::from([
        ("sbc calls", s.live_calls),
        ("sbc sessions", s.ua.sessions),
        ("sbc transactions", s.ua.transactions),
        ("sbc media ports", s.media_ports),
        ("sbc relays open", s.relays_open),
        ("hub calls", h.proxies.values().map(|p| p.calls).sum()),
        (
            "hub sessions",
            h.proxies.values().map(|p| p.ua.sessions).sum(),
        ),
        (
            "hub transactions",
            h.proxies.values().map(|p| p.ua.transactions).sum(),
        ),
        (
            "hub media ports",
            h.media_ports.in_use().max(h.media_owners.len()),
        ),
        ("media processor probes", lab.mp.live.load(Ordering::SeqCst)),
    ]);
    if let Some(c) = carrier {
        let v = c.view.lock().unwrap();
        m.insert("carrier calls", v.live_calls);
        m.insert("carrier sessions", v.ua.sessions);
        m.insert("carrier transactions", v.ua.transactions);
        m.insert("carrier media ports", v.media_ports);
        m.insert("phone probes", c.phones.live.load(Ordering::SeqCst));
    }
    m
}

pub fn nothing_held(lab: &RealLab, carrier: Option<&Carrier>) -> bool {
    held(lab, carrier).values().all(|v| *v == 0)
}

/// Resident memory of this process, in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
