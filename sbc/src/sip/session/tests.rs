//! Two user agents on a fake clock, messages carried in memory (serialised
//! and parsed again, as on a wire), no sockets, no runtime: the session
//! layer's behaviour, end to end, in microseconds. The harness follows
//! quinn-proto's `tests/util.rs`: a `Pair` and a bounded drive loop that
//! fails instead of hanging.

// A fake clock needs an origin; nothing here waits on it.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::sip::endpoint::{Destination, EndpointConfig, LocalPorts};
use crate::sip::rng::SeededRng;
use crate::sip::routing::RoutingTable;
use crate::sip::sdp::offer_answer::{Codec, LocalMedia};
use crate::sip::sdp::Origin;
use crate::sip::transport::{Source, Target, TransportKind};
use crate::sip::ua::{UaConfig, UaEvent, UserAgent};
use crate::sip::wire::{Message, Method};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Host {
    ua: UserAgent,
    addr: SocketAddr,
    events: Vec<UaEvent>,
}

/// A message on its way: due at `at`, to `to`, from `from`.
struct InFlight {
    at: Instant,
    to: SocketAddr,
    from: SocketAddr,
    bytes: Vec<u8>,
}

type Dropper = Box<dyn FnMut(&Message) -> bool>;

struct Pair {
    start: Instant,
    now: Instant,
    latency: Duration,
    a: Host,
    b: Host,
    flight: Vec<InFlight>,
    /// Drop every message this predicate picks, before delivery.
    drop: Option<Dropper>,
    /// Every message delivered: (from, first line).
    log: Vec<(SocketAddr, String)>,
}

fn host(name: &str, at: &str, seed: u64) -> Host {
    host_with(name, at, seed, None)
}

fn host_with(name: &str, at: &str, seed: u64, timer: Option<SessionTimerConfig>) -> Host {
    let mut routing = RoutingTable::new();
    routing.insert("a.example.com", addr(A).ip());
    routing.insert("b.example.com", addr(B).ip());
    let mut session = SessionConfig::new(format!("<sip:{name}.example.com:5060>"));
    session.supported = vec!["timer".into()];
    session.timer = timer;
    let config = UaConfig {
        endpoint: EndpointConfig::new(format!("{name}.example.com")),
        session,
    };
    let ports = LocalPorts {
        udp: Some(5060),
        ..Default::default()
    };
    Host {
        ua: UserAgent::new(config, ports, routing, SeededRng::new(seed)),
        addr: addr(at),
        events: Vec::new(),
    }
}

impl Pair {
    fn new() -> Pair {
        let start = Instant::now();
        Pair {
            start,
            now: start,
            latency: Duration::from_millis(10),
            a: host("a", A, 1),
            b: host("b", B, 2),
            flight: Vec::new(),
            drop: None,
            log: Vec::new(),
        }
    }

    fn host(&mut self, at: SocketAddr) -> &mut Host {
        if at == self.a.addr {
            &mut self.a
        } else {
            &mut self.b
        }
    }

    /// Move what each side wants sent into flight, and their events out.
    fn collect(&mut self) {
        for h in [&mut self.a, &mut self.b] {
            while let Some(t) = h.ua.poll_transmit() {
                let to = match &t.destination {
                    Destination::Target(t) => t.addr,
                    Destination::Reply(s) => s.remote,
                };
                self.flight.push(InFlight {
                    at: self.now + self.latency,
                    to,
                    from: h.addr,
                    bytes: t.message.to_bytes(),
                });
            }
            while let Some(e) = h.ua.poll_event() {
                h.events.push(e);
            }
        }
    }

    /// One step: deliver what is due, else advance the clock to the next
    /// delivery or timer. `false` when nothing is left to happen.
    fn step(&mut self) -> bool {
        self.collect();
        self.flight.sort_by_key(|f| f.at);
        if let Some(pos) = self.flight.iter().position(|f| f.at <= self.now) {
            let f = self.flight.remove(pos);
            let msg = Message::parse(&f.bytes).expect("what a UA sends parses");
            if let Some(d) = &mut self.drop {
                if d(&msg) {
                    return true;
                }
            }
            self.log.push((f.from, label(&msg)));
            let source = Source {
                transport: TransportKind::Udp,
                local: f.to,
                remote: f.from,
                connection: None,
                peer_names: Arc::default(),
            };
            let now = self.now;
            self.host(f.to).ua.handle_message(now, msg, f.bytes, source);
            return true;
        }
        let next = [
            self.flight.iter().map(|f| f.at).min(),
            self.a.ua.poll_timeout(),
            self.b.ua.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        let now = self.now;
        for h in [&mut self.a, &mut self.b] {
            if h.ua.poll_timeout().is_some_and(|t| t <= now) {
                h.ua.handle_timeout(now);
            }
        }
        true
    }

    /// Drive until `done` holds, at most `limit` steps (then fail: a loop
    /// that never settles is a bug, not a hang).
    fn drive_until(&mut self, limit: usize, mut done: impl FnMut(&Pair) -> bool) {
        for _ in 0..limit {
            self.collect();
            if done(self) {
                return;
            }
            if !self.step() {
                break;
            }
        }
        self.collect();
        assert!(
            done(self),
            "not done after {limit} steps at +{:?}; log: {:#?}",
            self.elapsed(),
            self.log
        );
    }

    /// Drive until nothing is left: no message in flight, no timer.
    fn drive_to_rest(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
        panic!("never at rest; log: {:#?}", self.log);
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Let `d` pass, delivering and firing whatever falls due meanwhile.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..100_000 {
            self.collect();
            let next = [
                self.flight.iter().map(|f| f.at).min(),
                self.a.ua.poll_timeout(),
                self.b.ua.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= until => {
                    self.step();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("no rest while advancing");
    }

    fn sent(&self, from: &str, line_starts: &str) -> usize {
        let from = addr(from);
        self.log
            .iter()
            .filter(|(f, l)| *f == from && l.starts_with(line_starts))
            .count()
    }
}

/// `INVITE sip:...` for a request, `SIP/2.0 200 OK (BYE)` for a response.
fn label(m: &Message) -> String {
    match m.status() {
        None => m.summary(),
        Some(_) => format!(
            "SIP/2.0 {} ({})",
            m.summary(),
            m.cseq().map(|c| c.method.to_string()).unwrap_or_default()
        ),
    }
}

fn sdp(port: u16, version: u64) -> crate::sip::sdp::SessionDescription {
    LocalMedia {
        address: "10.0.0.9".into(),
        port,
        codecs: vec![Codec::pcmu()],
        srtp_key: None,
        rtcp_mux: false,
        ice: None,
    }
    .offer(Origin {
        username: "-".into(),
        session_id: 42,
        session_version: version,
        address: "10.0.0.9".into(),
    })
}

fn invite_msg(rng: &mut SeededRng) -> Message {
    RequestBuilder::new(
        Method::Invite,
        "sip:+4989000001@b.example.com",
        "<sip:+4930123456@a.example.com>",
        "<sip:+4989000001@b.example.com>",
    )
    .build(rng, "a.example.com")
}

fn to_b() -> Hop {
    Hop::Target(Target {
        transport: TransportKind::Udp,
        addr: addr(B),
        server_name: None,
    })
}

/// A calls B; returns A's session id.
fn call(p: &mut Pair) -> SessionId {
    let msg = invite_msg(p.a.ua.rng());
    let now = p.now;
    p.a.ua.invite(now, msg, Some(sdp(4000, 1)), to_b()).unwrap()
}

fn incoming(h: &Host) -> Option<SessionId> {
    h.events.iter().find_map(|e| match e {
        UaEvent::Session {
            id,
            event: SessionEvent::Incoming { .. },
        } => Some(*id),
        _ => None,
    })
}

fn has(h: &Host, f: impl Fn(&SessionEvent) -> bool) -> bool {
    h.events
        .iter()
        .any(|e| matches!(e, UaEvent::Session { event, .. } if f(event)))
}

fn ended(h: &Host) -> Option<EndReason> {
    h.events.iter().find_map(|e| match e {
        UaEvent::Session {
            event: SessionEvent::Ended { reason },
            ..
        } => Some(reason.clone()),
        _ => None,
    })
}

fn ringing(n: u16) -> Reply {
    Reply::new(n, "Ringing")
}

/// A calls, B rings and answers; both confirmed.
fn answered_call(p: &mut Pair) -> (SessionId, SessionId) {
    let a = call(p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua.provisional(now, b, 0, ringing(180)).unwrap();
    p.b.ua
        .accept(now, b, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Answered { .. }))
            && has(&p.b, |e| *e == SessionEvent::Confirmed)
    });
    (a, b)
}

#[test]
fn a_call_is_answered_acked_and_ended_with_bye_and_nothing_is_left() {
    let mut p = Pair::new();
    let (a, b) = answered_call(&mut p);
    assert_eq!(p.a.ua.session(a).unwrap().state(), SessionState::Confirmed);
    let oa = p.a.ua.session(a).unwrap().offer_answer().clone();
    assert_eq!(oa.state, OaState::Stable);
    assert_eq!(oa.remote.unwrap().media[0].port, 5000);
    let now = p.now;
    p.a.ua.bye(now, a, vec![]).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some() && ended(&p.b).is_some());
    assert_eq!(ended(&p.a), Some(EndReason::LocalBye));
    assert_eq!(ended(&p.b), Some(EndReason::RemoteBye { reason: None }));
    assert_eq!(p.sent(B, "SIP/2.0 200 OK (BYE)"), 1);
    // 64·T1 of linger on UDP, then the sessions are reaped and every
    // transaction has ended.
    p.drive_to_rest();
    for h in [&p.a, &p.b] {
        assert_eq!(h.ua.counts().sessions, 0, "sessions left");
        assert_eq!(h.ua.counts().transactions, 0, "transactions left");
    }
    let _ = b;
}

#[test]
fn a_lost_ack_brings_the_2xx_again_and_the_same_ack_answers_it() {
    let mut p = Pair::new();
    let mut dropped = false;
    p.drop = Some(Box::new(move |m: &Message| {
        if !dropped && m.method() == Some(&Method::Ack) {
            dropped = true;
            return true;
        }
        false
    }));
    answered_call(&mut p);
    assert_eq!(p.sent(B, "SIP/2.0 200 OK (INVITE)"), 2, "{:#?}", p.log);
    assert_eq!(p.sent(A, "ACK"), 1, "the second ACK got through");
    // The re-sent ACK is the same message (same branch).
    let acks: Vec<_> = p.log.iter().filter(|(_, l)| l.starts_with("ACK")).collect();
    assert_eq!(acks.len(), 1);
}

#[test]
fn a_2xx_never_acked_ends_the_session_with_bye_after_64_t1() {
    let mut p = Pair::new();
    p.drop = Some(Box::new(|m: &Message| m.method() == Some(&Method::Ack)));
    let start = p.now;
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua
        .accept(now, b, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(1000, |p| ended(&p.b).is_some() && ended(&p.a).is_some());
    assert_eq!(ended(&p.b), Some(EndReason::NoAck));
    assert_eq!(ended(&p.a), Some(EndReason::RemoteBye { reason: None }));
    let waited = p.now - start;
    assert!(
        waited >= Duration::from_secs(32) && waited < Duration::from_secs(33),
        "BYE after {waited:?}"
    );
    // RFC 3261 §13.3.1.4: 2xx retransmitted at 0.5, 1, 2, 4, 4... s.
    assert!(p.sent(B, "SIP/2.0 200 OK (INVITE)") >= 10);
    let _ = a;
}

#[test]
fn cancel_waits_for_a_provisional_then_ends_with_487() {
    let mut p = Pair::new();
    // The 100 Trying is lost: the CANCEL must wait for the 180 (§9.1).
    p.drop = Some(Box::new(|m: &Message| m.status() == Some(100)));
    let a = call(&mut p);
    let now = p.now;
    p.a.ua.cancel(now, a).unwrap();
    p.drive_until(100, |p| incoming(&p.b).is_some());
    p.drive_until(100, |p| p.flight.is_empty());
    assert_eq!(p.sent(A, "CANCEL"), 0, "no CANCEL before a provisional");
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua.provisional(now, b, 0, ringing(180)).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some() && ended(&p.b).is_some());
    assert_eq!(ended(&p.a), Some(EndReason::Cancelled));
    assert_eq!(ended(&p.b), Some(EndReason::Cancelled));
    assert_eq!(p.sent(B, "SIP/2.0 487"), 1);
    p.drive_to_rest();
    assert_eq!(p.a.ua.counts().sessions + p.b.ua.counts().sessions, 0);
}

#[test]
fn a_2xx_that_crosses_the_cancel_is_acked_and_byed() {
    let mut p = Pair::new();
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    p.drive_until(100, |p| p.sent(B, "SIP/2.0 100") == 1);
    // Both at the same instant: the CANCEL and the 200 cross on the wire.
    let now = p.now;
    p.a.ua.cancel(now, a).unwrap();
    p.b.ua
        .accept(now, b, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some() && ended(&p.b).is_some());
    assert_eq!(ended(&p.a), Some(EndReason::Cancelled));
    assert_eq!(p.sent(A, "ACK"), 1);
    assert_eq!(p.sent(A, "BYE"), 1);
    assert_eq!(
        p.sent(B, "SIP/2.0 200 OK (CANCEL)"),
        0,
        "too late to cancel: 481"
    );
}

#[test]
fn forks_ring_with_their_own_tags_and_the_2xx_fork_makes_the_dialog() {
    let mut p = Pair::new();
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    let fork = p.b.ua.add_fork(now, b).unwrap();
    p.b.ua.provisional(now, b, 0, ringing(180)).unwrap();
    p.b.ua.provisional(now, b, fork, ringing(180)).unwrap();
    p.b.ua
        .accept(now, b, fork, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Answered { .. }))
    });
    let tags: Vec<String> =
        p.a.events
            .iter()
            .filter_map(|e| match e {
                UaEvent::Session {
                    event: SessionEvent::Progress { response, .. },
                    ..
                } => response.to_header().ok()?.tag().map(str::to_string),
                _ => None,
            })
            .collect();
    assert_eq!(tags.len(), 2);
    assert_ne!(tags[0], tags[1], "a To-tag per fork");
    let d = p.a.ua.session(a).unwrap().dialog().unwrap().clone();
    assert_eq!(d.remote_tag, tags[1], "the dialog is the answering fork's");
    // A BYE from B's answering fork reaches A's session.
    p.drive_until(100, |p| has(&p.b, |e| *e == SessionEvent::Confirmed));
    let now = p.now;
    p.b.ua.bye(now, b, vec![]).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some());
}

#[test]
fn a_re_invite_changes_the_sdp_and_bumps_the_origin_version() {
    let mut p = Pair::new();
    let (a, b) = answered_call(&mut p);
    let now = p.now;
    p.a.ua.reinvite(now, a, sdp(4100, 1), vec![]).unwrap();
    p.drive_until(100, |p| {
        has(&p.b, |e| matches!(e, SessionEvent::ReInvite { .. }))
    });
    let offer =
        p.b.events
            .iter()
            .find_map(|e| match e {
                UaEvent::Session {
                    event: SessionEvent::ReInvite { offer, .. },
                    ..
                } => offer.clone(),
                _ => None,
            })
            .unwrap();
    assert_eq!(offer.media[0].port, 4100);
    assert_eq!(offer.origin.session_version, 2, "changed SDP: version + 1");
    let now = p.now;
    p.b.ua
        .answer_reinvite(now, b, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| {
            matches!(e, SessionEvent::ReInviteDone { result: Ok(_) })
        })
    });
    // B answered with the same SDP as before: same version (a refresh).
    let b_local =
        p.b.ua
            .session(b)
            .unwrap()
            .offer_answer()
            .local
            .clone()
            .unwrap();
    assert_eq!(b_local.origin.session_version, 1);
    // The re-INVITE's 2xx is ACKed too.
    p.drive_until(100, |p| p.sent(A, "ACK") == 2);
    // A keep-alive re-INVITE with the same SDP keeps the version.
    let now = p.now;
    p.a.ua.reinvite(now, a, sdp(4100, 1), vec![]).unwrap();
    p.drive_until(100, |p| {
        p.b.events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    UaEvent::Session {
                        event: SessionEvent::ReInvite { .. },
                        ..
                    }
                )
            })
            .count()
            == 2
    });
    let a_local =
        p.a.ua
            .session(a)
            .unwrap()
            .offer_answer()
            .local
            .clone()
            .unwrap();
    assert_eq!(a_local.origin.session_version, 2);
}

#[test]
fn glare_gets_491_and_both_offers_go_through_after_the_random_wait() {
    let mut p = Pair::new();
    let (a, b) = answered_call(&mut p);
    let now = p.now;
    p.a.ua.reinvite(now, a, sdp(4100, 1), vec![]).unwrap();
    p.b.ua.reinvite(now, b, sdp(5100, 1), vec![]).unwrap();
    // Each side answers the other's re-INVITE as it arrives.
    let mut answered = 0;
    for _ in 0..2000 {
        p.collect();
        for (h, id, port) in [(&mut p.a, a, 4100), (&mut p.b, b, 5100)] {
            let pending: Vec<_> = h
                .events
                .drain(..)
                .filter(|e| {
                    matches!(
                        e,
                        UaEvent::Session {
                            event: SessionEvent::ReInvite { .. },
                            ..
                        }
                    )
                })
                .collect();
            for _ in pending {
                let now = p.now;
                h.ua.answer_reinvite(now, id, Reply::new(200, "OK").sdp(sdp(port, 1)))
                    .unwrap();
                answered += 1;
            }
        }
        if answered == 2 && p.flight.is_empty() {
            break;
        }
        if !p.step() {
            break;
        }
    }
    assert_eq!(answered, 2, "{:#?}", p.log);
    assert_eq!(p.sent(A, "SIP/2.0 491") + p.sent(B, "SIP/2.0 491"), 2);
    let a_remote =
        p.a.ua
            .session(a)
            .unwrap()
            .offer_answer()
            .remote
            .clone()
            .unwrap();
    let b_remote =
        p.b.ua
            .session(b)
            .unwrap()
            .offer_answer()
            .remote
            .clone()
            .unwrap();
    assert_eq!(
        (a_remote.media[0].port, b_remote.media[0].port),
        (5100, 4100)
    );
}

#[test]
fn a_request_for_an_unknown_dialog_gets_481() {
    let mut p = Pair::new();
    let (a, _) = answered_call(&mut p);
    let mut bye =
        p.a.ua
            .session(a)
            .unwrap()
            .dialog()
            .unwrap()
            .clone()
            .request(Method::Bye);
    bye.headers
        .set("To", "<sip:+4989000001@b.example.com>;tag=nosuch");
    let now = p.now;
    p.a.ua.send_request(now, bye, to_b()).unwrap();
    p.drive_until(100, |p| p.sent(B, "SIP/2.0 481") == 1);
}

#[test]
fn a_rejection_brings_its_retry_after_to_the_caller() {
    let mut p = Pair::new();
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    // RFC 3261 §20.33: delta-seconds, then an optional comment and params.
    // RFC 3326: the Reason header reaches the caller's session as written.
    let reply = Reply::new(503, "Service Unavailable")
        .header("Retry-After", "30 (maintenance);duration=60")
        .header("Reason", "Q.850;cause=34;text=\"congestion\"");
    p.b.ua.reject(now, b, reply).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some());
    assert_eq!(
        ended(&p.a),
        Some(EndReason::Rejected {
            code: 503,
            reason: "Service Unavailable".into(),
            retry_after: Some(30),
            cause: Some("Q.850;cause=34;text=\"congestion\"".into()),
        })
    );
    let _ = a;
    p.drive_to_rest();
}

#[test]
fn an_invite_without_contact_or_with_an_unknown_require_is_refused() {
    let mut p = Pair::new();
    let mut m = invite_msg(p.a.ua.rng());
    m.headers.push("Require", "100rel");
    let now = p.now;
    p.a.ua.invite(now, m, Some(sdp(4000, 1)), to_b()).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some());
    assert_eq!(
        ended(&p.a),
        Some(EndReason::Rejected {
            code: 420,
            reason: "Bad Extension".into(),
            retry_after: None,
            cause: None,
        })
    );
    let unsupported = p.log.iter().any(|(_, l)| l.starts_with("SIP/2.0 420"));
    assert!(unsupported);
    assert!(p
        .b
        .events
        .iter()
        .any(|e| matches!(e, UaEvent::Refused { code: 420, .. })));

    // Without Contact (the builder adds ours: take it out on the wire).
    p.drop = None;
    let mut q = Pair::new();
    q.drop = Some(Box::new(|_m: &Message| false));
    let m = invite_msg(q.a.ua.rng());
    let key_target = Target {
        transport: TransportKind::Udp,
        addr: addr(B),
        server_name: None,
    };
    let now = q.now;
    q.a.ua
        .send_request(now, m, Hop::Target(key_target))
        .unwrap();
    q.drive_until(100, |q| q.sent(B, "SIP/2.0 400") == 1);
    assert!(incoming(&q.b).is_none());
}

#[test]
fn a_callee_ringing_for_45_s_is_answered_without_a_timeout() {
    let mut p = Pair::new();
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua.provisional(now, b, 0, ringing(180)).unwrap();
    p.advance(Duration::from_secs(45));
    assert!(ended(&p.a).is_none(), "{:?}", ended(&p.a));
    let now = p.now;
    p.b.ua
        .accept(now, b, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Answered { .. }))
    });
    assert_eq!(
        p.sent(A, "INVITE"),
        1,
        "INVITE retransmission stopped at the 100"
    );
    let _ = a;
}

#[test]
fn a_bye_on_an_early_dialog_ends_the_invite_with_487() {
    let mut p = Pair::new();
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua.provisional(now, b, 0, ringing(180)).unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Progress { .. }))
    });
    // A crafts a BYE on the early dialog (RFC 3261 §15.1.2 allows it).
    let response =
        p.a.events
            .iter()
            .find_map(|e| match e {
                UaEvent::Session {
                    event: SessionEvent::Progress { response, .. },
                    ..
                } => Some(response.clone()),
                _ => None,
            })
            .unwrap();
    let inv = p.a.ua.session(a).unwrap().invite().clone();
    let mut d =
        crate::sip::dialog::Dialog::as_uac(&inv, &response, "<sip:a>".into(), |_| false).unwrap();
    let bye = d.request(Method::Bye);
    let now = p.now;
    p.a.ua.send_request(now, bye, to_b()).unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some() && ended(&p.b).is_some());
    assert_eq!(p.sent(B, "SIP/2.0 487"), 1);
    assert!(matches!(
        ended(&p.a),
        Some(EndReason::Rejected { code: 487, .. })
    ));
}

// ----- session timers (RFC 4028) -----

fn timed(a: Option<SessionTimerConfig>, b: Option<SessionTimerConfig>) -> Pair {
    let mut p = Pair::new();
    p.a = host_with("a", A, 1, a);
    p.b = host_with("b", B, 2, b);
    p
}

/// Answer, with its description unchanged, every re-INVITE `h` got since
/// the last call (the role's part; the harness has no role).
fn answer_reinvites(h: &mut Host, now: Instant, answered: &mut usize) -> Vec<Message> {
    let pending: Vec<(SessionId, Message)> = h
        .events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Session {
                id,
                event: SessionEvent::ReInvite { request, .. },
            } => Some((*id, request.clone())),
            _ => None,
        })
        .skip(*answered)
        .collect();
    for (id, _) in &pending {
        *answered += 1;
        let local =
            h.ua.session(*id)
                .and_then(|s| s.offer_answer().local.clone());
        let mut reply = Reply::new(200, "OK");
        if let Some(sd) = local {
            reply = reply.sdp(sd);
        }
        h.ua.answer_reinvite(now, *id, reply).unwrap();
    }
    pending.into_iter().map(|(_, r)| r).collect()
}

fn timer_90(refresh: bool) -> SessionTimerConfig {
    SessionTimerConfig {
        interval: 90,
        refresh,
        ..SessionTimerConfig::default()
    }
}

#[test]
fn the_uac_refreshes_every_half_interval_and_the_session_lives_on() {
    let mut p = timed(Some(timer_90(true)), Some(SessionTimerConfig::default()));
    let (a, b) = answered_call(&mut p);
    // B (UAS, refresher chosen: uac) wrote the timer into its 200.
    let answer = p.a.events.iter().find_map(|e| match e {
        UaEvent::Session {
            event: SessionEvent::Answered { response, .. },
            ..
        } => Some(response.clone()),
        _ => None,
    });
    let answer = answer.unwrap();
    assert_eq!(
        answer.headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(answer.headers.get("Require"), Some("timer"));
    let start = p.now;
    let mut answered = 0;
    let mut refreshes = Vec::new();
    for _ in 0..200 {
        p.advance(Duration::from_secs(1));
        let now = p.now;
        for r in answer_reinvites(&mut p.b, now, &mut answered) {
            refreshes.push((now - start, r));
        }
    }
    // At 45, 90, 135 and 180 s (the 200 arrives a few ms later each time).
    assert_eq!(
        refreshes.len(),
        4,
        "{:?}",
        refreshes.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(refreshes[0].0 >= Duration::from_secs(45) && refreshes[0].0 < Duration::from_secs(47));
    let r = &refreshes[0].1;
    assert_eq!(r.headers.get("Session-Expires"), Some("90;refresher=uac"));
    // The description is unchanged: the same o= version (RFC 3264 §8).
    let before =
        p.a.ua
            .session(a)
            .unwrap()
            .offer_answer()
            .local
            .clone()
            .unwrap();
    assert!(String::from_utf8_lossy(&r.body)
        .contains(&format!("o=- 42 {} ", before.origin.session_version)));
    assert_eq!(p.a.ua.session(a).unwrap().state(), SessionState::Confirmed);
    assert_eq!(p.b.ua.session(b).unwrap().state(), SessionState::Confirmed);
}

#[test]
fn a_session_nobody_refreshes_ends_with_bye_before_it_expires() {
    let mut p = timed(Some(timer_90(false)), Some(SessionTimerConfig::default()));
    answered_call(&mut p);
    let start = p.now;
    p.drive_until(1000, |p| ended(&p.b).is_some() && ended(&p.a).is_some());
    // RFC 4028 §10: the non-refresher gives up at 90 − min(32, 30) = 60 s.
    let after = p.now - start;
    assert!(
        after >= Duration::from_secs(60) && after < Duration::from_secs(61),
        "{after:?}"
    );
    assert_eq!(ended(&p.b), Some(EndReason::SessionExpired));
    assert!(
        matches!(ended(&p.a), Some(EndReason::RemoteBye { reason: Some(r) }) if r.contains("408"))
    );
    p.drive_to_rest();
}

#[test]
fn a_session_interval_below_min_se_gets_422_and_the_uac_asks_again_with_min_se() {
    let strict = SessionTimerConfig {
        min_se: 120,
        ..SessionTimerConfig::default()
    };
    let mut p = timed(Some(timer_90(true)), Some(strict));
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    assert_eq!(p.sent(B, "SIP/2.0 422"), 1);
    // RFC 4028 §7.4: the same call again, next CSeq, the interval raised.
    let b = incoming(&p.b).unwrap();
    let again = p.b.ua.session(b).unwrap().invite().clone();
    assert_eq!(again.headers.get("Session-Expires"), Some("120"));
    assert_eq!(again.cseq().unwrap().seq, 2);
    let now = p.now;
    p.b.ua
        .accept(now, b, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Answered { .. }))
    });
    assert_eq!(p.a.ua.session(a).unwrap().state(), SessionState::Confirmed);
    assert_eq!(ended(&p.a), None);
}

/// The `Response` events a host heard: (key, code).
fn responses(h: &Host) -> Vec<(crate::sip::transaction::TransactionKey, u16)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Session {
                event: SessionEvent::Response { key, code, .. },
                ..
            } => Some((key.clone(), *code)),
            _ => None,
        })
        .collect()
}

/// The in-dialog requests (other than BYE, re-INVITE) a host was handed.
fn requests(h: &Host) -> Vec<(SessionId, crate::sip::transaction::TransactionKey, Message)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Session {
                id,
                event: SessionEvent::Request { key, request },
            } => Some((*id, key.clone(), request.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_notify_in_the_dialog_carries_its_body_and_its_answer_comes_back() {
    let mut p = Pair::new();
    let (a, b) = answered_call(&mut p);
    let now = p.now;
    let key =
        p.a.ua
            .request_in_dialog(
                now,
                a,
                Method::Notify,
                vec![
                    ("Event".into(), "refer".into()),
                    ("Subscription-State".into(), "active;expires=60".into()),
                ],
                Some(("message/sipfrag".into(), b"SIP/2.0 100 Trying\r\n".to_vec())),
            )
            .unwrap();
    p.drive_until(100, |p| !requests(&p.b).is_empty());
    let (id, rkey, notify) = requests(&p.b).remove(0);
    assert_eq!(id, b);
    // In the dialog: its Call-ID and tags, the next CSeq after the INVITE.
    assert_eq!(notify.cseq().unwrap().seq, 2);
    assert_eq!(notify.body, b"SIP/2.0 100 Trying\r\n");
    assert_eq!(
        notify.headers.get("Content-Type").map(str::trim),
        Some("message/sipfrag")
    );
    let now = p.now;
    p.b.ua
        .respond_in_dialog(now, b, rkey, &notify, Reply::new(200, "OK"))
        .unwrap();
    p.drive_until(100, |p| !responses(&p.a).is_empty());
    assert_eq!(responses(&p.a), vec![(key, 200)]);
    assert_eq!(p.a.ua.session(a).unwrap().state(), SessionState::Confirmed);
}

#[test]
fn a_481_to_an_in_dialog_request_ends_the_session() {
    let mut p = Pair::new();
    let (a, b) = answered_call(&mut p);
    let now = p.now;
    p.a.ua
        .request_in_dialog(now, a, Method::Refer, vec![], None)
        .unwrap();
    p.drive_until(100, |p| !requests(&p.b).is_empty());
    let (_, rkey, refer) = requests(&p.b).remove(0);
    let now = p.now;
    p.b.ua
        .respond_in_dialog(now, b, rkey, &refer, Reply::new(481, "Call Does Not Exist"))
        .unwrap();
    p.drive_until(100, |p| ended(&p.a).is_some());
    assert_eq!(ended(&p.a), Some(EndReason::DialogLost { code: 481 }));
    // Neither INVITE, BYE nor a request outside a confirmed dialog goes
    // through this door.
    let now = p.now;
    assert!(p
        .a
        .ua
        .request_in_dialog(now, a, Method::Notify, vec![], None)
        .is_err());
}

/// A call from A (refreshing by `how`) to B, whose 200 lists `allow` and
/// who answers UPDATE refreshes itself when `b_takes_update`.
fn update_call(
    how: RefreshMethod,
    allow: &str,
    b_takes_update: bool,
) -> (Pair, SessionId, SessionId) {
    let a_timer = SessionTimerConfig {
        refresh_with: how,
        ..timer_90(true)
    };
    let mut p = timed(Some(a_timer), Some(SessionTimerConfig::default()));
    p.b.ua.session_config_mut().accept_update = b_takes_update;
    let a = call(&mut p);
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    let reply = Reply::new(200, "OK")
        .header("Allow", allow)
        .sdp(sdp(5000, 1));
    p.b.ua.accept(now, b, 0, reply).unwrap();
    p.drive_until(100, |p| has(&p.b, |e| *e == SessionEvent::Confirmed));
    (p, a, b)
}

#[test]
fn an_update_refresh_goes_where_the_peer_allows_update_and_keeps_the_session() {
    let allow = "INVITE,ACK,BYE,CANCEL,UPDATE";
    let (mut p, a, b) = update_call(RefreshMethod::Update, allow, true);
    let mut answered = 0;
    for _ in 0..200 {
        p.advance(Duration::from_secs(1));
        let now = p.now;
        assert!(answer_reinvites(&mut p.b, now, &mut answered).is_empty());
    }
    // At 45, 90, 135 and 180 s: UPDATE without a body, each answered 200.
    assert_eq!(p.sent(A, "UPDATE "), 4, "{:#?}", p.log);
    assert_eq!(p.sent(B, "SIP/2.0 200 OK (UPDATE)"), 4);
    assert_eq!(p.sent(A, "INVITE "), 1);
    assert_eq!(p.a.ua.session(a).unwrap().state(), SessionState::Confirmed);
    assert_eq!(p.b.ua.session(b).unwrap().state(), SessionState::Confirmed);
}

#[test]
fn without_update_in_the_peers_allow_the_refresh_is_a_re_invite() {
    let (mut p, _, _) = update_call(RefreshMethod::Update, "INVITE,ACK,BYE,CANCEL", true);
    let mut answered = 0;
    for _ in 0..50 {
        p.advance(Duration::from_secs(1));
        let now = p.now;
        answer_reinvites(&mut p.b, now, &mut answered);
    }
    assert_eq!(p.sent(A, "UPDATE "), 0);
    assert_eq!(answered, 1);
}

#[test]
fn an_update_the_peer_refuses_is_no_refresh_and_the_peer_ends_the_session() {
    // A sends UPDATE although B's Allow lacks it; B (a role that does not
    // take UPDATE) answers 501; nothing refreshed the session, so B, the
    // non-refresher, ends it at 90 − 30 = 60 s.
    let (mut p, _, b) = update_call(RefreshMethod::UpdateAlways, "INVITE,ACK,BYE,CANCEL", false);
    let start = p.now;
    for _ in 0..70 {
        p.advance(Duration::from_secs(1));
        let now = p.now;
        let pending: Vec<_> = requests(&p.b)
            .into_iter()
            .filter(|(_, _, r)| r.method() == Some(&Method::Update))
            .collect();
        for (id, key, r) in pending {
            let _ =
                p.b.ua
                    .respond_in_dialog(now, id, key, &r, Reply::new(501, "Not Implemented"));
        }
        p.b.events.retain(|e| {
            !matches!(
                e,
                UaEvent::Session {
                    event: SessionEvent::Request { .. },
                    ..
                }
            )
        });
        if ended(&p.b).is_some() {
            break;
        }
    }
    assert_eq!(p.sent(A, "UPDATE "), 1);
    assert_eq!(ended(&p.b), Some(EndReason::SessionExpired));
    let after = p.now - start;
    assert!(
        after >= Duration::from_secs(59) && after <= Duration::from_secs(61),
        "{after:?}"
    );
    let _ = b;
}

// ----- digest authentication of the INVITE (RFC 3261 §22.2) -----

use crate::sip::digest::{Algorithm, Credentials, DigestServer, ServerConfig, Verdict};

fn digest_server(algorithms: Vec<Algorithm>) -> DigestServer {
    DigestServer::new(ServerConfig {
        realm: "carrier.example".into(),
        algorithms,
        nonce_lifetime: Duration::from_secs(30),
        qop_auth: true,
    })
}

/// Every INVITE `b` received, in order, with its session.
fn invites(h: &Host) -> Vec<(SessionId, Message)> {
    h.events
        .iter()
        .filter_map(|e| match e {
            UaEvent::Session {
                id,
                event: SessionEvent::Incoming { request, .. },
            } => Some((*id, request.clone())),
            _ => None,
        })
        .collect()
}

/// b challenges every INVITE it cannot verify with 407 (stale when the
/// server says so), and answers the first it verifies; returns the
/// verdicts in order.
fn challenge_until_verified(p: &mut Pair, server: &mut DigestServer, limit: usize) -> Vec<Verdict> {
    let mut seen = 0;
    let mut verdicts = Vec::new();
    for _ in 0..limit {
        p.drive_until(200, |p| invites(&p.b).len() > seen || ended(&p.a).is_some());
        let all = invites(&p.b);
        if all.len() == seen {
            break;
        }
        let (id, request) = all[seen].clone();
        seen += 1;
        let now = p.now;
        let creds = request
            .headers
            .get("Proxy-Authorization")
            .and_then(|v| Credentials::parse(v).ok());
        let verdict = match &creds {
            Some(c) => server.verify(now, "INVITE", c, Some("s3cret")),
            None => Verdict::Wrong("no credentials"),
        };
        verdicts.push(verdict);
        if verdict == Verdict::Ok {
            let uri = request.request_uri().unwrap_or_default().to_string();
            assert_eq!(
                creds.map(|c| c.uri),
                Some(uri),
                "the digest uri is the Request-URI"
            );
            p.b.ua
                .accept(now, id, 0, Reply::new(200, "OK").sdp(sdp(5000, 1)))
                .unwrap();
            break;
        }
        let stale = verdict == Verdict::Stale;
        let fresh = format!("n{seen}");
        let mut reply = Reply::new(407, "Proxy Authentication Required");
        for c in server.challenge(now, &fresh, stale) {
            reply = reply.header("Proxy-Authenticate", c.to_string());
        }
        p.b.ua.reject(now, id, reply).unwrap();
    }
    verdicts
}

fn login(password: &str) -> DigestLogin {
    DigestLogin {
        realm: "carrier.example".into(),
        username: "sbc1".into(),
        password: password.into(),
    }
}

#[test]
fn a_407_is_answered_with_credentials_in_a_new_invite_of_the_same_call() {
    for algorithms in [
        vec![Algorithm::Sha256, Algorithm::Md5],
        vec![Algorithm::Md5],
    ] {
        let mut p = Pair::new();
        p.a.ua.session_config_mut().logins = vec![login("s3cret")];
        let mut server = digest_server(algorithms.clone());
        // Every ACK that crosses, to read its headers.
        let acks = std::rc::Rc::new(std::cell::RefCell::new(Vec::<Message>::new()));
        let seen = acks.clone();
        p.drop = Some(Box::new(move |m: &Message| {
            if m.method() == Some(&Method::Ack) {
                seen.borrow_mut().push(m.clone());
            }
            false
        }));
        let a = call(&mut p);
        let verdicts = challenge_until_verified(&mut p, &mut server, 4);
        assert_eq!(
            verdicts,
            vec![Verdict::Wrong("no credentials"), Verdict::Ok]
        );
        p.drive_until(200, |p| {
            has(&p.a, |e| matches!(e, SessionEvent::Answered { .. }))
        });
        p.drive_until(200, |_| acks.borrow().len() == 2);
        // RFC 3261 §13.2.2.4: the ACK for the 2xx carries the INVITE's
        // credentials (the ACK for the 407 is the transaction's own).
        let ack_2xx = acks.borrow()[1].clone();
        assert!(
            ack_2xx.headers.contains("Proxy-Authorization"),
            "{ack_2xx:?}"
        );
        let all = invites(&p.b);
        let (first, second) = (&all[0].1, &all[1].1);
        // RFC 3261 §22.2: same Call-ID, From tag; CSeq up by one.
        assert_eq!(first.headers.get("Call-ID"), second.headers.get("Call-ID"));
        assert_eq!(first.cseq().unwrap().seq + 1, second.cseq().unwrap().seq);
        let c = Credentials::parse(second.headers.get("Proxy-Authorization").unwrap()).unwrap();
        assert_eq!(
            c.algorithm, algorithms[0],
            "the first challenge we can answer"
        );
        assert_eq!(c.username, "sbc1");
        let _ = a;
    }
}

#[test]
fn a_wrong_password_is_tried_once_and_the_call_fails_with_the_407() {
    let mut p = Pair::new();
    p.a.ua.session_config_mut().logins = vec![login("wrong")];
    let mut server = digest_server(vec![Algorithm::Md5]);
    call(&mut p);
    let verdicts = challenge_until_verified(&mut p, &mut server, 5);
    assert_eq!(
        verdicts,
        vec![
            Verdict::Wrong("no credentials"),
            Verdict::Wrong("bad response")
        ]
    );
    p.drive_until(200, |p| ended(&p.a).is_some());
    assert!(matches!(
        ended(&p.a),
        Some(EndReason::Rejected { code: 407, .. })
    ));
    p.drive_to_rest();
}

#[test]
fn a_stale_nonce_is_answered_again_with_the_new_one() {
    let mut p = Pair::new();
    p.a.ua.session_config_mut().logins = vec![login("s3cret")];
    let mut server = digest_server(vec![Algorithm::Md5]);
    call(&mut p);
    // The first answer comes after the nonce's lifetime: stale, then Ok.
    p.drive_until(200, |p| invites(&p.b).len() == 1);
    let (id, _) = invites(&p.b)[0].clone();
    let now = p.now;
    let mut reply = Reply::new(407, "Proxy Authentication Required");
    for c in server.challenge(now, "old", false) {
        reply = reply.header("Proxy-Authenticate", c.to_string());
    }
    p.b.ua.reject(now, id, reply).unwrap();
    p.drive_until(200, |p| invites(&p.b).len() == 2);
    p.advance(Duration::from_secs(31));
    let (id, second) = invites(&p.b)[1].clone();
    let c = Credentials::parse(second.headers.get("Proxy-Authorization").unwrap()).unwrap();
    let now = p.now;
    assert_eq!(
        server.verify(now, "INVITE", &c, Some("s3cret")),
        Verdict::Stale
    );
    let mut reply = Reply::new(407, "Proxy Authentication Required");
    for c in server.challenge(now, "new", true) {
        reply = reply.header("Proxy-Authenticate", c.to_string());
    }
    p.b.ua.reject(now, id, reply).unwrap();
    p.drive_until(200, |p| invites(&p.b).len() == 3 || ended(&p.a).is_some());
    let (_, third) = invites(&p.b)[2].clone();
    let c = Credentials::parse(third.headers.get("Proxy-Authorization").unwrap()).unwrap();
    let now = p.now;
    assert_eq!(
        server.verify(now, "INVITE", &c, Some("s3cret")),
        Verdict::Ok
    );
}

#[test]
fn a_challenge_for_a_realm_without_login_ends_the_call() {
    let mut p = Pair::new();
    p.a.ua.session_config_mut().logins = vec![DigestLogin {
        realm: "elsewhere.example".into(),
        ..login("s3cret")
    }];
    let mut server = digest_server(vec![Algorithm::Md5]);
    call(&mut p);
    let verdicts = challenge_until_verified(&mut p, &mut server, 3);
    assert_eq!(verdicts, vec![Verdict::Wrong("no credentials")]);
    p.drive_until(200, |p| ended(&p.a).is_some());
    assert!(matches!(
        ended(&p.a),
        Some(EndReason::Rejected { code: 407, .. })
    ));
}

/// RFC 3261 §9.1: no CANCEL before a provisional to the INVITE it
/// cancels. A caller giving up right after a 100-then-407 must wait for
/// the resent INVITE's own 100 (the first INVITE's does not count).
#[test]
fn a_cancel_after_a_challenge_waits_for_the_new_invites_provisional() {
    let mut p = Pair::new();
    p.a.ua.session_config_mut().logins = vec![login("s3cret")];
    let mut server = digest_server(vec![Algorithm::Md5]);
    let a = call(&mut p);
    p.drive_until(100, |p| invites(&p.b).len() == 1);
    let (id, _) = invites(&p.b)[0].clone();
    let now = p.now;
    let mut reply = Reply::new(407, "Proxy Authentication Required");
    for c in server.challenge(now, "n1", false) {
        reply = reply.header("Proxy-Authenticate", c.to_string());
    }
    p.b.ua.reject(now, id, reply).unwrap();
    p.drive_until(100, |p| p.sent(B, "SIP/2.0 407") == 1);
    let now = p.now;
    p.a.ua.cancel(now, a).unwrap();
    p.drive_until(200, |p| {
        p.sent(A, "CANCEL") == 1 && p.sent(B, "SIP/2.0 100") >= 2
    });
    let position = |from: &str, line: &str, nth: usize| {
        p.log
            .iter()
            .enumerate()
            .filter(|(_, (f, l))| *f == addr(from) && l.starts_with(line))
            .nth(nth)
            .map(|(i, _)| i)
    };
    let second_trying = position(B, "SIP/2.0 100", 1).expect("the new INVITE's 100");
    let cancel = position(A, "CANCEL", 0).unwrap();
    assert!(
        cancel > second_trying,
        "CANCEL delivered at {cancel}, before the resent INVITE's 100 at {second_trying}: {:?}",
        p.log
    );
    p.drive_to_rest();
}

/// A UAS that record-routes in its responses (the Teams hub does, in
/// front of the UAS behind it) puts its entry above those it copied from
/// the request, where a proxy would have inserted it (RFC 3261 §16.6
/// item 4): the caller's route set, the list reversed (§12.1.2), then
/// starts at the proxies nearest the caller. Below them, a proxy SBC's
/// carrier sent its ACK straight to the hub (found with Kamailio).
#[test]
fn a_record_route_of_the_uas_goes_above_the_ones_it_copied() {
    let mut p = Pair::new();
    let mut msg = invite_msg(p.a.ua.rng());
    msg.headers
        .push("Record-Route", "<sip:edge.a.example.com;lr>");
    let now = p.now;
    p.a.ua.invite(now, msg, Some(sdp(4000, 1)), to_b()).unwrap();
    p.drive_until(100, |p| incoming(&p.b).is_some());
    let b = incoming(&p.b).unwrap();
    let now = p.now;
    p.b.ua
        .provisional(
            now,
            b,
            0,
            ringing(180)
                .header("Record-Route", "<sip:edge.b.example.com;lr>")
                .header("Record-Route", "<sip:core.b.example.com;lr>"),
        )
        .unwrap();
    p.drive_until(100, |p| {
        has(&p.a, |e| matches!(e, SessionEvent::Progress { .. }))
    });
    let routes: Vec<String> =
        p.a.events
            .iter()
            .find_map(|e| match e {
                UaEvent::Session {
                    event: SessionEvent::Progress { response, .. },
                    ..
                } => Some(
                    response
                        .headers
                        .values("Record-Route")
                        .map(str::to_string)
                        .collect(),
                ),
                _ => None,
            })
            .unwrap();
    assert_eq!(
        routes,
        [
            "<sip:edge.b.example.com;lr>",
            "<sip:core.b.example.com;lr>",
            "<sip:edge.a.example.com;lr>"
        ]
    );
}
