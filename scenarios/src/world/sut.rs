//! The system under test: the SBC between the carrier and the hub. Steps
//! speak of "the SBC" and never of which one it is; the world asks it only
//! to install itself and to say what state it holds.

use crate::world::topology::{once, take, Once};
use sbc::b2bua::{run_sbc_sharded, SbcCommand, SbcConfig, SbcView};
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::{Impairments, Tap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an SBC holds, for the no-state-left check. `None` where the SBC
/// cannot be asked (an external box).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SutState {
    pub calls: usize,
    pub sessions: usize,
    pub transactions: usize,
    pub media_ports: usize,
    pub relays_open: usize,
}

/// An SBC a world can install on its host.
pub trait SystemUnderTest {
    // The defaults are an SBC the lab does not control (a process, a box
    // of the user's): no simulated host, nothing it can be asked.

    /// Register the SBC's host(s) as `fqdn` in `sim`. (A world with a
    /// real-socket SBC has no simulation: see [`crate::world::real`].)
    fn install(&self, _sim: &mut turmoil::Sim<'static>, _ctx: &SutContext) {}
    /// What it holds now, if it can say.
    fn state(&self) -> Option<SutState> {
        None
    }
    /// The reference SBC's view, for failure reports.
    fn view(&self) -> Option<Arc<Mutex<SbcView>>> {
        None
    }
    /// Change a setting while it runs (a deliberately misconfigured SBC).
    /// An SBC the lab does not control says it cannot.
    fn set(&self, _setting: SbcCommand) -> Result<(), String> {
        Err(crate::world::real::sim_only(
            "changing the SBC's settings mid-scenario",
        ))
    }
    /// Start (or find) the SBC of a real-socket lab, before its parties
    /// start; `files` are the certificate and key the lab minted for it.
    fn start(
        &self,
        _ctx: &SutContext,
        _lab: &crate::world::real::RealLab,
        _files: &crate::world::SbcFiles,
    ) -> Result<(), String> {
        Err("this SBC runs only in the simulated world".into())
    }
}

/// What an SBC needs from the world it is put in.
pub struct SutContext {
    pub fqdn: String,
    pub tls_server: Arc<rustls::ServerConfig>,
    pub tls_client: Arc<rustls::ClientConfig>,
    pub carrier_host: String,
    pub carrier_port: u16,
    pub seed: u64,
    /// Records the SIP the SBC sends and receives.
    pub tap: Arc<dyn Tap>,
    /// Records the media the SBC sends (see [`sbc::sip::transport::MediaTapNet`]).
    pub media_tap: Arc<dyn Tap>,
    /// What the world's links do to datagrams.
    pub impairments: Impairments,
    /// The tenant's gateway for the SBC has MediaBypass on.
    pub media_bypass: bool,
    /// The SBC registers with the carrier (a registration trunk).
    pub registration: Option<sbc::b2bua::register::RegistrationConfig>,
    /// How the carrier writes numbers.
    pub number_rules: sbc::b2bua::numbers::NumberRules,
    /// Further carrier gateways (routes), `host:port`.
    pub carrier_gateways: Vec<String>,
    /// Hosts besides the carrier that may send the SBC calls (the
    /// scripted tester, standing where a carrier gateway stands).
    pub carrier_sources: Vec<String>,
    /// What the SBC admits (calls, rates).
    pub limits: sbc::b2bua::Limits,
    /// The SBC's SIP cores (`sbc --shards`).
    pub shards: usize,
}

/// drlab's own SBC, run in simulation.
pub struct ReferenceSbc {
    view: Arc<Mutex<SbcView>>,
    commands: tokio::sync::mpsc::UnboundedSender<SbcCommand>,
    receiver: Once<SbcCommand>,
}

impl Default for ReferenceSbc {
    fn default() -> Self {
        let (commands, receiver) = once();
        ReferenceSbc {
            view: Arc::default(),
            commands,
            receiver,
        }
    }
}

impl SystemUnderTest for ReferenceSbc {
    fn install(&self, sim: &mut turmoil::Sim<'static>, ctx: &SutContext) {
        let config = SbcConfig {
            fqdn: ctx.fqdn.clone(),
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            advertised_ip: None,
            carrier_host: ctx.carrier_host.clone(),
            carrier_port: ctx.carrier_port,
            country_code: "49".into(),
            carrier_listen_port: 5060,
            hub_fqdns: HUB_FQDNS.iter().map(|s| s.to_string()).collect(),
            hub_port: 5061,
            tls_listen_port: 5061,
            tls_server: ctx.tls_server.clone(),
            tls_client: ctx.tls_client.clone(),
            options_interval: Duration::from_secs(60),
            media_ports: 40000..=40999,
            max_ringing: Duration::from_secs(180),
            transfers: Default::default(),
            forward_identity: true,
            forward_history: true,
            session_refresh: Default::default(),
            media_bypass: ctx.media_bypass,
            media_timeout: Some(Duration::from_secs(60)),
            registration: ctx.registration.clone(),
            carrier_gateways: ctx.carrier_gateways.clone(),
            carrier_sources: ctx.carrier_sources.clone(),
            number_rules: ctx.number_rules.clone(),
            limits: ctx.limits.clone(),
            timers: Default::default(),
            seed: ctx.seed,
        };
        let (view, tap, rx) = (self.view.clone(), ctx.tap.clone(), self.receiver.clone());
        let (host, media_tap) = (ctx.fqdn.clone(), ctx.media_tap.clone());
        let impairments = ctx.impairments.clone();
        let shards = ctx.shards;
        // Each start of the host (turmoil's bounce is a restart) draws from
        // its own stream: a restarted SBC must not send the Call-IDs,
        // tags and branches it sent before (RFC 3261 §8.1.1.7, §17.1.3).
        let boots = Arc::new(std::sync::atomic::AtomicU64::new(0));
        sim.host(ctx.fqdn.as_str(), move || {
            let (mut c, v, t) = (config.clone(), view.clone(), tap.clone());
            let boot = boots.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if boot > 0 {
                c.seed ^= sbc::sip::rng::fnv1a(format!("boot {boot}").as_bytes());
            }
            let commands = take(&rx);
            let net = crate::world::topology::host_net(
                sbc::sip::transport::TurmoilNet,
                &host,
                &media_tap,
                &impairments,
            );
            async move { Ok(run_sbc_sharded(net, c, v, commands, Some(t), shards).await?) }
        });
    }

    fn state(&self) -> Option<SutState> {
        let v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        Some(SutState {
            calls: v.live_calls,
            sessions: v.ua.sessions,
            transactions: v.ua.transactions,
            media_ports: v.media_ports,
            relays_open: v.relays_open,
        })
    }

    fn view(&self) -> Option<Arc<Mutex<SbcView>>> {
        Some(self.view.clone())
    }

    fn set(&self, setting: SbcCommand) -> Result<(), String> {
        self.commands.send(setting).map_err(|e| e.to_string())
    }
}

/// The reference `sbc` binary, started as a process of its own for each
/// scenario of a real-socket lab (`drlab certify --target process`): a
/// real SBC on real sockets, judged only by what its peers receive.
pub struct ProcessSbc {
    program: std::path::PathBuf,
    child: Mutex<Option<std::process::Child>>,
}

impl ProcessSbc {
    pub fn new(program: std::path::PathBuf) -> ProcessSbc {
        ProcessSbc {
            program,
            child: Mutex::new(None),
        }
    }

    /// The configuration the lab gives it: the reference world's settings
    /// (sut.rs, [`ReferenceSbc`]) in the binary's file format.
    fn config(ctx: &SutContext, lab: &crate::world::real::RealLab, plan: &str) -> String {
        let sources: Vec<String> = ctx
            .carrier_sources
            .iter()
            .map(|s| format!("{s:?}"))
            .collect();
        format!(
            "# Written by drlab certify --target process for one scenario.\n\
             fqdn = {fqdn:?}\n\
             media_ip = \"{ip}\"\n\
             listen_ip = \"{ip}\"\n\
             media_port_min = 40000\n\
             media_port_max = 40999\n\
             seed = {seed}\n\
             media_timeout_secs = 60\n\
             [carrier]\n\
             host = {carrier:?}\n\
             port = {carrier_port}\n\
             listen_port = {listen}\n\
             country_code = \"49\"\n\
             sources = [{sources}]\n\
             [hub]\n\
             listen_port = {tls}\n\
             [tls]\n\
             certificate = \"sbc.pem\"\n\
             key = \"sbc.key\"\n\
             trust = \"ca.pem\"\n\
             [hosts]\n{plan}",
            fqdn = ctx.fqdn,
            ip = lab.sbc_ip,
            seed = ctx.seed,
            carrier = ctx.carrier_host,
            carrier_port = ctx.carrier_port,
            listen = lab.sbc_carrier_port,
            sources = sources.join(", "),
            tls = lab.sbc_tls_port,
        )
    }
}

impl SystemUnderTest for ProcessSbc {
    fn start(
        &self,
        ctx: &SutContext,
        lab: &crate::world::real::RealLab,
        files: &crate::world::SbcFiles,
    ) -> Result<(), String> {
        let dir = lab.dir.join("sbc");
        let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", dir.display());
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", e))?;
        let plan: String = lab
            .plan(&ctx.fqdn, &[])
            .iter()
            .filter(|(name, _)| **name != ctx.fqdn)
            .map(|(name, ip)| format!("{name:?} = \"{ip}\"\n"))
            .collect();
        for (name, text) in [
            ("sbc.pem", files.certificate.as_str()),
            ("sbc.key", files.key.as_str()),
            ("ca.pem", files.trust.as_str()),
            ("sbc.toml", Self::config(ctx, lab, &plan).as_str()),
        ] {
            std::fs::write(dir.join(name), text)
                .map_err(|e| io(&format!("cannot write {name} in"), e))?;
        }
        // A stale sbc (a killed run's) would answer for the new one.
        let tls = std::net::SocketAddr::new(lab.sbc_ip, lab.sbc_tls_port);
        let udp = std::net::SocketAddr::new(lab.sbc_ip, lab.sbc_carrier_port);
        std::net::TcpListener::bind(tls)
            .map(drop)
            .and_then(|_| std::net::UdpSocket::bind(udp).map(drop))
            .map_err(|e| {
                format!("the SBC's ports are not free ({tls} TCP, {udp} UDP: {e}); is an sbc from an earlier run still running?")
            })?;
        let log = std::fs::File::create(dir.join("sbc.log")).map_err(|e| io("cannot log in", e))?;
        let err = log.try_clone().map_err(|e| io("cannot log in", e))?;
        let child = std::process::Command::new(&self.program)
            .arg("--config")
            .arg(dir.join("sbc.toml"))
            .arg("--trace")
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let mut slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let child = slot.insert(child);
        let tail = || {
            let log = std::fs::read_to_string(dir.join("sbc.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        };
        // Until it listens, or it exits (a bad configuration, a port
        // taken meanwhile), at most 10 s.
        let started = crate::world::real::wall_clock();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the sbc process exited ({status}) before it listened:\n{}",
                    tail()
                ));
            }
            // Bound, not connected to: the SBC logs no aborted handshake.
            match crate::world::real::wait_for_local_listener(tls, Duration::from_millis(20)) {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() >= Duration::from_secs(10) => {
                    return Err(format!(
                        "the sbc process did not listen within 10 s: {e}\n{}",
                        tail()
                    ))
                }
                Err(_) => {}
            }
        }
    }
}

impl Drop for ProcessSbc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An SBC the user runs (`drlab certify --target external`): the lab
/// only checks that it listens where the lab file says.
pub struct ExternalSbc;

impl SystemUnderTest for ExternalSbc {
    fn start(
        &self,
        ctx: &SutContext,
        lab: &crate::world::real::RealLab,
        files: &crate::world::SbcFiles,
    ) -> Result<(), String> {
        // The lab's CA, and a certificate for the SBC's FQDN from it, for
        // the user to install once: written only where absent. Every run
        // mints its chain from the same keys and names, so what was
        // installed keeps verifying (docs/external-sbc.md).
        let dir = &lab.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let fqdn = ctx.fqdn.to_ascii_lowercase();
        for (name, text) in [
            ("ca.pem".to_string(), files.trust.as_str()),
            (format!("{fqdn}.pem"), files.certificate.as_str()),
            (format!("{fqdn}.key"), files.key.as_str()),
        ] {
            let path = dir.join(&name);
            if !path.exists() {
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        let addr = std::net::SocketAddr::new(lab.sbc_ip, lab.sbc_tls_port);
        crate::world::real::wait_for_listener(addr, Duration::from_secs(5)).map_err(|e| {
            format!(
                "{} (the lab file's sbc address for {}): is the SBC running?",
                e, ctx.fqdn
            )
        })
    }
}
