//! The endpoint (transaction user core) between two simulated hosts:
//! malformed requests are answered with the status their fault implies,
//! CANCEL ends a pending INVITE with 487 (RFC 3261 §9.2), and an unknown
//! CANCEL gets 481.

use sbc::sip::endpoint::{Endpoint, EndpointConfig, EndpointEvent};
use sbc::sip::rng::SeededRng;
use sbc::sip::transaction::{response_to, TimerConfig};
use sbc::sip::transport::{
    Network, SipTransport, Target, TransportConfig, TransportKind, TurmoilNet,
};
use sbc::sip::wire::{Message, Method};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn endpoint(host: &str, port: u16) -> std::io::Result<Endpoint<TurmoilNet>> {
    let mut cfg = TransportConfig::new(host);
    cfg.udp = Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    let (t, ev) = SipTransport::start(TurmoilNet, cfg, None).await?;
    let ec = EndpointConfig {
        via_host: host.into(),
        timers: TimerConfig::default(),
        user_agent: None,
    };
    Ok(Endpoint::new(t, ev, ec, SeededRng::for_host(1, host)))
}

/// A UAS that rings on every INVITE and answers a CANCEL with 487.
fn server(sim: &mut turmoil::Sim<'_>) {
    sim.host("uas", || async {
        let mut ep = endpoint("uas", 5060).await?;
        loop {
            match ep.next_event(None).await {
                EndpointEvent::Request { key, request, .. }
                    if request.method() == Some(&Method::Invite) =>
                {
                    ep.respond(&key, response_to(&request, 180, "Ringing", Some("t1")));
                }
                EndpointEvent::Request { key, request, .. }
                    if request.method() == Some(&Method::Options) =>
                {
                    ep.respond(&key, response_to(&request, 200, "OK", None));
                }
                EndpointEvent::Cancelled { key } => {
                    let invite = ep
                        .server_request(&key)
                        .cloned()
                        .expect("the INVITE is pending");
                    ep.respond(
                        &key,
                        response_to(&invite, 487, "Request Terminated", Some("t1")),
                    );
                }
                _ => {}
            }
        }
    });
}

fn invite(branch_free: &str) -> Message {
    let raw = format!(
        "INVITE sip:+4989000001@uas SIP/2.0\r\nFrom: <sip:a@uac>;tag=f1\r\nTo: <sip:+4989000001@uas>\r\n\
         Call-ID: {branch_free}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
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

#[test]
fn cancel_ends_a_ringing_invite_with_487_and_an_unknown_cancel_gets_481() {
    let mut sim = sim();
    server(&mut sim);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    sim.client("uac", async move {
        let mut ep = endpoint("uac", 5060).await?;
        let target = Target {
            transport: TransportKind::Udp,
            addr: SocketAddr::new(turmoil::lookup("uas"), 5060),
            server_name: None,
        };
        let key = ep
            .send_request(invite("call-1"), target.clone())
            .map_err(std::io::Error::other)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut cancelled = false;
        loop {
            match ep.next_event(Some(deadline)).await {
                EndpointEvent::Response { key: k, response } => {
                    let line =
                        format!("{} {}", response.summary(), response.cseq().unwrap().method);
                    out.lock().unwrap().push(line);
                    if k == key && response.status() == Some(180) && !cancelled {
                        cancelled = true;
                        ep.send_cancel(&key).expect("INVITE still pending");
                    }
                    if response.status() == Some(487) {
                        break;
                    }
                }
                EndpointEvent::Wake => break,
                _ => {}
            }
        }
        // A CANCEL whose branch matches no INVITE at the UAS.
        let lone = sbc::sip::transaction::build_cancel(&invite("call-2"));
        let key = ep
            .send_request(lone, target)
            .map_err(std::io::Error::other)?;
        loop {
            match ep.next_event(Some(deadline)).await {
                EndpointEvent::Response { key: k, response } if k == key => {
                    out.lock().unwrap().push(format!(
                        "{} {}",
                        response.summary(),
                        response.cseq().unwrap().method
                    ));
                    break;
                }
                EndpointEvent::Wake => break,
                _ => {}
            }
        }
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "100 Trying INVITE",
            "180 Ringing INVITE",
            "200 OK CANCEL",
            "487 Request Terminated INVITE",
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
