//! `carrier-sim load`: calls placed at a steady rate against an SBC, and
//! what became of them: the rate achieved, final codes, setup latency
//! percentiles, SIP retransmissions both ways and, with media, what each
//! phone heard. The trunk places, answers and ends the calls as in every
//! other use (each phone hangs up `hold` after the answer); this module
//! only paces the commands and reads the call records the trunk writes.
//!
//! Unlike SIPp it runs the same SIP stack as the rest of drlab, so its
//! figures are for a drlab carrier; its own cost per call is in
//! `docs/benchmarks.md`, and several processes (each with its own
//! `listen_port` or address) can load one SBC together.

use crate::trunk::{CarrierCommand, CarrierView, PhoneScript};
use sbc::records::{nearest_rank, CallRecord};
use sbc::sip::transport::tap::{Direction, Tap, TraceEvent};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// What to place.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// New calls per second.
    pub rate: f64,
    pub calls: u64,
    /// How long each answered call lasts before the phone hangs up.
    pub hold: Duration,
    /// The phones send audio (otherwise they only listen).
    pub media: bool,
    /// The numbers called (E.164), in turn.
    pub to: Vec<String>,
    /// Callers are this prefix and six digits (E.164).
    pub from_prefix: String,
}

/// A margin after `hold` before a caller number is used again: a call
/// that failed is over within Timer B (32 s) of its INVITE.
const REUSE_MARGIN: Duration = Duration::from_secs(40);

/// How long to wait for the last calls' records after the last INVITE:
/// the hold, Timer B for a call that never got an answer, and a BYE's
/// Timer F.
fn drain_time(hold: Duration) -> Duration {
    hold + Duration::from_secs(32 + 32 + 5)
}

fn is_e164(n: &str, max_digits: usize) -> bool {
    n.strip_prefix('+').is_some_and(|d| {
        !d.is_empty() && d.len() <= max_digits && d.bytes().all(|b| b.is_ascii_digit())
    })
}

impl LoadPlan {
    /// Every value in range, or what is wrong with the first that is not
    /// (named as its option).
    pub fn check(&self) -> Result<(), String> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err(format!(
                "--rate: {} is not a rate in (0, 100000] calls per second",
                self.rate
            ));
        }
        if self.calls == 0 {
            return Err("--calls: at least one call".into());
        }
        if self.hold > Duration::from_secs(3600) {
            return Err(format!(
                "--hold: {} s is longer than an hour",
                self.hold.as_secs_f64()
            ));
        }
        if self.to.is_empty() {
            return Err("--to: at least one number to call".into());
        }
        if let Some(bad) = self.to.iter().find(|n| !is_e164(n, 15)) {
            return Err(format!(
                "--to: {bad:?} is not an E.164 number (+ and up to 15 digits)"
            ));
        }
        // Six digits follow the prefix; E.164 has at most 15.
        if !is_e164(&self.from_prefix, 9) {
            return Err(format!(
                "--from-prefix: {:?} is not + and 1 to 9 digits (six more follow it)",
                self.from_prefix
            ));
        }
        if self.phones() > 1_000_000 {
            return Err(format!(
                "--rate and --hold: {} calls at once is more than the six digits after --from-prefix number",
                self.phones()
            ));
        }
        Ok(())
    }

    /// Caller numbers needed: every call that may still be up when a new
    /// one starts has a caller of its own.
    pub fn phones(&self) -> usize {
        let up_at_once = self.rate * (self.hold + REUSE_MARGIN).as_secs_f64();
        (up_at_once.ceil() as u64).clamp(1, self.calls) as usize
    }

    /// The caller number of phone `i`.
    pub fn caller(&self, i: usize) -> String {
        format!("{}{:06}", self.from_prefix, i % 1_000_000)
    }
}

/// Counts SIP messages sent or received again byte for byte to or from
/// the same address within 64 s of the first copy (Timer B/F/H's span):
/// the load generator's retransmissions (the SBC was slow to answer) and
/// the SBC's (we were slow, or a response was lost).
#[derive(Debug, Default)]
pub struct RetransmitCounter(Mutex<Generations>);

/// Messages seen, with when first seen, in two generations of at least
/// 64 s each (the older is dropped whole, so memory stays bounded).
#[derive(Debug, Default)]
struct Generations {
    current: HashMap<(bool, SocketAddr, u64), Duration>,
    previous: HashMap<(bool, SocketAddr, u64), Duration>,
    since: Duration,
    sent_again: u64,
    received_again: u64,
}

const RETRANSMIT_SPAN: Duration = Duration::from_secs(64);

impl RetransmitCounter {
    /// Sent again, received again.
    pub fn counts(&self) -> (u64, u64) {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (g.sent_again, g.received_again)
    }
}

impl Tap for RetransmitCounter {
    fn record(&self, e: TraceEvent) {
        let sent = e.direction == Direction::Sent;
        let key = (sent, e.remote, sbc::sip::rng::fnv1a(&e.raw));
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if e.at.saturating_sub(g.since) >= RETRANSMIT_SPAN {
            g.previous = std::mem::take(&mut g.current);
            g.since = e.at;
        }
        let first = match g.current.get(&key).or_else(|| g.previous.get(&key)) {
            Some(&at) => at,
            None => {
                g.current.insert(key, e.at);
                e.at
            }
        };
        let again = first < e.at && e.at - first < RETRANSMIT_SPAN;
        if first < e.at && !again {
            // The same bytes long after: a new first copy.
            g.current.insert(key, e.at);
        }
        if again {
            if sent {
                g.sent_again += 1;
            } else {
                g.received_again += 1;
            }
        }
    }
}

/// What the run saw so far (for a progress line).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub placed: u64,
    pub ended: u64,
    pub answered: u64,
    pub live: usize,
}

/// Place the plan's calls through the trunk behind `commands`, then wait
/// for their records. `progress` is called about once a second.
pub async fn drive(
    plan: &LoadPlan,
    commands: &UnboundedSender<CarrierCommand>,
    view: &Arc<Mutex<CarrierView>>,
    counter: &RetransmitCounter,
    mut progress: impl FnMut(&Progress),
) -> LoadReport {
    let script = PhoneScript {
        hang_up_after: Some(plan.hold),
        ..PhoneScript::default()
    };
    let _ = commands.send(CarrierCommand::DefaultScript(script));
    let lock = || view.lock().unwrap_or_else(|e| e.into_inner());
    let mut records: Vec<CallRecord> = Vec::new();
    let drain = |records: &mut Vec<CallRecord>| -> Progress {
        let mut v = lock();
        records.extend(v.records.drain(..));
        Progress {
            placed: 0,
            ended: records.len() as u64,
            answered: records.iter().filter(|r| r.final_code == 200).count() as u64,
            live: v.live_calls,
        }
    };
    let phones = plan.phones();
    let start = tokio::time::Instant::now();
    let mut next_report = start + Duration::from_secs(1);
    let mut placed = 0;
    for i in 0..plan.calls {
        // Each call at its own time from the start, so a late wake-up is
        // caught up at once rather than slowing the whole run.
        let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
        tokio::time::sleep_until(due).await;
        let call = CarrierCommand::Call {
            from: plan.caller(i as usize % phones),
            to: plan.to[i as usize % plan.to.len()].clone(),
        };
        if commands.send(call).is_err() {
            break;
        }
        placed += 1;
        if tokio::time::Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            let mut p = drain(&mut records);
            p.placed = i + 1;
            progress(&p);
        }
    }
    let placed_in = start.elapsed();
    let deadline = tokio::time::Instant::now() + drain_time(plan.hold);
    loop {
        let mut p = drain(&mut records);
        p.placed = placed;
        if p.ended >= placed || tokio::time::Instant::now() >= deadline {
            break;
        }
        if tokio::time::Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            progress(&p);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sent_again, received_again) = counter.counts();
    let live = lock().live_calls;
    let problems = lock().problems.total();
    LoadReport::of(
        plan,
        placed,
        placed_in,
        &records,
        (sent_again, received_again),
        live,
        problems,
    )
}

/// Percentiles of one measure, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spread {
    pub n: usize,
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl Spread {
    pub fn of(mut values: Vec<u64>) -> Spread {
        values.sort_unstable();
        Spread {
            n: values.len(),
            p50: nearest_rank(&values, 0.50),
            p95: nearest_rank(&values, 0.95),
            p99: nearest_rank(&values, 0.99),
            max: values.last().copied(),
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |x: Option<u64>| x.map_or("-".into(), |v| v.to_string());
        write!(
            f,
            "p50 {} / p95 {} / p99 {} / max {} ms (of {})",
            ms(self.p50),
            ms(self.p95),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

/// The voice quality the phones heard, over the calls that had figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HeardQuality {
    pub calls: usize,
    pub mos_mean: f64,
    pub mos_min: f64,
    pub loss_mean_pct: f64,
    pub jitter_max_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub calls: u64,
    /// Calls handed to the trunk (fewer than `calls` only if it stopped).
    pub placed: u64,
    pub rate_asked: f64,
    /// How long placing every INVITE took, and so the rate achieved.
    pub placed_in: Duration,
    pub rate_achieved: Option<f64>,
    pub answered: usize,
    /// Final codes of the calls not answered (0: the call never started
    /// or ended before any response, e.g. Timer B).
    pub failed_by_code: BTreeMap<u16, usize>,
    /// Calls with no record when the run stopped waiting (still up, or
    /// never started: see the trunk's problems).
    pub unaccounted: u64,
    /// INVITE → 200.
    pub setup: Spread,
    /// INVITE → first 18x.
    pub pdd: Spread,
    pub retransmissions_sent: u64,
    pub retransmissions_received: u64,
    pub live_at_end: usize,
    /// What the trunk logged as going wrong (calls it could not start...).
    pub problems: u64,
    pub quality: Option<HeardQuality>,
}

impl LoadReport {
    pub fn of(
        plan: &LoadPlan,
        placed: u64,
        placed_in: Duration,
        records: &[CallRecord],
        (sent_again, received_again): (u64, u64),
        live_at_end: usize,
        problems: u64,
    ) -> LoadReport {
        let answered = records.iter().filter(|r| r.final_code == 200).count();
        let mut failed_by_code = BTreeMap::new();
        for r in records.iter().filter(|r| r.final_code != 200) {
            *failed_by_code.entry(r.final_code).or_insert(0) += 1;
        }
        let heard: Vec<&sbc::records::Quality> =
            records.iter().filter_map(|r| r.quality.as_ref()).collect();
        let quality = (!heard.is_empty()).then(|| {
            let n = heard.len() as f64;
            HeardQuality {
                calls: heard.len(),
                mos_mean: heard.iter().map(|q| q.mos).sum::<f64>() / n,
                mos_min: heard.iter().map(|q| q.mos).fold(f64::INFINITY, f64::min),
                loss_mean_pct: heard.iter().map(|q| q.loss_pct).sum::<f64>() / n,
                jitter_max_ms: heard.iter().map(|q| q.jitter_ms).fold(0.0, f64::max),
            }
        });
        // The last INVITE goes at (placed - 1) / rate: the rate over that
        // span, as asked when the generator keeps up (none for one call).
        let span = placed_in.as_secs_f64();
        let rate_achieved = (placed > 1 && span > 0.0).then(|| (placed - 1) as f64 / span);
        LoadReport {
            calls: plan.calls,
            placed,
            rate_asked: plan.rate,
            placed_in,
            rate_achieved,
            answered,
            failed_by_code,
            unaccounted: placed.saturating_sub(records.len() as u64),
            setup: Spread::of(records.iter().filter_map(|r| r.answer_ms).collect()),
            pdd: Spread::of(records.iter().filter_map(|r| r.pdd_ms).collect()),
            retransmissions_sent: sent_again,
            retransmissions_received: received_again,
            live_at_end,
            problems,
            quality,
        }
    }

    /// Calls that did not end answered (or were never placed), of all
    /// asked, %.
    pub fn failed_pct(&self) -> f64 {
        let failed = self.calls.saturating_sub(self.answered as u64);
        100.0 * failed as f64 / self.calls.max(1) as f64
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let achieved = self
            .rate_achieved
            .map_or("-".to_string(), |r| format!("{r:.1}/s"));
        writeln!(
            f,
            "calls        {} at {:.1}/s asked, {achieved} achieved (placed in {:.2} s{})",
            self.calls,
            self.rate_asked,
            self.placed_in.as_secs_f64(),
            if self.placed < self.calls {
                format!("; only {} placed: the trunk stopped", self.placed)
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "answered     {} ({:.3} % failed)",
            self.answered,
            self.failed_pct()
        )?;
        let codes: Vec<String> = (self.failed_by_code.iter())
            .map(|(c, n)| match c {
                0 => format!("no response: {n}"),
                c => format!("{c}: {n}"),
            })
            .collect();
        writeln!(
            f,
            "failed       {}{}",
            if codes.is_empty() {
                "none".to_string()
            } else {
                codes.join(", ")
            },
            if self.unaccounted > 0 {
                format!("; {} without a record yet", self.unaccounted)
            } else {
                String::new()
            }
        )?;
        writeln!(f, "setup        INVITE to 200: {}", self.setup)?;
        writeln!(f, "pdd          INVITE to 18x: {}", self.pdd)?;
        writeln!(
            f,
            "retransmits  sent {}, received {}",
            self.retransmissions_sent, self.retransmissions_received
        )?;
        if let Some(q) = &self.quality {
            writeln!(
                f,
                "media        {} calls heard: MOS mean {:.2}, min {:.2}; loss mean {:.2} %; jitter max {:.1} ms",
                q.calls, q.mos_mean, q.mos_min, q.loss_mean_pct, q.jitter_max_ms
            )?;
        }
        write!(
            f,
            "at the end   {} calls still up, {} trunk problems",
            self.live_at_end, self.problems
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbc::records::EndedBy;
    use sbc::sip::transport::TransportKind;

    fn plan() -> LoadPlan {
        LoadPlan {
            rate: 100.0,
            calls: 10_000,
            hold: Duration::from_secs(5),
            media: false,
            to: vec!["+4989000001".into()],
            from_prefix: "+4930555".into(),
        }
    }

    #[test]
    fn a_caller_per_call_that_may_still_be_up() {
        // 100/s × (5 s + 40 s margin).
        assert_eq!(plan().phones(), 4_500);
        assert_eq!(
            LoadPlan {
                calls: 10,
                ..plan()
            }
            .phones(),
            10
        );
        assert_eq!(plan().caller(42), "+4930555000042");
    }

    #[test]
    fn bad_options_are_named() {
        let bad = |p: LoadPlan| p.check().unwrap_err();
        assert!(bad(LoadPlan {
            rate: 0.0,
            ..plan()
        })
        .starts_with("--rate"));
        assert!(bad(LoadPlan {
            rate: f64::NAN,
            ..plan()
        })
        .starts_with("--rate"));
        assert!(bad(LoadPlan { calls: 0, ..plan() }).starts_with("--calls"));
        assert!(bad(LoadPlan {
            to: vec!["4989".into()],
            ..plan()
        })
        .starts_with("--to"));
        assert!(bad(LoadPlan {
            from_prefix: "+4930555123456".into(),
            ..plan()
        })
        .starts_with("--from-prefix"));
        assert!(bad(LoadPlan {
            rate: 50_000.0,
            calls: 10_000_000,
            hold: Duration::from_secs(60),
            ..plan()
        })
        .starts_with("--rate and --hold"));
        assert_eq!(plan().check(), Ok(()));
    }

    fn event(at: u64, direction: Direction, raw: &str) -> TraceEvent {
        TraceEvent {
            at: Duration::from_secs(at),
            host: "carrier".into(),
            direction,
            local: "127.0.0.1:5070".parse().unwrap(),
            remote: "127.0.0.10:5060".parse().unwrap(),
            transport: TransportKind::Udp,
            raw: raw.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_same_bytes_again_within_64_s_are_a_retransmission() {
        let c = RetransmitCounter::default();
        c.record(event(0, Direction::Sent, "INVITE a"));
        c.record(event(0, Direction::Sent, "INVITE b"));
        c.record(event(1, Direction::Sent, "INVITE a"));
        c.record(event(1, Direction::Received, "INVITE a"));
        c.record(event(2, Direction::Received, "INVITE a"));
        assert_eq!(c.counts(), (1, 1));
        // Remembered across a rotation of the generations...
        c.record(event(63, Direction::Sent, "INVITE b"));
        c.record(event(65, Direction::Sent, "INVITE a"));
        assert_eq!(c.counts(), (2, 1));
        // ...but 64 s after the first copy it is a new message, and the
        // count goes on from it.
        c.record(event(66, Direction::Sent, "INVITE a"));
        c.record(event(70, Direction::Sent, "INVITE b"));
        assert_eq!(c.counts(), (3, 1));
        c.record(event(71, Direction::Sent, "INVITE b"));
        assert_eq!(c.counts(), (4, 1));
    }

    fn record(code: u16, answer_ms: Option<u64>, pdd_ms: Option<u64>) -> CallRecord {
        CallRecord {
            call: "1".into(),
            leg: "pstn",
            direction: "inbound",
            from: "+4930555000001".into(),
            to: "+4989000001".into(),
            setup_ms: 0,
            pdd_ms,
            answer_ms,
            duration_ms: answer_ms.map(|_| 5_000),
            ended_by: EndedBy::Caller,
            final_code: code,
            q850: None,
            quality: None,
        }
    }

    #[test]
    fn the_report_counts_codes_and_percentiles() {
        let p = LoadPlan { calls: 5, ..plan() };
        let records = vec![
            record(200, Some(100), Some(50)),
            record(200, Some(300), Some(60)),
            record(200, Some(200), Some(70)),
            record(503, None, None),
        ];
        let r = LoadReport::of(&p, 5, Duration::from_millis(40), &records, (3, 1), 0, 0);
        assert_eq!(r.answered, 3);
        assert_eq!(r.failed_by_code, BTreeMap::from([(503, 1)]));
        assert_eq!(r.unaccounted, 1);
        assert_eq!(r.setup.p50, Some(200));
        assert_eq!(r.setup.max, Some(300));
        assert_eq!(r.pdd.p95, Some(70));
        assert!((r.failed_pct() - 40.0).abs() < 1e-9);
        // 4 gaps between 5 INVITEs in 40 ms.
        assert!((r.rate_achieved.unwrap() - 100.0).abs() < 1e-9);
        let text = r.to_string();
        assert!(text.contains("503: 1; 1 without a record yet"), "{text}");
        assert!(text.contains("retransmits  sent 3, received 1"), "{text}");
    }
}
