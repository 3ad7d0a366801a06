//! The per-message and per-packet costs of the SBC's core, sans-IO:
//! SIP parse and serialise (a real INVITE with SDP and a 200 OK, taken
//! from the reference trace), SDP parse, SRTP protect and unprotect, and
//! the media relay's RTP↔SRTP step. `cargo bench -p sbc`; figures and the
//! machine in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sbc::media::relay::{RelayCore, RelayLeg, RelayPlan};
use sbc::media::srtp::{Protector, SrtpKey, Unprotector};
use sbc::sip::rng::SeededRng;
use sbc::sip::sdp::SessionDescription;
use sbc::sip::wire::Message;
use std::hint::black_box;
use std::net::SocketAddr;

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

criterion_group!(benches, sip, srtp, relay);
criterion_main!(benches);
