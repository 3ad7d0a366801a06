//! `openssl s_client`, an independent TLS client, against teams-sim on
//! real sockets: each certificate variant `teams-sim test-pki` writes is
//! accepted (OPTIONS answered 200) or refused (no 200: the connection is
//! refused at TLS, or the SIP layer answers 403 for a name the certificate
//! does not cover) as Direct Routing's hub does; TLS 1.1 and a suite
//! outside Microsoft's list are refused. Needs `openssl`; without it the
//! test says so and does nothing.

// Wall-clock: certificates here are judged by the real clock.
#![allow(clippy::disallowed_methods)]

mod common;

use drlab_sim::pki::{variants, Expect, TestPki};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::tls::{hub_configs, HubTls};
use teams_sim::hub::{run_proxy, HubConfig, HubView, TeamsUser, Tenant};

const HUB: &str = "sip.pstnhub.microsoft.com";
const SBC: &str = "sbc.example.com";

fn options(n: usize) -> String {
    format!(
        "OPTIONS sip:{HUB}:5061 SIP/2.0\r\nVia: SIP/2.0/TLS {SBC}:5061;branch=z9hG4bKossl{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{SBC}:5061>;tag=o{n}\r\nTo: <sip:{HUB}:5061>\r\n\
         Call-ID: openssl-{n}\r\nCSeq: 1 OPTIONS\r\nContact: <sip:{SBC}:5061;transport=tls>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Start `openssl s_client` with certificate `cert` and send OPTIONS.
fn s_client(
    addr: SocketAddr,
    dir: &Path,
    cert: Option<&str>,
    extra: &[&str],
    n: usize,
) -> std::process::Child {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        HUB,
        "-quiet",
    ])
    .arg("-CAfile")
    .arg(dir.join("ca.pem"))
    // Let openssl present even the 1024-bit key: the hub must refuse it.
    .args(["-cipher", "DEFAULT:@SECLEVEL=0"]);
    if let Some(name) = cert {
        let pem = dir.join("variants").join(format!("{name}.pem"));
        cmd.arg("-cert").arg(&pem).arg("-cert_chain").arg(&pem);
        cmd.arg("-key")
            .arg(dir.join("variants").join(format!("{name}.key")));
    }
    cmd.args(extra);
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
        .write_all(options(n).as_bytes());
    child
}

/// What a client saw, once it has had three seconds.
fn collect(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn openssl_with_each_certificate_variant_is_accepted_or_refused_as_the_hub_does() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!(
            "openssl is not installed: certificate variants not checked against a real client"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("drlab-openssl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = TestPki::new().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    pki.write_pem(&dir, SBC).unwrap();
    pki.write_variants(&dir, SBC, now).unwrap();

    let ip = IpAddr::V4(Ipv4Addr::new(127, 7, 0, 2));
    let addr = SocketAddr::new(ip, 5061);
    let tenant = Tenant {
        sbcs: vec![SBC.into()],
        sbc_port: 5061,
        users: vec![TeamsUser::new("+4989000001", "Alice")],
        routes: vec![],
        forward_pai: vec![],
        forward_call_history: vec![],
        media_bypass: vec![],
    };
    let view = HubView::new(&tenant);
    let (tls_server, tls_client) = hub_configs(
        &pki.hub().unwrap(),
        &[pki.root()],
        &HubTls::default(),
        view.tls_notes.clone(),
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
    .unwrap();
    let view = Arc::new(Mutex::new(view));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mp, mp_rx) = drlab_sim::media_host_channel();
    let hosts = [
        ("mp.pstnhub.microsoft.com".to_string(), ip),
        (SBC.to_string(), IpAddr::V4(Ipv4Addr::new(127, 7, 0, 3))),
    ];
    let net = sbc::sip::transport::TokioNet::with_hosts(hosts.into_iter().collect());
    let config = HubConfig {
        fqdn: HUB.into(),
        listen_ip: ip,
        listen_port: 5061,
        advertised_ip: Some(ip),
        internal_name: "sip-du-a-eu.pstnhub.microsoft.com".into(),
        tenant,
        tls_server,
        tls_client,
        media_host: "mp.pstnhub.microsoft.com".into(),
        media: mp.clone(),
        media_frames: 0,
        forks: 1,
        early_media: false,
        answering: Default::default(),
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
        timers: Default::default(),
        seed: 1,
    };
    let (_commands, rx) = tokio::sync::mpsc::unbounded_channel();
    let (v, n) = (view.clone(), net.clone());
    rt.spawn(drlab_sim::media_host(net, ip, mp_rx, mp.live.clone()));
    rt.spawn(async move { run_proxy(n, config, v, rx, None).await });
    common::wait_listening(addr);

    // Every client at once, then three seconds for all of them.
    let clients: Vec<_> = variants(SBC, now)
        .into_iter()
        .enumerate()
        .map(|(i, (name, _, expect))| {
            (
                name,
                expect,
                s_client(addr, &dir, Some(name), &["-tls1_2"], i),
            )
        })
        .collect();
    // Case 1: TLS 1.1; case 2: TLS 1.2 with a suite outside Microsoft's list.
    let protocol: Vec<_> = [
        vec!["-tls1_1"],
        vec![
            "-tls1_2",
            "-cipher",
            "ECDHE-RSA-CHACHA20-POLY1305:@SECLEVEL=0",
        ],
    ]
    .into_iter()
    .enumerate()
    .map(|(i, extra)| {
        let child = s_client(addr, &dir, Some("good"), &extra, 100 + i);
        (extra, child)
    })
    .collect();
    std::thread::sleep(Duration::from_secs(3));
    let mut failures = Vec::new();
    for (name, expect, child) in clients {
        let out = collect(child);
        let answered = out.contains("SIP/2.0 200 OK");
        if answered != (expect == Expect::Accepted) {
            failures.push(format!("{name}: expected {expect:?}, openssl saw:\n{out}"));
        }
    }
    for (extra, child) in protocol {
        let out = collect(child);
        if out.contains("SIP/2.0 200 OK") {
            failures.push(format!("{extra:?} was answered:\n{out}"));
        }
    }
    let v = view.lock().unwrap();
    let rules: Vec<String> = v
        .tls_refusals
        .iter()
        .map(|(_, _, r)| r.to_string())
        .collect();
    assert!(
        failures.is_empty(),
        "{}\nhub refusals: {rules:#?}",
        failures.join("\n---\n")
    );
    // Every TLS-level refusal is recorded with its rule (the two name
    // variants are refused at the SIP layer instead, with 403).
    assert!(v.tls_refusals_total >= 9, "{rules:#?}");
    drop(v);
    rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
}
