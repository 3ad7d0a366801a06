//! Call records: one JSON line per call leg, as carriers and operators keep
//! them, and the figures a trunk is judged by (ASR, ACD, PDD, NER).
//!
//! Times are milliseconds since the writer started (simulated time in a
//! simulation): records of one run compare with each other, and a seed
//! replays them byte for byte.

use serde::Serialize;
use std::fmt;

/// Who ended a call leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EndedBy {
    /// The calling side (a BYE or CANCEL from it).
    Caller,
    /// The called side (a BYE, or a final failure from it).
    Callee,
    /// Neither party: a timeout, a transport failure, a timer of ours.
    Network,
}

/// One call leg, as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// The writer's own name for the call (serial or Call-ID).
    pub call: String,
    /// Whose record: `pstn` (a carrier's phone, its side of the call) or
    /// `call` (the SBC's, both legs in one record).
    pub leg: &'static str,
    /// `inbound` (PSTN → Teams) or `outbound` (Teams → PSTN).
    pub direction: &'static str,
    pub from: String,
    pub to: String,
    /// The INVITE, in ms since the writer started.
    pub setup_ms: u64,
    /// Post-dial delay: INVITE → first 18x (ITU-T E.411 §3.1).
    pub pdd_ms: Option<u64>,
    /// INVITE → 200.
    pub answer_ms: Option<u64>,
    /// 200 → end, answered calls only.
    pub duration_ms: Option<u64>,
    pub ended_by: EndedBy,
    /// The final status of the INVITE (200 when answered).
    pub final_code: u16,
    /// The Q.850 cause of the end, from a Reason header, if any.
    pub q850: Option<u8>,
    /// What the listener at this end heard, when it has audio figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
}

/// The voice-quality figures of a record (a [`crate::media::quality::QualityReport`] in short).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quality {
    pub received: u64,
    pub loss_pct: f64,
    pub effective_loss_pct: f64,
    pub jitter_ms: f64,
    pub delay_mean_ms: Option<f64>,
    pub burst_ratio: f64,
    pub r_factor: f64,
    pub mos: f64,
}

impl From<&crate::media::quality::QualityReport> for Quality {
    fn from(q: &crate::media::quality::QualityReport) -> Self {
        // Two decimals: enough for every figure, and stable text.
        let r2 = |x: f64| (x * 100.0).round() / 100.0;
        Quality {
            received: q.received,
            loss_pct: r2(q.loss_pct),
            effective_loss_pct: r2(q.effective_loss_pct),
            jitter_ms: r2(q.jitter_ms),
            delay_mean_ms: q.delay_mean_ms.map(r2),
            burst_ratio: r2(q.burst_ratio),
            r_factor: r2(q.r_factor),
            mos: r2(q.mos),
        }
    }
}

impl CallRecord {
    /// The record as one JSON line (no newline).
    pub fn json(&self) -> String {
        // Serialising plain fields cannot fail; a NaN would be written null.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Append records to a JSON-lines file (created when missing): the
/// writer side of a `records` setting. One `write` per batch.
pub fn append(path: &std::path::Path, records: &[CallRecord]) -> std::io::Result<()> {
    use std::io::Write;
    if records.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for r in records {
        text.push_str(&r.json());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The writer of a `records` file: every second, what `drain` hands over
/// is appended, on tokio's blocking pool (a slow disk must not stall a
/// runtime whose one thread also runs the SIP core); a failure to write
/// is said on standard error with how many records it cost (`who` names
/// the program). Runs until the runtime stops.
pub async fn write_every_second(
    path: std::path::PathBuf,
    who: &'static str,
    mut drain: impl FnMut() -> Vec<CallRecord>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let batch = drain();
        if batch.is_empty() {
            continue;
        }
        let to = path.clone();
        let n = batch.len();
        let written = tokio::task::spawn_blocking(move || append(&to, &batch))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        if let Err(e) = written {
            eprintln!("{who}: {n} call records lost: {}: {e}", path.display());
        }
    }
}

/// The Q.850 cause in a `Reason` header value (RFC 3326): `Q.850;cause=17;…`.
pub fn q850_cause(reason: &str) -> Option<u8> {
    let mut parts = reason.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("Q.850") {
        return None;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("cause"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Whether a final status counts as effective for NER (ITU-T E.425; the
/// ratio Microsoft's Health Dashboard shows): the network delivered the
/// call, and the user answered (2xx), was busy (486, 600), did not answer
/// (480), declined (603, 403), or the caller gave up (487). A number that
/// does not exist (404, 484, 604) is the dialler's error, not the
/// network's: effective too. Everything else (5xx, 408, other 4xx) is a
/// network failure.
pub fn effective(code: u16) -> bool {
    matches!(
        code,
        200..=299 | 403 | 404 | 480 | 484 | 486 | 487 | 600 | 603 | 604
    )
}

/// The figures of a set of records (attempts are records with a setup).
#[derive(Debug, Clone, PartialEq)]
pub struct Kpis {
    pub attempts: usize,
    pub answered: usize,
    /// Answer-seizure ratio (ITU-T E.411): answered / attempts, %.
    pub asr: f64,
    /// Average call duration of answered calls, s.
    pub acd_s: f64,
    /// Post-dial delay over the calls that had an 18x: median, 95th, ms.
    pub pdd_median_ms: Option<u64>,
    pub pdd_p95_ms: Option<u64>,
    /// Network effectiveness ratio, %.
    pub ner: f64,
}

/// The nearest-rank percentile `p` (0 < p ≤ 1) of `sorted` (ascending):
/// the smallest value with at least p·n values at or below it.
pub fn nearest_rank(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    sorted.get(i).copied()
}

impl Kpis {
    pub fn of(records: &[CallRecord]) -> Kpis {
        let attempts = records.len();
        let answered: Vec<&CallRecord> = records
            .iter()
            .filter(|r| (200..300).contains(&r.final_code))
            .collect();
        let pct = |n: usize| {
            if attempts == 0 {
                0.0
            } else {
                100.0 * n as f64 / attempts as f64
            }
        };
        let acd_s = if answered.is_empty() {
            0.0
        } else {
            answered
                .iter()
                .map(|r| r.duration_ms.unwrap_or(0) as f64 / 1000.0)
                .sum::<f64>()
                / answered.len() as f64
        };
        let mut pdd: Vec<u64> = records.iter().filter_map(|r| r.pdd_ms).collect();
        pdd.sort_unstable();
        let rank = |p: f64| nearest_rank(&pdd, p);
        Kpis {
            attempts,
            answered: answered.len(),
            asr: pct(answered.len()),
            acd_s,
            pdd_median_ms: rank(0.5),
            pdd_p95_ms: rank(0.95),
            ner: pct(records.iter().filter(|r| effective(r.final_code)).count()),
        }
    }
}

impl fmt::Display for Kpis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |x: Option<u64>| x.map_or("-".to_string(), |v| format!("{v} ms"));
        write!(
            f,
            "{} attempts, {} answered: ASR {:.1} %, NER {:.1} %, ACD {:.1} s, PDD median {}, p95 {}",
            self.attempts,
            self.answered,
            self.asr,
            self.ner,
            self.acd_s,
            ms(self.pdd_median_ms),
            ms(self.pdd_p95_ms)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(code: u16, pdd: Option<u64>, duration: Option<u64>) -> CallRecord {
        CallRecord {
            call: "1".into(),
            leg: "pstn",
            direction: "outbound",
            from: "+4989000001".into(),
            to: "+4930123456".into(),
            setup_ms: 0,
            pdd_ms: pdd,
            answer_ms: duration.map(|_| 2500),
            duration_ms: duration,
            ended_by: EndedBy::Caller,
            final_code: code,
            q850: None,
            quality: None,
        }
    }

    #[test]
    fn kpis_follow_their_definitions() {
        let records = [
            record(200, Some(500), Some(60_000)),
            record(200, Some(700), Some(120_000)),
            record(486, None, None),
            record(480, Some(500), None),
            record(503, None, None),
        ];
        let k = Kpis::of(&records);
        assert_eq!((k.attempts, k.answered), (5, 2));
        assert_eq!(k.asr, 40.0);
        // 503 is the network's failure; busy and no-answer are effective.
        assert_eq!(k.ner, 80.0);
        assert_eq!(k.acd_s, 90.0);
        assert_eq!((k.pdd_median_ms, k.pdd_p95_ms), (Some(500), Some(700)));
        assert_eq!(Kpis::of(&[]).asr, 0.0);
    }

    #[test]
    fn records_append_as_lines() {
        let dir = std::env::temp_dir().join(format!("drlab-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calls.jsonl");
        append(&path, &[record(200, Some(1), Some(2))]).unwrap();
        append(&path, &[record(486, None, None), record(503, None, None)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let codes: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["final_code"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(codes, vec![200, 486, 503]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_record_is_one_json_line_and_causes_are_read() {
        let mut r = record(486, Some(640), None);
        r.q850 = q850_cause("Q.850;cause=17;text=\"User busy\"");
        let line = r.json();
        assert!(!line.contains('\n'));
        assert!(
            line.contains("\"final_code\":486") && line.contains("\"q850\":17"),
            "{line}"
        );
        assert!(line.contains("\"ended_by\":\"caller\""), "{line}");
        assert_eq!(q850_cause("SIP;cause=200"), None);
        assert_eq!(q850_cause("Q.850 ; cause = 34"), Some(34));
    }
}
