//! Transactions under arbitrary input sequences: any order of responses,
//! retransmitted requests, ACKs, timeouts and transport errors never
//! panics, never transmits after termination, and always terminates once
//! time runs far enough ahead.

// Wall-clock deadlines for tests on real sockets, or a fake clock's origin.
#![allow(clippy::disallowed_methods)]

use proptest::prelude::*;
use sbc::sip::transaction::{response_to, ClientTransaction, ServerTransaction, TimerConfig};
use sbc::sip::wire::Message;
use std::time::{Duration, Instant};

fn request(method: &str) -> Message {
    let raw = format!(
        "{method} sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bKprop\r\nFrom: <sip:a@example.com>;tag=1\r\n\
         To: <sip:b@example.com>\r\nCall-ID: prop\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

#[derive(Debug, Clone)]
enum Input {
    Response(u16),
    Retransmit,
    Ack,
    Timeout(u64),
    TransportError,
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        prop_oneof![
            Just(100u16),
            Just(180),
            Just(183),
            Just(200),
            Just(202),
            Just(302),
            Just(404),
            Just(486),
            Just(503),
            Just(603)
        ]
        .prop_map(Input::Response),
        Just(Input::Retransmit),
        Just(Input::Ack),
        (0u64..40_000).prop_map(Input::Timeout),
        Just(Input::TransportError),
    ]
}

proptest! {
    #[test]
    fn client_transactions_survive_any_sequence(invite in any::<bool>(), reliable in any::<bool>(), inputs in prop::collection::vec(input(), 0..30)) {
        let t0 = Instant::now();
        let req = request(if invite { "INVITE" } else { "OPTIONS" });
        let mut tx = ClientTransaction::new(req.clone(), reliable, TimerConfig::default(), t0).unwrap();
        let mut now = t0;
        for i in inputs {
            let was_terminated = tx.is_terminated();
            match i {
                Input::Response(code) => tx.handle_response(response_to(&req, code, "X", (code > 100).then_some("t")), now),
                Input::Timeout(ms) => { now += Duration::from_millis(ms); tx.handle_timeout(now) }
                Input::TransportError => tx.handle_transport_error(),
                Input::Retransmit | Input::Ack => {}
            }
            let sent = std::iter::from_fn(|| tx.poll_transmit()).count();
            prop_assert!(!(was_terminated && sent > 0), "transmitted after termination");
            while tx.poll_event().is_some() {}
            if let Some(d) = tx.poll_timeout() { prop_assert!(d >= t0) }
        }
        // Far enough ahead every transaction has ended, but an INVITE that
        // got a provisional: it waits, with no timer, for its final response
        // or its TU's CANCEL (RFC 3261 §17.1.1.2: Timer B only in Calling).
        for _ in 0..200 {
            match tx.poll_timeout() { Some(d) => tx.handle_timeout(d), None => break }
        }
        let waits = invite && tx.state() == sbc::sip::transaction::ClientState::Proceeding;
        prop_assert!(tx.is_terminated() || (waits && tx.poll_timeout().is_none()), "{:?}", tx.state());
    }

    #[test]
    fn server_transactions_survive_any_sequence(invite in any::<bool>(), reliable in any::<bool>(), inputs in prop::collection::vec(input(), 0..30)) {
        let t0 = Instant::now();
        let req = request(if invite { "INVITE" } else { "OPTIONS" });
        let mut tx = ServerTransaction::new(req.clone(), reliable, TimerConfig::default(), t0).unwrap();
        let mut now = t0;
        let mut finals = 0;
        for i in inputs {
            match i {
                Input::Response(code) => {
                    if tx.send_response(response_to(&req, code, "X", Some("t")), now).is_ok() && code >= 200 {
                        finals += 1;
                    }
                }
                Input::Retransmit => tx.handle_request(req.clone(), now),
                Input::Ack => {
                    let mut ack = req.clone();
                    ack.start = sbc::sip::wire::StartLine::Request { method: sbc::sip::wire::Method::Ack, uri: "sip:b@example.com".into() };
                    ack.headers.set("CSeq", "1 ACK");
                    tx.handle_request(ack, now);
                    tx.ack_2xx();
                }
                Input::Timeout(ms) => { now += Duration::from_millis(ms); tx.handle_timeout(now) }
                Input::TransportError => tx.handle_transport_error(),
            }
            while tx.poll_transmit().is_some() {}
            while tx.poll_event().is_some() {}
            // A final response is accepted once; a 2xx to an INVITE may be repeated (RFC 6026).
            prop_assert!(finals <= 1 || invite, "two finals accepted for a non-INVITE");
        }
        for _ in 0..200 {
            match tx.poll_timeout() { Some(d) => tx.handle_timeout(d), None => break }
        }
        // Only a transaction that never answered may still be waiting (for its TU).
        prop_assert!(tx.is_terminated() || finals == 0);
    }
}
