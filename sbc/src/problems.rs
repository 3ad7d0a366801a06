//! What went wrong, for operators and reports: the latest lines in a
//! bounded ring, and a counter per kind that never loses a count. Readers
//! take what is new since the sequence number they last saw, so a printer
//! copies only new lines, never the whole log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// How many lines are kept.
pub const PROBLEM_RING: usize = 256;

/// Print each problem line once, as it comes, to stderr as `who: line`,
/// for the programs on real sockets (`sbc`, `teams-sim`): the log is read
/// twice a second, and only what is new since the last look is copied out
/// of it. Lines that fell out of the ring meanwhile are counted.
pub async fn echo<V>(view: Arc<Mutex<V>>, who: &'static str, log: fn(&V) -> &ProblemLog) {
    let mut next = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        // A poisoned lock still holds the log (a default here would put
        // the sequence back to 0, below `next`).
        let (lines, seq) = log(&view.lock().unwrap_or_else(|e| e.into_inner())).since(next);
        let missed = (seq - next).saturating_sub(lines.len() as u64);
        if missed > 0 {
            eprintln!("{who}: ({missed} more problems not shown)");
        }
        for p in lines {
            eprintln!("{who}: {p}");
        }
        next = seq;
    }
}

/// Print `line` to stderr once `ready` holds of the view (a role marks
/// its view as it starts, after its transports are bound): a program on
/// real sockets says it listens only when it does, not before a bind that
/// may still fail.
pub async fn announce_when<V>(view: Arc<Mutex<V>>, ready: impl Fn(&V) -> bool, line: String) {
    loop {
        if ready(&view.lock().unwrap_or_else(|e| e.into_inner())) {
            eprintln!("{line}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProblemLog {
    ring: VecDeque<(u64, String)>,
    next_seq: u64,
    counts: BTreeMap<&'static str, u64>,
}

impl ProblemLog {
    /// Record `line` under `kind` (a short fixed name: "tls", "rejected"...).
    pub fn push(&mut self, kind: &'static str, line: impl Into<String>) {
        if self.ring.len() == PROBLEM_RING {
            self.ring.pop_front();
        }
        self.ring.push_back((self.next_seq, line.into()));
        self.next_seq += 1;
        *self.counts.entry(kind).or_default() += 1;
    }

    /// Lines recorded at or after sequence `seq` that are still kept, and
    /// the sequence to ask from next time.
    pub fn since(&self, seq: u64) -> (Vec<String>, u64) {
        let lines = self
            .ring
            .iter()
            .filter(|(s, _)| *s >= seq)
            .map(|(_, l)| l.clone())
            .collect();
        (lines, self.next_seq)
    }

    /// The lines still kept, oldest first.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.ring.iter().map(|(_, l)| l.as_str())
    }

    /// Problems recorded in all, per kind.
    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.next_seq == 0
    }

    /// The kept lines joined, for a failure message.
    pub fn joined(&self, sep: &str) -> String {
        self.lines().collect::<Vec<_>>().join(sep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_and_the_counts_are_not() {
        let mut log = ProblemLog::default();
        for i in 0..1000 {
            log.push(if i % 2 == 0 { "tls" } else { "rejected" }, format!("p{i}"));
        }
        assert_eq!(log.lines().count(), PROBLEM_RING);
        assert_eq!(log.counts()["tls"], 500);
        assert_eq!(log.total(), 1000);
        let (new, next) = log.since(998);
        assert_eq!(new, ["p998", "p999"]);
        assert_eq!(log.since(next).0.len(), 0);
        // Lines that fell out of the ring are not returned.
        assert_eq!(log.since(0).0.len(), PROBLEM_RING);
    }
}
