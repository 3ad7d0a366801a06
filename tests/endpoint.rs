//! The user agent core between two simulated hosts, each run by the
//! driver: malformed requests are answered with the status their fault
//! implies, CANCEL ends a pending INVITE with 487 (RFC 3261 §9.2), an
//! unknown CANCEL gets 481, and garbage never stops the host answering.

use sbc::driver::{run, HostSetup, NoMedia, Role};
use sbc::sip::endpoint::EndpointConfig;
use sbc::sip::rng::SeededRng;
use sbc::sip::session::{Hop, Reply, RequestBuilder, SessionConfig, SessionEvent, SessionId};
use sbc::sip::transport::{Network, Target, TransportConfig, TransportKind, TurmoilNet};
use sbc::sip::ua::{UaConfig, UaEvent, UserAgent};
use sbc::sip::wire::{Message, Method};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn setup(host: &str, port: u16) -> HostSetup {
    let mut transport = TransportConfig::new(host);
    transport.udp = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    HostSetup {
        transport,
        ua: UaConfig {
            endpoint: EndpointConfig::new(host),
            session: SessionConfig::new(format!("<sip:{host}:{port}>")),
        },
        names: vec![],
        rng: SeededRng::for_host(1, host),
    }
}

/// A UAS that rings on every INVITE and answers OPTIONS with 200; CANCEL
/// and 487 are the session layer's.
struct Ringer;

impl Role for Ringer {
    type Command = ();
    type MediaCommand = ();
    type MediaEvent = ();
    fn start(&mut self, _: Instant, _: &mut UserAgent) {}
    fn on_event(&mut self, now: Instant, ev: UaEvent, ua: &mut UserAgent) {
        match ev {
            UaEvent::Session {
                id,
                event: SessionEvent::Incoming { .. },
            } => {
                let _ = ua.provisional(now, id, 0, Reply::new(180, "Ringing"));
            }
            UaEvent::Request { key, request, .. } if request.method() == Some(&Method::Options) => {
                ua.reply(now, &key, 200, "OK", vec![]);
            }
            _ => {}
        }
    }
    fn on_command(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
    fn on_media(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
    fn on_timeout(&mut self, _: Instant, _: &mut UserAgent) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_media(&mut self) -> Option<()> {
        None
    }
}

fn server(sim: &mut turmoil::Sim<'_>) {
    sim.host("uas", || async {
        let (_tx, rx) = mpsc::unbounded_channel();
        run(
            TurmoilNet,
            setup("uas", 5060),
            Ringer,
            rx,
            NoMedia::default(),
            None,
        )
        .await?;
        Ok(())
    });
}

fn sim() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(3)
        .simulation_duration(Duration::from_secs(60))
        .build()
}

#[test]
fn malformed_requests_are_answered_with_their_status() {
    let mut sim = sim();
    server(&mut sim);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    sim.client("raw", async move {
        let sock = TurmoilNet.bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060)).await?;
        let uas = SocketAddr::new(turmoil::lookup("uas"), 5060);
        let via = "Via: SIP/2.0/UDP raw:5060;branch=z9hG4bKraw";
        let cases = [
            // CSeq is not a number.
            format!("OPTIONS sip:uas SIP/2.0\r\n{via}1\r\nFrom: <sip:raw>;tag=1\r\nTo: <sip:uas>\r\nCall-ID: c1\r\nCSeq: x OPTIONS\r\nContent-Length: 0\r\n\r\n"),
            // Body shorter than Content-Length.
            format!("OPTIONS sip:uas SIP/2.0\r\n{via}2\r\nFrom: <sip:raw>;tag=1\r\nTo: <sip:uas>\r\nCall-ID: c2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 50\r\n\r\nv=0\r\n"),
            // SIP/3.0.
            format!("OPTIONS sip:uas SIP/3.0\r\n{via}3\r\nContent-Length: 0\r\n\r\n"),
        ];
        let mut buf = vec![0u8; 4096];
        for case in cases {
            sock.send_to(case.as_bytes(), uas).await?;
            match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => out.lock().unwrap().push(Message::parse(&buf[..n]).map(|m| m.summary()).unwrap_or_else(|e| e.to_string())),
                _ => out.lock().unwrap().push("no answer".into()),
            }
        }
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0].starts_with("400 Bad Request (bad CSeq value"),
        "{seen:?}"
    );
    assert!(
        seen[1].starts_with("400 Bad Request (Content-Length says 50"),
        "{seen:?}"
    );
    assert_eq!(seen[2], "505 Version Not Supported");
}

/// A UAC that calls `uas`, CANCELs on the 180, then sends a CANCEL that
/// matches nothing; it records every final and provisional it hears.
struct Canceller {
    seen: Arc<Mutex<Vec<String>>>,
    call: Option<SessionId>,
    lone: Option<sbc::sip::transaction::TransactionKey>,
}

fn target() -> Hop {
    Hop::Target(Target {
        transport: TransportKind::Udp,
        addr: SocketAddr::new(turmoil::lookup("uas"), 5060),
        server_name: None,
    })
}

impl Role for Canceller {
    type Command = ();
    type MediaCommand = ();
    type MediaEvent = ();
    fn start(&mut self, now: Instant, ua: &mut UserAgent) {
        let m = RequestBuilder::new(
            Method::Invite,
            "sip:+4989000001@uas",
            "<sip:a@uac>",
            "<sip:+4989000001@uas>",
        )
        .build(ua.rng(), "uac");
        self.call = ua.invite(now, m, None, target()).ok();
    }
    fn on_event(&mut self, now: Instant, ev: UaEvent, ua: &mut UserAgent) {
        match ev {
            UaEvent::Session {
                id,
                event: SessionEvent::Progress { response, .. },
            } => {
                self.seen.lock().unwrap().push(response.summary());
                let _ = ua.cancel(now, id);
            }
            UaEvent::Session {
                event: SessionEvent::Ended { reason },
                ..
            } => {
                self.seen.lock().unwrap().push(format!("ended: {reason}"));
                // A CANCEL whose branch matches no INVITE at the UAS.
                let mut inv =
                    RequestBuilder::new(Method::Invite, "sip:x@uas", "<sip:a@uac>", "<sip:x@uas>")
                        .build(ua.rng(), "uac");
                inv.headers
                    .push_front("Via", "SIP/2.0/UDP uac:5060;branch=z9hG4bKnosuch");
                let mut lone = sbc::sip::transaction::build_cancel(&inv);
                lone.headers.remove("Via");
                self.lone = ua.send_request(now, lone, target()).ok();
            }
            UaEvent::Response { key, response } if Some(&key) == self.lone.as_ref() => {
                self.seen.lock().unwrap().push(format!(
                    "{} {}",
                    response.summary(),
                    response.cseq().unwrap().method
                ));
            }
            _ => {}
        }
    }
    fn on_command(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
    fn on_media(&mut self, _: Instant, _: (), _: &mut UserAgent) {}
    fn on_timeout(&mut self, _: Instant, _: &mut UserAgent) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn poll_media(&mut self) -> Option<()> {
        None
    }
}

#[test]
fn cancel_ends_a_ringing_invite_with_487_and_an_unknown_cancel_gets_481() {
    let mut sim = sim();
    server(&mut sim);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    sim.client("uac", async move {
        let role = Canceller {
            seen: out,
            call: None,
            lone: None,
        };
        let (_tx, rx) = mpsc::unbounded_channel();
        let run = run(
            TurmoilNet,
            setup("uac", 5060),
            role,
            rx,
            NoMedia::default(),
            None,
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), run).await;
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "180 Ringing",
            "ended: cancelled",
            "481 Call/Transaction Does Not Exist CANCEL"
        ]
    );
}

#[test]
fn garbage_datagrams_leave_the_endpoint_answering() {
    let mut sim = sim();
    server(&mut sim);
    let seen = Arc::new(Mutex::new(None));
    let out = seen.clone();
    sim.client("raw", async move {
        let sock = TurmoilNet.bind_udp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060)).await?;
        let uas = SocketAddr::new(turmoil::lookup("uas"), 5060);
        let valid = b"OPTIONS sip:uas SIP/2.0\r\nVia: SIP/2.0/UDP raw:5060;branch=z9hG4bKg\r\nFrom: <sip:raw>;tag=1\r\nTo: <sip:uas>\r\nCall-ID: g\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let mut rng = SeededRng::new(99);
        for i in 0..300u32 {
            let mut junk = valid.to_vec();
            match i % 3 {
                0 => {
                    let at = (rng.next_u32() as usize) % junk.len();
                    junk[at] = rng.next_u32() as u8;
                }
                1 => junk.truncate((rng.next_u32() as usize) % junk.len()),
                _ => {
                    junk = vec![0u8; (rng.next_u32() % 600) as usize];
                    rng.fill(&mut junk);
                }
            }
            sock.send_to(&junk, uas).await?;
        }
        // Drain whatever 400s came back, then ask properly.
        let mut buf = vec![0u8; 4096];
        while tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await.is_ok() {}
        sock.send_to(valid, uas).await?;
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
            *out.lock().unwrap() = Message::parse(&buf[..n]).ok().map(|m| m.summary());
        }
        Ok(())
    });
    sim.run().unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("200 OK"));
}
