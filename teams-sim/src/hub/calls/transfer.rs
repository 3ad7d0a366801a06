//! Transfers as the hub makes them (behaviour §5, cases 9.43–9.48).
//!
//! The hub reads the SBC's Allow (its INVITE, or its 200 on calls the hub
//! sent): with REFER it is the transferor (RFC 5589 §6) and sends REFER
//! with Refer-To on its own FQDN (`x-m`/`x-t` for a Teams target) and a
//! Referred-By with `x-m`/`x-t`/`x-ti`/`x-tt`; it then expects 202, an
//! INVITE back whose Request-URI is the Refer-To and whose Referred-By is
//! the one it sent, byte for byte, and NOTIFYs with `message/sipfrag`; on
//! the final NOTIFY 200 it BYEs the old leg. An early BYE, a missing 202
//! or NOTIFY fails the transfer and the call drops (KB-XFER). Without
//! REFER the transfer happens inside Teams and the SBC sees nothing (case
//! 9.44). A call queue's agent takes a call over with an INVITE carrying
//! Replaces (case 9.48).
//!
//! Guesses, since Microsoft documents no value: the transfer times out
//! 32 s (64·T1) after the REFER without 202 and NOTIFY, or 32 s after the
//! target answered (or failed) without the final NOTIFY; the dropped
//! call's BYE carries the Q.850 cause the table gives 408.

use super::{teams_offer, HubCall};
use crate::hub::causes;
use crate::hub::raw::RawMessage;
use crate::hub::{
    CallDirection, CallState, Proxy, Refusal, TransferHow, TransferRecord, HUB_ALLOW, VIEW_HISTORY,
};
use drlab_sim::far_end::Talk;
use sbc::sip::session::{EndReason, Hop, Reply, RequestBuilder, SessionId, SessionState};
use sbc::sip::transaction::TransactionKey;
use sbc::sip::ua::UserAgent;
use sbc::sip::wire::{Message, Method};
use std::time::{Duration, Instant};

/// How long the hub waits for each step of the SBC's part (a guess).
pub(crate) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(32);

/// A REFER the hub sent and waits on.
#[derive(Debug)]
pub(crate) struct Pending {
    record: u64,
    /// The target's user name.
    target: String,
    /// The URI in Refer-To, and the Referred-By value, as sent.
    refer_to: String,
    referred_by: String,
    key: TransactionKey,
    accepted: bool,
    notified: Vec<u16>,
    pub(crate) deadline: Option<Instant>,
    /// The target's call, once the SBC's INVITE for the Refer-To came.
    new_call: Option<SessionId>,
}

/// A stable GUID-shaped id for `text` (FNV-1a, two seeds): a user's or
/// the tenant's object id in `x-m`/`x-t`, the same in every run.
fn guid_of(text: &str) -> String {
    let fnv = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    causes::guid(&format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    ))
}

/// The status line of a `message/sipfrag` body: `SIP/2.0 200 OK`.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text.lines().next()?;
    let mut parts = line.split(' ');
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..700).contains(c))
}

impl Proxy {
    fn tenant_guid(&self) -> String {
        guid_of(&format!("tenant:{}", self.config.tenant.sbcs.join(",")))
    }

    fn user_mri(number: &str) -> String {
        format!("8:orgid:{}", guid_of(&format!("user:{number}")))
    }

    fn new_record(
        &self,
        from: &str,
        to: &str,
        how: TransferHow,
        refer: Option<(String, String)>,
    ) -> u64 {
        let mut v = self.view();
        v.transfers_total += 1;
        let id = v.transfers_total;
        let (refer_to, referred_by) = refer.unzip();
        v.transfers.push_back(TransferRecord {
            id,
            from_user: from.to_string(),
            to_user: to.to_string(),
            how,
            refer_to,
            referred_by,
            outcome: None,
        });
        if v.transfers.len() > VIEW_HISTORY {
            v.transfers.pop_front();
        }
        id
    }

    fn finish_record(&self, id: u64, outcome: Result<(), String>) {
        if let Some(t) = self.view().transfer_mut(id) {
            t.outcome.get_or_insert(outcome);
        }
    }

    fn violation(&self, line: String) {
        self.view().sbc_violations.push(line);
    }

    /// An answered call of `user` on this proxy, free to be transferred.
    fn answered_call_of(&self, ua: &UserAgent, user: &str) -> Option<SessionId> {
        self.calls
            .iter()
            .find(|(id, c)| {
                c.user == user
                    && c.why.is_none()
                    && !c.superseded
                    && c.transfer.is_none()
                    && ua
                        .session(**id)
                        .is_some_and(|s| s.state() == SessionState::Confirmed)
            })
            .map(|(id, _)| *id)
    }

    /// A Teams user transfers their call to another Teams user; `false`
    /// when this proxy holds no answered call of theirs.
    pub(crate) fn transfer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        user: &str,
        to: &str,
    ) -> bool {
        let Some(id) = self.answered_call_of(ua, user) else {
            return false;
        };
        let user_target = self.tenant_user(to);
        let pstn = user_target.is_none()
            && to.starts_with('+')
            && to.len() > 3
            && to[1..].bytes().all(|b| b.is_ascii_digit());
        if user_target.is_none() && !pstn {
            self.problem("transfer", format!("no Teams user or E.164 number {to}"));
            return true;
        }
        // A PSTN number stands for itself; a Teams user by name.
        let target_name = user_target
            .as_ref()
            .map_or_else(|| to.to_string(), |u| u.name.clone());
        let c = &self.calls[&id];
        let refer = c
            .sbc_allow
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("REFER"));
        let Some(target) = user_target else {
            // A PSTN number: only by REFER (the hub would otherwise bridge
            // the call on its own side, which is not simulated).
            if !refer {
                let line =
                    format!("transfer to {to} without REFER in the SBC's Allow is not simulated");
                self.problem("transfer", line);
                return true;
            }
            return self.refer(
                now,
                ua,
                id,
                user,
                &target_name,
                &format!(
                    "sip:{to}@{}:5061;transport=tls;user=phone",
                    self.config.fqdn
                ),
            );
        };
        if !refer {
            // Case 9.44: no REFER in the SBC's Allow: Teams moves the call
            // to the target behind its media processor; the SBC sees nothing.
            let record = self.new_record(user, &target.name, TransferHow::Internal, None);
            let serial = c.serial;
            if let Some(c) = self.calls.get_mut(&id) {
                c.user = target.name.clone();
            }
            if let Some(v) = self.view().call_mut(serial) {
                v.user = target.name.clone();
            }
            self.finish_record(record, Ok(()));
            return true;
        }
        let refer_to = format!(
            "sip:{}:5061;transport=tls;x-m={};x-t={}",
            self.config.fqdn,
            Self::user_mri(&target.number),
            self.tenant_guid()
        );
        self.refer(now, ua, id, user, &target_name, &refer_to)
    }

    /// Send the REFER for `user`'s call `id` to `target_name` at `refer_to`.
    fn refer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        user: &str,
        target_name: &str,
        refer_to: &str,
    ) -> bool {
        let from_number = self
            .config
            .tenant
            .users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.number.clone())
            .unwrap_or_default();
        let fqdn = self.config.fqdn.clone();
        let tenant = self.tenant_guid();
        let refer_to = refer_to.to_string();
        // x-ti: the transfer's correlation id; x-tt: the encoded
        // replacement URI (opaque to the SBC, base64-like in the traces).
        let xti = causes::correlation_id(ua.rng());
        let xtt = format!("{}%3d", ua.rng().hex(120));
        let referred_by = format!(
            "<sip:{fqdn}:5061;x-m={};x-t={tenant};x-ti={xti};x-tt={xtt}>",
            Self::user_mri(&from_number)
        );
        let headers = vec![
            ("Refer-To".to_string(), format!("<{refer_to}>")),
            ("Referred-By".to_string(), referred_by.clone()),
        ];
        match ua.request_in_dialog(now, id, Method::Refer, headers, None) {
            Ok(key) => {
                let record = self.new_record(
                    user,
                    target_name,
                    TransferHow::Refer,
                    Some((refer_to.clone(), referred_by.clone())),
                );
                if let Some(c) = self.calls.get_mut(&id) {
                    c.transfer = Some(Pending {
                        record,
                        target: target_name.to_string(),
                        refer_to,
                        referred_by,
                        key,
                        accepted: false,
                        notified: Vec::new(),
                        deadline: Some(now + TRANSFER_TIMEOUT),
                        new_call: None,
                    });
                }
            }
            Err(e) => self.problem("transfer", format!("REFER for {user}: {e}")),
        }
        true
    }

    /// The SBC's answer to the REFER: 202, or the transfer fails.
    pub(crate) fn on_refer_answer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        key: &TransactionKey,
        code: u16,
    ) {
        let Some(t) = self.calls.get_mut(&id).and_then(|c| c.transfer.as_mut()) else {
            return;
        };
        if t.key != *key {
            return;
        }
        if (200..300).contains(&code) {
            t.accepted = true;
            return;
        }
        let why = format!("the SBC answered the REFER {code}, not 202 (case 9.45)");
        self.fail_transfer(now, ua, id, why, true);
    }

    /// A NOTIFY of the REFER's subscription (RFC 3515 §2.4.5).
    pub(crate) fn on_notify(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        key: TransactionKey,
        request: &Message,
    ) {
        let sbc = self
            .calls
            .get(&id)
            .map(|c| c.sbc.clone())
            .unwrap_or_default();
        let pending = self.calls.get(&id).is_some_and(|c| c.transfer.is_some());
        let event = request
            .headers
            .get("Event")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let ctype = request
            .headers
            .get("Content-Type")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let status = sipfrag_status(&request.body);
        let reply = match (pending, status) {
            (false, _) => Reply::new(481, "Subscription Does Not Exist"),
            _ if !event.starts_with("refer") => Reply::new(489, "Bad Event"),
            _ if !ctype.starts_with("message/sipfrag") => {
                Reply::new(415, "Unsupported Media Type").header("Accept", "message/sipfrag")
            }
            (true, None) => Reply::new(400, "Bad Request"),
            (true, Some(_)) => Reply::new(200, "OK"),
        };
        let ok = reply.code == 200;
        if !ok && pending {
            let line = format!(
                "{sbc}: NOTIFY answered {} {} (case 9.46: Event: refer, message/sipfrag)",
                reply.code, reply.reason
            );
            self.violation(line);
        }
        let _ = ua.respond_in_dialog(now, id, key, request, reply);
        let (true, Some(code)) = (ok, status) else {
            return;
        };
        let Some(t) = self.calls.get_mut(&id).and_then(|c| c.transfer.as_mut()) else {
            return;
        };
        t.notified.push(code);
        if code < 200 {
            return;
        }
        if code >= 300 {
            let why = format!("the transfer target answered {code}");
            return self.fail_transfer(now, ua, id, why, false);
        }
        // Final 2xx: the transfer is done; the hub BYEs the old leg (KB-XFER).
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = c.transfer.take() else {
            return;
        };
        c.why = Some(format!("transferred to {}", t.target));
        let target_answered = t
            .new_call
            .and_then(|n| ua.session(n))
            .is_some_and(|s| matches!(s.state(), SessionState::Accepted | SessionState::Confirmed));
        if !target_answered {
            self.violation(format!(
                "{sbc}: NOTIFY 200 before the transfer target answered (case 9.46)"
            ));
        }
        self.finish_record(t.record, Ok(()));
        let headers = self.call_reason(
            id,
            causes::NORMAL_CLEARING,
            "CallEndReasonTransferred",
            None,
        );
        if let Err(e) = ua.bye(now, id, headers) {
            self.problem("transfer", format!("BYE of the transferred leg: {e}"));
        }
    }

    /// The transfer failed: the call drops, and the target's call with it.
    fn fail_transfer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        why: String,
        violation: bool,
    ) {
        let cause = self.config.refusals.causes.cause(408);
        let headers = self.call_reason(id, cause, "Transfer failed", None);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(t) = c.transfer.take() else {
            return;
        };
        c.why = Some(format!("transfer failed: {why}"));
        let line = format!("{}: transfer of {}'s call failed: {why}", c.sbc, c.user);
        self.finish_record(t.record, Err(why));
        if violation {
            self.violation(line);
        }
        let mut reply = Reply::new(480, "Temporarily Unavailable");
        reply.headers = headers.clone();
        ua.hang_up(now, id, reply, headers);
        if let Some(n) = t.new_call {
            self.end_call(now, ua, n, "the transfer it served failed");
        }
    }

    /// End one call of ours (BYE, or 480 if not answered yet).
    fn end_call(&mut self, now: Instant, ua: &mut UserAgent, id: SessionId, why: &str) {
        let headers = self.call_reason(
            id,
            causes::NORMAL_CLEARING,
            "CallEndReasonLocalUserInitiated",
            None,
        );
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        c.why.get_or_insert_with(|| why.to_string());
        if let Some(callee) = c.callee.as_mut() {
            callee.stop();
        }
        let mut reply = Reply::new(480, "Temporarily Unavailable");
        reply.headers = headers.clone();
        ua.hang_up(now, id, reply, headers);
    }

    /// Transfers whose SBC part did not come in time (case 9.47).
    pub(crate) fn transfers_due(&mut self, now: Instant, ua: &mut UserAgent) {
        let due: Vec<(SessionId, String)> = (self.calls.due(now).into_iter())
            .filter_map(|id| {
                let c = self.calls.get(&id)?;
                let t = c.transfer.as_ref()?;
                if t.deadline.is_none_or(|d| d > now) {
                    return None;
                }
                let why = if !t.accepted {
                    "no 202 for the REFER"
                } else if t.new_call.is_none() {
                    "no INVITE for the Refer-To"
                } else if t.notified.is_empty() {
                    "no NOTIFY"
                } else {
                    "no final NOTIFY"
                };
                Some((
                    id,
                    format!("{why} within {} s (case 9.47)", TRANSFER_TIMEOUT.as_secs()),
                ))
            })
            .collect();
        for (id, why) in due {
            self.fail_transfer(now, ua, id, why, true);
        }
    }

    /// An SBC INVITE whose Request-URI is a Refer-To the hub sent: the
    /// transfer's record, old call and target; refused if its Referred-By
    /// is not the one the hub sent, byte for byte (case 9.45).
    pub(crate) fn transfer_invite(
        &mut self,
        raw: &RawMessage,
    ) -> Result<Option<(u64, SessionId, String)>, Refusal> {
        let Some(ruri) = raw.request_uri() else {
            return Ok(None);
        };
        let found = self.calls.iter().find_map(|(id, c)| {
            let t = c.transfer.as_ref()?;
            (t.refer_to == ruri && t.new_call.is_none()).then_some((*id, c.sbc.clone()))
        });
        let Some((old, sbc)) = found else {
            return Ok(None);
        };
        let t = self.calls[&old].transfer.as_ref().expect("found above");
        let (record, target, sent) = (t.record, t.target.clone(), t.referred_by.clone());
        let got = raw.lines("Referred-By");
        if got != [sent.as_str()] {
            let reason = format!("Referred-By {got:?}, the hub sent {sent:?}");
            self.violation(format!(
                "{sbc}: the INVITE for the Refer-To carried {reason} (case 9.45)"
            ));
            return Err(Refusal::TransferNotCorrelated { reason });
        }
        Ok(Some((record, old, target)))
    }

    /// The target's call exists: the hub waits on it, not on a timer.
    pub(crate) fn transfer_arrived(&mut self, old: SessionId, new: SessionId) {
        if let Some(t) = self.calls.get_mut(&old).and_then(|c| c.transfer.as_mut()) {
            t.new_call = Some(new);
            t.deadline = None;
        }
    }

    /// The target answered (or its call ended): the final NOTIFY is due.
    pub(crate) fn target_answered(&mut self, now: Instant, old: SessionId) {
        if let Some(t) = self.calls.get_mut(&old).and_then(|c| c.transfer.as_mut()) {
            t.deadline = Some(now + TRANSFER_TIMEOUT);
        }
    }

    /// A call that takes another over (Replaces) was answered by the SBC:
    /// the old one is now the SBC's to end.
    pub(crate) fn replacement_answered(&mut self, id: SessionId) {
        let Some(c) = self.calls.get(&id) else {
            return;
        };
        let (Some((record, old)), CallDirection::Outbound) = (c.takes_over, c.direction) else {
            return;
        };
        let agent = c.user.clone();
        self.finish_record(record, Ok(()));
        if let Some(o) = self.calls.get_mut(&old) {
            o.why = Some(format!("replaced by {agent}'s call"));
        }
    }

    /// A call ended: a transfer it was waiting on fails; a call that was
    /// to take another over and never did reports why.
    pub(crate) fn transfer_ended(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        c: &mut HubCall,
        reason: &EndReason,
    ) {
        if let Some(t) = c.transfer.take() {
            let early_bye = matches!(reason, EndReason::RemoteBye { .. });
            let why = if early_bye {
                "the SBC sent BYE before the transfer completed (case 9.47)".to_string()
            } else {
                format!("the call ended during the transfer: {reason}")
            };
            if early_bye {
                self.violation(format!("{}: {why}", c.sbc));
            }
            c.why
                .get_or_insert_with(|| format!("transfer failed: {why}"));
            self.finish_record(t.record, Err(why));
            if let Some(n) = t.new_call {
                self.end_call(now, ua, n, "the transfer it served failed");
            }
        }
        let Some((record, old)) = c.takes_over else {
            return;
        };
        match c.direction {
            // The REFER target's call ended: the SBC owes the final NOTIFY.
            CallDirection::Inbound => self.target_answered(now, old),
            CallDirection::Outbound => {
                let why = format!("the SBC answered the INVITE with Replaces: {reason}");
                self.finish_record(record, Err(why));
            }
        }
    }

    /// A Replaces naming a dialog this hub does not hold (case 9.48,
    /// KB-404: 404 with 10202); one it holds is refused as every SBC
    /// Replaces is (case 9.22).
    pub(crate) fn unknown_replaces(&self, ua: &UserAgent, raw: &RawMessage) -> Option<Refusal> {
        let value = raw.lines("Replaces").first().copied()?;
        let call_id = value.split(';').next().unwrap_or_default().trim();
        let known = self
            .calls
            .iter()
            .any(|(id, _)| ua.session(*id).is_some_and(|s| s.call_id() == call_id));
        (!known).then(|| Refusal::ReplacesUnknownDialog {
            call_id: call_id.to_string(),
        })
    }

    /// A call queue's agent takes `user`'s call over: an INVITE with
    /// Replaces to the SBC (RFC 3891; case 9.48). `false` when this proxy
    /// holds no answered call of theirs.
    pub(crate) fn pick_up(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        user: &str,
        agent: &str,
        unknown_dialog: bool,
    ) -> bool {
        let Some(old) = self.answered_call_of(ua, user) else {
            return false;
        };
        let Some(agent) = self.tenant_user(agent) else {
            self.problem("pick-up", format!("no Teams user {agent}"));
            return true;
        };
        let Some(d) = ua.session(old).and_then(|s| s.dialog()).cloned() else {
            return false;
        };
        let (sbc, old_serial) = {
            let c = &self.calls[&old];
            (c.sbc.clone(), c.serial)
        };
        let remote_number = self
            .view()
            .call_mut(old_serial)
            .map(|v| v.remote_number.clone())
            .unwrap_or_default();
        // The to-tag is the SBC's, the from-tag ours (RFC 3891 §3: as the
        // recipient sees the dialog).
        let call_id = if unknown_dialog {
            format!("gone-{}", d.call_id)
        } else {
            d.call_id.clone()
        };
        let replaces = format!("{call_id};to-tag={};from-tag={}", d.remote_tag, d.local_tag);
        let (ip, port, key) = match self.media_processor(ua) {
            Ok(m) => m,
            Err(e) => {
                self.problem("media", format!("media processor: {e}"));
                return true;
            }
        };
        let local_media = super::mp_media(ip, port, &key);
        let origin = self.origin(ua, ip);
        let mut offer = local_media.offer(origin);
        teams_offer(&mut offer);
        let ruri = d
            .remote_target
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        let from = format!(
            "\"{}\" <sip:{}@{}:5061;user=phone>",
            agent.name, agent.number, self.config.fqdn
        );
        let contact = self.contact(ua);
        let invite = RequestBuilder::new(Method::Invite, ruri, from, d.remote_uri.clone())
            .header("Record-Route", self.record_route())
            .contact(contact)
            .header("Allow", HUB_ALLOW)
            .header("Replaces", replaces)
            .header("Require", "replaces")
            .build(ua.rng(), &self.config.internal_name);
        let new_call_id = invite.call_id().unwrap_or_default().to_string();
        let hop = Hop::Uri(format!(
            "sip:{sbc}:{};transport=tls",
            self.config.tenant.sbc_port
        ));
        let id = match ua.invite(now, invite, Some(offer.clone()), hop) {
            Ok(id) => id,
            Err(e) => {
                self.view().release_media(port);
                self.problem("pick-up", format!("INVITE with Replaces: {e}"));
                return true;
            }
        };
        let record = self.new_record(user, &agent.name, TransferHow::Replaces, None);
        self.next_media += 1;
        let (mut talk, open) = Talk::open(self.next_media, &self.config.media_host, port);
        self.media_out.push_back(open);
        let offered = offer.to_string();
        talk.media = Some(local_media);
        talk.local = Some(offer);
        let serial = self.add_view(
            &new_call_id,
            CallDirection::Inbound,
            &agent.name,
            &remote_number,
        );
        if let Some(v) = self.view().call_mut(serial) {
            v.media = talk.stats.clone();
        }
        self.set_state(serial, CallState::Setup);
        self.calls.insert(
            id,
            HubCall {
                serial,
                direction: CallDirection::Outbound,
                user: agent.name,
                callee: None,
                answering_fork: 0,
                ack_deadline: None,
                talk,
                media_port: port,
                why: None,
                correlation: causes::correlation_id(ua.rng()),
                offered: Some(offered),
                outbound: None,
                failover_at: None,
                progressed: false,
                superseded: false,
                sbc,
                sbc_allow: String::new(),
                transfer: None,
                takes_over: Some((record, old)),
                bridge: None,
                early_forks: Vec::new(),
                media_watch: None,
                moving_to: None,
            },
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_are_stable_and_guid_shaped() {
        let a = guid_of("user:+4989000002");
        assert_eq!(a, guid_of("user:+4989000002"));
        assert_ne!(a, guid_of("user:+4989000001"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn a_sipfrag_gives_its_status() {
        assert_eq!(sipfrag_status(b"SIP/2.0 180 Ringing\r\n"), Some(180));
        assert_eq!(sipfrag_status(b"SIP/2.0 200 OK"), Some(200));
        assert_eq!(sipfrag_status(b"INVITE sip:a@b SIP/2.0\r\n"), None);
        assert_eq!(sipfrag_status(b"SIP/2.0 99 Odd\r\n"), None);
        assert_eq!(sipfrag_status(&[0xff, 0xfe]), None);
    }
}
