//! The simulated world: a turmoil `Sim` with the reference SBC, the three
//! hub proxies, a media processor, the carrier trunk and PSTN phones, each
//! a host with its own address, all driven from one seed.

use crate::tester::{run_tester, TesterCommand, TesterView, TESTER};
use carrier_sim::trunk::{run_trunk, CarrierCommand, CarrierConfig, CarrierView, Phone};
use sbc::b2bua::{run_sbc, SbcConfig, SbcView};
use sbc::media::{media_host, ProbeOpen};
use sbc::pki::{TestPki, HUB_FQDNS};
use sbc::sip::transport::tls::{client_config, roots, server_config};
use sbc::sip::transport::{Recorder, Tap, TurmoilNet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::{run_proxy, HubCommand, HubConfig, HubView, TeamsUser, Tenant};
use tokio::sync::mpsc;

pub const SBC_FQDN: &str = "sbc.example.com";
pub const CARRIER: &str = "carrier.example.net";
/// The wall-clock second simulated time starts at (pinned for determinism).
pub const EPOCH_SECS: u32 = 1_800_000_000;
pub const MEDIA_PROCESSOR: &str = "mp1.media.pstnhub.microsoft.com";

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
    pub tick: Duration,
    /// The longest a scenario may run, in simulated time.
    pub duration: Duration,
    /// Audio frames each far end sends per call (20 ms each); the default
    /// keeps them talking until the call ends.
    pub media_frames: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            seed: 1,
            sbc_fqdn: SBC_FQDN.into(),
            phones: vec!["+4930123456".into(), "+4930654321".into()],
            teams_users: vec![
                TeamsUser {
                    number: "+4989000001".into(),
                    name: "Alice".into(),
                },
                TeamsUser {
                    number: "+4989000002".into(),
                    name: "Bob".into(),
                },
            ],
            latency: Duration::from_millis(10),
            tick: Duration::from_millis(1),
            duration: Duration::from_secs(3600),
            media_frames: 100_000,
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

/// A receiver handed to a host closure on its first start.
type Once<T> = Arc<Mutex<Option<mpsc::UnboundedReceiver<T>>>>;

fn once<T>() -> (mpsc::UnboundedSender<T>, Once<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, Arc::new(Mutex::new(Some(rx))))
}

fn take<T>(o: &Once<T>) -> mpsc::UnboundedReceiver<T> {
    // A restarted host gets a closed channel: it keeps serving SIP without commands.
    o.lock()
        .ok()
        .and_then(|mut g| g.take())
        .unwrap_or_else(|| mpsc::unbounded_channel().1)
}

pub struct Lab {
    pub config: LabConfig,
    pub sim: turmoil::Sim<'static>,
    pub recorder: Recorder,
    pub hub: Arc<Mutex<HubView>>,
    pub carrier: Arc<Mutex<CarrierView>>,
    pub sbc: Arc<Mutex<SbcView>>,
    pub hub_commands: mpsc::UnboundedSender<HubCommand>,
    pub carrier_commands: mpsc::UnboundedSender<CarrierCommand>,
    /// The scripted client with the SBC's certificate.
    pub tester: Arc<Mutex<TesterView>>,
    pub tester_commands: mpsc::UnboundedSender<TesterCommand>,
    /// Host names in ladder order.
    pub hosts: Vec<String>,
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

pub fn phone_host(number: &str) -> String {
    format!("phone-{}.{CARRIER}", number.trim_start_matches('+'))
}

impl Lab {
    pub fn new(config: LabConfig) -> Result<Lab, LabError> {
        let err = |e: &dyn std::fmt::Display| LabError(e.to_string());
        let pki = TestPki::new().map_err(|e| err(&e))?;
        let root = roots(&[pki.root()]).map_err(|e| err(&e))?;
        let hub_id = pki.hub().map_err(|e| err(&e))?;
        let sbc_id = pki.good(&[config.sbc_fqdn.as_str()]).map_err(|e| err(&e))?;
        let hub_server = server_config(&hub_id, root.clone()).map_err(|e| err(&e))?;
        let hub_client = client_config(&hub_id, root.clone()).map_err(|e| err(&e))?;
        let sbc_server = server_config(&sbc_id, root.clone()).map_err(|e| err(&e))?;
        let sbc_client = client_config(&sbc_id, root.clone()).map_err(|e| err(&e))?;
        let tester_client = client_config(&sbc_id, root).map_err(|e| err(&e))?;

        let mut sim = turmoil::Builder::new()
            .rng_seed(config.seed)
            .epoch(std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS.into()))
            .simulation_duration(config.duration)
            .tick_duration(config.tick)
            .min_message_latency(config.latency)
            .max_message_latency(config.latency)
            .udp_capacity(4096)
            .build();

        let recorder = Recorder::default();
        let tap: Arc<dyn Tap> = Arc::new(recorder.clone());
        let tenant = Tenant {
            sbcs: vec![config.sbc_fqdn.clone()],
            sbc_port: 5061,
            users: config.teams_users.clone(),
        };
        let hub_view = Arc::new(Mutex::new(HubView::new(&tenant)));
        let carrier_view = Arc::new(Mutex::new(CarrierView::default()));
        let sbc_view = Arc::new(Mutex::new(SbcView::default()));
        let mut hosts = Vec::new();

        // The SBC.
        let sbc_config = SbcConfig {
            fqdn: config.sbc_fqdn.clone(),
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            advertised_ip: None,
            carrier_host: CARRIER.into(),
            carrier_port: 5060,
            country_code: "49".into(),
            carrier_listen_port: 5060,
            hub_fqdns: HUB_FQDNS.iter().map(|s| s.to_string()).collect(),
            hub_port: 5061,
            tls_listen_port: 5061,
            tls_server: sbc_server,
            tls_client: sbc_client,
            options_interval: Duration::from_secs(60),
            media_port_base: 40000,
            seed: config.seed,
        };
        {
            let (view, tap) = (sbc_view.clone(), tap.clone());
            sim.host(config.sbc_fqdn.as_str(), move || {
                let (c, v, t) = (sbc_config.clone(), view.clone(), tap.clone());
                async move { Ok(run_sbc(TurmoilNet, c, v, Some(t)).await?) }
            });
            hosts.push(config.sbc_fqdn.clone());
        }

        // The hub: three proxies sharing one view, one media processor.
        let (mp_tx, mp_rx) = once::<ProbeOpen>();
        let (hub_tx, hub_rx) = once::<HubCommand>();
        for (i, fqdn) in HUB_FQDNS.iter().enumerate() {
            let fqdn = fqdn.to_string();
            let internal = format!("sip-du-{}-eu.pstnhub.microsoft.com", ["a", "b", "c"][i]);
            let (view, tap, tenant) = (hub_view.clone(), tap.clone(), tenant.clone());
            let (server, client, media) = (hub_server.clone(), hub_client.clone(), mp_tx.clone());
            let commands = if i == 0 { Some(hub_rx.clone()) } else { None };
            let seed = config.seed;
            let frames = config.media_frames;
            let name = fqdn.clone();
            sim.host(name.as_str(), move || {
                let hc = HubConfig {
                    fqdn: fqdn.clone(),
                    listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    listen_port: 5061,
                    advertised_ip: None,
                    internal_name: internal.clone(),
                    tenant: tenant.clone(),
                    tls_server: server.clone(),
                    tls_client: client.clone(),
                    media_host: MEDIA_PROCESSOR.into(),
                    media: media.clone(),
                    media_frames: frames,
                    forks: 2,
                    early_media: true,
                    ring_delay: Duration::from_millis(500),
                    answer_delay: Duration::from_secs(2),
                    no_ack_timeout: Duration::from_secs(4),
                    options_interval: Duration::from_secs(60),
                    seed,
                };
                let rx = commands
                    .as_ref()
                    .map(take)
                    .unwrap_or_else(|| mpsc::unbounded_channel().1);
                let (v, t) = (view.clone(), tap.clone());
                async move { Ok(run_proxy(TurmoilNet, hc, v, rx, Some(t)).await?) }
            });
            hosts.push(name);
        }
        sim.host(MEDIA_PROCESSOR, move || {
            let rx = take(&mp_rx);
            async move { Ok(media_host(TurmoilNet, rx).await?) }
        });
        hosts.push(MEDIA_PROCESSOR.into());

        // The carrier and its phones.
        let mut phones = Vec::new();
        let mut phone_hosts = Vec::new();
        for number in &config.phones {
            let (tx, rx) = once::<ProbeOpen>();
            let host = phone_host(number);
            phones.push(Phone {
                number: number.clone(),
                media_host: host.clone(),
                media: tx,
            });
            sim.host(host.as_str(), move || {
                let rx = take(&rx);
                async move { Ok(media_host(TurmoilNet, rx).await?) }
            });
            phone_hosts.push(host);
        }
        let carrier_config = CarrierConfig {
            fqdn: CARRIER.into(),
            listen_port: 5060,
            sbc_host: config.sbc_fqdn.clone(),
            sbc_port: 5060,
            country_code: "49".into(),
            phones,
            ring_delay: Duration::from_millis(500),
            answer_delay: Duration::from_secs(2),
            media_frames: config.media_frames,
            seed: config.seed,
        };
        let (carrier_tx, carrier_rx) = once::<CarrierCommand>();
        {
            let (view, tap) = (carrier_view.clone(), tap.clone());
            sim.host(CARRIER, move || {
                let (c, v, t) = (carrier_config.clone(), view.clone(), tap.clone());
                let rx = take(&carrier_rx);
                async move { Ok(run_trunk(TurmoilNet, c, v, rx, Some(t)).await?) }
            });
        }
        // Registered last so that adding it moved no other host's address.
        let tester_view = Arc::new(Mutex::new(TesterView::default()));
        let (tester_tx, tester_rx) = once::<TesterCommand>();
        {
            let (view, tap) = (tester_view.clone(), tap.clone());
            sim.host(TESTER, move || {
                let (v, t, c) = (view.clone(), tap.clone(), tester_client.clone());
                let rx = take(&tester_rx);
                async move { Ok(run_tester(TurmoilNet, c, rx, v, Some(t)).await?) }
            });
        }
        let mut ordered = vec![CARRIER.to_string()];
        ordered.extend(phone_hosts);
        ordered.extend(hosts);
        ordered.push(TESTER.into());
        Ok(Lab {
            config,
            sim,
            recorder,
            hub: hub_view,
            carrier: carrier_view,
            sbc: sbc_view,
            hub_commands: hub_tx,
            carrier_commands: carrier_tx,
            tester: tester_view,
            tester_commands: tester_tx,
            hosts: ordered,
        })
    }

    /// Simulated time since the world started.
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
        let until = self.now() + limit;
        while self.now() < until {
            if done(self) {
                return Ok(true);
            }
            self.sim
                .step()
                .map_err(|e| LabError(format!("simulation stopped: {e}")))?;
        }
        Ok(done(self))
    }

    /// Host names for a party as steps name it: `the SBC`, `the hub` (its
    /// three proxies), `the carrier`, `the media processor`, or a host name.
    pub fn party(&self, name: &str) -> Result<Vec<String>, LabError> {
        let hosts: Vec<String> = match name {
            "the SBC" => vec![self.config.sbc_fqdn.clone()],
            "the hub" => HUB_FQDNS.iter().map(|s| s.to_string()).collect(),
            "the carrier" => vec![CARRIER.into()],
            "the media processor" => vec![MEDIA_PROCESSOR.into()],
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

    /// Fix the one-way latency between two parties (both directions).
    pub fn set_latency(&mut self, a: &str, b: &str, latency: Duration) -> Result<(), LabError> {
        for x in self.party(a)? {
            for y in self.party(b)? {
                self.sim.set_link_latency(x.as_str(), y.as_str(), latency);
            }
        }
        Ok(())
    }

    /// Let `d` of simulated time pass.
    pub fn run_for(&mut self, d: Duration) -> Result<(), LabError> {
        self.run_until(d, |_| false).map(|_| ())
    }

    /// The address → name map of every host, for traces.
    pub fn names(&self) -> Vec<(IpAddr, String)> {
        self.hosts
            .iter()
            .map(|h| (self.sim_lookup(h), h.clone()))
            .collect()
    }

    fn sim_lookup(&self, host: &str) -> IpAddr {
        self.sim.lookup(host)
    }
}
