//! Hub → SBC failover on outbound calls (behaviour §4, cases 9.33–9.37):
//! the tenant's route order, `FailoverTimeSeconds` (no 18x in time:
//! CANCEL, next SBC), `FailoverResponseCodes` (408, 503, 504 before any
//! 18x: next SBC; never after 180/183; anything else ends the call), and a
//! connection or TLS failure retried from another proxy (another source
//! address) before the next SBC; with no SBC left the call fails, 504 with
//! a 5690xx code when none could be reached.

use super::{HubCommand, Proxy};
use sbc::sip::session::{EndReason, SessionId};
use sbc::sip::ua::UserAgent;
use std::time::Instant;

/// One outbound call's way through the tenant's SBCs, handed from attempt
/// to attempt and, for a connection failure, from proxy to proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The call in the hub's view (the same across attempts and proxies).
    pub serial: u64,
    pub user: String,
    pub number: String,
    /// SBCs still to try, the current one first.
    pub route: Vec<String>,
    /// Proxies that could not reach `route[0]`.
    pub tried_from: Vec<String>,
    /// The GUID of this call's Reason texts.
    pub correlation: String,
    /// Why the last attempt failed, for the view when no SBC is left.
    pub last: Option<String>,
    /// The bridge this call is the far leg of (a transfer to a PSTN
    /// number): its relay lives on this proxy, so the call never moves to
    /// another one.
    pub bridge: Option<u64>,
    /// A forwarded call: the original caller (E.164) goes in From, and
    /// the History-Info entries for SBCs with ForwardCallHistory on.
    pub forwarded: Option<(String, String)>,
}

/// What to do when an attempt ends before an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// The call is over (answered and ended, or ended for good).
    End,
    /// Try the next SBC in the route.
    Sbc(String),
    /// The SBC could not be reached: try it from another proxy.
    Proxy(String),
}

/// The decision for an attempt that ended with `reason`; `progressed`: a
/// 180/183 (or the answer) came first, after which the hub never fails over.
pub(crate) fn after_end(reason: &EndReason, progressed: bool, codes: &[u16]) -> Next {
    if progressed {
        return Next::End;
    }
    match reason {
        EndReason::Rejected { code, reason, .. } if codes.contains(code) => {
            // KB-CODES: 560 + the status means the SBC sent it.
            Next::Sbc(format!("{code} {reason} from the SBC (560{code})"))
        }
        EndReason::TransportError(e) => Next::Proxy(format!("cannot connect: {e}")),
        EndReason::Timeout => Next::Sbc("no response (Timer B)".into()),
        _ => Next::End,
    }
}

impl Proxy {
    /// The tenant's SBCs in the order an outbound call tries them: voice
    /// routes by priority; within a route by health (Active first, Demoted
    /// last: behaviour §4), equally healthy ones shuffled Fisher–Yates with
    /// the seeded RNG (behaviour §2, MON).
    pub(crate) fn route_order(&self, ua: &mut UserAgent) -> Vec<String> {
        let routes = self.config.tenant.voice_routes();
        let mut out: Vec<String> = Vec::new();
        for route in routes {
            let ranked: Vec<(u8, String)> = {
                let view = self.view();
                route
                    .iter()
                    .filter(|s| !out.contains(s))
                    .map(|s| {
                        let rank = view.sbcs.get(s).map_or(2, |h| h.status.routing_rank());
                        (rank, s.clone())
                    })
                    .collect()
            };
            for rank in 0..=3 {
                let mut same: Vec<String> = ranked
                    .iter()
                    .filter(|(r, _)| *r == rank)
                    .map(|(_, s)| s.clone())
                    .collect();
                for i in (1..same.len()).rev() {
                    let j = (ua.rng().next_u32() as usize) % (i + 1);
                    same.swap(i, j);
                }
                out.extend(same);
            }
        }
        out
    }

    /// Note an attempt's outcome on the call in the view.
    pub(crate) fn note_attempt(&self, serial: u64, line: String) {
        if let Some(c) = self.view().call_mut(serial) {
            c.attempts.push(line);
        }
    }

    /// Carry on after a failed attempt: the next SBC, another proxy, or
    /// the end of the route.
    pub(crate) fn fail_over(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        mut plan: Outbound,
        next: Next,
    ) {
        match next {
            Next::End => {}
            Next::Sbc(why) => {
                let sbc = plan.route.first().cloned().unwrap_or_default();
                self.note_attempt(plan.serial, format!("{sbc}: {why}"));
                plan.last = Some(why);
                plan.route.remove(0);
                plan.tried_from.clear();
                self.attempt(now, ua, plan);
            }
            Next::Proxy(why) if plan.bridge.is_some() => {
                let sbc = plan.route.first().cloned().unwrap_or_default();
                let last = format!("504 {sbc} could not be reached (5690xx: {why})");
                self.fail_over(now, ua, plan, Next::Sbc(last));
            }
            Next::Proxy(why) => {
                plan.tried_from.push(self.config.fqdn.clone());
                // One retry from another datacenter (FO), then the next SBC.
                let peer = self
                    .config
                    .peers
                    .iter()
                    .find(|(p, _)| !plan.tried_from.contains(p))
                    .filter(|_| plan.tried_from.len() < 2);
                let sbc = plan.route.first().cloned().unwrap_or_default();
                if let Some((name, tx)) = peer {
                    let line = format!(
                        "{sbc}: {why} from {}; retried from {name}",
                        self.config.fqdn
                    );
                    if tx.send(HubCommand::Continue(plan.clone())).is_ok() {
                        return self.note_attempt(plan.serial, line);
                    }
                }
                // KB-504: the hub could not deliver to the SBC.
                let last = format!("504 no proxy could reach {sbc} (5690xx: {why})");
                self.fail_over(now, ua, plan, Next::Sbc(last));
            }
        }
    }

    /// Outbound calls whose FailoverTimeSeconds ran out with no 18x: CANCEL
    /// (the stack waits for a provisional if none came) and try the next
    /// SBC (behaviour §4: recorded as 408 / 500001).
    pub(crate) fn failover_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let due: Vec<SessionId> = (self.calls.due(now).into_iter())
            .filter(|id| {
                let c = self.calls.get(id);
                c.is_some_and(|c| c.failover_at.is_some_and(|t| t <= now))
            })
            .collect();
        for id in due {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            c.failover_at = None;
            c.superseded = true;
            let Some(plan) = c.outbound.clone() else {
                continue;
            };
            let secs = self.config.failover_time.as_secs();
            let why = format!("408 no 18x within FailoverTimeSeconds ({secs} s): CANCEL (500001)");
            let _ = ua.cancel(now, id);
            self.fail_over(now, ua, plan, Next::Sbc(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_endings_fail_over() {
        let codes = [408, 503, 504];
        let rejected = |code| EndReason::Rejected {
            code,
            reason: "x".into(),
            retry_after: None,
            cause: None,
        };
        assert!(matches!(
            after_end(&rejected(503), false, &codes),
            Next::Sbc(_)
        ));
        assert!(matches!(
            after_end(&rejected(408), false, &codes),
            Next::Sbc(_)
        ));
        // Case 9.35: never after 180/183.
        assert_eq!(after_end(&rejected(503), true, &codes), Next::End);
        // Case 9.36: 404, 486, 603 end the call.
        for code in [404, 486, 603] {
            assert_eq!(after_end(&rejected(code), false, &codes), Next::End);
        }
        // A configured code fails over too (FO-live: any non-2xx can be).
        assert!(matches!(
            after_end(&rejected(486), false, &[486]),
            Next::Sbc(_)
        ));
        assert!(matches!(
            after_end(&EndReason::TransportError("refused".into()), false, &codes),
            Next::Proxy(_)
        ));
        assert_eq!(after_end(&EndReason::Cancelled, false, &codes), Next::End);
    }
}
