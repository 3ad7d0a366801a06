//! TLS negatives in the direction tests/tls_mutual.rs and
//! tests/openssl_tls.rs do not cover (issue 14 item 5): the reference SBC
//! judging the hub.
//!
//! - (a) As TLS client, when it dials a hub proxy: the hub's server
//!   certificate must chain to `[tls] trust` through the intermediate sent,
//!   be within its validity, carry the FQDN dialled in a SAN, and allow
//!   serverAuth.
//! - (b) As TLS server, when a hub proxy dials it: a client certificate is
//!   required, chained to the same `[tls] trust`, allowing clientAuth, and
//!   (checked by the listener after the handshake) naming one of
//!   `[hub] proxies` in its CN or a SAN.
//! - (c) Protocol, on the SBC's real listener: TLS 1.0/1.1 only, no client
//!   certificate, cleartext SIP on the TLS port, a handshake held open.
//!
//! The SBC's TLS configurations are the `sbc` binary's own, built from an
//! `sbc.toml` written to a temporary directory (`sbc::config::read_tls`,
//! or `sbc::config::load` and `run_sbc` on loopback addresses 127.66.x.y).
//! Each refusal is checked for the log line the binary prints
//! (`TLS from|to <address> refused: <reason>`, its problem log) and for the
//! rule that line names. Positive controls in every test keep the suite
//! from passing vacuously. RSA 1024 and SHA-1 certificates need `openssl`
//! (ring signs with neither); without it those cases print why and skip.

// Wall clock: the SBC judges certificates by the operating system's clock,
// and the real-socket cases wait in real time.
#![allow(clippy::disallowed_methods)]

use drlab_sim::pki::{pem, variants, TestPki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sbc::b2bua::{run_sbc, SbcView};
use sbc::config::{read_tls, TlsSection};
use sbc::direct_routing::HUB_FQDNS;
use sbc::sip::transport::tls::TlsIdentity;
use sbc::sip::transport::{SipTransport, TlsListen, TokioNet, TransportConfig, TransportEvent};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use teams_sim::hub::tls::{hub_configs, HubTls, SharedTlsNotes};

const HUB: &str = HUB_FQDNS[0];
const SBC: &str = "sbc.example.com";
/// The committed lab keys (sbc/sim/keys): the intermediate's signs what
/// openssl mints here, the hub's is the minted certificates' key.
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/sbc/sim/keys");

/// What the SBC does with a certificate: accepts it, or refuses it with a
/// reason (the log line's) containing this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sbc {
    Accepts,
    Refuses(&'static str),
}

/// (a) The SBC dialling `sip.pstnhub.microsoft.com`, per hub certificate
/// variant (`drlab_sim::pki::variants` minted for the hub's FQDN). `None`:
/// not in this matrix (see the test named).
fn as_client(variant: &str) -> Option<Sbc> {
    use Sbc::*;
    Some(match variant {
        "good" | "server-auth-only" | "san-only" | "wildcard" | "expiring-in-10-days" => Accepts,
        // webpki reads names from the SAN only (RFC 6125 §6.4.4; RFC 5922
        // §7.1 makes the CN a MAY): a CN-only hub certificate is refused,
        // unlike the hub's "CN or SAN" reading of the SBC's certificate.
        "cn-only" | "wrong-name" | "two-label-wildcard" => Refuses("not valid for name"),
        "expired" => Refuses("certificate expired"),
        "not-yet-valid" => Refuses("certificate not valid yet"),
        "client-auth-only" => {
            Refuses("does not allow extended key usage for server authentication")
        }
        "no-intermediate" | "untrusted-root" => Refuses("UnknownIssuer"),
        // Accepted today: a_hub_server_certificate_without_eku_is_refused.
        "no-eku" => return None,
        // ring cannot present it: the_sbc_dialling_the_hub_logs_each_refusal.
        "rsa-1024" => return None,
        other => panic!("new variant {other}: say what the SBC does with it"),
    })
}

/// (b) The SBC's listener, per hub client certificate variant.
fn as_server(variant: &str) -> Option<Sbc> {
    use Sbc::*;
    Some(match variant {
        // A client certificate needs clientAuth, not serverAuth.
        "good" | "client-auth-only" | "expiring-in-10-days" => Accepts,
        // The listener's name check reads CN and SANs (tls::certificate_dns_names).
        "cn-only" | "san-only" | "wildcard" => Accepts,
        "server-auth-only" => {
            Refuses("does not allow extended key usage for client authentication")
        }
        "wrong-name" | "two-label-wildcard" => Refuses("client certificate names"),
        "expired" => Refuses("certificate expired"),
        "not-yet-valid" => Refuses("certificate not valid yet"),
        "no-intermediate" | "untrusted-root" => Refuses("UnknownIssuer"),
        // Accepted today: b_hub_client_certificate_without_eku_is_refused.
        "no-eku" => return None,
        // rustls cannot present it: c_openssl_clients_...
        "rsa-1024" => return None,
        other => panic!("new variant {other}: say what the SBC does with it"),
    })
}

/// A certificate as openssl reads it: the leaf, the rest of the chain,
/// the key (PEM files).
type PemFiles = (PathBuf, PathBuf, PathBuf);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

/// A lab PKI and the SBC's files (`ca.pem`, `sbc.example.com.pem|.key`,
/// `hub.pem|.key`) in a directory of its own.
struct Lab {
    pki: TestPki,
    dir: PathBuf,
    now: u64,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("drlab-sbc-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki::new().unwrap();
        pki.write_pem(&dir, SBC).unwrap();
        Lab {
            pki,
            dir,
            now: now(),
        }
    }

    fn tls_section() -> TlsSection {
        TlsSection {
            certificate: format!("{SBC}.pem").into(),
            key: format!("{SBC}.key").into(),
            trust: "ca.pem".into(),
        }
    }

    /// The SBC's server and client configurations, as the `sbc` binary
    /// builds them from `[tls]`.
    fn sbc_tls(&self) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        read_tls(&self.dir.join("sbc.toml"), &Self::tls_section()).unwrap()
    }

    /// A hub proxy presenting `id` (teams-sim's configurations: TLS 1.2,
    /// ECDHE-RSA AES-GCM, the SBC's certificate judged by the hub's rules).
    fn hub(&self, id: &TlsIdentity) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        hub_configs(
            id,
            &[self.pki.root()],
            &HubTls::default(),
            SharedTlsNotes::default(),
            Arc::new(rustls::time_provider::DefaultTimeProvider),
        )
        .unwrap()
    }

    /// The certificate variant `name` minted for `fqdn`.
    fn variant(&self, fqdn: &str, name: &str) -> TlsIdentity {
        let spec = variants(fqdn, self.now)
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .unwrap()
            .1;
        self.pki.leaf(&spec).unwrap()
    }

    /// `<name>.pem` (the leaf), `<name>-chain.pem` (the rest) and
    /// `<name>.key`, for openssl.
    fn write(&self, name: &str, id: &TlsIdentity) -> PemFiles {
        let leaf = self.dir.join(format!("{name}.pem"));
        let chain = self.dir.join(format!("{name}-chain.pem"));
        let key = self.dir.join(format!("{name}.key"));
        std::fs::write(&leaf, pem("CERTIFICATE", id.chain[0].as_ref())).unwrap();
        let rest: String = id.chain[1..]
            .iter()
            .map(|c| pem("CERTIFICATE", c.as_ref()))
            .collect();
        std::fs::write(&chain, rest).unwrap();
        std::fs::write(&key, pem("PRIVATE KEY", id.key.secret_der())).unwrap();
        (leaf, chain, key)
    }

    /// A hub certificate (all three proxy names, serverAuth and clientAuth,
    /// the committed hub key) signed by the lab's intermediate with
    /// `digest` by `openssl x509`: ring cannot sign with SHA-1.
    fn openssl_hub_certificate(&self, digest: &str) -> TlsIdentity {
        let intermediate = self.pki.hub().unwrap().chain[1].clone();
        let ca = self.dir.join("intermediate.pem");
        std::fs::write(&ca, pem("CERTIFICATE", intermediate.as_ref())).unwrap();
        let hub_key = Path::new(KEYS).join("rsa2048-hub.pem");
        let csr = self.dir.join("hub.csr");
        let ext = self.dir.join("hub.ext");
        let sans: Vec<String> = HUB_FQDNS.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\n\
                 keyUsage=digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let out = self.dir.join(format!("hub-{digest}.pem"));
        let run = |args: &[&std::ffi::OsStr]| {
            let o = Command::new("openssl").args(args).output().unwrap();
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(&[
            "req".as_ref(),
            "-new".as_ref(),
            "-key".as_ref(),
            hub_key.as_os_str(),
            "-subj".as_ref(),
            format!("/CN={HUB}").as_ref(),
            "-out".as_ref(),
            csr.as_os_str(),
        ]);
        run(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca.as_os_str(),
            "-CAkey".as_ref(),
            Path::new(KEYS).join("rsa2048-intermediate.pem").as_os_str(),
            "-set_serial".as_ref(),
            "4242".as_ref(),
            "-days".as_ref(),
            "365".as_ref(),
            format!("-{digest}").as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            out.as_os_str(),
        ]);
        let leaf = CertificateDer::from_pem_file(&out).unwrap();
        TlsIdentity {
            chain: vec![leaf, intermediate],
            key: PrivateKeyDer::from_pem_file(&hub_key).unwrap(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Drive a client and a server connection against each other in memory
/// (as tests/tls_mutual.rs does). `Ok` with the negotiated version, or the
/// first error, prefixed by the side that found it ("client: "/"server: ").
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<rustls::ProtocolVersion, String> {
    let mut c =
        rustls::ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())
            .map_err(|e| format!("client: {e}"))?;
    let mut s = rustls::ServerConnection::new(server).map_err(|e| format!("server: {e}"))?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(e) = s.process_new_packets() {
                return Err(format!("server: {e}"));
            }
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).unwrap();
            if let Err(e) = c.process_new_packets() {
                return Err(format!("client: {e}"));
            }
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            // A TLS 1.3 server judges the client certificate only now.
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                s.process_new_packets()
                    .map_err(|e| format!("server: {e}"))?;
            }
            return Ok(s.protocol_version().unwrap());
        }
    }
    Err("handshake did not finish".into())
}

// ---------------------------------------------------------------------
// Real sockets: the SBC as the binary runs it.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 127.66.`net`.`host`: each test has its own `net`.
fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 66, net, host))
}

/// Write the lab's `sbc.toml` (the SBC on `ip`, the hub proxies at the
/// addresses given), load it as the binary does and run the SBC.
fn start_sbc(
    lab: &Lab,
    rt: &tokio::runtime::Runtime,
    ip: IpAddr,
    proxies: &[(&str, IpAddr)],
) -> Arc<Mutex<SbcView>> {
    let names: Vec<String> = proxies.iter().map(|(n, _)| format!("{n:?}")).collect();
    let hosts: String = proxies
        .iter()
        .map(|(n, a)| format!("{n:?} = \"{a}\"\n"))
        .collect();
    let carrier = match ip {
        IpAddr::V4(v4) => Ipv4Addr::new(v4.octets()[0], v4.octets()[1], v4.octets()[2], 9),
        IpAddr::V6(_) => unreachable!(),
    };
    let toml = format!(
        "fqdn = \"{SBC}\"\nmedia_ip = \"{ip}\"\nlisten_ip = \"{ip}\"\nseed = 1\n\
         [carrier]\nhost = \"carrier.example.net\"\nport = 5070\nlisten_port = 5060\ncountry_code = \"49\"\n\
         [hub]\nproxies = [{}]\nport = 5061\nlisten_port = 5061\n\
         [tls]\ncertificate = \"{SBC}.pem\"\nkey = \"{SBC}.key\"\ntrust = \"ca.pem\"\n\
         [hosts]\n\"carrier.example.net\" = \"{carrier}\"\n{hosts}",
        names.join(", ")
    );
    let path = lab.dir.join("sbc.toml");
    std::fs::write(&path, toml).unwrap();
    let loaded = sbc::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let view = Arc::new(Mutex::new(SbcView::default()));
    let net = TokioNet::with_hosts(loaded.hosts);
    let (config, v) = (loaded.config, view.clone());
    rt.spawn(async move {
        if let Err(e) = run_sbc(net, config, v, None).await {
            eprintln!("sbc stopped: {e}");
        }
    });
    view
}

/// The SBC's problem log from `seq` on, and the sequence to read from next.
fn problems(view: &Mutex<SbcView>, seq: u64) -> (Vec<String>, u64) {
    view.lock().unwrap().problems.since(seq)
}

/// The SBC's listener log lines (`TLS from ...`) from `*seq` on, waiting
/// up to `limit` for the first; `*seq` moves past what was read.
fn tls_lines(view: &Mutex<SbcView>, seq: &mut u64, limit: Duration) -> Vec<String> {
    let until = Instant::now() + limit;
    loop {
        let (lines, next) = problems(view, *seq);
        let tls: Vec<String> = lines
            .into_iter()
            .filter(|l| l.starts_with("TLS from "))
            .collect();
        if !tls.is_empty() || Instant::now() >= until {
            *seq = next;
            return tls;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for the SBC's TLS listener. The probe (a TCP connection closed at
/// once) is itself refused and logged; returns that line and the log
/// sequence after it.
fn wait_listener(view: &Mutex<SbcView>, addr: SocketAddr) -> (String, u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            let local = s.local_addr().unwrap();
            drop(s);
            let mut seq = 0;
            let lines = tls_lines(view, &mut seq, Duration::from_secs(5));
            let line = lines
                .into_iter()
                .find(|l| l.starts_with(&format!("TLS from {local} refused")))
                .expect("the probe's refusal is logged");
            return (line, seq);
        }
        assert!(Instant::now() < until, "the SBC never listened on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hub_options(n: usize) -> String {
    format!(
        "OPTIONS sip:{SBC}:5061;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {HUB}:5061;branch=z9hG4bKneg{n}\r\nMax-Forwards: 70\r\n\
         From: <sip:{HUB}:5061>;tag=neg{n}\r\nTo: <sip:{SBC}:5061>\r\n\
         Call-ID: sbc-tls-negatives-{n}\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:{HUB}:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A hub proxy at `from` dialling the SBC at `to` with `client` and
/// sending OPTIONS: the answer's status line, or why there was none. The
/// connection comes from the proxy's own address, as the hub's would: the
/// SBC admits requests from its hub proxies' addresses (and drops an
/// unknown source's after a small burst).
fn hub_dials(
    rt: &tokio::runtime::Runtime,
    client: Arc<rustls::ClientConfig>,
    from: IpAddr,
    to: SocketAddr,
    n: usize,
) -> Result<String, String> {
    let tcp = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(from, 0))?;
            s.connect(to).await?.into_std()
        })
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let conn = rustls::ClientConnection::new(client, ServerName::try_from(SBC).unwrap())
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(hub_options(n).as_bytes())
        .and_then(|_| tls.flush())
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Err("closed, no answer".into()),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => return Err(format!("read: {e}")),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("\r\n\r\n") {
            let status = text.lines().next().unwrap_or_default();
            return Ok(status.trim_start_matches("SIP/2.0 ").to_string());
        }
    }
}

/// A hub proxy listening on `addr:5061` with `server`, answering 200 to
/// every request.
async fn fake_hub(addr: IpAddr, server: Arc<rustls::ServerConfig>) {
    let mut cfg = TransportConfig::new("hub");
    cfg.tls = Some(TlsListen {
        addr: SocketAddr::new(addr, 5061),
        config: server,
        allowed_client_names: None,
    });
    let (transport, mut events) = SipTransport::start(TokioNet::default(), cfg, None)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let TransportEvent::Message {
                message, source, ..
            } = ev
            {
                if message.is_request() {
                    let ok = sbc::sip::transaction::response_to(&message, 200, "OK", None);
                    let _ = transport.reply(&ok, &source).await;
                }
            }
        }
    });
}

/// A child process killed when dropped (a failing test leaves none behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `openssl s_client` to the SBC presenting `cert` (leaf, chain, key),
/// sending OPTIONS once connected.
fn s_client(
    lab: &Lab,
    to: SocketAddr,
    cert: Option<&PemFiles>,
    extra: &[&str],
    n: usize,
) -> Killed {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &to.to_string(), "-servername", SBC])
        .args(["-quiet", "-CAfile"])
        .arg(lab.dir.join("ca.pem"))
        // Let openssl offer TLS 1.0/1.1 and present an RSA 1024 key.
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .args(extra);
    if let Some((leaf, chain, key)) = cert {
        cmd.arg("-cert").arg(leaf);
        cmd.arg("-cert_chain").arg(chain);
        cmd.arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let _ = child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(hub_options(n).as_bytes());
    Killed(child)
}

/// What an openssl child printed, once ended (killed if still running).
fn output(mut k: Killed) -> String {
    let _ = k.0.kill();
    let mut out = String::new();
    if let Some(mut o) = k.0.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = k.0.stderr.take() {
        let _ = e.read_to_string(&mut out);
    }
    out
}

// ---------------------------------------------------------------------
// (a) The SBC as TLS client: the hub's server certificate.

#[test]
fn a_the_sbc_dialling_a_hub_proxy_judges_its_server_certificate() {
    let lab = Lab::new("a");
    let (_, sbc_client) = lab.sbc_tls();
    let (mut failures, mut accepted, mut refused) = (Vec::new(), 0, 0);
    for (name, spec, _) in variants(HUB, lab.now) {
        let Some(want) = as_client(name) else {
            continue;
        };
        let (hub_server, _) = lab.hub(&lab.pki.leaf(&spec).unwrap());
        let got = handshake(sbc_client.clone(), hub_server, HUB);
        eprintln!("SBC -> hub, {name}: {got:?}");
        match (want, &got) {
            (Sbc::Accepts, Ok(_)) => accepted += 1,
            // The SBC (the client) found the fault, and names it.
            (Sbc::Refuses(rule), Err(e)) if e.starts_with("client: ") && e.contains(rule) => {
                refused += 1
            }
            _ => failures.push(format!("{name}: expected {want:?}, got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((accepted, refused), (5, 8));
}

#[test]
fn a_hub_server_certificate_without_eku_is_refused() {
    let lab = Lab::new("a-eku");
    let (_, sbc_client) = lab.sbc_tls();
    let (hub_server, _) = lab.hub(&lab.variant(HUB, "no-eku"));
    let got = handshake(sbc_client, hub_server, HUB);
    assert!(
        matches!(&got, Err(e) if e.starts_with("client: ") && e.to_lowercase().contains("key usage")),
        "{got:?}"
    );
}

/// The dialler on real sockets: the SBC's OPTIONS at start go to three
/// proxies; the good one answers (positive control), the expired one and
/// the RSA 1024 one (openssl s_server) are refused with a log line each.
#[test]
fn a_the_sbc_dialling_the_hub_logs_each_refusal() {
    let lab = Lab::new("a-real");
    let rt = runtime();
    let (good_at, expired_at, weak_at) = (ip(1, 2), ip(1, 4), ip(1, 5));
    let expired = lab.variant(HUB_FQDNS[1], "expired");
    rt.block_on(fake_hub(good_at, lab.hub(&lab.pki.hub().unwrap()).0));
    rt.block_on(fake_hub(expired_at, lab.hub(&expired).0));
    let mut proxies = vec![(HUB_FQDNS[0], good_at), (HUB_FQDNS[1], expired_at)];
    let _s_server = if openssl() {
        let weak = lab.variant(HUB_FQDNS[2], "rsa-1024");
        let (leaf, chain, key) = lab.write("hub-rsa1024", &weak);
        let mut cmd = Command::new("openssl");
        cmd.args(["s_server", "-accept", &format!("{weak_at}:5061"), "-quiet"])
            .arg("-cert")
            .arg(leaf)
            .arg("-cert_chain")
            .arg(chain)
            .arg("-key")
            .arg(key)
            // Let openssl load a 1024-bit key: the SBC must refuse it.
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"]);
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        let at = SocketAddr::new(weak_at, 5061);
        while TcpStream::connect_timeout(&at, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < until, "openssl s_server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxies.push((HUB_FQDNS[2], weak_at));
        Some(Killed(child))
    } else {
        eprintln!("SKIPPED (RSA 1024 hub certificate): openssl is not installed");
        None
    };
    let view = start_sbc(&lab, &rt, ip(1, 3), &proxies);
    let until = Instant::now() + Duration::from_secs(10);
    let (lines, answered) = loop {
        let (lines, _) = problems(&view, 0);
        let answered = view.lock().unwrap().hub_options.get(HUB).copied();
        let refused = |at: IpAddr| {
            lines
                .iter()
                .any(|l| l.starts_with(&format!("TLS to {at}:5061 refused: ")))
        };
        let weak_done = proxies.len() < 3 || refused(weak_at);
        if (answered == Some(200) && refused(expired_at) && weak_done) || Instant::now() > until {
            break (lines, answered);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for l in &lines {
        eprintln!("sbc: {l}");
    }
    assert_eq!(answered, Some(200), "the good hub answers: {lines:#?}");
    let line = |at: IpAddr| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("TLS to {at}:5061 refused: ")))
            .cloned()
            .unwrap_or_else(|| panic!("no refusal of {at} logged: {lines:#?}"))
    };
    assert!(
        line(expired_at).contains("certificate expired"),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(&format!("TLS to {good_at}"))),
        "{lines:#?}"
    );
    if proxies.len() == 3 {
        // ring verifies RSA signatures from 2048 bits only: the 1024-bit
        // key's handshake signature is refused.
        let weak = line(weak_at);
        assert!(
            weak.contains("invalid peer certificate: BadSignature"),
            "{weak}"
        );
    }
    rt.shutdown_background();
}

// ---------------------------------------------------------------------
// SHA-1, both directions (in memory; the listener only passes the reason on).

#[test]
fn a_b_a_sha1_signed_hub_certificate_is_refused_both_directions() {
    if !openssl() {
        eprintln!("SKIPPED (SHA-1): openssl is not installed; ring cannot sign with SHA-1");
        return;
    }
    let lab = Lab::new("sha1");
    let (sbc_server, sbc_client) = lab.sbc_tls();
    // Control: openssl's SHA-256 twin is accepted both ways, so a refusal
    // below is the digest's, not the minting's.
    let (hub_server, hub_client) = lab.hub(&lab.openssl_hub_certificate("sha256"));
    handshake(sbc_client.clone(), hub_server, HUB).expect("SHA-256 twin, SBC -> hub");
    handshake(hub_client, sbc_server.clone(), SBC).expect("SHA-256 twin, hub -> SBC");
    let (hub_server, hub_client) = lab.hub(&lab.openssl_hub_certificate("sha1"));
    let as_client = handshake(sbc_client, hub_server, HUB);
    let as_server = handshake(hub_client, sbc_server, SBC);
    eprintln!("SHA-1: SBC -> hub {as_client:?}\nSHA-1: hub -> SBC {as_server:?}");
    assert!(
        matches!(&as_client, Err(e) if e.starts_with("client: ") && e.contains("UnsupportedSignatureAlgorithm")),
        "{as_client:?}"
    );
    assert!(
        matches!(&as_server, Err(e) if e.starts_with("server: ") && e.contains("UnsupportedSignatureAlgorithm")),
        "{as_server:?}"
    );
}

// ---------------------------------------------------------------------
// (b) The SBC as TLS server: the hub's client certificate, on the listener.

#[test]
fn b_the_sbc_listener_judges_the_hub_proxys_client_certificate() {
    let lab = Lab::new("b");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(2, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(2, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (probe, mut seq) = wait_listener(&view, sbc);
    eprintln!("probe: {probe}");
    let mut cases: Vec<(String, Arc<rustls::ClientConfig>, Sbc)> = variants(HUB, lab.now)
        .into_iter()
        .filter_map(|(name, spec, _)| {
            let want = as_server(name)?;
            Some((
                name.to_string(),
                lab.hub(&lab.pki.leaf(&spec).unwrap()).1,
                want,
            ))
        })
        .collect();
    // (c) No client certificate: a hub client that presents none.
    let no_cert = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(sbc::sip::transport::tls::roots(&[lab.pki.root()]).unwrap())
    .with_no_client_auth();
    cases.push((
        "no client certificate".into(),
        Arc::new(no_cert),
        Sbc::Refuses("peer sent no certificates"),
    ));
    let (mut failures, mut accepted, mut refused) = (Vec::new(), 0, 0);
    for (n, (name, client, want)) in cases.into_iter().enumerate() {
        let got = hub_dials(&rt, client, ip(2, 2), sbc, n);
        let wait = match want {
            // Answered: any refusal would have come first.
            Sbc::Accepts => Duration::ZERO,
            Sbc::Refuses(_) => Duration::from_secs(3),
        };
        let lines = tls_lines(&view, &mut seq, wait);
        eprintln!("hub -> SBC, {name}: hub saw {got:?}; sbc logged {lines:?}");
        match want {
            Sbc::Accepts if got.as_deref() == Ok("200 OK") && lines.is_empty() => accepted += 1,
            Sbc::Refuses(rule)
                if got.is_err()
                    && lines.len() == 1
                    && lines[0].starts_with("TLS from ")
                    && lines[0].contains(rule) =>
            {
                refused += 1
            }
            _ => failures.push(format!(
                "{name}: expected {want:?}; hub saw {got:?}; sbc logged {lines:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((accepted, refused), (6, 8));
    rt.shutdown_background();
}

#[test]
fn b_hub_client_certificate_without_eku_is_refused() {
    let lab = Lab::new("b-eku");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(7, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(7, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (_, mut seq) = wait_listener(&view, sbc);
    let (_, hub_client) = lab.hub(&lab.variant(HUB, "no-eku"));
    let got = hub_dials(&rt, hub_client, ip(7, 2), sbc, 1);
    let lines = tls_lines(&view, &mut seq, Duration::from_secs(3));
    assert!(got.is_err(), "answered: {got:?}");
    assert!(
        lines.len() == 1 && lines[0].to_lowercase().contains("key usage"),
        "{lines:?}"
    );
    rt.shutdown_background();
}

// ---------------------------------------------------------------------
// (c) Protocol, on the SBC's listener.

#[test]
fn c_openssl_offering_tls_1_0_or_1_1_or_an_rsa_1024_certificate_is_refused() {
    if !openssl() {
        eprintln!("SKIPPED (TLS 1.0/1.1, RSA 1024 client certificate): openssl is not installed");
        return;
    }
    let lab = Lab::new("c-openssl");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(3, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(3, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (_, mut seq) = wait_listener(&view, sbc);
    let good = lab.write("hub-good", &lab.pki.hub().unwrap());
    let weak = lab.write("hub-rsa1024", &lab.variant(HUB, "rsa-1024"));
    let cases: [(&str, &PemFiles, &[&str], Sbc); 4] = [
        (
            "TLS 1.2, good hub certificate",
            &good,
            &["-tls1_2"],
            Sbc::Accepts,
        ),
        // rustls implements neither version; it stops at the first thing a
        // TLS 1.0/1.1 ClientHello lacks (c_refusals_name_the_rule_in_words).
        (
            "TLS 1.0 only",
            &good,
            &["-tls1"],
            Sbc::Refuses("peer is incompatible"),
        ),
        (
            "TLS 1.1 only",
            &good,
            &["-tls1_1"],
            Sbc::Refuses("peer is incompatible"),
        ),
        // The chain is fine; ring verifies RSA signatures from 2048 bits
        // only, so the key's CertificateVerify fails.
        (
            "RSA 1024 client certificate",
            &weak,
            &["-tls1_2"],
            Sbc::Refuses("invalid peer certificate: BadSignature"),
        ),
    ];
    let mut failures = Vec::new();
    for (n, (name, cert, extra, want)) in cases.into_iter().enumerate() {
        let child = s_client(&lab, sbc, Some(cert), extra, 100 + n);
        let lines = tls_lines(&view, &mut seq, Duration::from_secs(3));
        let out = output(child);
        let answered = out.contains("SIP/2.0 200 OK");
        eprintln!("openssl {extra:?}, {name}: answered {answered}; sbc logged {lines:?}");
        let ok = match want {
            Sbc::Accepts => answered && lines.is_empty(),
            Sbc::Refuses(rule) => {
                !answered
                    && lines.len() == 1
                    && lines[0].starts_with("TLS from ")
                    && lines[0].contains(rule)
            }
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {want:?}; sbc logged {lines:?}; openssl saw:\n{out}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    rt.shutdown_background();
}

#[test]
fn c_cleartext_sip_on_the_tls_port_is_refused_without_a_sip_answer() {
    let lab = Lab::new("c-plain");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(4, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(4, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (_, mut seq) = wait_listener(&view, sbc);
    let mut s = TcpStream::connect(sbc).unwrap();
    let local = s.local_addr().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(hub_options(1).as_bytes()).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let end = s.read_to_end(&mut got);
    let lines = tls_lines(&view, &mut seq, Duration::from_secs(3));
    eprintln!(
        "cleartext OPTIONS: read {end:?} after {:?}, {} bytes back; sbc logged {lines:?}",
        started.elapsed(),
        got.len()
    );
    // Closed by the SBC (EOF or reset), not left waiting.
    assert!(
        !matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "still open after 5 s"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains("SIP/2.0"),
        "a SIP answer in cleartext"
    );
    assert!(
        lines.len() == 1
            && lines[0].starts_with(&format!("TLS from {local} refused: "))
            && lines[0].contains("corrupt message"),
        "{lines:?}"
    );
    rt.shutdown_background();
}

/// The refusals above whose log line does not say the rule in words an
/// operator reads: rustls' first error is logged as it is.
#[test]
fn c_refusals_name_the_rule_in_words() {
    if !openssl() {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    }
    let lab = Lab::new("c-words");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(8, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(8, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (_, mut seq) = wait_listener(&view, sbc);
    let good = lab.write("hub-good", &lab.pki.hub().unwrap());
    let weak = lab.write("hub-rsa1024", &lab.variant(HUB, "rsa-1024"));
    let sha1 = lab.write("hub-sha1", &lab.openssl_hub_certificate("sha1"));
    let mut logged = Vec::new();
    for (n, (cert, extra)) in [(&good, "-tls1"), (&weak, "-tls1_2"), (&sha1, "-tls1_2")]
        .into_iter()
        .enumerate()
    {
        let child = s_client(&lab, sbc, Some(cert), &[extra], 200 + n);
        logged.push(tls_lines(&view, &mut seq, Duration::from_secs(3)).join(" | "));
        drop(output(child));
    }
    let mut s = TcpStream::connect(sbc).unwrap();
    s.write_all(hub_options(300).as_bytes()).unwrap();
    logged.push(tls_lines(&view, &mut seq, Duration::from_secs(3)).join(" | "));
    let want: [&[&str]; 4] = [
        &["version"],
        &["1024", "2048"],
        &["sha-1", "sha1"],
        &["not tls", "cleartext", "plain"],
    ];
    let missing: Vec<_> = logged
        .iter()
        .zip(want)
        .filter(|(line, words)| !words.iter().any(|w| line.to_lowercase().contains(w)))
        .collect();
    assert!(missing.is_empty(), "{missing:#?}");
    rt.shutdown_background();
}

/// How long a TLS handshake may take before the SBC gives it up (the
/// SBC's default `tls_handshake_timeout_secs`).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// `StreamLimits::handshake_timeout` (10 s in the SBC) on the listener.
#[test]
fn c_a_handshake_held_open_is_closed_by_the_listener() {
    let lab = Lab::new("c-held");
    let rt = runtime();
    let sbc = SocketAddr::new(ip(5, 3), 5061);
    let proxies: Vec<_> = HUB_FQDNS.iter().map(|n| (*n, ip(5, 2))).collect();
    let view = start_sbc(&lab, &rt, sbc.ip(), &proxies);
    let (_, mut seq) = wait_listener(&view, sbc);
    // Connects and sends nothing: no ClientHello.
    let mut s = TcpStream::connect(sbc).unwrap();
    let local = s.local_addr().unwrap();
    s.set_read_timeout(Some(HANDSHAKE_LIMIT + Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let end = s.read(&mut buf);
    let took = started.elapsed();
    let lines = tls_lines(&view, &mut seq, Duration::from_secs(1));
    eprintln!("held open: read {end:?} after {took:?}; sbc logged {lines:?}");
    assert!(
        !matches!(&end, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "still open after {took:?}"
    );
    assert!(took <= HANDSHAKE_LIMIT + Duration::from_secs(2), "{took:?}");
    assert!(
        lines.len() == 1
            && lines[0].starts_with(&format!("TLS from {local} refused: "))
            && lines[0].to_lowercase().contains("handshake"),
        "{lines:?}"
    );
    rt.shutdown_background();
}

/// The dialler's side of the same: `connect` bounds the TCP connect
/// (`CONNECT_TIMEOUT`) and then the TLS handshake (the same limit).
#[test]
fn a_a_hub_that_never_answers_the_client_hello_is_given_up() {
    let lab = Lab::new("a-held");
    let rt = runtime();
    let hub_at = ip(6, 2);
    // Accepts TCP and never answers the SBC's ClientHello.
    let listener = std::net::TcpListener::bind(SocketAddr::new(hub_at, 5061)).unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    let view = start_sbc(&lab, &rt, ip(6, 3), &[(HUB, hub_at)]);
    let until = Instant::now() + HANDSHAKE_LIMIT + Duration::from_secs(2);
    let mut seq = 0;
    let mut seen = Vec::new();
    let given_up = loop {
        let (lines, next) = problems(&view, seq);
        seq = next;
        seen.extend(lines);
        if seen
            .iter()
            .any(|l| l.contains(&hub_at.to_string()) || l.contains(HUB))
        {
            break true;
        }
        if Instant::now() > until {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        given_up && !held.lock().unwrap().is_empty(),
        "after {HANDSHAKE_LIMIT:?} the SBC still waits for the hub's ServerHello: {seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.to_lowercase().contains("handshake")),
        "{seen:#?}"
    );
    rt.shutdown_background();
}
