//! Transfers the hub asks of the SBC (behaviour §5, cases 9.43–9.48).
//!
//! - **REFER** (RFC 3515), when REFER is in our Allow: 202, then a new
//!   INVITE back to the hub whose Request-URI is the Refer-To URI and
//!   whose Referred-By is the one received, unchanged ("the SBC doesn't
//!   have to parse the SIP Refer", KB-XFER); NOTIFY with `message/sipfrag`
//!   for 100, each provisional and the final answer. Once the new leg is
//!   answered the relay is re-bridged to it and the hub BYEs the old one.
//! - **INVITE with Replaces** from the hub (RFC 3891; a call queue): it
//!   takes over the Teams leg it names, which we then end with BYE; an
//!   unknown dialog gets 481, an ended one 603 (RFC 3891 §3).
//!
//! Either way the PSTN leg stays up: the carrier sees no new call and no
//! re-INVITE, since the new Teams leg is offered (or answered with) the
//! codec the PSTN leg already uses; a call held for a consultation is
//! resumed toward the carrier.

use super::{agreed, code_for, sdp_of, Call, Leg, Rejection};
use crate::b2bua::{Sbc, SbcFault, TransferMode, SBC_AGENT};
use crate::media::{RelayCommand, SrtpKey};
use crate::sip::sdp::offer_answer::LocalMedia;
use crate::sip::sdp::SessionDescription;
use crate::sip::session::{Hop, Reply, RequestBuilder, SessionEvent, SessionId, SessionState};
use crate::sip::transaction::TransactionKey;
use crate::sip::transport::tls::names_cover;
use crate::sip::transport::{Source, TransportKind};
use crate::sip::ua::UserAgent;
use crate::sip::wire::{Message, Method, NameAddr, Uri};
use std::time::{Duration, Instant};

/// How long a Teams leg we moved off may stay up before we BYE it
/// ourselves: the hub should end it at once (KB-XFER step 4); 64·T1.
const RETIRE_AFTER: Duration = Duration::from_secs(32);

/// A REFER the SBC is carrying out.
#[derive(Debug)]
pub(in crate::b2bua) struct Transfer {
    /// The Teams leg the REFER came on: its implicit subscription gets the
    /// NOTIFYs (RFC 3515 §2.4.4).
    refer_leg: SessionId,
    /// Our INVITE to the Refer-To.
    pub(in crate::b2bua) new_leg: SessionId,
    media: LocalMedia,
    offer: SessionDescription,
    /// Statuses already reported.
    notified: Vec<u16>,
}

/// A URI we REFERred the carrier to, standing for the hub's Refer-To.
#[derive(Debug)]
pub(in crate::b2bua) struct ReferTarget {
    pub(in crate::b2bua) refer_to: String,
    pub(in crate::b2bua) referred_by: Option<String>,
    /// The call whose transfer it is.
    pub(in crate::b2bua) call_id: u64,
}

/// A hub REFER passed on to the carrier.
#[derive(Debug)]
pub(in crate::b2bua) struct RelayedRefer {
    /// Our REFER to the carrier.
    key: TransactionKey,
    /// The Teams leg the hub's REFER came on: the carrier's NOTIFYs go there.
    hub_leg: SessionId,
}

/// A hub REFER accepted (202) for the carrier while the carrier leg could
/// not take it yet: our 2xx to the carrier's INVITE not yet ACKed. It goes
/// on when the ACK lands; a carrier that never ACKs fails it at Timer H.
#[derive(Debug, Clone)]
pub(in crate::b2bua) struct WaitingRefer {
    hub_leg: SessionId,
    carrier: SessionId,
    target: String,
    referred_by: Option<String>,
    pub(in crate::b2bua) give_up_at: Instant,
}

impl Call {
    /// The carrier side's session.
    fn carrier_leg(&self) -> Option<SessionId> {
        if self.a_is_teams() {
            self.b()
        } else {
            Some(self.a())
        }
    }

    /// The Teams side's session now.
    pub(super) fn teams_leg(&self) -> Option<SessionId> {
        if self.a_is_teams() {
            Some(self.a())
        } else {
            self.b()
        }
    }

    fn teams_side(&self) -> Option<&Leg> {
        if self.a_is_teams() {
            self.legs.first()
        } else {
            self.legs.get(1..).and_then(|l| l.last())
        }
    }

    /// The codec the PSTN leg agreed, which a new Teams leg must use: the
    /// relay does not transcode.
    fn pstn_codec(&self) -> Option<String> {
        let a = if self.a_is_teams() {
            agreed(&self.b_offer, self.b_answer.as_ref()?)?
        } else {
            agreed(self.a_answer.as_ref()?, &self.a_offer)?
        };
        Some(a.codec.name)
    }

    /// Media for a new Teams leg: the same socket, a fresh SRTP key (a new
    /// SRTP session must not reuse the old one's keystream), fresh ICE
    /// credentials in bypass, the PSTN leg's codec.
    fn new_teams_media(&self, ua: &mut UserAgent) -> Option<LocalMedia> {
        let mut media = self.teams_side()?.media.clone();
        media.srtp_key = Some(SrtpKey::generate(ua.rng()).inline());
        // Media bypass: a new Teams leg is a new ICE session with new
        // credentials, or the old client's nomination would carry over.
        if media.ice.is_some() {
            media.ice = Some(crate::media::ice::Credentials::generate(ua.rng()).sdp(true));
        }
        if let Some(codec) = self.pstn_codec() {
            media
                .codecs
                .retain(|c| c.name.eq_ignore_ascii_case(&codec) || c.name == "telephone-event");
        }
        Some(media)
    }

    /// Put the Teams side on `session` (our description `ours`, theirs
    /// `theirs`); the old Teams leg is retired.
    fn move_teams_leg(
        &mut self,
        session: SessionId,
        media: LocalMedia,
        ours: SessionDescription,
        theirs: SessionDescription,
    ) {
        let hub = self.teams_side().and_then(|l| l.hub.clone());
        let leg = Leg {
            session,
            hub,
            media,
        };
        if self.a_is_teams() {
            let old = std::mem::replace(&mut self.legs[0], leg);
            self.retired.push(old.session);
            self.a_answer = Some(ours);
            self.a_offer = theirs;
            self.held.0 = self.a_offer.holds();
        } else {
            if let Some(old) = self.b() {
                self.retired.push(old);
            }
            self.legs.push(leg);
            self.b_offer = ours;
            self.held.1 = theirs.holds();
            self.b_answer = Some(theirs);
        }
    }
}

impl Call {
    /// The relay plan with the Teams side on the transfer's new leg, for
    /// its early media: the transferee hears the target's ringback
    /// (KB-XFER: the SBC must give it from the new leg's 180/183).
    fn early_plan(
        &self,
        ours: &SessionDescription,
        theirs: &SessionDescription,
    ) -> Option<crate::media::RelayPlan> {
        let mut teams = super::relay_leg(&agreed(ours, theirs)?)?;
        teams.ice = super::relay_ice(ours, theirs);
        teams.ice_peer = theirs.audio_ice().map(|(u, _)| u);
        let mut plan = self.relay_plan()?;
        if self.a_is_teams() {
            plan.a = teams;
        } else {
            plan.b = teams;
        }
        plan.hold = false;
        Some(plan)
    }
}

/// The URI a Refer-To names (RFC 3515 §2.1: a name-addr or addr-spec).
fn refer_target(value: &str) -> Result<String, (u16, &'static str, String)> {
    let na = NameAddr::parse("Refer-To", value)
        .map_err(|e| (400, "Bad Request", format!("Refer-To: {e}")))?;
    if na.uri.contains('?') {
        // Embedded headers (an attended transfer's Replaces) would make
        // us send the hub a Replaces, which it never accepts (case 9.22).
        return Err((
            501,
            "Not Implemented",
            "Refer-To with embedded headers is not supported".into(),
        ));
    }
    match Uri::parse(&na.uri) {
        Ok(Uri::Sip(_)) => Ok(na.uri),
        Ok(Uri::Tel(_)) => Err((
            416,
            "Unsupported URI Scheme",
            "the hub is reached with a sip: URI".into(),
        )),
        Err(e) => Err((400, "Bad Request", format!("Refer-To: {e}"))),
    }
}

/// `Replaces: call-id;to-tag=x;from-tag=y` (RFC 3891 §6.1).
fn parse_replaces(value: &str) -> Option<(String, String, String)> {
    let mut parts = value.split(';').map(str::trim);
    let call_id = parts.next().filter(|c| !c.is_empty())?.to_string();
    let (mut to, mut from) = (None, None);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            match k.trim().to_ascii_lowercase().as_str() {
                "to-tag" => to = Some(v.trim().to_string()),
                "from-tag" => from = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((call_id, to?, from?))
}

impl Sbc {
    /// Events of a transfer's new leg, and of Teams legs a call moved off;
    /// anything else is handed back.
    pub(super) fn on_side_leg(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        id: SessionId,
        event: SessionEvent,
    ) -> Option<SessionEvent> {
        let call = self.calls.get(&call_id)?;
        if call.transfer.as_ref().is_some_and(|t| t.new_leg == id) {
            self.on_transfer_leg(now, ua, call_id, id, event);
            return None;
        }
        if !call.retired.contains(&id) {
            return Some(event);
        }
        match event {
            SessionEvent::Ended { .. } => self.release_if_done(ua, call_id),
            SessionEvent::ReInvite { .. } => {
                let reply = Reply::new(488, "Not Acceptable Here")
                    .header("Warning", "399 drlab-sbc \"this leg was transferred\"");
                let _ = ua.reject_reinvite(now, id, reply);
            }
            SessionEvent::Request { key, request } => {
                let reply = Reply::new(481, "Call/Transaction Does Not Exist");
                let _ = ua.respond_in_dialog(now, id, key, &request, reply);
            }
            _ => {}
        }
        None
    }

    /// The hub's REFER on a call's Teams leg.
    pub(super) fn on_refer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        id: SessionId,
        key: TransactionKey,
        request: &Message,
    ) {
        let refuse = |ua: &mut UserAgent, code: u16, reason: &str, why: &str| {
            let reply = Reply::new(code, reason)
                .header("Warning", format!("399 drlab-sbc \"{why}\""))
                .header("Allow", "INVITE,ACK,OPTIONS,CANCEL,BYE,REFER,NOTIFY");
            let _ = ua.respond_in_dialog(now, id, key.clone(), request, reply);
        };
        if self.config.transfers == TransferMode::HubOnly {
            let reply = Reply::new(405, "Method Not Allowed").header("Allow", self.allow());
            let _ = ua.respond_in_dialog(now, id, key, request, reply);
            return;
        }
        let Some(call) = self.calls.get(&call_id) else {
            return refuse(ua, 481, "Call/Transaction Does Not Exist", "no such call");
        };
        if call.teams_leg() != Some(id) {
            return refuse(
                ua,
                403,
                "Forbidden",
                "REFER is taken from the Teams side only",
            );
        }
        if !call.answered {
            return refuse(ua, 403, "Forbidden", "the call is not answered");
        }
        // One transfer at a time, ours or the carrier's (one waiting for
        // the carrier's ACK too): a second REFER would orphan the first
        // one's subscription.
        if call.transfer.is_some() || call.relayed_refer.is_some() || call.waiting_refer.is_some() {
            return refuse(ua, 491, "Request Pending", "a transfer is under way");
        }
        // RFC 3515 §2.4.1: exactly one Refer-To.
        let refer_to: Vec<&str> = request.headers.lines("Refer-To").collect();
        let [refer_to] = refer_to.as_slice() else {
            return refuse(ua, 400, "Bad Request", "Refer-To missing or repeated");
        };
        let target = match refer_target(refer_to) {
            Ok(t) => t,
            Err((code, reason, why)) => {
                self.problem("transfer", format!("call {call_id}: REFER refused: {why}"));
                return refuse(ua, code, reason, &why);
            }
        };
        if self.config.transfers == TransferMode::Carrier {
            if let Some(carrier) = self.carrier_takes_refer(ua, call_id) {
                let _ = ua.respond_in_dialog(now, id, key, request, Reply::new(202, "Accepted"));
                let referred_by = request.headers.get("Referred-By").map(str::to_string);
                let accepted = ua
                    .session(carrier)
                    .is_some_and(|s| s.state() == SessionState::Accepted);
                if accepted {
                    // RFC 3261 §12.1.1 would let us send now, but the carrier
                    // has not shown it holds the dialog: wait for its ACK.
                    if let Some(c) = self.calls.get_mut(&call_id) {
                        c.waiting_refer = Some(WaitingRefer {
                            hub_leg: id,
                            carrier,
                            target,
                            referred_by,
                            give_up_at: now + super::HOLD_WAIT,
                        });
                    }
                    return;
                }
                return self.refer_carrier(now, ua, call_id, id, carrier, target, referred_by);
            }
        }
        let Some(media) = self.calls[&call_id].new_teams_media(ua) else {
            return refuse(ua, 500, "Server Internal Error", "no Teams leg media");
        };
        let _ = ua.respond_in_dialog(now, id, key, request, Reply::new(202, "Accepted"));
        self.notify(now, ua, id, 100, "Trying", false);
        let origin = self.origin(ua);
        let offer = media.offer(origin);
        let call = &self.calls[&call_id];
        let (invite, hop) = self.transfer_invite(ua, call, &target, request);
        match ua.invite(now, invite, Some(offer.clone()), hop) {
            Ok(new_leg) => {
                self.by_session.insert(new_leg, call_id);
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.transfer = Some(Transfer {
                        refer_leg: id,
                        new_leg,
                        media,
                        offer,
                        notified: vec![100],
                    });
                }
                if self.faults.contains(&SbcFault::ByeBeforeTransferCompletes) {
                    let _ = ua.bye(now, id, Vec::new());
                }
            }
            Err(e) => {
                self.problem(
                    "transfer",
                    format!("call {call_id}: INVITE to {target}: {e}"),
                );
                self.notify(now, ua, id, 503, "Service Unavailable", true);
            }
        }
    }

    /// The carrier leg, if the carrier's Allow (its INVITE, or its 200 to
    /// ours) lists REFER.
    fn carrier_takes_refer(&self, ua: &UserAgent, call_id: u64) -> Option<SessionId> {
        let leg = self.calls.get(&call_id)?.carrier_leg()?;
        let s = ua.session(leg)?;
        let m = match s.side() {
            crate::sip::session::Side::Uas => Some(s.invite()),
            crate::sip::session::Side::Uac => s.final_response(),
        }?;
        m.headers
            .values("Allow")
            .any(|x| x.trim().eq_ignore_ascii_case("REFER"))
            .then_some(leg)
    }

    /// Pass the hub's REFER on to the carrier (`TransferMode::Carrier`):
    /// its Refer-To is a URI of ours that stands for the hub's, so the
    /// carrier's switch calls us back and we call the hub's Refer-To with
    /// its Referred-By unchanged.
    #[allow(clippy::too_many_arguments)]
    fn refer_carrier(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        hub_leg: SessionId,
        carrier: SessionId,
        target: String,
        referred_by: Option<String>,
    ) {
        let token = ua.rng().owned_token(super::REFER_TOKEN, 16);
        let headers = vec![
            (
                "Refer-To".to_string(),
                format!(
                    "<sip:{token}@{}:{}>",
                    self.ip, self.config.carrier_listen_port
                ),
            ),
            (
                "Referred-By".to_string(),
                format!("<sip:{}:{}>", self.ip, self.config.carrier_listen_port),
            ),
        ];
        match ua.request_in_dialog(now, carrier, Method::Refer, headers, None) {
            Ok(key) => {
                self.refer_targets.insert(
                    token,
                    ReferTarget {
                        refer_to: target,
                        referred_by,
                        call_id,
                    },
                );
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.relayed_refer = Some(RelayedRefer { key, hub_leg });
                }
            }
            Err(e) => {
                self.problem(
                    "transfer",
                    format!("call {call_id}: REFER to the carrier: {e}"),
                );
                self.notify(now, ua, hub_leg, 503, "Service Unavailable", true);
            }
        }
    }

    /// Leg `confirmed` got its ACK (`None`: the wait is over): pass on the
    /// hub's REFER that waited for the carrier leg, or fail it with NOTIFY
    /// 503 if that leg is still not confirmed.
    pub(super) fn send_waiting_refer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        confirmed: Option<SessionId>,
    ) {
        let Some(call) = self.calls.get_mut(&call_id) else {
            return;
        };
        if confirmed.is_some() && call.waiting_refer.as_ref().map(|w| w.carrier) != confirmed {
            return;
        }
        let Some(w) = call.waiting_refer.take() else {
            return;
        };
        let confirmed = ua
            .session(w.carrier)
            .is_some_and(|s| s.state() == SessionState::Confirmed);
        if !confirmed {
            self.problem(
                "transfer",
                format!("call {call_id}: the carrier never ACKed; its REFER was not sent"),
            );
            self.notify(now, ua, w.hub_leg, 503, "Service Unavailable", true);
            return;
        }
        self.refer_carrier(
            now,
            ua,
            call_id,
            w.hub_leg,
            w.carrier,
            w.target,
            w.referred_by,
        );
    }

    /// The carrier's answer to the REFER we passed on: anything but 2xx
    /// ends the hub's transfer with that status.
    pub(super) fn on_carrier_refer_answer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        key: &TransactionKey,
        code: u16,
        response: Option<&Message>,
    ) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        if c.relayed_refer.as_ref().is_none_or(|r| r.key != *key) || (200..300).contains(&code) {
            return;
        }
        let Some(r) = c.relayed_refer.take() else {
            return;
        };
        self.refer_targets.retain(|_, t| t.call_id != call_id);
        let reason = response
            .map(|m| m.summary())
            .and_then(|s| s.split_once(' ').map(|x| x.1.to_string()))
            .unwrap_or_else(|| "Request Timeout".into());
        self.problem(
            "transfer",
            format!("call {call_id}: the carrier answered our REFER {code}"),
        );
        self.notify(now, ua, r.hub_leg, code, &reason, true);
    }

    /// A NOTIFY from the carrier for the REFER we passed on: answered, and
    /// sent on to the hub as it came (RFC 3515 §2.4.5).
    pub(super) fn relay_notify(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        carrier: SessionId,
        key: TransactionKey,
        request: &Message,
    ) {
        let _ = ua.respond_in_dialog(now, carrier, key, request, Reply::new(200, "OK"));
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(hub_leg) = c.relayed_refer.as_ref().map(|r| r.hub_leg) else {
            return;
        };
        let state = request
            .headers
            .get("Subscription-State")
            .unwrap_or("active")
            .to_string();
        if state.trim().to_ascii_lowercase().starts_with("terminated") {
            c.relayed_refer = None;
        }
        let headers = vec![
            ("Event".to_string(), "refer".to_string()),
            ("Subscription-State".to_string(), state),
        ];
        let ctype = request
            .headers
            .get("Content-Type")
            .unwrap_or("message/sipfrag;version=2.0")
            .to_string();
        let body = Some((ctype, request.body.clone()));
        if let Err(e) = ua.request_in_dialog(now, hub_leg, Method::Notify, headers, body) {
            self.problem(
                "transfer",
                format!("call {call_id}: NOTIFY to the hub: {e}"),
            );
        }
    }

    /// The INVITE a REFER asks for (KB-XFER): to the hub even for a PSTN
    /// target, the Request-URI exactly the Refer-To URI, Referred-By as
    /// received; From is the PSTN party, who is being transferred.
    fn transfer_invite(
        &self,
        ua: &mut UserAgent,
        call: &Call,
        target: &str,
        refer: &Message,
    ) -> (Message, Hop) {
        let fqdn = &self.config.fqdn;
        let port = self.config.tls_listen_port;
        let from = match &call.pstn_party {
            Some(n) => format!("<sip:{n}@{fqdn}:{port};user=phone>"),
            None => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
        };
        let mut b = RequestBuilder::new(Method::Invite, target, from, format!("<{target}>"))
            .contact(self.teams_contact(call.pstn_party.as_deref()))
            .header("Allow", self.allow())
            .header("X-MS-SBC", SBC_AGENT);
        if let Some(rb) = refer.headers.get("Referred-By") {
            let rb = if self.faults.contains(&SbcFault::RewriteReferredBy) {
                rb.split(";x-tt=")
                    .next()
                    .unwrap_or(rb)
                    .trim_end_matches('>')
                    .to_string()
                    + ">"
            } else {
                rb.to_string()
            };
            b = b.header("Referred-By", rb);
        }
        if call.pstn_party.is_none() {
            b = b.header("Privacy", "id");
        }
        // The Refer-To names the hub proxy (its host and port); over TLS.
        let (host, hub_port) = match Uri::parse(target) {
            Ok(u) => (
                u.host().unwrap_or_default(),
                u.port().unwrap_or(self.config.hub_port),
            ),
            Err(_) => (String::new(), self.config.hub_port),
        };
        let hop = Hop::Uri(format!("sip:{host}:{hub_port};transport=tls"));
        (b.build(ua.rng(), fqdn), hop)
    }

    /// A NOTIFY of the REFER's implicit subscription (RFC 3515 §2.4.5).
    fn notify(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        leg: SessionId,
        code: u16,
        reason: &str,
        last: bool,
    ) {
        if self.faults.contains(&SbcFault::NoTransferNotify) {
            return;
        }
        if let Err(e) = ua.notify_refer(now, leg, code, reason, last) {
            self.problem("transfer", format!("NOTIFY {code}: {e}"));
        }
    }

    fn on_transfer_leg(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        id: SessionId,
        event: SessionEvent,
    ) {
        match event {
            SessionEvent::Progress { response, sdp } => {
                let code = response.status().unwrap_or(0);
                let early = sdp.and_then(|theirs| {
                    let c = self.calls.get(&call_id)?;
                    c.early_plan(&c.transfer.as_ref()?.offer, &theirs)
                });
                if let Some(plan) = early {
                    self.media_out.push_back(RelayCommand::Plan {
                        id: call_id,
                        plan: Box::new(plan),
                    });
                }
                let Some(t) = self
                    .calls
                    .get_mut(&call_id)
                    .and_then(|c| c.transfer.as_mut())
                else {
                    return;
                };
                if code <= 100 || t.notified.contains(&code) {
                    return;
                }
                t.notified.push(code);
                let leg = t.refer_leg;
                let reason = response
                    .summary()
                    .split_once(' ')
                    .map_or(String::new(), |x| x.1.to_string());
                self.notify(now, ua, leg, code, &reason, false);
            }
            SessionEvent::Answered { sdp, .. } => self.complete_transfer(now, ua, call_id, id, sdp),
            SessionEvent::Ended { reason } => {
                let Some(c) = self.calls.get_mut(&call_id) else {
                    return;
                };
                let Some(t) = c.transfer.take() else {
                    return;
                };
                c.retired.push(id);
                let (code, text) = code_for(&reason);
                self.problem(
                    "transfer",
                    format!("call {call_id}: the transfer failed: {reason}"),
                );
                self.notify(now, ua, t.refer_leg, code, &text, true);
                // Back to the old Teams leg, if its early media took over.
                self.push_plan(call_id);
                self.release_if_done(ua, call_id);
            }
            _ => {}
        }
    }

    /// The Refer-To answered: tell the hub (NOTIFY 200, which makes it BYE
    /// the old leg) and re-bridge the PSTN leg to the new Teams leg.
    fn complete_transfer(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        call_id: u64,
        id: SessionId,
        sdp: Option<SessionDescription>,
    ) {
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(t) = c.transfer.take() else {
            return;
        };
        let usable = sdp.filter(|theirs| agreed(&t.offer, theirs).is_some());
        let Some(theirs) = usable else {
            c.retired.push(id);
            ua.hang_up(now, id, Reply::new(488, "Not Acceptable Here"), Vec::new());
            self.problem(
                "transfer",
                format!("call {call_id}: the transfer target's answer shares no codec"),
            );
            return self.notify(now, ua, t.refer_leg, 488, "Not Acceptable Here", true);
        };
        let was_held = c.held.0 || c.held.1;
        c.move_teams_leg(id, t.media, t.offer, theirs);
        c.retire_by = Some(now + RETIRE_AFTER);
        let held = c.held.0 || c.held.1;
        let pstn_is_a = !c.a_is_teams();
        self.notify(now, ua, t.refer_leg, 200, "OK", true);
        if was_held && !held {
            // A consultation held the PSTN party: the new party talks.
            self.carry_hold(now, ua, call_id, pstn_is_a, false);
        }
        self.push_plan(call_id);
        self.view().transfers += 1;
    }

    /// The hub's INVITE with Replaces (RFC 3891 §3): take over the Teams
    /// leg it names, then end that leg with BYE.
    pub(super) fn on_replaces(
        &mut self,
        now: Instant,
        ua: &mut UserAgent,
        id: SessionId,
        request: &Message,
        source: &Source,
    ) {
        let (call_id, old, media, offer, answer) = match self.replacing(ua, request, source) {
            Ok(r) => r,
            Err(r) => {
                self.problem(
                    "replaces",
                    format!("rejected {} with {}: {}", request.summary(), r.code, r.why),
                );
                let reply = Reply::new(r.code, r.reason)
                    .header("Warning", format!("399 drlab-sbc \"{}\"", r.why));
                let _ = ua.reject(now, id, reply);
                return;
            }
        };
        let contact = self.teams_contact(self.calls[&call_id].pstn_party.as_deref());
        let reply = Reply::new(200, "OK")
            .header("Contact", contact)
            .header("Allow", self.allow())
            .sdp(answer.clone());
        if let Err(e) = ua.accept(now, id, 0, reply) {
            return self.problem("replaces", format!("call {call_id}: cannot answer: {e}"));
        }
        self.by_session.insert(id, call_id);
        let Some(c) = self.calls.get_mut(&call_id) else {
            return;
        };
        let was_held = c.held.0 || c.held.1;
        c.move_teams_leg(id, media, answer, offer);
        c.retire_by = Some(now + RETIRE_AFTER);
        let held = c.held.0 || c.held.1;
        let pstn_is_a = !c.a_is_teams();
        if let Err(e) = ua.bye(now, old, Vec::new()) {
            self.problem(
                "replaces",
                format!("call {call_id}: BYE of the replaced leg: {e}"),
            );
        }
        if was_held && !held {
            self.carry_hold(now, ua, call_id, pstn_is_a, false);
        }
        self.push_plan(call_id);
        self.view().transfers += 1;
    }

    /// The call and leg a Replaces names, and our answer to its offer; or
    /// why it is refused.
    #[allow(clippy::type_complexity)]
    fn replacing(
        &mut self,
        ua: &mut UserAgent,
        request: &Message,
        source: &Source,
    ) -> Result<
        (
            u64,
            SessionId,
            LocalMedia,
            SessionDescription,
            SessionDescription,
        ),
        Rejection,
    > {
        let from_hub = source.transport == TransportKind::Tls
            && self
                .config
                .hub_fqdns
                .iter()
                .any(|h| names_cover(&source.peer_names, h));
        if !from_hub {
            return Err(Rejection::new(
                403,
                "Forbidden",
                "Replaces is taken from the hub only",
            ));
        }
        let values: Vec<&str> = request.headers.lines("Replaces").collect();
        let parsed = match values.as_slice() {
            [one] => parse_replaces(one),
            _ => None,
        };
        let Some((dialog_call_id, to_tag, from_tag)) = parsed else {
            let why = "one Replaces with call-id, to-tag and from-tag";
            return Err(Rejection::new(400, "Bad Request", why));
        };
        // The to-tag is ours, the from-tag the hub's (RFC 3891 §3).
        let matches = |s: SessionId| {
            ua.session(s).and_then(|s| s.dialog()).is_some_and(|d| {
                d.call_id == dialog_call_id && d.local_tag == to_tag && d.remote_tag == from_tag
            })
        };
        let live = self.calls.iter().find_map(|(cid, c)| {
            let leg = c.teams_leg()?;
            matches(leg).then_some((*cid, leg))
        });
        let Some((call_id, old)) = live else {
            let ended = self
                .calls
                .values()
                .any(|c| c.retired.iter().any(|s| matches(*s)));
            if ended {
                return Err(Rejection::new(603, "Declined", "that dialog has ended"));
            }
            let why = format!("no dialog {dialog_call_id}");
            return Err(Rejection::new(481, "Call/Transaction Does Not Exist", why));
        };
        let confirmed = ua
            .session(old)
            .is_some_and(|s| s.state() == SessionState::Confirmed);
        let call = &self.calls[&call_id];
        if !confirmed || !call.answered {
            let why = "that dialog is not confirmed";
            return Err(Rejection::new(481, "Call/Transaction Does Not Exist", why));
        }
        if call.transfer.is_some() {
            return Err(Rejection::new(
                491,
                "Request Pending",
                "a transfer is under way",
            ));
        }
        let offer = sdp_of(request).map_err(|e| Rejection::new(488, "Not Acceptable Here", e))?;
        let media = self.calls[&call_id]
            .new_teams_media(ua)
            .ok_or_else(|| Rejection::new(500, "Server Internal Error", "no Teams leg media"))?;
        let origin = self.origin(ua);
        let answer = media
            .answer(&offer, origin)
            .map_err(|e| Rejection::new(488, "Not Acceptable Here", e.to_string()))?;
        Ok((call_id, old, media, offer, answer))
    }

    /// Teams legs we moved off that are still up after [`RETIRE_AFTER`].
    pub(super) fn retired_due(&mut self, now: Instant, ua: &mut UserAgent) {
        for id in self.calls.due(now) {
            let Some(c) = self.calls.get_mut(&id) else {
                continue;
            };
            if c.retire_by.is_none_or(|t| t > now) {
                continue;
            }
            c.retire_by = None;
            for &s in &c.retired {
                if ua.session(s).is_some_and(|s| !s.is_ended()) {
                    ua.hang_up(now, s, Reply::new(487, "Request Terminated"), Vec::new());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refer_to_names_one_sip_uri_without_headers() {
        let hub = "<sip:sip.pstnhub.microsoft.com:5061;transport=tls;x-m=8:orgid:abc;x-t=def>";
        assert_eq!(
            refer_target(hub).unwrap(),
            "sip:sip.pstnhub.microsoft.com:5061;transport=tls;x-m=8:orgid:abc;x-t=def"
        );
        // RFC 3261 §20.10: without <>, what follows `;` is a header
        // parameter, not part of the URI.
        assert_eq!(
            refer_target("sip:+4989000002@sip.pstnhub.microsoft.com;user=phone").unwrap(),
            "sip:+4989000002@sip.pstnhub.microsoft.com"
        );
        assert_eq!(refer_target("<tel:+4989000002>").unwrap_err().0, 416);
        assert_eq!(
            refer_target("<sip:b@example.com?Replaces=x%3Bto-tag%3Dy>")
                .unwrap_err()
                .0,
            501
        );
        assert_eq!(refer_target("<sip:b@example.com").unwrap_err().0, 400);
    }

    #[test]
    fn replaces_needs_its_call_id_and_both_tags() {
        assert_eq!(
            parse_replaces("abc@h ; to-tag=1;from-tag=2;early-only"),
            Some(("abc@h".into(), "1".into(), "2".into()))
        );
        assert_eq!(parse_replaces("abc@h;to-tag=1"), None);
        assert_eq!(parse_replaces(";to-tag=1;from-tag=2"), None);
    }
}
