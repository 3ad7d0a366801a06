//! Mutual TLS between an SBC and a hub proxy over simulated sockets: the
//! hub accepts a good SBC certificate and refuses an untrusted, expired,
//! wrongly named or incomplete one; the SBC refuses a hub certificate
//! without the serverAuth EKU.

use drlab_sim::pki::{Eku, LeafSpec, TestPki};
use sbc::sip::transport::tls::{client_config, roots, server_config, TlsIdentity};
use sbc::sip::transport::{
    SipTransport, Target, TlsListen, TransportConfig, TransportEvent, TransportKind, TurmoilNet,
};
use sbc::sip::wire::Message;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const HUB: &str = "sip.pstnhub.microsoft.com";
const SBC: &str = "sbc.example.com";

fn options() -> Message {
    let raw = format!(
        "OPTIONS sip:{HUB}:5061 SIP/2.0\r\nVia: SIP/2.0/TLS {SBC}:5061;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\
         From: <sip:{SBC}:5061>;tag=1\r\nTo: <sip:{HUB}:5061>\r\nCall-ID: tls-test\r\nCSeq: 1 OPTIONS\r\n\
         Contact: <sip:{SBC}:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    hub: Vec<String>,
    sbc: Vec<String>,
}

/// Run one hub and one SBC; the SBC sends OPTIONS, the hub answers 200 on
/// the same connection. Returns what each side saw.
fn exchange(pki: &TestPki, hub_id: TlsIdentity, sbc_id: TlsIdentity) -> Outcome {
    let root = roots(&[pki.root()]).unwrap();
    let hub_server = server_config(&hub_id, root.clone()).unwrap();
    let sbc_client = client_config(&sbc_id, root).unwrap();
    let outcome = Arc::new(Mutex::new(Outcome::default()));

    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(10))
        .build();
    let seen = outcome.clone();
    sim.host(HUB, move || {
        let hub_server = hub_server.clone();
        let seen = seen.clone();
        async move {
            let mut cfg = TransportConfig::new(HUB);
            cfg.tls = Some(TlsListen {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5061),
                config: hub_server,
                allowed_client_names: Some(vec![SBC.to_string()]),
            });
            let (transport, mut events) = SipTransport::start(TurmoilNet, cfg, None).await?;
            while let Some(ev) = events.recv().await {
                let line = match ev {
                    TransportEvent::Message {
                        message, source, ..
                    } => {
                        let ok = sbc::sip::transaction::response_to(&message, 200, "OK", None);
                        transport.reply(&ok, &source).await?;
                        format!("message {} from {:?}", message.summary(), source.peer_names)
                    }
                    TransportEvent::TlsRefused { reason, .. } => format!("refused: {reason}"),
                    TransportEvent::ConnectionClosed { .. } => continue,
                    other => format!("{other:?}"),
                };
                seen.lock().unwrap().hub.push(line);
            }
            Ok(())
        }
    });
    let seen = outcome.clone();
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
            seen.lock().unwrap().sbc.push(format!("send failed: {e}"));
        }
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Some(TransportEvent::Message { message, .. }) => seen.lock().unwrap().sbc.push(format!("got {}", message.summary())),
                    Some(TransportEvent::ConnectionClosed { .. }) => seen.lock().unwrap().sbc.push("closed".into()),
                    Some(TransportEvent::TlsRefused { reason, .. }) => seen.lock().unwrap().sbc.push(format!("refused: {reason}")),
                    Some(_) => {}
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        Ok(())
    });
    sim.run().unwrap();
    let out = outcome.lock().unwrap().clone();
    out
}

#[test]
fn good_sbc_certificate_is_accepted_and_answered_on_the_same_connection() {
    let pki = TestPki::new().unwrap();
    let out = exchange(&pki, pki.hub().unwrap(), pki.good(&[SBC]).unwrap());
    assert_eq!(
        out.hub,
        vec![format!("message OPTIONS sip:{HUB}:5061 from [\"{SBC}\"]")]
    );
    assert_eq!(out.sbc, vec!["got 200 OK".to_string()]);
}

fn assert_hub_refused(out: &Outcome, reason_part: &str) {
    assert_eq!(out.hub.len(), 1, "{out:?}");
    assert!(
        out.hub[0].starts_with("refused:") && out.hub[0].contains(reason_part),
        "{out:?}"
    );
    assert!(
        !out.sbc.iter().any(|l| l.starts_with("got")),
        "the SBC must get no SIP answer: {out:?}"
    );
}

#[test]
fn sbc_certificate_from_an_untrusted_root_is_refused() {
    let pki = TestPki::new().unwrap();
    let bad = pki
        .leaf(&LeafSpec {
            untrusted: true,
            ..LeafSpec::good(&[SBC])
        })
        .unwrap();
    assert_hub_refused(&exchange(&pki, pki.hub().unwrap(), bad), "UnknownIssuer");
}

#[test]
fn expired_sbc_certificate_is_refused() {
    let pki = TestPki::new().unwrap();
    let bad = pki
        .leaf(&LeafSpec {
            expired: true,
            ..LeafSpec::good(&[SBC])
        })
        .unwrap();
    assert_hub_refused(
        &exchange(&pki, pki.hub().unwrap(), bad),
        "certificate expired",
    );
}

#[test]
fn sbc_certificate_with_the_wrong_name_is_refused() {
    let pki = TestPki::new().unwrap();
    let bad = pki.good(&["other.example.com"]).unwrap();
    assert_hub_refused(&exchange(&pki, pki.hub().unwrap(), bad), "cover none");
}

#[test]
fn wildcard_covers_one_label_only() {
    let pki = TestPki::new().unwrap();
    let ok = exchange(
        &pki,
        pki.hub().unwrap(),
        pki.good(&["*.example.com"]).unwrap(),
    );
    assert_eq!(ok.sbc, vec!["got 200 OK".to_string()]);
    let deep = exchange(
        &pki,
        pki.hub().unwrap(),
        pki.good(&["*.sbc.example.com"]).unwrap(),
    );
    assert_hub_refused(&deep, "cover none");
}

#[test]
fn sbc_certificate_without_its_intermediate_is_refused() {
    let pki = TestPki::new().unwrap();
    let bad = pki
        .leaf(&LeafSpec {
            with_intermediate: false,
            ..LeafSpec::good(&[SBC])
        })
        .unwrap();
    assert_hub_refused(&exchange(&pki, pki.hub().unwrap(), bad), "UnknownIssuer");
}

#[test]
fn hub_certificate_without_server_auth_is_refused_by_the_sbc() {
    let pki = TestPki::new().unwrap();
    let hub = pki
        .leaf(&LeafSpec {
            eku: Eku::ClientOnly,
            ..LeafSpec::good(&[HUB])
        })
        .unwrap();
    let out = exchange(&pki, hub, pki.good(&[SBC]).unwrap());
    assert!(
        out.sbc.iter().any(|l| l.starts_with("send failed: TLS")),
        "{out:?}"
    );
    assert!(!out.hub.iter().any(|l| l.starts_with("message")), "{out:?}");
}
