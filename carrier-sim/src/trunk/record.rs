//! The trunk's call records (see [`sbc::records`]): one per PSTN call,
//! from the phone's side, with what its listener heard.

use super::PstnDirection;
use sbc::records::{q850_cause, CallRecord, EndedBy, Quality};
use sbc::sip::session::EndReason;
use std::time::Instant;

/// When a call's milestones happened, and between whom.
#[derive(Debug, Clone)]
pub(super) struct Timeline {
    pub direction: PstnDirection,
    /// E.164 numbers: the caller, the called.
    pub from: String,
    pub to: String,
    pub started: Instant,
    pub progress: Option<Instant>,
    pub answered: Option<Instant>,
    /// A cause we wrote ourselves (a phone's failure).
    pub cause: Option<u8>,
}

impl Timeline {
    pub fn new(direction: PstnDirection, from: &str, to: &str, now: Instant) -> Self {
        Timeline {
            direction,
            from: from.into(),
            to: to.into(),
            started: now,
            progress: None,
            answered: None,
            cause: None,
        }
    }

    pub fn progress(&mut self, now: Instant) {
        self.progress.get_or_insert(now);
    }

    pub fn answered(&mut self, now: Instant) {
        self.progress.get_or_insert(now);
        self.answered.get_or_insert(now);
    }

    /// The record of the call that ended now for `reason`; `phone_hung_up`:
    /// the phone ended it (a hang-up or cancel of its own).
    pub fn record(
        &self,
        serial: u64,
        epoch: Instant,
        now: Instant,
        reason: &EndReason,
        phone_hung_up: bool,
        quality: Option<Quality>,
    ) -> CallRecord {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_millis() as u64;
        // The phone is the caller of a call from the PSTN.
        let phone_is_caller = self.direction == PstnDirection::FromPstn;
        let (phone, far) = if phone_is_caller {
            (EndedBy::Caller, EndedBy::Callee)
        } else {
            (EndedBy::Callee, EndedBy::Caller)
        };
        let (final_code, ended_by, cause) = match reason {
            _ if phone_hung_up => (self.answered.map_or(487, |_| 200), phone, None),
            EndReason::Rejected { code, cause, .. } => {
                let by = match code {
                    408 | 500..=599 => EndedBy::Network,
                    // A phone's own refusal, or the far side's.
                    _ if !phone_is_caller => phone,
                    _ => far,
                };
                (*code, by, cause.as_deref().and_then(q850_cause))
            }
            EndReason::RemoteBye { reason } => (200, far, reason.as_deref().and_then(q850_cause)),
            EndReason::Cancelled => (487, far, None),
            EndReason::LocalBye => (200, phone, None),
            EndReason::Timeout => (408, EndedBy::Network, None),
            EndReason::TransportError(_) => (503, EndedBy::Network, None),
            _ => (self.answered.map_or(500, |_| 200), EndedBy::Network, None),
        };
        CallRecord {
            call: serial.to_string(),
            leg: "pstn",
            direction: if phone_is_caller {
                "inbound"
            } else {
                "outbound"
            },
            from: self.from.clone(),
            to: self.to.clone(),
            setup_ms: ms(epoch, self.started),
            pdd_ms: self.progress.map(|p| ms(self.started, p)),
            answer_ms: self.answered.map(|a| ms(self.started, a)),
            duration_ms: self.answered.map(|a| ms(a, now)),
            ended_by,
            final_code,
            q850: self.cause.or(cause),
            quality,
        }
    }
}
