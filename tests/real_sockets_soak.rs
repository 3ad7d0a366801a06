//! 3,000 calls through the reference SBC and teams-sim on real sockets
//! (our carrier trunk placing them), in waves of 50: after the last one
//! every party must hold no call, session, transaction, media port, relay
//! or probe, the process's resident memory must be back near where it
//! was after the first waves (a per-call leak of even 5 KB would add 15 MB),
//! and so must its count of open descriptors (sockets).
//! The figures are printed: `cargo test --test real_sockets_soak -- --nocapture`
//! (with `SOAK_TRACE=1`, every 500 calls too).
//!
//! Timers run with T1 = 50 ms so that 64·T1 (how long transactions and
//! ended sessions linger on UDP) is 3.2 s rather than 32 s.

// Wall-clock deadlines for tests on real sockets, or a fake clock's origin.
#![allow(clippy::disallowed_methods)]

mod common;

use carrier_sim::trunk::PstnState;
use common::{
    held, nothing_held, rss_bytes, start_carrier, start_hub_and_sbc, until_active, wait_for,
    Options,
};
use drlab_sim::far_end::Answering;
use sbc::sip::transaction::TimerConfig;
use std::time::{Duration, Instant};

const CALLS: usize = 3000;
const WAVE: usize = 50;
const WARM_UP: usize = 300;
/// How far memory may stand above its level after the warm-up.
const RSS_SLACK: u64 = 16 * 1024 * 1024;

#[test]
fn three_thousand_calls_leave_nothing_behind() {
    common::two_workers().block_on(async {
        let mut o = Options::new(3);
        o.timers = TimerConfig {
            t1: Duration::from_millis(50),
            t2: Duration::from_millis(400),
            t4: Duration::from_millis(500),
        };
        o.answering = Answering {
            ring_after: Duration::from_millis(5),
            answer_after: Duration::from_millis(5),
        };
        // Each far end sends a few frames: the relays carry real SRTP.
        o.media_frames = 3;
        let lab = start_hub_and_sbc(&o);
        let carrier = start_carrier(&lab, &o);
        until_active(&lab).await;
        let settle = || async {
            wait_for("every party to let go of everything", Duration::from_secs(30), || {
                nothing_held(&lab, Some(&carrier))
            })
            .await
        };
        let started = Instant::now();
        let mut rss_after_warm_up = 0;
        let mut fds_after_warm_up = None;
        let mut done = 0;
        while done < CALLS {
            let n = WAVE.min(CALLS - done);
            for _ in 0..n {
                carrier.call("+4930123456", "+4989000001");
            }
            let answered = |want: usize| {
                let v = carrier.view.lock().unwrap();
                v.calls
                    .iter()
                    .rev()
                    .take(want)
                    .filter(|c| c.state == PstnState::Answered)
                    .count()
                    == want
            };
            wait_for(&format!("wave of {n} answered (after {done})"), Duration::from_secs(30), || {
                answered(n)
            })
            .await;
            for _ in 0..n {
                carrier.hang_up("+4930123456");
            }
            wait_for("wave hung up", Duration::from_secs(30), || {
                carrier.view.lock().unwrap().live_calls == 0
            })
            .await;
            done += n;
            if std::env::var("SOAK_TRACE").is_ok() && done % 500 == 0 {
                // Progress: memory and what is held right after a wave.
                let rss = rss_bytes().unwrap_or(0) as f64 / 1048576.0;
                eprintln!("{done} calls: RSS {rss:.1} MiB; held {:?}", held(&lab, Some(&carrier)));
            }
            if done == WARM_UP {
                settle().await;
                rss_after_warm_up = rss_bytes().unwrap_or(0);
                fds_after_warm_up = open_fds();
            }
        }
        settle().await;
        let elapsed = started.elapsed();
        let rss_end = rss_bytes().unwrap_or(0);
        let fds_end = open_fds();
        let sbc = lab.sbc.lock().unwrap().clone();
        let hub_total = lab.hub.lock().unwrap().calls_total;
        println!(
            "{CALLS} calls in {elapsed:.1?} ({:.0} calls/s); SBC calls started {} ended {}; hub saw {hub_total}",
            CALLS as f64 / elapsed.as_secs_f64(),
            sbc.calls_started,
            sbc.calls_ended
        );
        println!(
            "RSS after {WARM_UP} calls: {:.1} MiB; after {CALLS}: {:.1} MiB; held now: {:?}",
            rss_after_warm_up as f64 / 1048576.0,
            rss_end as f64 / 1048576.0,
            held(&lab, Some(&carrier))
        );
        println!("open descriptors after {WARM_UP} calls: {fds_after_warm_up:?}; after {CALLS}: {fds_end:?}");
        // Every call opens media sockets on both sides and TLS connections
        // may come and go: the count must be back where the warm-up left
        // it (a few of slack for connections being replaced).
        if let (Some(warm), Some(end)) = (fds_after_warm_up, fds_end) {
            assert!(end <= warm + 8, "descriptors leak: {warm} after the warm-up, {end} at the end");
        }
        assert_eq!(sbc.calls_started as usize, CALLS);
        assert_eq!(sbc.calls_ended, sbc.calls_started, "calls never freed");
        assert!(nothing_held(&lab, Some(&carrier)), "{:?}", held(&lab, Some(&carrier)));
        let failed = carrier
            .view
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| !matches!(&c.state, PstnState::Ended(w) if w.contains("hung up")))
            .count();
        assert_eq!(failed, 0, "calls that did not end by hang-up");
        if rss_after_warm_up > 0 {
            assert!(
                rss_end <= rss_after_warm_up + RSS_SLACK,
                "resident memory grew from {rss_after_warm_up} to {rss_end} bytes"
            );
        }
        let problems = sbc.problems.joined("; ");
        assert!(sbc.problems.is_empty(), "{problems}");
    });
}

/// Descriptors this process has open (Linux), or `None` elsewhere.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}
