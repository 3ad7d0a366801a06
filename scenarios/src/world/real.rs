//! The real-socket lab: the same parties as the simulated world (the
//! hub's three proxies and media processor, the carrier trunk and its
//! phones, the scripted tester), each on an address of its own on this
//! machine, in wall-clock time, around an SBC the lab does not simulate
//! (`drlab certify --target process|external`, docs/external-sbc.md).
//!
//! The parties run on one thread of their own, so they answer the SBC
//! while a step reads their views; the steps poll what they wait for.

use super::topology::{Place, RoleResult};
use futures::future::LocalBoxFuture;
use sbc::sip::transport::tap::Direction;
use sbc::sip::transport::{Tap, TokioNet, TraceEvent};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The addresses the SBC was seen sending from.
pub type Seen = Arc<Mutex<std::collections::BTreeSet<IpAddr>>>;

type Role = Box<dyn FnOnce(TokioNet) -> LocalBoxFuture<'static, RoleResult> + Send>;

/// Where a real-socket lab's parties live and where its SBC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealLab {
    /// The lab's parties take `a.b.c.1` (sip), `.2` (sip2), `.3` (sip3),
    /// `.4` (media processor), `.5` (carrier), `.6` (tester), `.11`... (one
    /// per PSTN phone) of this /24.
    pub net: Ipv4Addr,
    /// The SBC's address (its FQDN resolves to it for the lab's parties).
    pub sbc_ip: IpAddr,
    /// The SBC's TLS port toward the hub (its SipSignalingPort).
    pub sbc_tls_port: u16,
    /// The SBC's SIP port toward the carrier (UDP).
    pub sbc_carrier_port: u16,
    /// Where the lab writes its certificates (and the process target its
    /// configuration).
    pub dir: std::path::PathBuf,
    /// How long a step waits at most, as a multiple of the simulated
    /// world's limits (1: the same). Real peers are slower than a
    /// simulation's instant hosts; a lab file can give them more time.
    pub time_scale: u32,
}

impl RealLab {
    /// The lab of `--target process`: 127.0.4.0/24, the SBC on .10.
    pub fn loopback(dir: std::path::PathBuf) -> RealLab {
        RealLab {
            net: Ipv4Addr::new(127, 0, 4, 0),
            sbc_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 4, 10)),
            sbc_tls_port: 5061,
            sbc_carrier_port: 5060,
            dir,
            time_scale: 1,
        }
    }

    fn at(&self, last: u8) -> IpAddr {
        let [a, b, c, _] = self.net.octets();
        IpAddr::V4(Ipv4Addr::new(a, b, c, last))
    }

    /// Every party's address: the fixed ones, then the phones in order.
    pub fn plan(&self, sbc_fqdn: &str, phones: &[String]) -> BTreeMap<String, IpAddr> {
        let mut plan = BTreeMap::new();
        for (i, fqdn) in sbc::direct_routing::HUB_FQDNS.iter().enumerate() {
            plan.insert(fqdn.to_string(), self.at(1 + i as u8));
        }
        plan.insert(super::MEDIA_PROCESSOR.into(), self.at(4));
        plan.insert(super::CARRIER.into(), self.at(5));
        plan.insert(crate::tester::TESTER.into(), self.at(6));
        for (i, number) in phones.iter().enumerate() {
            plan.insert(super::phone_host(number), self.at(11 + i as u8));
        }
        plan.insert(sbc_fqdn.to_ascii_lowercase(), self.sbc_ip);
        plan
    }
}

/// The parties of a real lab, collected before it starts.
pub struct RealHosts {
    plan: BTreeMap<String, IpAddr>,
    roles: Vec<(String, Role)>,
}

impl RealHosts {
    pub fn new(plan: BTreeMap<String, IpAddr>) -> RealHosts {
        RealHosts {
            plan,
            roles: Vec::new(),
        }
    }

    /// Bind, then free, every address a party listens on, so that a busy
    /// port is an error naming it (another lab, a stray process) rather
    /// than a role that fails later.
    pub fn check_free(&self, listens: &[(String, u16, bool)]) -> Result<(), String> {
        let mut busy = Vec::new();
        for (host, port, tcp) in listens {
            let Some(ip) = self.plan.get(host) else {
                continue;
            };
            let addr = SocketAddr::new(*ip, *port);
            let result = if *tcp {
                std::net::TcpListener::bind(addr).map(drop)
            } else {
                std::net::UdpSocket::bind(addr).map(drop)
            };
            if let Err(e) = result {
                let kind = if *tcp { "TCP" } else { "UDP" };
                busy.push(format!("{host} cannot listen on {kind} {addr}: {e}"));
            }
        }
        match busy.is_empty() {
            true => Ok(()),
            false => Err(busy.join("; ")),
        }
    }

    /// Start every party on a thread of its own.
    pub fn start(self, origin: Instant, seen: Seen) -> Result<RealWorld, String> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (plan, roles, f) = (self.plan.clone(), self.roles, failures.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the lab's runtime: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("drlab-lab".into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    for (name, role) in roles {
                        let mut net = TokioNet::with_hosts(plan.clone()).counting_from(origin);
                        if let Some(ip) = plan.get(&name) {
                            net = net.connecting_from(*ip);
                        }
                        let f = f.clone();
                        tokio::task::spawn_local(async move {
                            if let Err(e) = role(net).await {
                                if let Ok(mut f) = f.lock() {
                                    f.push(format!("{name}: {e}"));
                                }
                            }
                        });
                    }
                    let _ = stopped.await;
                });
                // The runtime goes with the thread: every task and socket
                // of the lab is dropped here.
            })
            .map_err(|e| format!("cannot start the lab's thread: {e}"))?;
        Ok(RealWorld {
            origin,
            started_unix: unix_now(),
            seen,
            plan: self.plan,
            stop: Some(stop),
            thread: Some(thread),
            failures,
        })
    }
}

impl Place for RealHosts {
    type Net = TokioNet;
    fn host<F, Fut>(&mut self, name: &str, role: F)
    where
        F: Fn(TokioNet) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = RoleResult> + 'static,
    {
        let role: Role = Box::new(move |net| Box::pin(role(net)));
        self.roles.push((name.to_string(), role));
    }
    fn listen_ip(&self, name: &str) -> IpAddr {
        // Every party the topology installs has a planned address.
        self.plan
            .get(name)
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

/// A running real lab.
pub struct RealWorld {
    origin: Instant,
    /// The Unix second the lab started at, for pcap timestamps.
    started_unix: u32,
    /// Addresses the SBC was seen at (see [`MirrorTap`]).
    seen: Seen,
    plan: BTreeMap<String, IpAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl RealWorld {
    /// The Unix second the lab started at.
    pub fn started_unix(&self) -> u32 {
        self.started_unix
    }

    /// Wall-clock time since the lab started.
    pub fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn lookup(&self, host: &str) -> Option<IpAddr> {
        self.plan.get(&host.to_ascii_lowercase()).copied()
    }

    /// The addresses the SBC sent from that are not its listening one.
    pub fn foreign(&self) -> Vec<IpAddr> {
        let sbc = self
            .plan
            .values()
            .copied()
            .collect::<std::collections::BTreeSet<_>>();
        self.seen
            .lock()
            .map(|s| s.iter().filter(|ip| !sbc.contains(ip)).copied().collect())
            .unwrap_or_default()
    }

    /// The first party that stopped with an error, if one did.
    pub fn failure(&self) -> Option<String> {
        self.failures.lock().ok().and_then(|f| f.first().cloned())
    }
}

impl Drop for RealWorld {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Records, for an SBC that keeps no trace of its own, what the lab's
/// parties received from it as sent by it: the trace then has the SBC's
/// messages as its peers saw them (a datagram it sent and the network
/// lost is not in it). What comes from an address of no party of the lab
/// is the SBC's: it may connect from another address than it listens on.
pub struct MirrorTap {
    inner: Arc<dyn Tap>,
    parties: std::collections::BTreeSet<IpAddr>,
    sbc_name: String,
    /// The addresses the SBC was seen at, for the ladder's names.
    foreign: Seen,
}

impl MirrorTap {
    pub fn new(
        inner: Arc<dyn Tap>,
        plan: BTreeMap<String, IpAddr>,
        sbc_fqdn: &str,
        foreign: Seen,
    ) -> MirrorTap {
        let sbc = sbc_fqdn.to_ascii_lowercase();
        MirrorTap {
            inner,
            parties: plan
                .into_iter()
                .filter(|(name, _)| *name != sbc)
                .map(|(_, ip)| ip)
                .collect(),
            sbc_name: sbc_fqdn.to_string(),
            foreign,
        }
    }
}

impl Tap for MirrorTap {
    fn record(&self, event: TraceEvent) {
        let ip = event.remote.ip();
        if event.direction == Direction::Received && !self.parties.contains(&ip) {
            if let Ok(mut f) = self.foreign.lock() {
                f.insert(ip);
            }
            self.inner.record(TraceEvent {
                at: event.at,
                host: self.sbc_name.clone(),
                direction: Direction::Sent,
                local: event.remote,
                remote: event.local,
                transport: event.transport,
                raw: event.raw.clone(),
            });
        }
        self.inner.record(event);
    }
}

/// Wait until something on this machine listens on `addr` (TCP), at most
/// `limit`, read from the kernel's socket table (/proc/net/tcp) so the
/// listener sees nothing: a connect would be an aborted handshake in the
/// hub's log, and a bind could take the port from under a starting
/// listener. Elsewhere than Linux: a connect.
pub fn wait_for_local_listener(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let origin = wall_clock();
    loop {
        let listening = match std::fs::read_to_string("/proc/net/tcp") {
            Ok(table) => listens(&table, addr),
            Err(_) => {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }
        };
        if listening {
            return Ok(());
        }
        if origin.elapsed() >= limit {
            return Err(format!(
                "nothing listens on {addr} after {} ms",
                limit.as_millis()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether /proc/net/tcp text has a socket in LISTEN (state 0A) on
/// `addr`, or on the wildcard at its port. Addresses there are the IPv4
/// bytes in host order as hex, then the port: `0100007F:13C5`.
fn listens(table: &str, addr: SocketAddr) -> bool {
    let IpAddr::V4(ip) = addr.ip() else {
        return false;
    };
    let hex = |ip: Ipv4Addr| {
        format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        )
    };
    let (exact, any) = (hex(ip), hex(Ipv4Addr::UNSPECIFIED));
    table.lines().skip(1).any(|line| {
        let mut cols = line.split_whitespace().skip(1);
        let (local, state) = (cols.next(), cols.nth(1));
        state == Some("0A") && local.is_some_and(|l| l == exact || l == any)
    })
}

/// Wait until something listens on `addr` (TCP), at most `limit`.
pub fn wait_for_listener(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let origin = wall_clock();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if origin.elapsed() >= limit => {
                return Err(format!(
                    "nothing listens on {addr} after {} s: {e}",
                    limit.as_secs()
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Used by the world; says why a step cannot run in a real lab.
pub fn sim_only(what: &str) -> String {
    format!(
        "{what} needs the simulated world (it controls the network, the clock \
         or the SBC's insides); it cannot run against a real-socket SBC"
    )
}

/// The wall clock's Unix second (a real lab's pcaps carry real dates).
#[allow(clippy::disallowed_methods)]
fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or_default()
}

/// Make clippy's clock rule explicit for this module: a real lab runs on
/// the wall clock by definition.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> Instant {
    Instant::now()
}

/// A lab file (`drlab certify --target external --lab lab.toml`): where
/// the lab's parties live and where the user's SBC is. See
/// docs/external-sbc.md and docs/examples/lab.toml.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabFile {
    #[serde(default)]
    lab: LabSection,
    sbc: SbcSection,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LabSection {
    /// The /24 the lab's parties take addresses in (default 127.0.4.0).
    network: Option<Ipv4Addr>,
    /// Where the lab writes its CA and certificates (relative to the
    /// file; default `drlab-lab` beside it).
    dir: Option<std::path::PathBuf>,
    /// Every wait of a step, times this (default 1).
    time_scale: Option<u32>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SbcSection {
    /// The FQDN the SBC is paired with the tenant as (its certificate's).
    fqdn: String,
    /// The address the lab reaches it on (its FQDN resolves to it).
    address: IpAddr,
    #[serde(default = "default_tls_port")]
    tls_port: u16,
    #[serde(default = "default_carrier_port")]
    carrier_port: u16,
}

fn default_tls_port() -> u16 {
    5061
}

fn default_carrier_port() -> u16 {
    5060
}

/// Read a lab file: the lab and the SBC's FQDN, or the file, line, key
/// and reason of what is wrong.
pub fn load_lab(path: &std::path::Path) -> Result<(RealLab, String), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let file: LabFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .and_then(|s| text.get(..s.start))
            .map(|before| before.matches('\n').count() + 1);
        let place = line.map(|l| format!(":{l}")).unwrap_or_default();
        format!("{}{place}: {}", path.display(), e.message())
    })?;
    let base = path.parent().unwrap_or(std::path::Path::new("."));
    let net = file.lab.network.unwrap_or(Ipv4Addr::new(127, 0, 4, 0));
    let bad = |key: &str, reason: String| format!("{}: {key}: {reason}", path.display());
    if !file.sbc.address.is_ipv4() {
        return Err(bad(
            "sbc.address",
            format!("{}: the lab's parties speak IPv4 only", file.sbc.address),
        ));
    }
    if net.octets()[3] != 0 {
        return Err(bad(
            "lab.network",
            format!("{net} is no /24 network (its last number must be 0)"),
        ));
    }
    let lab = RealLab {
        net,
        sbc_ip: file.sbc.address,
        sbc_tls_port: file.sbc.tls_port,
        sbc_carrier_port: file.sbc.carrier_port,
        dir: base.join(file.lab.dir.unwrap_or_else(|| "drlab-lab".into())),
        time_scale: file.lab.time_scale.unwrap_or(1),
    };
    if lab.time_scale == 0 {
        return Err(bad("lab.time_scale", "must be 1 or more".into()));
    }
    let taken = lab.plan(&file.sbc.fqdn, &super::LabConfig::default().phones);
    if let Some((name, _)) = taken
        .iter()
        .find(|(n, ip)| **ip == lab.sbc_ip && **n != file.sbc.fqdn.to_ascii_lowercase())
    {
        return Err(bad(
            "sbc.address",
            format!(
                "{} is the lab's address for {name}; give the SBC another",
                lab.sbc_ip
            ),
        ));
    }
    if file.sbc.fqdn.is_empty() || !file.sbc.fqdn.contains('.') {
        return Err(bad(
            "sbc.fqdn",
            format!("{:?} is no FQDN (sbc.example.com)", file.sbc.fqdn),
        ));
    }
    Ok((lab, file.sbc.fqdn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_file(text: &str) -> Result<(RealLab, String), String> {
        let dir = std::env::temp_dir().join(format!("drlab-labfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("lab.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let got = load_lab(&path);
        let _ = std::fs::remove_dir_all(&dir);
        got.map_err(|e| e.replace(&path.display().to_string(), "lab.toml"))
    }

    #[test]
    fn a_lab_file_gives_the_lab_and_says_what_is_wrong_where() {
        let (lab, fqdn) = lab_file(
            "[lab]\nnetwork = \"127.0.6.0\"\ntime_scale = 3\n\
             [sbc]\nfqdn = \"sbc.contoso.com\"\naddress = \"127.0.6.10\"\n",
        )
        .unwrap();
        assert_eq!(fqdn, "sbc.contoso.com");
        assert_eq!(
            (lab.sbc_tls_port, lab.sbc_carrier_port, lab.time_scale),
            (5061, 5060, 3)
        );
        let plan = lab.plan(&fqdn, &["+4930123456".into()]);
        assert_eq!(plan["sip2.pstnhub.microsoft.com"].to_string(), "127.0.6.2");
        assert_eq!(
            plan["phone-4930123456.carrier.example.net"].to_string(),
            "127.0.6.11"
        );
        assert_eq!(plan["sbc.contoso.com"].to_string(), "127.0.6.10");

        let e =
            lab_file("[sbc]\nfqdn = \"sbc.contoso.com\"\naddres = \"127.0.6.10\"\n").unwrap_err();
        assert!(e.starts_with("lab.toml:3: unknown field `addres`"), "{e}");
        let e = lab_file("[sbc]\nfqdn = \"s.c\"\naddress = \"127.0.4.1\"\n").unwrap_err();
        assert!(
            e.contains("sbc.address: 127.0.4.1 is the lab's address for sip.pstnhub.microsoft.com"),
            "{e}"
        );
        let e = lab_file(
            "[lab]\nnetwork = \"127.0.6.7\"\n[sbc]\nfqdn = \"s.c\"\naddress = \"127.0.6.10\"\n",
        )
        .unwrap_err();
        assert!(e.contains("lab.network: 127.0.6.7 is no /24"), "{e}");
        let e =
            lab_file("[lab]\ntime_scale = 0\n[sbc]\nfqdn = \"s.c\"\naddress = \"127.0.6.10\"\n")
                .unwrap_err();
        assert!(e.contains("lab.time_scale: must be 1 or more"), "{e}");
    }

    #[test]
    fn what_the_parties_received_from_no_party_is_the_sbc_sending() {
        use sbc::sip::transport::{Recorder, TransportKind};
        let recorder = Recorder::default();
        let lab = RealLab::loopback(std::env::temp_dir());
        let seen: Seen = Arc::default();
        let tap = MirrorTap::new(
            Arc::new(recorder.clone()),
            lab.plan("sbc.example.com", &[]),
            "sbc.example.com",
            seen.clone(),
        );
        let event = |from: &str, direction| TraceEvent {
            at: Duration::from_millis(7),
            host: "sip.pstnhub.microsoft.com".into(),
            direction,
            local: "127.0.4.1:5061".parse().unwrap(),
            remote: from.parse().unwrap(),
            transport: TransportKind::Tls,
            raw: b"OPTIONS sip:x SIP/2.0\r\n\r\n".to_vec(),
        };
        // From the SBC's own address, from another of its machine's, from
        // the tester (a party), and the hub's own send: one mirror each
        // for the first two only.
        tap.record(event("127.0.4.10:40000", Direction::Received));
        tap.record(event("127.0.0.1:40001", Direction::Received));
        tap.record(event("127.0.4.6:40002", Direction::Received));
        tap.record(event("127.0.0.1:40001", Direction::Sent));
        let sent: Vec<(String, String, String)> = recorder
            .events()
            .iter()
            .filter(|e| e.direction == Direction::Sent)
            .map(|e| (e.host.clone(), e.local.to_string(), e.remote.to_string()))
            .collect();
        let expect = |local: &str| {
            (
                "sbc.example.com".to_string(),
                local.to_string(),
                "127.0.4.1:5061".to_string(),
            )
        };
        assert_eq!(
            sent,
            vec![
                expect("127.0.4.10:40000"),
                expect("127.0.0.1:40001"),
                (
                    "sip.pstnhub.microsoft.com".into(),
                    "127.0.4.1:5061".into(),
                    "127.0.0.1:40001".into()
                ),
            ]
        );
        assert_eq!(recorder.events().len(), 6);
        let seen: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(seen, ["127.0.0.1", "127.0.4.10"]);
    }

    #[test]
    fn a_listener_is_read_from_the_kernels_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0A04007F:13C5 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
           1: 0A04007F:9C40 0104007F:13C5 01 00000000:00000000 00:00000000 00000000\n\
           2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n";
        assert!(listens(table, "127.0.4.10:5061".parse().unwrap()));
        // Connected, not listening.
        assert!(!listens(table, "127.0.4.10:40000".parse().unwrap()));
        // The wildcard listener on 8080 answers for every address.
        assert!(listens(table, "127.0.4.3:8080".parse().unwrap()));
        assert!(!listens(table, "127.0.4.11:5061".parse().unwrap()));
        // And the real table sees a real listener.
        let l = std::net::TcpListener::bind("127.0.7.9:0").unwrap();
        assert!(wait_for_local_listener(l.local_addr().unwrap(), Duration::from_secs(1)).is_ok());
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(wait_for_local_listener(
            SocketAddr::new("127.0.7.9".parse().unwrap(), port),
            Duration::from_millis(50)
        )
        .is_err());
    }

    #[test]
    fn a_busy_port_is_an_error_naming_the_party_and_address() {
        let taken = std::net::TcpListener::bind("127.0.7.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut plan = BTreeMap::new();
        plan.insert(
            "sip.pstnhub.microsoft.com".to_string(),
            "127.0.7.1".parse().unwrap(),
        );
        let hosts = RealHosts::new(plan);
        let e = hosts
            .check_free(&[("sip.pstnhub.microsoft.com".into(), port, true)])
            .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "sip.pstnhub.microsoft.com cannot listen on TCP 127.0.7.1:{port}: "
            )),
            "{e}"
        );
        assert!(hosts
            .check_free(&[("sip.pstnhub.microsoft.com".into(), port, false)])
            .is_ok());
    }
}
