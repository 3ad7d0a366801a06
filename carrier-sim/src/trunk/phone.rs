//! What a PSTN phone (or the network in front of it) does with a call,
//! scriptable per number: answer, or fail the way the PSTN fails, with
//! the SIP status and Q.850 cause a gateway maps each ISUP release to
//! (RFC 3398 §7.2.4.1, ISUP → SIP; the cause travels in the `Reason`
//! header of RFC 3326), with or without early media first, and hang up
//! after a while.

use std::time::Duration;

/// How a called phone ends its ringing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rings, then answers (after the trunk's answering delay).
    Answer,
    /// User busy: 486, cause 17, at once (no ringing).
    Busy,
    /// Rings until `ring_timeout`, then 480, cause 19 ("no answer from
    /// user, user alerted").
    NoAnswer,
    /// No circuit available: 503 with cause 34, at once.
    Congestion,
    /// The user declines: 603, cause 21 ("call rejected"). RFC 3398
    /// §7.2.4.1 maps 21 to 403; carriers and phones that decline write 603
    /// (and RFC 3398 §8.2.6.1 maps 603 back to 21), so 603 it is.
    Reject,
    /// The number does not exist: 404, cause 1 ("unallocated number").
    Unallocated,
}

impl Outcome {
    /// The final response, its Q.850 cause and the cause's name (ITU-T
    /// Q.850 Table 1), as a gateway writes them; `None` for an answer.
    pub fn final_response(self) -> Option<(u16, &'static str, u8, &'static str)> {
        Some(match self {
            Outcome::Answer => return None,
            Outcome::Busy => (486, "Busy Here", 17, "User busy"),
            Outcome::NoAnswer => (
                480,
                "Temporarily Unavailable",
                19,
                "No answer from user (user alerted)",
            ),
            Outcome::Congestion => (
                503,
                "Service Unavailable",
                34,
                "No circuit/channel available",
            ),
            Outcome::Reject => (603, "Decline", 21, "Call rejected"),
            Outcome::Unallocated => (404, "Not Found", 1, "Unallocated (unassigned) number"),
        })
    }

    /// Whether the phone rings before its outcome (otherwise the network
    /// answers at once, unless it plays an announcement first).
    pub fn rings(self) -> bool {
        matches!(self, Outcome::Answer | Outcome::NoAnswer)
    }
}

/// One phone's script for calls it receives, and when it hangs up calls it
/// is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneScript {
    pub outcome: Outcome,
    /// A 183 with SDP and the phone's audio (ringback, or an announcement
    /// when the outcome is a failure: the failure then comes after the
    /// trunk's answering delay, as a network announcement would end).
    pub early_media: bool,
    /// How long a phone that does not answer rings (`Outcome::NoAnswer`).
    pub ring_timeout: Duration,
    /// Hang up this long after the call is answered (either direction);
    /// `None`: wait for the far end.
    pub hang_up_after: Option<Duration>,
    /// The payload type of telephone-event (RFC 4733) in the phone's SDP.
    pub telephone_event: u8,
}

impl Default for PhoneScript {
    fn default() -> Self {
        PhoneScript {
            outcome: Outcome::Answer,
            early_media: false,
            // ETSI/ITU networks ring for up to 3 minutes; carriers commonly
            // time out sooner. Short enough for a scenario; a setting.
            ring_timeout: Duration::from_secs(30),
            hang_up_after: None,
            telephone_event: 101,
        }
    }
}

/// The `Reason` header value for a Q.850 cause (RFC 3326 §2).
pub fn q850_reason(cause: u8, text: &str) -> String {
    format!("Q.850;cause={cause};text=\"{text}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_the_gateway_mapping() {
        // RFC 3398 §7.2.4.1: ISUP cause → SIP status (21 → 603: see Reject).
        let cases = [
            (Outcome::Busy, 486, 17),
            (Outcome::NoAnswer, 480, 19),
            (Outcome::Congestion, 503, 34),
            (Outcome::Reject, 603, 21),
            (Outcome::Unallocated, 404, 1),
        ];
        for (o, code, cause) in cases {
            let (c, _, q, _) = o.final_response().unwrap();
            assert_eq!((c, q), (code, cause), "{o:?}");
        }
        assert!(Outcome::Answer.final_response().is_none());
        assert_eq!(
            q850_reason(17, "User busy"),
            "Q.850;cause=17;text=\"User busy\""
        );
    }
}
