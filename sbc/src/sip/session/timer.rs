//! Session timers (RFC 4028): who refreshes an INVITE session, when, and
//! when a session nobody refreshed is over. The session layer keeps one
//! [`TimerState`] per session that negotiated a timer; roles only choose a
//! [`SessionTimerConfig`].

use std::time::{Duration, Instant};

/// Which side of a request refreshes (RFC 4028 §4: the `refresher` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

impl Refresher {
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// How the refresher refreshes (RFC 4028 §7.4, §8.4: re-INVITE or UPDATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshMethod {
    /// re-INVITE with the description unchanged.
    #[default]
    Reinvite,
    /// UPDATE without a body (RFC 3311) where the peer's Allow lists
    /// UPDATE, else re-INVITE.
    Update,
    /// UPDATE even where the peer's Allow does not list it: a fault, to
    /// show a peer refusing it.
    UpdateAlways,
}

/// What a party asks for and does about session timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The Session-Expires we ask for on INVITEs we send (seconds).
    pub interval: u32,
    /// Our Min-SE: a smaller Session-Expires is refused with 422 (RFC 4028
    /// §5: never below 90).
    pub min_se: u32,
    /// On INVITEs we send: the refresher we name (`None`: the UAS chooses).
    pub request_refresher: Option<Refresher>,
    /// As UAS, when the request names none: who refreshes. RFC 4028 §9:
    /// never the UAC when it does not support timers.
    pub uas_choice: Refresher,
    /// Send the refreshes we owe. Off only to show a peer catching it.
    pub refresh: bool,
    /// How we refresh.
    pub refresh_with: RefreshMethod,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            interval: 1800,
            min_se: 90,
            request_refresher: None,
            uas_choice: Refresher::Uac,
            refresh: true,
            refresh_with: RefreshMethod::Reinvite,
        }
    }
}

/// `Session-Expires: <delta-seconds>[;refresher=uac|uas]` (RFC 4028 §4).
pub fn parse_session_expires(value: &str) -> Option<(u32, Option<Refresher>)> {
    let mut parts = value.split(';').map(str::trim);
    let interval = parts.next()?.parse().ok()?;
    let mut refresher = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.trim().eq_ignore_ascii_case("refresher") {
                refresher = match v.trim().to_ascii_lowercase().as_str() {
                    "uac" => Some(Refresher::Uac),
                    "uas" => Some(Refresher::Uas),
                    _ => None,
                };
            }
        }
    }
    Some((interval, refresher))
}

pub fn session_expires(interval: u32, refresher: Option<Refresher>) -> String {
    match refresher {
        Some(r) => format!("{interval};refresher={}", r.as_str()),
        None => interval.to_string(),
    }
}

/// Whether a comma-separated option-tag header (Supported, Require) lists `tag`.
pub fn lists(values: &[&str], tag: &str) -> bool {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// One session's negotiated timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerState {
    pub interval: u32,
    /// We refresh (else the peer does and we watch for expiry).
    pub we_refresh: bool,
    /// When our next refresh is due.
    pub refresh_at: Option<Instant>,
    /// When we give up on the peer's refresh and end the session.
    pub expires_at: Option<Instant>,
    refresh_enabled: bool,
}

impl TimerState {
    pub fn new(now: Instant, interval: u32, we_refresh: bool, refresh_enabled: bool) -> Self {
        let mut t = TimerState {
            interval,
            we_refresh,
            refresh_at: None,
            expires_at: None,
            refresh_enabled,
        };
        t.restart(now);
        t
    }

    /// A refresh went through (ours answered 2xx, or the peer's answered):
    /// RFC 4028 §10: the refresher refreshes at half the interval; the
    /// other side sends BYE if nothing came by the interval minus
    /// min(32 s, a third of it).
    pub fn restart(&mut self, now: Instant) {
        let secs = u64::from(self.interval);
        if self.we_refresh {
            self.refresh_at = self
                .refresh_enabled
                .then(|| now + Duration::from_secs(secs / 2));
            self.expires_at = None;
        } else {
            self.refresh_at = None;
            self.expires_at = Some(now + Duration::from_secs(secs - (secs / 3).min(32)));
        }
    }

    /// The refresher as a request we send names it.
    pub fn refresher_for_our_request(&self) -> Refresher {
        if self.we_refresh {
            Refresher::Uac
        } else {
            Refresher::Uas
        }
    }

    /// The refresher as our answer to the peer's request names it.
    pub fn refresher_for_our_answer(&self) -> Refresher {
        if self.we_refresh {
            Refresher::Uas
        } else {
            Refresher::Uac
        }
    }

    pub fn wake(&self) -> Option<Instant> {
        [self.refresh_at, self.expires_at]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_reads_and_writes() {
        assert_eq!(
            parse_session_expires("1800;refresher=uac"),
            Some((1800, Some(Refresher::Uac)))
        );
        assert_eq!(
            parse_session_expires(" 90 ; Refresher = UAS"),
            Some((90, Some(Refresher::Uas)))
        );
        assert_eq!(parse_session_expires("90"), Some((90, None)));
        assert_eq!(parse_session_expires("x"), None);
        assert_eq!(
            session_expires(90, Some(Refresher::Uas)),
            "90;refresher=uas"
        );
        assert!(lists(&["100rel, Timer"], "timer"));
        assert!(!lists(&["100rel"], "timer"));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary epoch for a pure function
    fn the_refresher_refreshes_at_half_and_the_other_side_gives_up_before_expiry() {
        let t0 = Instant::now();
        let r = TimerState::new(t0, 90, true, true);
        assert_eq!(r.refresh_at, Some(t0 + Duration::from_secs(45)));
        assert_eq!(r.expires_at, None);
        // RFC 4028 §10: 90 − min(32, 30) = 60 s.
        let w = TimerState::new(t0, 90, false, true);
        assert_eq!(w.expires_at, Some(t0 + Duration::from_secs(60)));
        // 1800 − min(32, 600) = 1768 s.
        let w = TimerState::new(t0, 1800, false, true);
        assert_eq!(w.expires_at, Some(t0 + Duration::from_secs(1768)));
        let lazy = TimerState::new(t0, 90, true, false);
        assert_eq!(lazy.wake(), None);
    }
}
