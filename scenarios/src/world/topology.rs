//! The parties of a simulated world that are not under test, as named
//! hosts: the three hub proxies and their media processor, the carrier
//! trunk and one media host per PSTN phone, and the scripted tester. Each
//! is a turmoil host with an address of its own; what runs on it is the
//! same role code the real-socket binaries run.

use crate::tester::{run_tester, TesterCommand, TesterTls, TesterView, TESTER};
use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone};
use drlab_sim::far_end::Answering;
use drlab_sim::scripted_sbc::{run_scripted_sbc, InviteScript, ScriptedSbcConfig, ScriptedSbcView};
use drlab_sim::{media_host, media_host_channel, MediaHostHandle};
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::{HookedNet, Impairments, MediaTap, Network, Tap, TurmoilNet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{run_proxy, HubCommand, HubConfig, HubView, Tenant};
use tokio::sync::mpsc;

pub const CARRIER: &str = "carrier.example.net";
pub const MEDIA_PROCESSOR: &str = "mp1.media.pstnhub.microsoft.com";

pub fn phone_host(number: &str) -> String {
    format!("phone-{}.{CARRIER}", number.trim_start_matches('+'))
}

/// The network a host of the world runs on: its datagrams cross the
/// world's [`Impairments`], and what media it sends is recorded first (as
/// a capture at the sender would show it, lost or not).
pub(crate) type HostNet<N> = HookedNet<N, (MediaTap, Impairments)>;

pub(crate) fn host_net<N: Network>(
    base: N,
    host: &str,
    media_tap: &Arc<dyn Tap>,
    impairments: &Impairments,
) -> HostNet<N> {
    HookedNet::new(
        base,
        host,
        (MediaTap(media_tap.clone()), impairments.clone()),
    )
}

/// What a role runs to: the host's error, if it failed.
pub(crate) type RoleResult = Result<(), Box<dyn std::error::Error>>;

/// Where the parties run: a simulated world (turmoil) or a real-socket
/// lab ([`super::real::RealHosts`]). The roles are the same code in both;
/// only the network each gets, and the address its listeners bind, differ.
pub trait Place {
    type Net: Network;
    /// Run `role` on host `name`, with the host's network. A simulated
    /// host runs it again when the host restarts.
    fn host<F, Fut>(&mut self, name: &str, role: F)
    where
        F: Fn(Self::Net) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = RoleResult> + 'static;
    /// The address a host's listeners bind: the wildcard in simulation (a
    /// simulated host has one address), the host's own in a real lab.
    fn listen_ip(&self, name: &str) -> std::net::IpAddr;
}

impl Place for turmoil::Sim<'static> {
    type Net = TurmoilNet;
    fn host<F, Fut>(&mut self, name: &str, role: F)
    where
        F: Fn(TurmoilNet) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = RoleResult> + 'static,
    {
        turmoil::Sim::host(self, name, move || role(TurmoilNet));
    }
    fn listen_ip(&self, _: &str) -> std::net::IpAddr {
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    }
}

/// A receiver handed to a host closure on its first start.
pub(crate) type Once<T> = Arc<Mutex<Option<mpsc::UnboundedReceiver<T>>>>;

pub(crate) fn once<T>() -> (mpsc::UnboundedSender<T>, Once<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Arc::new(Mutex::new(Some(rx))))
}

pub(crate) fn take<T>(o: &Once<T>) -> mpsc::UnboundedReceiver<T> {
    // A restarted host gets a closed channel: it keeps serving SIP without commands.
    o.lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_else(|| mpsc::unbounded_channel().1)
}

/// A media host on its own simulated address.
pub(crate) fn install_media_host<P: Place>(
    sim: &mut P,
    name: &str,
    media_tap: &Arc<dyn Tap>,
    impairments: &Impairments,
    (handle, rx): (
        MediaHostHandle,
        mpsc::UnboundedReceiver<drlab_sim::ProbeOpen>,
    ),
) -> MediaHostHandle {
    let rx = Arc::new(Mutex::new(Some(rx)));
    let (live, host) = (handle.live.clone(), name.to_string());
    let (media_tap, impairments) = (media_tap.clone(), impairments.clone());
    sim.host(name, move |base: P::Net| {
        let rx = take(&rx);
        let (live, host) = (live.clone(), host.clone());
        let net = host_net(base.clone(), &host, &media_tap, &impairments);
        async move {
            let ip = base.resolve(&host, 0).await?.ip();
            Ok(media_host(net, ip, rx, live).await?)
        }
    });
    handle
}

/// What the parties that are not under test need to know of the world.
pub struct Parties {
    pub tenant: Tenant,
    pub hub_view: Arc<Mutex<HubView>>,
    pub sbc_fqdn: String,
    /// The SBC's carrier-side port.
    pub sbc_carrier_port: u16,
    pub phones: Vec<String>,
    pub media_frames: u32,
    /// The hub's session interval (RFC 4028).
    pub session_expires: u32,
    pub hub_tls: (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>),
    /// The tester's client identities: the SBC's and the hub's certificate.
    pub tester_tls: (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>),
    pub seed: u64,
    /// The Teams clients of a media bypass world (their hosts are
    /// installed last, by the world, so that no other address moves).
    pub clients: Vec<(String, MediaHostHandle)>,
    /// A registration trunk's credentials (`None`: static-IP peering).
    pub trunk_auth: Option<carrier_sim::trunk::TrunkAuth>,
}

/// The handles a world keeps to the parties it installed.
pub struct Installed {
    pub hub: Arc<Mutex<HubView>>,
    pub carrier: Arc<Mutex<CarrierView>>,
    pub hub_commands: mpsc::UnboundedSender<HubCommand>,
    pub carrier_commands: mpsc::UnboundedSender<CarrierCommand>,
    pub tester: Arc<Mutex<TesterView>>,
    pub tester_commands: mpsc::UnboundedSender<TesterCommand>,
    /// Audio probes running on the media processor and the phones.
    pub probes_live: Vec<Arc<AtomicUsize>>,
    /// Host names, in ladder order, before and after the system under test.
    pub hosts_before: Vec<String>,
    pub hosts_after: Vec<String>,
    /// The carrier trunk's configuration (a second gateway copies it).
    pub carrier_config: CarrierConfig,
}

/// A carrier trunk on its own host (`config.fqdn`); its view and commands.
pub fn install_trunk<P: Place>(
    sim: &mut P,
    config: CarrierConfig,
    tap: &Arc<dyn Tap>,
    media_tap: &Arc<dyn Tap>,
    impairments: &Impairments,
) -> (
    Arc<Mutex<CarrierView>>,
    mpsc::UnboundedSender<CarrierCommand>,
) {
    let carrier_view = Arc::new(Mutex::new(CarrierView::default()));
    let (carrier_tx, carrier_rx) = once::<CarrierCommand>();
    let (view, tap) = (carrier_view.clone(), tap.clone());
    let (media_tap, impairments) = (media_tap.clone(), impairments.clone());
    let host = config.fqdn.clone();
    sim.host(host.as_str(), move |base: P::Net| {
        let (c, v, t) = (config.clone(), view.clone(), tap.clone());
        let rx = take(&carrier_rx);
        // SIP over UDP: the carrier's datagrams cross the impairments too.
        let net = host_net(base, &c.fqdn, &media_tap, &impairments);
        async move { Ok(run_trunk(net, c, v, rx, Some(t)).await?) }
    });
    (carrier_view, carrier_tx)
}

/// Install the hub (three proxies sharing one view and one media
/// processor), the carrier and its phones. The tester comes after them,
/// by [`install_tester`] in a real lab, [`defer_tester`] in simulation.
/// `tap` records SIP, `media_tap` the media every host sends;
/// `impairments` is what the links do to datagrams.
pub fn install<P: Place>(
    sim: &mut P,
    p: &Parties,
    tap: Arc<dyn Tap>,
    media_tap: Arc<dyn Tap>,
    impairments: &Impairments,
) -> Installed {
    let hub_view = p.hub_view.clone();
    // Hosts are registered in a fixed order (addresses follow it): the
    // proxies, their media processor, the phones, the carrier.
    let mp_channel = media_host_channel();
    let mp = mp_channel.0.clone();
    // One command channel per proxy: steps talk to the first; each proxy
    // can hand an outbound call to the others (behaviour §4, FO).
    let channels: Vec<_> = HUB_FQDNS.iter().map(|_| once::<HubCommand>()).collect();
    let hub_tx = channels[0].0.clone();
    let mut hosts_after = Vec::new();
    for (i, fqdn) in HUB_FQDNS.iter().enumerate() {
        let peers = HUB_FQDNS
            .iter()
            .zip(&channels)
            .filter(|(q, _)| *q != fqdn)
            .map(|(q, (tx, _))| (q.to_string(), tx.clone()))
            .collect();
        let config = HubConfig {
            fqdn: fqdn.to_string(),
            listen_ip: sim.listen_ip(fqdn),
            listen_port: 5061,
            advertised_ip: None,
            internal_name: format!("sip-du-{}-eu.pstnhub.microsoft.com", ["a", "b", "c"][i]),
            tenant: p.tenant.clone(),
            tls_server: p.hub_tls.0.clone(),
            tls_client: p.hub_tls.1.clone(),
            media_host: MEDIA_PROCESSOR.into(),
            media: mp.clone(),
            media_frames: p.media_frames,
            forks: 2,
            early_media: true,
            answering: Answering::default(),
            no_ack_timeout: Duration::from_secs(4),
            options_interval: Duration::from_secs(60),
            demote_after: Duration::from_secs(300),
            refusals: Default::default(),
            session_expires: p.session_expires,
            failover_time: Duration::from_secs(10),
            failover_codes: vec![408, 503, 504],
            clients: p.clients.clone(),
            media_timeout: Some(Duration::from_secs(15)),
            peers,
            timers: Default::default(),
            seed: p.seed,
        };
        let commands = channels[i].1.clone();
        let (view, tap, media_tap) = (hub_view.clone(), tap.clone(), media_tap.clone());
        let impairments = impairments.clone();
        sim.host(fqdn, move |base: P::Net| {
            let rx = take(&commands);
            let (c, v, t) = (config.clone(), view.clone(), tap.clone());
            // The proxy relays media itself when it bridges two SBC legs.
            let net = host_net(base, fqdn, &media_tap, &impairments);
            async move { Ok(run_proxy(net, c, v, rx, Some(t)).await?) }
        });
        hosts_after.push(fqdn.to_string());
    }
    install_media_host(sim, MEDIA_PROCESSOR, &media_tap, impairments, mp_channel);
    hosts_after.push(MEDIA_PROCESSOR.into());

    let mut phones = Vec::new();
    let mut hosts_before = vec![CARRIER.to_string()];
    let mut probes_live = vec![mp.live.clone()];
    for number in &p.phones {
        let host = phone_host(number);
        let media = install_media_host(sim, &host, &media_tap, impairments, media_host_channel());
        probes_live.push(media.live.clone());
        phones.push(Phone {
            number: number.clone(),
            media_host: host.clone(),
            media,
        });
        hosts_before.push(host);
    }
    let carrier_config = CarrierConfig {
        fqdn: CARRIER.into(),
        listen_port: 5060,
        sbc_host: p.sbc_fqdn.clone(),
        sbc_port: p.sbc_carrier_port,
        country_code: "49".into(),
        phones,
        answering: Answering::default(),
        media_frames: p.media_frames,
        media_ports: 20000..=29999,
        timers: Default::default(),
        auth: p.trunk_auth.clone(),
        seed: p.seed,
    };
    let (carrier_view, carrier_tx) =
        install_trunk(sim, carrier_config.clone(), &tap, &media_tap, impairments);
    let tester = Arc::new(Mutex::new(TesterView::default()));
    let (tester_commands, _) = mpsc::unbounded_channel();
    Installed {
        carrier_config,
        hub: hub_view,
        carrier: carrier_view,
        hub_commands: hub_tx,
        carrier_commands: carrier_tx,
        tester,
        tester_commands,
        probes_live,
        hosts_before,
        hosts_after,
    }
}

/// The scripted client with the SBC's certificate (see [`crate::tester`]).
pub fn install_tester<P: Place>(
    sim: &mut P,
    p: &Parties,
    installed: &mut Installed,
    tap: Arc<dyn Tap>,
) {
    sim.host(TESTER, tester_role::<P::Net>(p, installed, tap));
}

/// The tester's host, not yet in the world: [`crate::world::Lab`] adds it
/// with the first command a step sends it. Most scenarios never use it,
/// and turmoil steps every host every tick, idle or not. Its address is
/// taken now, in registration order, so no host's address depends on
/// whether or when it joins.
pub(crate) type PendingHost = Box<dyn FnOnce(&mut turmoil::Sim<'static>)>;

pub fn defer_tester(
    sim: &mut turmoil::Sim<'static>,
    p: &Parties,
    installed: &mut Installed,
    tap: Arc<dyn Tap>,
) -> PendingHost {
    sim.lookup(TESTER);
    let role = tester_role::<TurmoilNet>(p, installed, tap);
    Box::new(move |sim: &mut turmoil::Sim<'static>| Place::host(sim, TESTER, role))
}

type RoleFuture = std::pin::Pin<Box<dyn std::future::Future<Output = RoleResult>>>;

fn tester_role<N: Network>(
    p: &Parties,
    installed: &mut Installed,
    tap: Arc<dyn Tap>,
) -> impl Fn(N) -> RoleFuture + Send + 'static {
    let (tx, rx) = once::<TesterCommand>();
    let (view, (as_sbc, as_hub)) = (installed.tester.clone(), p.tester_tls.clone());
    installed.tester_commands = tx;
    installed.hosts_after.push(TESTER.into());
    move |base: N| {
        let (v, t) = (view.clone(), tap.clone());
        let tls = TesterTls {
            as_sbc: as_sbc.clone(),
            as_hub: as_hub.clone(),
        };
        let rx = take(&rx);
        Box::pin(async move { Ok(run_tester(base, tls, rx, v, Some(t)).await?) })
    }
}

/// The tenant's second SBC (see [`crate::world::SecondSbc`]): scripted, or
/// a host that is down from the start.
pub fn install_second_sbc(
    sim: &mut turmoil::Sim<'static>,
    second: &crate::world::SecondSbc,
    (tls_server, tls_client): (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>),
    seed: u64,
    tap: Arc<dyn Tap>,
) -> Arc<Mutex<ScriptedSbcView>> {
    let view = Arc::new(Mutex::new(ScriptedSbcView::default()));
    let config = ScriptedSbcConfig {
        fqdn: second.fqdn.clone(),
        tls_listen_port: 5061,
        hub_fqdns: HUB_FQDNS.iter().map(|s| s.to_string()).collect(),
        hub_port: 5061,
        tls_server,
        tls_client,
        script: second.script.unwrap_or(InviteScript::Silent),
        options_interval: Duration::from_secs(60),
        timers: Default::default(),
        seed,
    };
    let v = view.clone();
    sim.host(second.fqdn.as_str(), move || {
        let (c, v, t) = (config.clone(), v.clone(), tap.clone());
        async move { Ok(run_scripted_sbc(TurmoilNet, c, v, Some(t)).await?) }
    });
    if second.script.is_none() {
        sim.crash(second.fqdn.as_str());
    }
    view
}
