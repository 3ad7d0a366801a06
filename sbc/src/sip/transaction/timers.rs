//! Timer values (RFC 3261 §17, Table 4 in Appendix A) and a small deadline set.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The timers of RFC 3261 §17 and RFC 6026 §8. `Retransmit2xx` is the UAS
/// core's 2xx retransmission (RFC 3261 §13.3.1.4), done by the INVITE
/// server transaction on the core's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    K,
    G,
    H,
    I,
    J,
    L,
    M,
    Retransmit2xx,
}

/// Armed timers with their deadlines; at most one of each.
#[derive(Debug, Default, Clone)]
pub(crate) struct Deadlines(Vec<(Timer, Instant)>);

impl Deadlines {
    pub fn arm(&mut self, t: Timer, at: Instant) {
        self.cancel(t);
        self.0.push((t, at));
    }

    pub fn cancel(&mut self, t: Timer) {
        self.0.retain(|(x, _)| *x != t);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn next(&self) -> Option<Instant> {
        self.0.iter().map(|(_, at)| *at).min()
    }

    /// Remove and return the earliest timer due at `now`, ties broken by
    /// timer order so that runs are deterministic.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let idx = (0..self.0.len())
            .filter(|i| self.0[*i].1 <= now)
            .min_by_key(|i| (self.0[*i].1, self.0[*i].0))?;
        Some(self.0.remove(idx).0)
    }
}
