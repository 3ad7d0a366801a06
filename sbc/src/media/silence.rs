//! The watch on an answered call's media that ends a call on which nothing
//! arrives (rtpengine's `timeout`; Direct Routing's "call drops after
//! approximately 10 to 20 seconds" without media, case 9.58). Sans-IO: the
//! caller passes the time and a packet counter, and looks when told.

use std::time::{Duration, Instant};

/// How often a call's packet counter is looked at.
pub const LOOK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilenceWatch {
    /// The counter when last looked, and since when it has not moved.
    count: u64,
    since: Instant,
    next_look: Instant,
}

impl SilenceWatch {
    /// Start watching at `now` (the call was answered).
    pub fn new(now: Instant) -> Self {
        SilenceWatch {
            count: 0,
            since: now,
            next_look: now + LOOK_EVERY,
        }
    }

    /// When to call [`SilenceWatch::look`] next.
    pub fn next_look(&self) -> Instant {
        self.next_look
    }

    /// Look at the call's packet counter `count` at `now`: `true` when it
    /// has not moved for `timeout` (to within [`LOOK_EVERY`]). A `paused`
    /// call (on hold, or its media moving elsewhere) counts as alive; so
    /// does a counter that changed in either direction (a new source's
    /// counter may start lower).
    pub fn look(&mut self, now: Instant, count: u64, paused: bool, timeout: Duration) -> bool {
        if count != self.count || paused {
            self.count = count;
            self.since = now;
        }
        self.next_look = now + LOOK_EVERY;
        now.saturating_duration_since(self.since) >= timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn silence_is_called_after_the_timeout_and_traffic_or_hold_resets_it() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let timeout = Duration::from_secs(15);
        let mut w = SilenceWatch::new(t0);
        assert_eq!(w.next_look(), s(1));
        assert!(!w.look(s(1), 5, false, timeout), "packets flow");
        assert!(!w.look(s(10), 5, false, timeout), "9 s of silence");
        assert!(!w.look(s(12), 5, true, timeout), "on hold: alive");
        assert!(!w.look(s(26), 5, false, timeout), "14 s since the hold");
        assert!(w.look(s(27), 5, false, timeout), "15 s of silence");
        assert_eq!(w.next_look(), s(28));
        let mut fresh = SilenceWatch::new(t0);
        assert!(fresh.look(s(15), 0, false, timeout), "nothing ever came");
    }
}
