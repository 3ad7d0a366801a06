//! Direct Routing's TLS rules (behaviour §1, cases 1–6, 10, 16), judged by
//! the hub's own verifiers (`teams_sim::hub::tls`): every certificate
//! variant the lab PKI mints is accepted or refused as Microsoft's hub
//! does, as the SBC's client certificate (connections the SBC opens) and
//! as its server certificate (connections the hub opens); the handshake
//! uses TLS 1.2 with an ECDHE-RSA AES-GCM suite; TLS 1.3 only when the hub
//! is set to accept it; and over simulated sockets a refusal closes the
//! connection without any SIP answer and records the rule.

use drlab_sim::pki::{variants, Expect, TestPki};
use rustls::pki_types::{ServerName, UnixTime};
use sbc::sip::transport::tls::{client_config_at, roots, server_config_at, TlsIdentity};
use sbc::sip::transport::{
    SipTransport, Target, TlsListen, TransportConfig, TransportEvent, TransportKind, TurmoilNet,
};
use sbc::sip::wire::Message;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teams_sim::hub::tls::{hub_configs, HubTls, SharedTlsNotes, TlsRule};

const HUB: &str = "sip.pstnhub.microsoft.com";
const SBC: &str = "sbc.example.com";
/// The world's clock (2027-01-15): certificates are judged by it.
const NOW: u64 = 1_800_000_000;

#[derive(Debug)]
struct Fixed;

impl rustls::time_provider::TimeProvider for Fixed {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(NOW)))
    }
}

fn clock() -> Arc<dyn rustls::time_provider::TimeProvider> {
    Arc::new(Fixed)
}

/// Drive a client and a server connection against each other in memory.
/// `Ok` with the negotiated version and suite, or the first error (the
/// server's, if both fail).
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
    name: &str,
) -> Result<(rustls::ProtocolVersion, rustls::CipherSuite), String> {
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
                // The side that found the fault names it; the other only
                // hears an alert.
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
            return Ok((
                s.protocol_version().unwrap(),
                s.negotiated_cipher_suite().unwrap().suite(),
            ));
        }
    }
    Err("handshake did not finish".into())
}

struct Lab {
    pki: TestPki,
    hub_id: TlsIdentity,
}

impl Lab {
    fn new() -> Lab {
        let pki = TestPki::new().unwrap();
        let hub_id = pki.hub().unwrap();
        Lab { pki, hub_id }
    }

    fn hub(
        &self,
        tls: HubTls,
    ) -> (
        Arc<rustls::ServerConfig>,
        Arc<rustls::ClientConfig>,
        SharedTlsNotes,
    ) {
        let notes = SharedTlsNotes::default();
        let (s, c) = hub_configs(
            &self.hub_id,
            &[self.pki.root()],
            &tls,
            notes.clone(),
            clock(),
        )
        .unwrap();
        (s, c, notes)
    }

    fn sbc(
        &self,
        id: &TlsIdentity,
    ) -> Option<(Arc<rustls::ClientConfig>, Arc<rustls::ServerConfig>)> {
        let r = roots(&[self.pki.root()]).unwrap();
        Some((
            client_config_at(id, r.clone(), clock()).ok()?,
            server_config_at(id, r, clock()).ok()?,
        ))
    }
}

#[test]
fn every_certificate_variant_is_judged_as_the_hub_does_in_both_directions() {
    let lab = Lab::new();
    let (hub_server, hub_client, notes) = lab.hub(HubTls::default());
    let mut checked = 0;
    for (name, spec, expect) in variants(SBC, NOW) {
        let id = lab.pki.leaf(&spec).unwrap();
        let Some((sbc_client, sbc_server)) = lab.sbc(&id) else {
            // ring cannot sign with RSA 1024: only openssl can present it
            // (tests/openssl_tls.rs).
            assert_eq!(name, "rsa-1024", "only the weak key cannot be loaded");
            continue;
        };
        let mut as_client = handshake(sbc_client, hub_server.clone(), HUB);
        let as_server = handshake(hub_client.clone(), sbc_server, SBC);
        // On connections the SBC opens the hub cannot know which trunk it
        // is until it reads Contact: names are matched there (behaviour §1).
        if as_client.is_ok() {
            if let Err(r) = identify(&id) {
                as_client = Err(format!("server (SIP): {r}"));
            }
        }
        for (dir, got) in [("SBC → hub", &as_client), ("hub → SBC", &as_server)] {
            match (expect, got) {
                (Expect::Accepted, Ok(_)) => {}
                (Expect::Refused, Err(e))
                    if e.starts_with(if dir == "SBC → hub" {
                        "server"
                    } else {
                        "client"
                    }) => {}
                _ => panic!("{name} ({dir}): expected {expect:?}, got {got:?}"),
            }
        }
        checked += 1;
    }
    assert_eq!(checked, variants(SBC, NOW).len() - 1);
    let expiring = notes.lock().unwrap().expiring.clone();
    assert!(
        expiring
            .iter()
            .any(|(names, days)| names.contains(&SBC.to_string()) && *days <= 10),
        "the certificate expiring in 10 days is noted: {expiring:?}"
    );
}

/// The hub's SIP-layer identification of an SBC whose certificate is `id`
/// and whose OPTIONS names `sbc.example.com` in Contact.
fn identify(id: &TlsIdentity) -> Result<(), teams_sim::hub::Refusal> {
    let raw = format!(
        "OPTIONS sip:{HUB}:5061 SIP/2.0\r\nContact: <sip:{SBC}:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    );
    let msg = teams_sim::hub::raw::RawMessage::read(raw.as_bytes()).unwrap();
    let source = sbc::sip::transport::Source {
        transport: TransportKind::Tls,
        local: "192.0.2.2:5061".parse().unwrap(),
        remote: "192.0.2.1:40000".parse().unwrap(),
        connection: None,
        peer_names: Arc::new(sbc::sip::transport::tls::certificate_dns_names(
            &id.chain[0],
        )),
    };
    let tenant = teams_sim::hub::Tenant {
        sbcs: vec![SBC.into()],
        sbc_port: 5061,
        users: vec![],
        routes: vec![],
        forward_pai: vec![],
        forward_call_history: vec![],
        media_bypass: vec![],
    };
    teams_sim::hub::rules::identify_sbc(&msg, &source, &tenant).map(|_| ())
}

#[test]
fn each_refusal_names_the_rule_broken() {
    let lab = Lab::new();
    let (hub_server, _, _) = lab.hub(HubTls::default());
    let want = [
        ("expired", TlsRule::Expired),
        ("not-yet-valid", TlsRule::NotYetValid),
        ("client-auth-only", TlsRule::NoServerAuthEku),
        ("no-eku", TlsRule::NoServerAuthEku),
        ("no-intermediate", TlsRule::MissingIntermediate),
        ("untrusted-root", TlsRule::Untrusted),
    ];
    for (name, spec, _) in variants(SBC, NOW) {
        let Some((_, rule)) = want.iter().find(|(n, _)| *n == name) else {
            continue;
        };
        let (client, _) = lab.sbc(&lab.pki.leaf(&spec).unwrap()).unwrap();
        let err = handshake(client, hub_server.clone(), HUB).unwrap_err();
        assert_eq!(&TlsRule::from_reason(&err), rule, "{name}: {err}");
    }
}

#[test]
fn the_sbc_connects_with_tls_1_2_and_an_ecdhe_rsa_aes_gcm_suite() {
    let lab = Lab::new();
    let (hub_server, _, _) = lab.hub(HubTls::default());
    let (client, _) = lab.sbc(&lab.pki.good(&[SBC]).unwrap()).unwrap();
    let (version, suite) = handshake(client, hub_server, HUB).unwrap();
    assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    assert!(
        [
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        ]
        .contains(&suite),
        "{suite:?} is not on Microsoft's list"
    );
}

fn restricted_client(
    lab: &Lab,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Vec<rustls::SupportedCipherSuite>,
) -> Arc<rustls::ClientConfig> {
    let id = lab.pki.good(&[SBC]).unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::ring::default_provider()
    };
    let cfg = rustls::ClientConfig::builder_with_details(Arc::new(provider), clock())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(&[lab.pki.root()]).unwrap())
        .with_client_auth_cert(id.chain, id.key)
        .unwrap();
    Arc::new(cfg)
}

#[test]
fn suites_outside_microsofts_list_and_tls_1_3_alone_are_refused() {
    use rustls::crypto::ring::cipher_suite as cs;
    let lab = Lab::new();
    let (hub_server, _, _) = lab.hub(HubTls::default());
    // Case 2: TLS 1.2 offering only a suite outside the list.
    let chacha = restricted_client(
        &lab,
        &[&rustls::version::TLS12],
        vec![cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256],
    );
    let err = handshake(chacha, hub_server.clone(), HUB).unwrap_err();
    assert!(
        matches!(TlsRule::from_reason(&err), TlsRule::ProtocolOrSuite(_)),
        "{err}"
    );
    // TLS 1.3 alone: refused by default, accepted by a hub set to take it.
    let only13 = || {
        restricted_client(
            &lab,
            &[&rustls::version::TLS13],
            vec![cs::TLS13_AES_128_GCM_SHA256],
        )
    };
    assert!(handshake(only13(), hub_server, HUB).is_err());
    let (tls13_hub, _, _) = lab.hub(HubTls {
        tls13: true,
        ..HubTls::default()
    });
    let (v, _) = handshake(only13(), tls13_hub, HUB).unwrap();
    assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
}

fn options() -> Message {
    let raw = format!(
        "OPTIONS sip:{HUB}:5061 SIP/2.0\r\nVia: SIP/2.0/TLS {SBC}:5061;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
         From: <sip:{SBC}:5061>;tag=1\r\nTo: <sip:{HUB}:5061>\r\nCall-ID: tls-test\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:{SBC}:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

/// The hub's side of a simulated exchange: TLS on 5061, any client name.
async fn hub_transport(
    config: Arc<rustls::ServerConfig>,
) -> std::io::Result<(
    SipTransport<TurmoilNet>,
    tokio::sync::mpsc::UnboundedReceiver<TransportEvent>,
)> {
    let mut cfg = TransportConfig::new(HUB);
    cfg.tls = Some(TlsListen {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5061),
        config,
        allowed_client_names: None,
    });
    SipTransport::start(TurmoilNet, cfg, None).await
}

/// Over simulated sockets: the SBC sends OPTIONS; what each side saw.
fn exchange(lab: &Lab, sbc_id: TlsIdentity) -> (Vec<String>, Vec<String>) {
    let (hub_server, _, _) = lab.hub(HubTls::default());
    let (sbc_client, _) = lab.sbc(&sbc_id).unwrap();
    let hub_seen = Arc::new(Mutex::new(Vec::new()));
    let sbc_seen = Arc::new(Mutex::new(Vec::new()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(NOW))
        .simulation_duration(Duration::from_secs(10))
        .build();
    let seen = hub_seen.clone();
    sim.host(HUB, move || {
        let (hub_server, seen) = (hub_server.clone(), seen.clone());
        async move {
            let (transport, mut events) = hub_transport(hub_server).await?;
            while let Some(ev) = events.recv().await {
                let line = match ev {
                    TransportEvent::Message {
                        message, source, ..
                    } => {
                        let ok = sbc::sip::transaction::response_to(&message, 200, "OK", None);
                        transport.reply(&ok, &source).await?;
                        format!("message {}", message.summary())
                    }
                    TransportEvent::TlsRefused { reason, .. } => {
                        format!("refused: {}", TlsRule::from_reason(&reason))
                    }
                    _ => continue,
                };
                seen.lock().unwrap().push(line);
            }
            Ok(())
        }
    });
    let seen = sbc_seen.clone();
    sim.client(SBC, async move {
        let mut cfg = TransportConfig::new(SBC);
        cfg.tls_client = Some(sbc_client);
        let (transport, mut events) = SipTransport::start(TurmoilNet, cfg, None).await?;
        let target = Target {
            transport: TransportKind::Tls,
            addr: SocketAddr::new(turmoil::lookup(HUB), 5061),
            server_name: Some(HUB.into()),
        };
        if let Err(e) = transport.send(&options(), &target).await {
            seen.lock().unwrap().push(format!("send failed: {e}"));
        }
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Some(TransportEvent::Message { message, .. }) => seen.lock().unwrap().push(format!("got {}", message.summary())),
                    Some(_) => {}
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        Ok(())
    });
    sim.run().unwrap();
    let h = hub_seen.lock().unwrap().clone();
    let s = sbc_seen.lock().unwrap().clone();
    (h, s)
}

#[test]
fn a_good_certificate_is_answered_on_the_same_connection_a_bad_one_gets_no_sip_at_all() {
    let lab = Lab::new();
    let (hub, sbc) = exchange(&lab, lab.pki.good(&[SBC]).unwrap());
    assert_eq!(hub, vec![format!("message OPTIONS sip:{HUB}:5061")]);
    assert_eq!(sbc, vec!["got 200 OK".to_string()]);
    let expired = variants(SBC, NOW)
        .into_iter()
        .find(|(n, _, _)| *n == "expired")
        .unwrap()
        .1;
    let (hub, sbc) = exchange(&lab, lab.pki.leaf(&expired).unwrap());
    assert_eq!(
        hub,
        vec!["refused: certificate expired".to_string()],
        "{sbc:?}"
    );
    assert!(
        !sbc.iter().any(|l| l.starts_with("got")),
        "no SIP answer: {sbc:?}"
    );
}

/// Several senders with no connection to the hub yet (the SBC's SIP cores
/// share one transport) wait for one connection rather than open one
/// each: the hub accepts one, and all three OPTIONS arrive on it.
#[test]
fn concurrent_senders_to_one_peer_share_one_connection() {
    let lab = Lab::new();
    let (hub_server, _, _) = lab.hub(HubTls::default());
    let (sbc_client, _) = lab.sbc(&lab.pki.good(&[SBC]).unwrap()).unwrap();
    let accepted = Arc::new(Mutex::new((0usize, 0usize)));
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(NOW))
        .simulation_duration(Duration::from_secs(10))
        .build();
    let seen = accepted.clone();
    sim.host(HUB, move || {
        let (hub_server, seen) = (hub_server.clone(), seen.clone());
        async move {
            let (transport, mut events) = hub_transport(hub_server).await?;
            while let Some(ev) = events.recv().await {
                if let TransportEvent::Message { .. } = ev {
                    let mut s = seen.lock().unwrap();
                    *s = (transport.accepted_count(), s.1 + 1);
                }
            }
            Ok(())
        }
    });
    let opened = Arc::new(Mutex::new(0usize));
    let client_opened = opened.clone();
    sim.client(SBC, async move {
        let mut cfg = TransportConfig::new(SBC);
        cfg.tls_client = Some(sbc_client);
        let (transport, _events) = SipTransport::start(TurmoilNet, cfg, None).await?;
        let target = Target {
            transport: TransportKind::Tls,
            addr: SocketAddr::new(turmoil::lookup(HUB), 5061),
            server_name: Some(HUB.into()),
        };
        let m = options();
        let (a, b, c) = tokio::join!(
            transport.send(&m, &target),
            transport.send(&m, &target),
            transport.send(&m, &target)
        );
        assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        *client_opened.lock().unwrap() = transport.connection_count();
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(*opened.lock().unwrap(), 1, "connections the SBC opened");
    assert_eq!(
        *accepted.lock().unwrap(),
        (1, 3),
        "(accepted, OPTIONS received)"
    );
}
