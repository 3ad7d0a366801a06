//! Media packets as they reach the SBC's relay: SRTP unprotect with fixed
//! keys (with and without the 1-byte MKI Teams uses), protect → unprotect
//! round trips, the relay core between a plain RTP carrier leg and an SRTP
//! Teams leg (both directions, from the signalled and from foreign
//! addresses, before and after the plan), RFC 4733 event payloads, and the
//! receive-side quality model fed with the packets' sequence numbers and
//! timestamps.
//!
//! Asserts: no panic; a packet protected with a fresh context unprotects
//! to itself; what the relay sends toward Teams unprotects, when it does,
//! to what the carrier sent (telephone-events renumbered); what the relay
//! sends toward the carrier is what Teams protected; an event payload
//! round-trips; the quality report stays within its ranges.
//!
//! Input: a sequence of records `[op][len][len bytes]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc::media::dtmf::Event;
use sbc::media::quality::{JitterBuffer, ReceiverQuality};
use sbc::media::srtp::{Protector, Unprotector};
use sbc::media::{RelayCore, RelayLeg, RelayPlan, SrtpKey};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CARRIER: &str = "198.51.100.20:30000";
const TEAMS: &str = "52.114.16.1:52884";
const FOREIGN: &str = "203.0.113.66:4000";
/// Telephone-event payload types: the carrier's (both ways), ours toward
/// Teams, and the one Teams sends with.
const TE_CARRIER: u8 = 101;
const TE_TO_TEAMS: u8 = 126;
const TE_FROM_TEAMS: u8 = 96;

fn key(byte: u8, mki: Option<(u32, u8)>) -> SrtpKey {
    SrtpKey {
        key: [byte; 16],
        salt: [byte ^ 0x5a; 14],
        mki,
    }
}

fn plan(hold: bool) -> RelayPlan {
    RelayPlan {
        a: RelayLeg {
            remote: CARRIER.parse().unwrap(),
            tx_key: None,
            rx_key: None,
            ice: None,
            ice_peer: None,
            te_tx: Some(TE_CARRIER),
            te_rx: Some(TE_CARRIER),
        },
        b: RelayLeg {
            remote: TEAMS.parse().unwrap(),
            tx_key: Some(key(1, None)),
            rx_key: Some(key(2, Some((1, 1)))),
            ice: None,
            ice_peer: None,
            te_tx: Some(TE_TO_TEAMS),
            te_rx: Some(TE_FROM_TEAMS),
        },
        hold,
    }
}

/// `rtp` with its payload type renumbered `from` → `to` (marker kept).
fn renumbered(rtp: &[u8], from: u8, to: u8) -> Vec<u8> {
    let mut v = rtp.to_vec();
    if let Some(b) = v.get_mut(1) {
        if *b & 0x7f == from {
            *b = (*b & 0x80) | to;
        }
    }
    v
}

struct World {
    relay: RelayCore,
    planned: bool,
    /// Teams' side of leg b: it sends with key 2 (MKI 1:1), receives with key 1.
    teams_tx: Protector,
    teams_rx: Unprotector,
    loose_mki: Unprotector,
    loose: Unprotector,
    quality: ReceiverQuality,
    origin: Instant,
}

fn check_report(q: &ReceiverQuality) {
    let r = q.report();
    let _ = r.to_string();
    for (name, v) in [
        ("loss", r.loss_pct),
        ("effective loss", r.effective_loss_pct),
    ] {
        assert!(
            (0.0..=100.0).contains(&v),
            "{name} {v} % out of range: {r:?}"
        );
    }
    assert!(r.received <= r.expected, "received > expected: {r:?}");
    assert!(r.lost <= r.expected, "lost > expected: {r:?}");
    assert!(r.jitter_ts.is_finite() && r.jitter_ts >= 0.0, "{r:?}");
    assert!(r.buffer_ms.is_finite() && r.buffer_ms >= 0.0, "{r:?}");
    assert!(r.burst_ratio.is_finite() && r.burst_ratio >= 0.0, "{r:?}");
    assert!(r.r_factor.is_finite(), "{r:?}");
    assert!(
        (1.0..=5.0).contains(&r.mos),
        "MOS {} out of range: {r:?}",
        r.mos
    );
}

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let origin = Instant::now();
    let adaptive = data.first().is_some_and(|b| b & 1 == 1);
    let buffer = if adaptive {
        JitterBuffer::adaptive(Duration::from_millis(20), Duration::from_millis(200))
    } else {
        JitterBuffer::fixed(Duration::from_millis(60))
    };
    let mut w = World {
        relay: RelayCore::new(),
        planned: false,
        teams_tx: Protector::new(&key(2, Some((1, 1)))).unwrap(),
        teams_rx: Unprotector::new(&key(1, None)).unwrap(),
        loose_mki: Unprotector::new(&key(3, Some((7, 4)))).unwrap(),
        loose: Unprotector::new(&key(3, None)).unwrap(),
        quality: ReceiverQuality::new(8000, buffer),
        origin,
    };
    let carrier: SocketAddr = CARRIER.parse().unwrap();
    let teams: SocketAddr = TEAMS.parse().unwrap();
    let foreign: SocketAddr = FOREIGN.parse().unwrap();

    let mut rest = data.get(1..).unwrap_or_default();
    let mut records = 0;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(n);
        rest = tail;
        records += 1;
        if records > 200 {
            break;
        }
        match op % 10 {
            // Anything, unprotected with and without an MKI.
            0 => {
                let _ = w.loose.unprotect(bytes);
                let _ = w.loose_mki.unprotect(bytes);
            }
            // Protect with a fresh context, unprotect with a fresh one.
            1 => {
                for mki in [None, Some((1, 1)), Some((0x0102_0304, 4))] {
                    let k = key(9, mki);
                    let Ok(srtp) = Protector::new(&k).unwrap().protect(bytes) else {
                        continue;
                    };
                    let extra = mki.map_or(0, |(_, l)| usize::from(l));
                    assert_eq!(srtp.len(), bytes.len() + 10 + extra);
                    let back = Unprotector::new(&k).unwrap().unprotect(&srtp);
                    assert_eq!(
                        back.as_deref(),
                        Ok(bytes),
                        "protect/unprotect round trip, MKI {mki:?}"
                    );
                }
            }
            // The carrier sends plain RTP toward Teams.
            2 => {
                if let Some(out) = w.relay.handle(true, carrier, bytes) {
                    assert!(!out.from_a && out.to == teams, "{out:?}");
                    if let Ok(plain) = w.teams_rx.unprotect(&out.bytes) {
                        assert_eq!(plain, renumbered(bytes, TE_CARRIER, TE_TO_TEAMS));
                    }
                }
            }
            // Teams sends SRTP toward the carrier.
            3 => {
                let Ok(srtp) = w.teams_tx.protect(bytes) else {
                    continue;
                };
                if let Some(out) = w.relay.handle(false, teams, &srtp) {
                    assert!(out.from_a && out.to == carrier, "{out:?}");
                    assert_eq!(out.bytes, renumbered(bytes, TE_FROM_TEAMS, TE_CARRIER));
                }
            }
            // Raw bytes on either leg, from the signalled or a foreign address.
            4 => {
                let _ = w.relay.handle(false, teams, bytes);
            }
            5 => {
                let _ = w.relay.handle(true, foreign, bytes);
                let _ = w.relay.handle(false, foreign, bytes);
            }
            // The answer arrives (held packets are relayed), or a re-INVITE
            // puts the call on hold or resumes it.
            6 => {
                let hold = w.planned && bytes.first().is_some_and(|b| b & 1 == 1);
                let outs = w.relay.set_plan(&plan(hold)).expect("fixed keys are valid");
                w.planned = true;
                for out in outs {
                    assert!(out.to == teams || out.to == carrier, "{out:?}");
                }
            }
            // A telephone-event payload.
            7 => {
                if let Ok(e) = Event::parse(bytes) {
                    assert_eq!(Event::parse(&e.to_bytes()), Ok(e));
                }
            }
            // The receive side: sequence number and timestamp of an RTP header,
            // arrival and send instants from the next bytes.
            _ => {
                if let [_, _, s0, s1, t0, t1, t2, t3, a0, a1, a2, d0, ..] = bytes {
                    let seq = u16::from_be_bytes([*s0, *s1]);
                    let ts = u32::from_be_bytes([*t0, *t1, *t2, *t3]);
                    let at = u64::from(u32::from_be_bytes([0, *a0, *a1, *a2]));
                    let arrival = w.origin + Duration::from_millis(at);
                    let sent = (*d0 != 0xff)
                        .then(|| arrival.checked_sub(Duration::from_millis(u64::from(*d0))))
                        .flatten();
                    w.quality.on_packet(seq, ts, arrival, sent);
                    check_report(&w.quality);
                }
            }
        }
    }
    check_report(&w.quality);
    let _ = &w.relay.stats;
});
