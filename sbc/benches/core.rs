//! The per-message and per-packet costs of the SBC's core, sans-IO:
//! SIP parse and serialise (a real INVITE with SDP and a 200 OK, taken
//! from the reference trace), SDP parse, SRTP protect and unprotect, and
//! the media relay's RTP↔SRTP step, and whole calls through the
//! transaction and session layers of two user agents joined in memory.
//! `cargo bench -p sbc`; figures and the machine in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sbc::media::relay::{RelayCore, RelayLeg, RelayPlan};
use sbc::media::srtp::{Protector, SrtpKey, Unprotector};
use sbc::sip::endpoint::{EndpointConfig, LocalPorts};
use sbc::sip::rng::SeededRng;
use sbc::sip::routing::RoutingTable;
use sbc::sip::sdp::offer_answer::{Codec, LocalMedia};
use sbc::sip::sdp::{Origin, SessionDescription};
use sbc::sip::session::{Hop, Reply, RequestBuilder, SessionConfig, SessionEvent, SessionId};
use sbc::sip::transport::{Source, Target, TransportKind};
use sbc::sip::ua::{UaConfig, UaEvent, UserAgent};
use sbc::sip::wire::{Message, Method};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The reference trace (seed 1) of an inbound call.
const TRACE: &str = include_str!("../../tests/snapshots/a_pstn_caller_reaches_a_teams_user.snap");

/// The first message of the trace whose first line starts with `start`
/// and whose text holds `with`, rebuilt with CRLF line ends as it went on
/// the wire.
fn message(start: &str, with: &str) -> Vec<u8> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for l in TRACE.lines() {
        if l.starts_with('[') {
            blocks.extend(current.take());
            current = Some(String::new());
        } else if let Some(c) = current.as_mut() {
            c.push_str(l.strip_prefix("    ").unwrap_or(l));
            c.push_str("\r\n");
        }
    }
    blocks.extend(current);
    let block = blocks
        .into_iter()
        .find(|b| b.starts_with(start) && b.contains(with))
        .unwrap_or_else(|| panic!("no {start} with {with} in the trace"));
    // The snapshot ends each message with an empty line of its own.
    let text = block.trim_end_matches("\r\n");
    let end = if text.contains("\r\n\r\n") {
        "\r\n"
    } else {
        "\r\n\r\n"
    };
    let bytes = format!("{text}{end}").into_bytes();
    Message::parse(&bytes).unwrap_or_else(|e| panic!("{start}: {e}"));
    bytes
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 8];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn sip(c: &mut Criterion) {
    let invite = message(
        "INVITE sip:+4989000001@sip.pstnhub.microsoft.com",
        "m=audio",
    );
    let ok = message("SIP/2.0 200 OK", "CSeq: 1 INVITE");
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse Teams INVITE with SDP", |b| {
        b.iter(|| Message::parse(black_box(&invite)).unwrap())
    });
    g.bench_function("parse 200 OK with SDP", |b| {
        b.iter(|| Message::parse(black_box(&ok)).unwrap())
    });
    let parsed = Message::parse(&invite).unwrap();
    g.bench_function("serialise Teams INVITE with SDP", |b| {
        b.iter(|| black_box(&parsed).to_bytes())
    });
    let body = String::from_utf8(parsed.body.clone()).unwrap();
    g.bench_function("parse SDP offer", |b| {
        b.iter(|| SessionDescription::parse(black_box(&body)).unwrap())
    });
    g.finish();
}

fn srtp(c: &mut Criterion) {
    let key = SrtpKey::generate(&mut SeededRng::new(1));
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Elements(1));
    let mut tx = Protector::new(&key).unwrap();
    let mut seq = 0u16;
    g.bench_function("protect 172-byte RTP", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            tx.protect(black_box(&rtp(seq))).unwrap()
        })
    });
    // Unprotect needs fresh indexes (the replay list refuses repeats).
    let mut tx = Protector::new(&key).unwrap();
    let packets: Vec<Vec<u8>> = (0..1000).map(|s| tx.protect(&rtp(s)).unwrap()).collect();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("unprotect 182-byte SRTP, 1000 packets", |b| {
        b.iter_batched(
            || Unprotector::new(&key).unwrap(),
            |mut rx| {
                for p in &packets {
                    black_box(rx.unprotect(p).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn relay(c: &mut Criterion) {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let mut rng = SeededRng::new(2);
    let (ours, theirs) = (SrtpKey::generate(&mut rng), SrtpKey::generate(&mut rng));
    let plan = RelayPlan {
        a: RelayLeg {
            remote: addr("198.51.100.7:20000"),
            tx_key: None,
            rx_key: None,
            ice: None,
            ice_peer: None,
            te_tx: None,
            te_rx: None,
        },
        b: RelayLeg {
            remote: addr("52.114.16.1:49152"),
            tx_key: Some(ours),
            rx_key: Some(theirs.clone()),
            ice: None,
            ice_peer: None,
            te_tx: None,
            te_rx: None,
        },
        hold: false,
    };
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));
    let mut core = RelayCore::new();
    core.set_plan(&plan).unwrap();
    let phone = addr("198.51.100.7:20000");
    let mut seq = 0u16;
    g.bench_function("RTP to SRTP, one packet", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            core.handle(true, phone, black_box(&rtp(seq))).unwrap()
        })
    });
    let mut tx = Protector::new(&theirs).unwrap();
    let packets: Vec<Vec<u8>> = (0..1000).map(|s| tx.protect(&rtp(s)).unwrap()).collect();
    let mp = addr("52.114.16.1:49152");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("SRTP to RTP, 1000 packets", |b| {
        b.iter_batched(
            || {
                let mut core = RelayCore::new();
                core.set_plan(&plan).unwrap();
                core
            },
            |mut core| {
                for p in &packets {
                    black_box(core.handle(false, mp, p).unwrap());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Two user agents joined in memory (every message serialised and parsed
/// again, as on a wire, delivered at once): the transaction and session
/// layers' cost for whole calls, both ends together.
struct Line {
    a: UserAgent,
    b: UserAgent,
    now: Instant,
    /// Calls A heard answered, and calls that ended at A.
    answered: usize,
    ended: usize,
}

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

fn agent(name: &str, seed: u64) -> UserAgent {
    let mut routing = RoutingTable::new();
    routing.insert("b.example.com", B.parse::<SocketAddr>().unwrap().ip());
    let config = UaConfig {
        endpoint: EndpointConfig::new(format!("{name}.example.com")),
        session: SessionConfig::new(format!("<sip:{name}.example.com:5060>")),
    };
    let ports = LocalPorts {
        udp: Some(5060),
        ..Default::default()
    };
    UserAgent::new(config, ports, routing, SeededRng::new(seed))
}

fn offer(port: u16) -> SessionDescription {
    LocalMedia {
        address: "10.0.0.9".into(),
        port,
        codecs: vec![Codec::pcmu(), Codec::pcma()],
        srtp_key: None,
        rtcp_mux: false,
        ice: None,
    }
    .offer(Origin {
        username: "-".into(),
        session_id: 42,
        session_version: 1,
        address: "10.0.0.9".into(),
    })
}

impl Line {
    fn new() -> Line {
        // A fake clock needs an origin; nothing here waits on it.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Line {
            a: agent("a", 1),
            b: agent("b", 2),
            now,
            answered: 0,
            ended: 0,
        }
    }

    /// Carry every message either side has to send, and let B ring and
    /// answer each call that reaches it, until both are quiet.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for from_a in [true, false] {
                let (from, to) = if from_a {
                    (&mut self.a, &mut self.b)
                } else {
                    (&mut self.b, &mut self.a)
                };
                let (here, there) = if from_a { (A, B) } else { (B, A) };
                while let Some(t) = from.poll_transmit() {
                    let bytes = t.message.to_bytes();
                    let msg = Message::parse(&bytes).expect("what a UA sends parses");
                    let source = Source {
                        transport: TransportKind::Udp,
                        local: there.parse().unwrap(),
                        remote: here.parse().unwrap(),
                        connection: None,
                        peer_names: Default::default(),
                    };
                    to.handle_message(self.now, msg, bytes, source);
                    moved = true;
                }
            }
            while let Some(e) = self.a.poll_event() {
                match e {
                    UaEvent::Session {
                        event: SessionEvent::Answered { .. },
                        ..
                    } => self.answered += 1,
                    UaEvent::Session {
                        event: SessionEvent::Ended { .. },
                        ..
                    } => self.ended += 1,
                    _ => {}
                }
            }
            while let Some(e) = self.b.poll_event() {
                if let UaEvent::Session {
                    id,
                    event: SessionEvent::Incoming { .. },
                } = e
                {
                    let b = &mut self.b;
                    b.provisional(self.now, id, 0, Reply::new(180, "Ringing"))
                        .unwrap();
                    b.accept(self.now, id, 0, Reply::new(200, "OK").sdp(offer(5000)))
                        .unwrap();
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// One call: INVITE, 100, 180, 200, ACK, then BYE and its 200.
    fn call(&mut self) -> SessionId {
        let invite = RequestBuilder::new(
            Method::Invite,
            "sip:+4989000001@b.example.com",
            "<sip:+4930123456@a.example.com>",
            "<sip:+4989000001@b.example.com>",
        )
        .build(self.a.rng(), "a.example.com");
        let hop = Hop::Target(Target {
            transport: TransportKind::Udp,
            addr: B.parse().unwrap(),
            server_name: None,
        });
        let id = self
            .a
            .invite(self.now, invite, Some(offer(4000)), hop)
            .unwrap();
        self.settle();
        id
    }

    /// Let `d` pass, firing every timer due meanwhile.
    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    self.a.handle_timeout(self.now);
                    self.b.handle_timeout(self.now);
                    self.settle();
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn held(&self) -> (usize, usize) {
        let (a, b) = (self.a.counts(), self.b.counts());
        (a.sessions + b.sessions, a.transactions + b.transactions)
    }
}

fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("transaction and session layers");
    // 100 calls placed 10 ms apart, each hung up 1 s after it was placed,
    // then 40 s for every transaction and session to linger out (64·T1 on
    // UDP): both ends' whole work for 100 calls, reaping included.
    g.throughput(Throughput::Elements(100));
    g.bench_function("100 calls over UDP, both ends, to nothing held", |b| {
        b.iter_batched(
            Line::new,
            |mut line| {
                let mut up = std::collections::VecDeque::new();
                for i in 0..200u32 {
                    if i < 100 {
                        up.push_back((line.now + Duration::from_secs(1), line.call()));
                    }
                    while up.front().is_some_and(|(at, _)| *at <= line.now) {
                        let (_, id) = up.pop_front().unwrap();
                        line.a.bye(line.now, id, Vec::new()).unwrap();
                        line.settle();
                    }
                    line.advance(Duration::from_millis(10));
                }
                line.advance(Duration::from_secs(40));
                assert_eq!((line.answered, line.ended), (100, 100));
                assert_eq!(line.held(), (0, 0), "a call left state behind");
                line
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, sip, srtp, relay, layers);
criterion_main!(benches);
