//! Transactions on a fake clock: no sockets, no sleeping.

// A fake clock needs an origin; nothing here waits on it.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::sip::wire::Message;
use crate::sip::wire::Method;
use std::time::{Duration, Instant};

fn request(method: &str) -> Message {
    let raw = format!(
        "{method} sip:+4989000001@sip.pstnhub.microsoft.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtest1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+4930123456@sbc.example.com>;tag=abc\r\n\
         To: <sip:+4989000001@sip.pstnhub.microsoft.com>\r\n\
         Call-ID: call-1\r\n\
         CSeq: 7 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

fn respond(req: &Message, code: u16) -> Message {
    response_to(
        req,
        code,
        "Reason",
        if code > 100 { Some("to1") } else { None },
    )
}

/// Drive a transaction alone until it terminates (at most `limit` wakes),
/// returning the offsets (from `t0`) at which it transmitted.
fn run_client(
    tx: &mut ClientTransaction,
    t0: Instant,
    limit: usize,
) -> (Vec<Duration>, Vec<ClientEvent>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    let mut now = t0;
    for _ in 0..limit {
        while tx.poll_transmit().is_some() {
            sent.push(now - t0);
        }
        while let Some(e) = tx.poll_event() {
            events.push(e);
        }
        match tx.poll_timeout() {
            Some(at) => {
                now = at;
                tx.handle_timeout(now);
            }
            None => return (sent, events),
        }
    }
    panic!("transaction still running after {limit} wakes");
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

#[test]
fn invite_is_retransmitted_until_timer_b() {
    let t0 = Instant::now();
    let mut tx =
        ClientTransaction::new(request("INVITE"), false, TimerConfig::default(), t0).unwrap();
    let (sent, events) = run_client(&mut tx, t0, 100);
    // Sent at 0, then after intervals of 0.5, 1, 2, 4, 8, 16 s; Timer B at 32 s.
    assert_eq!(sent, secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]));
    assert_eq!(events, vec![ClientEvent::Timeout]);
    assert!(tx.is_terminated());
}

#[test]
fn invite_over_tls_is_sent_once_and_times_out_at_32s() {
    let t0 = Instant::now();
    let mut tx =
        ClientTransaction::new(request("INVITE"), true, TimerConfig::default(), t0).unwrap();
    let mut now = t0;
    assert!(tx.poll_transmit().is_some());
    while let Some(at) = tx.poll_timeout() {
        now = at;
        tx.handle_timeout(now);
        assert!(
            tx.poll_transmit().is_none(),
            "retransmitted on a reliable transport"
        );
    }
    assert_eq!(now - t0, Duration::from_secs(32));
    assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
}

#[test]
fn non_invite_retransmits_cap_at_t2() {
    let t0 = Instant::now();
    let mut tx =
        ClientTransaction::new(request("OPTIONS"), false, TimerConfig::default(), t0).unwrap();
    let (sent, events) = run_client(&mut tx, t0, 100);
    // Intervals 0.5, 1, 2, 4, 4, 4... until Timer F at 32 s.
    let want = secs(&[0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]);
    assert_eq!(sent, want);
    assert_eq!(events, vec![ClientEvent::Timeout]);
}

#[test]
fn provisional_stops_timer_a_and_non_2xx_is_acked_in_the_transaction() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ClientTransaction::new(req.clone(), false, TimerConfig::default(), t0).unwrap();
    tx.poll_transmit().unwrap();
    tx.handle_response(respond(&req, 180), t0 + Duration::from_millis(100));
    assert_eq!(tx.state(), ClientState::Proceeding);
    tx.handle_timeout(t0 + Duration::from_secs(5));
    assert!(
        tx.poll_transmit().is_none(),
        "Timer A must stop on a provisional"
    );
    tx.handle_response(respond(&req, 486), t0 + Duration::from_secs(6));
    let ack = tx.poll_transmit().expect("ACK");
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().seq, 7);
    assert_eq!(ack.to_header().unwrap().tag(), Some("to1"));
    assert_eq!(
        ack.top_via().unwrap().branch.as_deref(),
        Some("z9hG4bKtest1")
    );
    // A retransmitted 486 is ACKed again and not passed up again.
    tx.handle_response(respond(&req, 486), t0 + Duration::from_secs(7));
    assert!(tx.poll_transmit().is_some());
    let events: Vec<_> = std::iter::from_fn(|| tx.poll_event()).collect();
    assert_eq!(events.len(), 2);
    // Timer D (32 s on UDP) then terminates.
    assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(38)));
    tx.handle_timeout(t0 + Duration::from_secs(38));
    assert!(tx.is_terminated());
}

#[test]
fn every_2xx_reaches_the_tu_in_accepted() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ClientTransaction::new(req.clone(), true, TimerConfig::default(), t0).unwrap();
    tx.handle_response(respond(&req, 200), t0);
    tx.handle_response(respond(&req, 200), t0 + Duration::from_secs(1));
    assert_eq!(tx.state(), ClientState::Accepted);
    assert_eq!(std::iter::from_fn(|| tx.poll_event()).count(), 2);
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(tx.is_terminated());
}

#[test]
fn cancel_copies_the_invite_identity() {
    let req = request("INVITE");
    let cancel = build_cancel(&req);
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(cancel.request_uri(), req.request_uri());
    assert_eq!(cancel.cseq().unwrap().seq, 7);
    assert_eq!(
        cancel.top_via().unwrap().branch,
        req.top_via().unwrap().branch
    );
    assert!(cancel.to_header().unwrap().tag().is_none());
    assert!(cancel.validate().is_ok());
}

#[test]
fn server_invite_retransmits_final_until_ack_then_timer_i() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ServerTransaction::new(req.clone(), false, TimerConfig::default(), t0).unwrap();
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(100));
    tx.send_response(respond(&req, 486), t0).unwrap();
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(486));
    // Timer G: 0.5, then 1 s later.
    tx.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(486));
    tx.handle_timeout(t0 + Duration::from_millis(1500));
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(486));
    let ack = build_ack_for_non_2xx(&req, &respond(&req, 486));
    tx.handle_request(ack, t0 + Duration::from_secs(2));
    assert_eq!(tx.state(), ServerState::Confirmed);
    tx.handle_timeout(t0 + Duration::from_secs(7));
    assert!(tx.is_terminated());
    assert!(tx.poll_event().is_none());
}

#[test]
fn server_invite_without_ack_fires_timer_h() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ServerTransaction::new(req.clone(), true, TimerConfig::default(), t0).unwrap();
    tx.send_response(respond(&req, 404), t0).unwrap();
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(tx.poll_event(), Some(ServerEvent::AckTimeout));
    assert!(tx.is_terminated());
}

#[test]
fn server_2xx_is_retransmitted_over_udp_until_acked() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ServerTransaction::new(req.clone(), false, TimerConfig::default(), t0).unwrap();
    tx.poll_transmit();
    tx.send_response(respond(&req, 200), t0).unwrap();
    tx.poll_transmit();
    tx.handle_timeout(t0 + Duration::from_millis(500));
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(200));
    tx.ack_2xx();
    assert_eq!(tx.poll_event(), Some(ServerEvent::Acked));
    tx.handle_timeout(t0 + Duration::from_secs(2));
    assert!(tx.poll_transmit().is_none());
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(tx.is_terminated());
    assert!(tx.poll_event().is_none(), "no NoAckFor2xx once acked");
}

#[test]
fn server_2xx_never_acked_is_reported_at_timer_l() {
    let t0 = Instant::now();
    let req = request("INVITE");
    let mut tx = ServerTransaction::new(req.clone(), true, TimerConfig::default(), t0).unwrap();
    tx.send_response(respond(&req, 200), t0).unwrap();
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert_eq!(tx.poll_event(), Some(ServerEvent::NoAckFor2xx));
}

#[test]
fn server_non_invite_answers_retransmissions_with_last_response() {
    let t0 = Instant::now();
    let req = request("OPTIONS");
    let mut tx = ServerTransaction::new(req.clone(), false, TimerConfig::default(), t0).unwrap();
    assert!(
        tx.poll_transmit().is_none(),
        "no automatic 100 for non-INVITE"
    );
    tx.handle_request(req.clone(), t0);
    assert!(tx.poll_transmit().is_none(), "nothing to resend in Trying");
    tx.send_response(respond(&req, 200), t0).unwrap();
    tx.poll_transmit().unwrap();
    tx.handle_request(req.clone(), t0 + Duration::from_secs(1));
    assert_eq!(tx.poll_transmit().unwrap().status(), Some(200));
    assert!(tx.send_response(respond(&req, 500), t0).is_err());
    tx.handle_timeout(t0 + Duration::from_secs(32));
    assert!(tx.is_terminated());
}

#[test]
fn server_non_invite_over_tcp_ends_with_its_final() {
    let t0 = Instant::now();
    let req = request("OPTIONS");
    let mut tx = ServerTransaction::new(req.clone(), true, TimerConfig::default(), t0).unwrap();
    tx.send_response(respond(&req, 200), t0).unwrap();
    assert!(tx.is_terminated());
}

#[test]
fn keys_match_ack_to_invite_and_response_to_request() {
    let req = request("INVITE");
    let ack = build_ack_for_non_2xx(&req, &respond(&req, 486));
    assert_eq!(
        TransactionKey::for_request(&ack).unwrap(),
        TransactionKey::for_request(&req).unwrap()
    );
    assert_eq!(
        TransactionKey::for_response(&respond(&req, 180)).unwrap(),
        TransactionKey::for_request(&req).unwrap()
    );
    let cancel = build_cancel(&req);
    assert_ne!(
        TransactionKey::for_request(&cancel).unwrap(),
        TransactionKey::for_request(&req).unwrap()
    );
}

#[test]
fn timer_b_stops_once_a_provisional_arrives() {
    // RFC 3261 §17.1.1.2: Timer B only matters in Calling. A callee that
    // rings for 45 s before answering must not see its INVITE time out.
    for reliable in [false, true] {
        let t0 = Instant::now();
        let req = request("INVITE");
        let mut tx =
            ClientTransaction::new(req.clone(), reliable, TimerConfig::default(), t0).unwrap();
        tx.handle_response(respond(&req, 180), t0 + Duration::from_secs(1));
        assert_eq!(tx.poll_timeout(), None, "no timer runs in Proceeding");
        tx.handle_timeout(t0 + Duration::from_secs(45));
        assert_eq!(tx.state(), ClientState::Proceeding);
        tx.handle_response(respond(&req, 200), t0 + Duration::from_secs(46));
        let events: Vec<_> = std::iter::from_fn(|| tx.poll_event()).collect();
        assert!(
            !events.contains(&ClientEvent::Timeout),
            "reliable={reliable}: {events:?}"
        );
        assert_eq!(tx.state(), ClientState::Accepted);
    }
}
