//! The trunk as a transferee (RFC 3515, RFC 5589 §6): a REFER on a call
//! is answered 202, the same phone calls the Refer-To (the SBC's URI for
//! the transfer) through the trunk, and the new call's progress goes back
//! in NOTIFYs with `message/sipfrag`. The transferor ends the old call
//! once it hears the final 200.

use super::Trunk;
use sbc::sip::session::{EndReason, Reply, SessionId};
use sbc::sip::transaction::TransactionKey;
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::{Message, NameAddr, Uri};
use std::time::Instant;

impl Trunk {
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        key: TransactionKey,
        request: &Message,
    ) {
        let refer_to: Vec<&str> = request.headers.lines("Refer-To").collect();
        let target = match refer_to.as_slice() {
            [one] => NameAddr::parse("Refer-To", one)
                .ok()
                .map(|na| na.uri)
                .filter(|u| matches!(Uri::parse(u), Ok(Uri::Sip(_)))),
            _ => None,
        };
        let phone = self.calls.get(&id).map(|c| c.phone.clone());
        let (Some(target), Some(phone)) = (target, phone) else {
            let reply = Reply::new(400, "Bad Request");
            let _ = ua.respond_in_dialog(now, id, key, request, reply);
            return;
        };
        let _ = ua.respond_in_dialog(now, id, key, request, Reply::new(202, "Accepted"));
        self.notify(now, ua, id, 100, "Trying", false);
        let to = super::Uri::parse(&target)
            .ok()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        match self.call(now, ua, &phone, &to, Some(&target)) {
            Ok(new) => {
                if let Some(c) = self.calls.get_mut(&new) {
                    c.refer_of = Some((id, vec![100]));
                }
            }
            Err(e) => {
                self.problem("refer", format!("cannot call the Refer-To {target}: {e}"));
                self.notify(now, ua, id, 503, "Service Unavailable", true);
            }
        }
    }

    /// The new call rang or answered: tell the transferor.
    pub(super) fn refer_progress(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        response: &Message,
    ) {
        let code = response.status().unwrap_or(0);
        let Some((old, sent)) = self.calls.get_mut(&id).and_then(|c| c.refer_of.as_mut()) else {
            return;
        };
        if code <= 100 || sent.contains(&code) {
            return;
        }
        sent.push(code);
        let old = *old;
        let reason = response
            .summary()
            .split_once(' ')
            .map_or(String::new(), |x| x.1.to_string());
        self.notify(now, ua, old, code, &reason, code >= 200);
    }

    /// The new call ended before an answer: the transfer failed.
    pub(super) fn refer_failed(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        reason: &EndReason,
    ) {
        let Some((old, sent)) = self.calls.get(&id).and_then(|c| c.refer_of.clone()) else {
            return;
        };
        if sent.iter().any(|c| *c >= 200) {
            return;
        }
        let (code, text) = match reason {
            EndReason::Rejected { code, reason, .. } => (*code, reason.clone()),
            EndReason::Timeout => (408, "Request Timeout".into()),
            _ => (487, "Request Terminated".into()),
        };
        self.notify(now, ua, old, code, &text, true);
    }

    fn notify(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        leg: SessionId,
        code: u16,
        reason: &str,
        last: bool,
    ) {
        if let Err(e) = ua.notify_refer(now, leg, code, reason, last) {
            self.problem("refer", format!("NOTIFY {code}: {e}"));
        }
    }
}
