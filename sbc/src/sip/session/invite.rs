//! One INVITE session, UAC or UAS (RFC 3261 §12–§15, RFC 6026).

use super::offer_answer::OfferAnswer;
use super::timer::{self, RefreshMethod, Refresher, TimerState};
use super::{EndReason, Hop, Reply, SessionAction, SessionConfig, SessionEvent, SessionId};
use crate::sip::dialog::Dialog;
use crate::sip::digest;
use crate::sip::rng::SeededRng;
use crate::sip::sdp::SessionDescription;
use crate::sip::transaction::{response_to, TransactionKey};
use crate::sip::transport::Source;
use crate::sip::wire::{Header, Message, Method};
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We sent the INVITE.
    Uac,
    /// We received it.
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// UAC: INVITE sent, no provisional with a tag yet. UAS: INVITE
    /// received, nothing but 100 Trying sent.
    Initial,
    /// A provisional with a To-tag was sent or received: early dialog(s).
    Early,
    /// UAS: 2xx sent, its ACK not yet received.
    Accepted,
    /// The 2xx was ACKed (sent or received): the session is up.
    Confirmed,
    /// We sent BYE (or CANCEL) and wait for the answer.
    Terminating,
    Terminated,
}

/// A call the session cannot honour in its state (API misuse by a role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionError {
    WrongState {
        op: &'static str,
        state: SessionState,
    },
    /// RFC 3261 §14.1: no new INVITE while another is in progress either way,
    /// or while an offer waits for its answer.
    InviteInProgress,
    NoSuchFork(usize),
    /// The request or reply lacks what the operation needs.
    BadMessage(String),
    NoSuchSession(SessionId),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::WrongState { op, state } => write!(f, "cannot {op} in state {state:?}"),
            SessionError::InviteInProgress => {
                write!(f, "an INVITE transaction or offer is still in progress")
            }
            SessionError::NoSuchFork(n) => write!(f, "no fork {n}"),
            SessionError::BadMessage(e) => write!(f, "{e}"),
            SessionError::NoSuchSession(id) => write!(f, "no session {id}"),
        }
    }
}

impl std::error::Error for SessionError {}

/// What the endpoint reports to the session it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionInput {
    Response {
        key: TransactionKey,
        response: Message,
    },
    /// An in-dialog request (BYE, re-INVITE, INFO...) with its server transaction.
    Request {
        key: TransactionKey,
        request: Message,
    },
    Ack {
        request: Message,
    },
    /// A CANCEL matched our pending INVITE server transaction.
    Cancelled,
    Timeout {
        key: TransactionKey,
    },
    SendFailed {
        key: TransactionKey,
        reason: String,
    },
    /// Timer L fired on server transaction `key` with its 2xx never ACKed.
    NoAck {
        key: TransactionKey,
    },
}

/// Our re-INVITE in flight.
#[derive(Debug, Clone)]
struct ReInviteOut {
    key: TransactionKey,
    seq: u32,
    offer: SessionDescription,
    headers: Vec<(String, String)>,
    before: Option<SessionDescription>,
}

/// Our re-INVITE's offer, sent again at `.0` after a 491 (RFC 3261 §14.1).
type GlareRetry = (Instant, SessionDescription, Vec<(String, String)>);

/// An ACK we sent for a 2xx, kept to answer its retransmissions with the
/// same ACK (RFC 3261 §13.2.2.4).
#[derive(Debug, Clone)]
struct SentAck {
    remote_tag: String,
    seq: u32,
    ack: Message,
    hop: Hop,
    branch: String,
}

#[derive(Debug)]
pub struct InviteSession {
    id: SessionId,
    side: Side,
    state: SessionState,
    /// The UA's configuration when the session began, shared: a copy per
    /// session was ~300 bytes and several allocations per call leg.
    config: Arc<SessionConfig>,
    reliable: bool,
    call_id: String,
    /// UAC: our From tag. UAS: the tag of the fork that answered (fork 0 until then).
    local_tag: String,
    invite: Message,
    invite_key: TransactionKey,
    /// UAS: our tag per fork (fork 0 first).
    forks: Vec<String>,
    /// Early dialogs: UAC one per To-tag, UAS one per fork that sent a provisional.
    early: Vec<Dialog>,
    dialog: Option<Dialog>,
    final_response: Option<Message>,
    provisional_seen: bool,
    cancel_requested: bool,
    /// INVITEs resent with credentials (RFC 3261 §22.2).
    auth_tries: u32,
    cancel_sent: bool,
    cancel_deadline: Option<Instant>,
    acks: Vec<SentAck>,
    oa: OfferAnswer,
    reinvite_out: Option<ReInviteOut>,
    reinvite_in: Option<TransactionKey>,
    pending_reinvite_request: Option<Message>,
    glare_retry: Option<GlareRetry>,
    pending_bye: Option<TransactionKey>,
    /// Our other in-dialog requests in flight (REFER, NOTIFY, INFO...).
    requests_out: Vec<TransactionKey>,
    /// Our UPDATE refresh in flight (RFC 4028 §7.4 with RFC 3311).
    refresh_update: Option<TransactionKey>,
    /// BYE asked for before the ACK of our 2xx (RFC 3261 §15: wait for it).
    deferred_bye: Option<Vec<(String, String)>>,
    ending: Option<EndReason>,
    end: Option<EndReason>,
    linger_until: Option<Instant>,
    keys: Vec<TransactionKey>,
    actions: VecDeque<SessionAction>,
    events: VecDeque<SessionEvent>,
    /// The session timer this session negotiated (RFC 4028), if any.
    timer: Option<TimerState>,
    /// UAC: where the INVITE went, to send it again after a 422.
    initial_hop: Hop,
}

fn parse_sdp(m: &Message) -> Option<SessionDescription> {
    let is_sdp = m
        .headers
        .get("Content-Type")
        .is_none_or(|t| t.trim().to_ascii_lowercase().starts_with("application/sdp"));
    if m.body.is_empty() || !is_sdp {
        return None;
    }
    SessionDescription::parse(&String::from_utf8_lossy(&m.body)).ok()
}

fn hop_is_reliable(hop: &Hop) -> bool {
    match hop {
        Hop::Target(t) => t.transport.is_reliable(),
        Hop::Uri(u) => {
            let l = u.to_ascii_lowercase();
            l.contains("transport=tls") || l.contains("transport=tcp") || l.starts_with("sips:")
        }
    }
}

impl InviteSession {
    /// Start a UAC session: `invite` carries From (with tag), To, Call-ID,
    /// CSeq and whatever the role adds; Contact is added from the
    /// configuration if absent; `sdp` is the offer.
    pub fn uac(
        id: SessionId,
        config: &Arc<SessionConfig>,
        rng: &mut SeededRng,
        mut invite: Message,
        sdp: Option<SessionDescription>,
        hop: Hop,
    ) -> Result<InviteSession, SessionError> {
        let bad = |e: crate::sip::wire::WireError| SessionError::BadMessage(e.to_string());
        let local_tag = invite
            .from_header()
            .map_err(bad)?
            .tag()
            .ok_or_else(|| SessionError::BadMessage("From has no tag".into()))?
            .to_string();
        let call_id = invite.call_id().map_err(bad)?.to_string();
        invite.cseq().map_err(bad)?;
        if !invite.headers.contains("Contact") {
            invite.headers.push("Contact", config.contact.clone());
        }
        if let Some(t) = &config.timer {
            // RFC 4028 §7.1: we support timers and ask for our interval.
            invite.headers.push("Supported", "timer");
            invite.headers.push(
                "Session-Expires",
                timer::session_expires(t.interval, t.request_refresher),
            );
            invite.headers.push("Min-SE", t.min_se.to_string());
        }
        let mut oa = OfferAnswer::default();
        if let Some(sd) = sdp {
            invite.set_body("application/sdp", sd.to_text().into_bytes());
            oa.send(sd);
        }
        let branch = rng.branch();
        let invite_key = TransactionKey {
            branch: branch.clone(),
            method: Method::Invite,
        };
        let mut s = InviteSession::new(id, Side::Uac, config, call_id, local_tag, invite.clone());
        s.reliable = hop_is_reliable(&hop);
        s.initial_hop = hop.clone();
        s.invite_key = invite_key.clone();
        s.keys.push(invite_key);
        s.oa = oa;
        s.actions.push_back(SessionAction::Request {
            request: invite,
            hop,
            branch,
        });
        Ok(s)
    }

    /// A UAS session for a new INVITE that arrived on server transaction `key`.
    pub fn uas(
        id: SessionId,
        config: &Arc<SessionConfig>,
        rng: &mut SeededRng,
        key: TransactionKey,
        request: Message,
        raw: Vec<u8>,
        source: Source,
    ) -> InviteSession {
        let call_id = request.call_id().unwrap_or_default().to_string();
        let tag = rng.tag();
        let mut s =
            InviteSession::new(id, Side::Uas, config, call_id, tag.clone(), request.clone());
        s.reliable = source.transport.is_reliable();
        s.forks.push(tag);
        s.invite_key = key.clone();
        s.keys.push(key);
        if let Some(sd) = parse_sdp(&request) {
            s.oa.receive(sd);
        }
        s.events.push_back(SessionEvent::Incoming {
            request,
            raw,
            source,
        });
        s
    }

    fn new(
        id: SessionId,
        side: Side,
        config: &Arc<SessionConfig>,
        call_id: String,
        local_tag: String,
        invite: Message,
    ) -> InviteSession {
        InviteSession {
            id,
            side,
            state: SessionState::Initial,
            config: Arc::clone(config),
            reliable: true,
            call_id,
            local_tag,
            invite,
            invite_key: TransactionKey {
                branch: String::new(),
                method: Method::Invite,
            },
            forks: Vec::new(),
            early: Vec::new(),
            dialog: None,
            final_response: None,
            provisional_seen: false,
            cancel_requested: false,
            auth_tries: 0,
            cancel_sent: false,
            cancel_deadline: None,
            acks: Vec::new(),
            oa: OfferAnswer::default(),
            reinvite_out: None,
            reinvite_in: None,
            pending_reinvite_request: None,
            glare_retry: None,
            pending_bye: None,
            requests_out: Vec::new(),
            refresh_update: None,
            deferred_bye: None,
            ending: None,
            end: None,
            linger_until: None,
            keys: Vec::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            timer: None,
            initial_hop: Hop::Uri(String::new()),
        }
    }

    // ----- accessors -----

    pub fn id(&self) -> SessionId {
        self.id
    }
    pub fn side(&self) -> Side {
        self.side
    }
    pub fn state(&self) -> SessionState {
        self.state
    }
    pub fn call_id(&self) -> &str {
        &self.call_id
    }
    /// The INVITE as sent (UAC, without the endpoint's Via) or received (UAS).
    pub fn invite(&self) -> &Message {
        &self.invite
    }
    pub fn invite_key(&self) -> &TransactionKey {
        &self.invite_key
    }
    /// The confirmed dialog, once there is one.
    pub fn dialog(&self) -> Option<&Dialog> {
        self.dialog.as_ref()
    }
    pub fn offer_answer(&self) -> &OfferAnswer {
        &self.oa
    }
    /// The final response to the INVITE (received as UAC, sent as UAS).
    pub fn final_response(&self) -> Option<&Message> {
        self.final_response.as_ref()
    }
    pub fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref()
    }
    pub fn is_ended(&self) -> bool {
        self.state == SessionState::Terminated
    }
    /// Whether a provisional arrived (UAC; a CANCEL may be sent).
    pub fn has_provisional(&self) -> bool {
        self.provisional_seen
    }
    /// Our tags: what the peer writes in To (UAS) or what we wrote in From (UAC).
    pub fn local_tags(&self) -> &[String] {
        match self.side {
            Side::Uac => std::slice::from_ref(&self.local_tag),
            Side::Uas => &self.forks,
        }
    }
    /// Every transaction this session has started or answered.
    pub(crate) fn keys(&self) -> &[TransactionKey] {
        &self.keys
    }

    /// When the session may be reaped: `Some(None)` at once, `Some(Some(t))`
    /// after its linger, at t; `None` while it has not ended.
    pub fn reapable_from(&self) -> Option<Option<Instant>> {
        (self.state == SessionState::Terminated).then_some(self.linger_until)
    }

    /// Ended and lingered long enough: retransmitted 2xx and ACKs have had
    /// 64·T1 to arrive on unreliable transports (RFC 6026 Timers L and M).
    pub fn is_reapable(&self, now: Instant) -> bool {
        self.state == SessionState::Terminated && self.linger_until.is_none_or(|t| now >= t)
    }

    pub fn poll_action(&mut self) -> Option<SessionAction> {
        crate::sip::pop_or_free(&mut self.actions)
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        crate::sip::pop_or_free(&mut self.events)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.glare_retry.as_ref().map(|g| g.0),
            self.cancel_deadline,
            self.linger_until,
            self.timer.as_ref().and_then(|t| t.wake()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- what a role asks -----

    /// UAS: a new fork (an extra To-tag, as behind a forking proxy).
    pub fn add_fork(&mut self, rng: &mut SeededRng) -> Result<usize, SessionError> {
        self.expect_side(Side::Uas, "add a fork")?;
        self.forks.push(rng.tag());
        Ok(self.forks.len() - 1)
    }

    /// UAS: a provisional (101–199) from fork `fork`, creating its early dialog.
    pub fn provisional(
        &mut self,
        _now: Instant,
        fork: usize,
        reply: Reply,
    ) -> Result<(), SessionError> {
        let tag = self.uas_can_answer("send a provisional", 101..200, fork, reply.code)?;
        let (response, contact) = self.build_response(&self.invite, &tag, &reply);
        if !self.early.iter().any(|d| d.local_tag == tag) {
            if let Ok(d) = Dialog::as_uas(&self.invite, &tag, contact) {
                self.early.push(d);
            }
        }
        self.state = SessionState::Early;
        self.respond(self.invite_key.clone(), response);
        Ok(())
    }

    /// UAS: answer with a 2xx from fork `fork`. The answer (or, for an
    /// INVITE without SDP, our offer) goes in `reply.sdp`.
    pub fn accept(&mut self, now: Instant, fork: usize, reply: Reply) -> Result<(), SessionError> {
        let tag = self.uas_can_answer("accept", 200..300, fork, reply.code)?;
        let mut reply = reply;
        self.timer = self.negotiate_as_uas(now, &mut reply);
        if let Some(sd) = reply.sdp.take() {
            let sd = self.oa.next_local(sd);
            self.oa.send(sd.clone());
            reply.sdp = Some(sd);
        }
        let (response, contact) = self.build_response(&self.invite, &tag, &reply);
        let dialog = Dialog::as_uas(&self.invite, &tag, contact)
            .map_err(|e| SessionError::BadMessage(e.to_string()))?;
        self.local_tag = tag;
        self.dialog = Some(dialog);
        // The early dialogs are over: their buffer goes too (see pop_or_free).
        self.early = Vec::new();
        self.state = SessionState::Accepted;
        self.final_response = Some(response.clone());
        self.respond(self.invite_key.clone(), response);
        Ok(())
    }

    /// UAS: refuse the INVITE with a final 3xx–6xx.
    pub fn reject(&mut self, now: Instant, reply: Reply) -> Result<(), SessionError> {
        let tag = self.uas_can_answer("reject", 300..700, 0, reply.code)?;
        let (response, _) = self.build_response(&self.invite, &tag, &reply);
        self.final_response = Some(response.clone());
        self.respond(self.invite_key.clone(), response);
        self.finish(
            now,
            EndReason::Rejected {
                cause: reply
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("Reason"))
                    .map(|(_, v)| v.clone()),
                code: reply.code,
                reason: reply.reason,
                retry_after: None,
            },
        );
        Ok(())
    }

    /// UAC: CANCEL the INVITE (RFC 3261 §9.1): at once if a provisional has
    /// arrived, else as soon as one does. A 2xx that crosses the CANCEL is
    /// ACKed and BYEd.
    pub fn cancel(&mut self, now: Instant) -> Result<(), SessionError> {
        self.expect_side(Side::Uac, "cancel")?;
        if !matches!(self.state, SessionState::Initial | SessionState::Early) {
            return Err(self.wrong("cancel"));
        }
        if self.cancel_requested {
            return Ok(());
        }
        self.cancel_requested = true;
        // §9.1: without a final response 64·T1 after the CANCEL, give up.
        self.cancel_deadline = Some(now + self.config.timers.t1x64());
        self.send_cancel_if_allowed();
        Ok(())
    }

    /// End a confirmed session with BYE. On a UAS whose 2xx is not yet
    /// ACKed the BYE waits for the ACK or Timer L (RFC 3261 §15).
    pub fn bye(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        headers: Vec<(String, String)>,
    ) -> Result<(), SessionError> {
        self.bye_when(now, rng, headers, true)
    }

    /// BYE at once, even on a UAS whose 2xx is not ACKed: Direct Routing's
    /// hub does so four seconds after its unacknowledged 200 (behaviour
    /// §6), against RFC 3261 §15's advice.
    pub fn bye_now(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        headers: Vec<(String, String)>,
    ) -> Result<(), SessionError> {
        self.bye_when(now, rng, headers, false)
    }

    fn bye_when(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        headers: Vec<(String, String)>,
        wait_for_ack: bool,
    ) -> Result<(), SessionError> {
        match self.state {
            SessionState::Accepted if wait_for_ack => {
                self.deferred_bye = Some(headers);
                Ok(())
            }
            SessionState::Confirmed | SessionState::Accepted => {
                self.send_bye(now, rng, headers, EndReason::LocalBye);
                Ok(())
            }
            _ => Err(self.wrong("send BYE")),
        }
    }

    /// End the session whatever its state: CANCEL (UAC early), a final
    /// `failure` (UAS early), BYE (confirmed). Nothing once ending.
    pub fn hang_up(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        failure: Reply,
        headers: Vec<(String, String)>,
    ) {
        let _ = match (self.side, self.state) {
            (Side::Uac, SessionState::Initial | SessionState::Early) => self.cancel(now),
            (Side::Uas, SessionState::Initial | SessionState::Early) => self.reject(now, failure),
            (_, SessionState::Accepted | SessionState::Confirmed) => self.bye(now, rng, headers),
            _ => Ok(()),
        };
    }

    /// Send a re-INVITE with a new offer (RFC 3261 §14.1). The `o=` line
    /// follows RFC 3264 §8 (same version if nothing changed).
    pub fn reinvite(
        &mut self,
        rng: &mut SeededRng,
        offer: SessionDescription,
        headers: Vec<(String, String)>,
    ) -> Result<(), SessionError> {
        if self.state != SessionState::Confirmed {
            return Err(self.wrong("send a re-INVITE"));
        }
        if self.reinvite_out.is_some()
            || self.reinvite_in.is_some()
            || self.glare_retry.is_some()
            || !self.oa.is_settled()
        {
            return Err(SessionError::InviteInProgress);
        }
        let before = self.oa.local.clone();
        let offer = self.oa.next_local(offer);
        self.oa.send(offer.clone());
        let Some(dialog) = self.dialog.as_mut() else {
            return Err(self.wrong("send a re-INVITE"));
        };
        let mut req = dialog.request(Method::Invite);
        let hop = Hop::Uri(dialog.next_hop());
        for (k, v) in &headers {
            req.headers.push(k.clone(), v.clone());
        }
        if let Some(t) = &self.timer {
            // Every re-INVITE refreshes the session (RFC 4028 §7.4).
            req.headers.push("Supported", "timer");
            req.headers.push(
                "Session-Expires",
                timer::session_expires(t.interval, Some(t.refresher_for_our_request())),
            );
        }
        req.set_body("application/sdp", offer.to_text().into_bytes());
        let seq = dialog.local_seq;
        let branch = rng.branch();
        let key = TransactionKey {
            branch: branch.clone(),
            method: Method::Invite,
        };
        self.keys.push(key.clone());
        self.reinvite_out = Some(ReInviteOut {
            key,
            seq,
            offer,
            headers,
            before,
        });
        self.actions.push_back(SessionAction::Request {
            request: req,
            hop,
            branch,
        });
        Ok(())
    }

    /// Answer the peer's re-INVITE with 200: our answer, or (offer-less
    /// re-INVITE) our offer, whose answer then comes in the ACK.
    pub fn answer_reinvite(&mut self, now: Instant, reply: Reply) -> Result<(), SessionError> {
        let key = self
            .reinvite_in
            .take()
            .ok_or_else(|| self.wrong("answer a re-INVITE"))?;
        let request = self.request_of_reinvite(&key)?;
        let mut reply = reply;
        if let Some(t) = self.timer.as_mut() {
            // The peer's re-INVITE refreshed the session (RFC 4028 §9):
            // its refresher, if it named one, holds from now on.
            if let Some((interval, who)) = request
                .headers
                .get("Session-Expires")
                .and_then(timer::parse_session_expires)
            {
                t.interval = interval.max(1);
                if let Some(who) = who {
                    t.we_refresh = who == Refresher::Uas;
                }
            }
            t.restart(now);
            let who = t.refresher_for_our_answer();
            reply.headers.push((
                "Session-Expires".into(),
                timer::session_expires(t.interval, Some(who)),
            ));
            if who == Refresher::Uac {
                reply.headers.push(("Require".into(), "timer".into()));
            }
        }
        if let Some(sd) = reply.sdp.take() {
            let sd = self.oa.next_local(sd);
            self.oa.send(sd.clone());
            reply.sdp = Some(sd);
        }
        let (response, _) = self.build_response(&request, &self.local_tag.clone(), &reply);
        self.respond(key, response);
        Ok(())
    }

    /// Refuse the peer's re-INVITE (488, 491...): the session goes on with
    /// the descriptions in effect before it.
    pub fn reject_reinvite(&mut self, reply: Reply) -> Result<(), SessionError> {
        let key = self
            .reinvite_in
            .take()
            .ok_or_else(|| self.wrong("reject a re-INVITE"))?;
        let request = self.request_of_reinvite(&key)?;
        self.oa.rollback(None);
        let (response, _) = self.build_response(&request, &self.local_tag.clone(), &reply);
        self.respond(key, response);
        Ok(())
    }

    /// Answer another in-dialog request (INFO, NOTIFY, REFER...).
    pub fn respond_in_dialog(&mut self, key: TransactionKey, request: &Message, reply: Reply) {
        let (response, _) = self.build_response(request, &self.local_tag.clone(), &reply);
        self.respond(key, response);
    }

    /// Send another request in the confirmed dialog (REFER, NOTIFY,
    /// INFO...; RFC 3261 §12.2.1.1): the dialog's Request-URI, route set,
    /// tags and next CSeq, then `headers` and `body` (content type, bytes).
    /// Its final response comes back as [`SessionEvent::Response`] with the
    /// key returned here; a 481 or 408 (or no answer) also ends the
    /// session, since the dialog is gone (§12.2.1.2).
    pub fn request(
        &mut self,
        rng: &mut SeededRng,
        method: Method,
        headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<TransactionKey, SessionError> {
        if matches!(
            method,
            Method::Invite | Method::Ack | Method::Bye | Method::Cancel
        ) {
            return Err(self.wrong("send this method as a plain in-dialog request"));
        }
        if self.state != SessionState::Confirmed {
            return Err(self.wrong("send an in-dialog request"));
        }
        let Some(dialog) = self.dialog.as_mut() else {
            return Err(self.wrong("send an in-dialog request"));
        };
        let mut req = dialog.request(method.clone());
        let hop = Hop::Uri(dialog.next_hop());
        for (k, v) in headers {
            req.headers.push(k, v);
        }
        if let Some((ctype, bytes)) = body {
            req.set_body(&ctype, bytes);
        }
        let branch = rng.branch();
        let key = TransactionKey {
            branch: branch.clone(),
            method,
        };
        self.keys.push(key.clone());
        self.requests_out.push(key.clone());
        self.actions.push_back(SessionAction::Request {
            request: req,
            hop,
            branch,
        });
        Ok(key)
    }

    // ----- what the endpoint reports -----

    pub fn handle(&mut self, now: Instant, rng: &mut SeededRng, input: SessionInput) {
        match input {
            SessionInput::Response { key, response } => self.on_response(now, rng, key, response),
            SessionInput::Request { key, request } => self.on_request(now, key, request),
            SessionInput::Ack { request } => self.on_ack(now, rng, request),
            SessionInput::Cancelled => self.on_cancelled(now),
            SessionInput::Timeout { key } => self.on_failure(now, rng, key, None),
            SessionInput::SendFailed { key, reason } => {
                self.on_failure(now, rng, key, Some(reason))
            }
            SessionInput::NoAck { key } => self.on_no_ack(now, rng, key),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant, rng: &mut SeededRng) {
        self.session_timer_due(now, rng);
        if self.cancel_deadline.is_some_and(|t| now >= t) {
            self.cancel_deadline = None;
            if self.state != SessionState::Terminated {
                self.finish(now, EndReason::Cancelled);
            }
        }
        if self.glare_retry.as_ref().is_some_and(|g| now >= g.0) {
            if let Some((_, offer, headers)) = self.glare_retry.take() {
                // §14.1: the same offer again once the random wait is over;
                // if the peer's re-INVITE is still being answered, a little later.
                match self.reinvite(rng, offer.clone(), headers.clone()) {
                    Ok(()) => {}
                    Err(SessionError::InviteInProgress) => {
                        self.glare_retry = Some((now + self.config.timers.t1, offer, headers));
                    }
                    Err(_) => self
                        .events
                        .push_back(SessionEvent::ReInviteDone { result: Err(491) }),
                }
            }
        }
    }

    // ----- session timers (RFC 4028) -----

    /// As UAS accepting the INVITE: the timer the request asks for (or,
    /// when it only supports timers, ours), written into our 2xx (§9).
    fn negotiate_as_uas(&self, now: Instant, reply: &mut Reply) -> Option<TimerState> {
        let config = self.config.timer.as_ref()?;
        let supported = timer::lists(
            &self.invite.headers.values("Supported").collect::<Vec<_>>(),
            "timer",
        );
        let asked = self
            .invite
            .headers
            .get("Session-Expires")
            .and_then(timer::parse_session_expires);
        // §9: the UAS may lower the interval, never below its Min-SE.
        let (interval, named) = match asked {
            Some((i, r)) => (i.min(config.interval).max(config.min_se), r),
            None if supported => (config.interval, None),
            None => return None,
        };
        // §9: the UAC refreshes only if it supports timers.
        let who = match named.unwrap_or(config.uas_choice) {
            Refresher::Uac if supported => Refresher::Uac,
            _ => Refresher::Uas,
        };
        reply.headers.push((
            "Session-Expires".into(),
            timer::session_expires(interval, Some(who)),
        ));
        if who == Refresher::Uac {
            reply.headers.push(("Require".into(), "timer".into()));
        }
        Some(TimerState::new(
            now,
            interval,
            who == Refresher::Uas,
            config.refresh,
        ))
    }

    /// As UAC, from a 2xx: the timer the UAS settled on (§7.2: without a
    /// refresher parameter, the UAC refreshes).
    fn negotiated_as_uac(&self, now: Instant, response: &Message) -> Option<TimerState> {
        let config = self.config.timer.as_ref()?;
        let (interval, who) = response
            .headers
            .get("Session-Expires")
            .and_then(timer::parse_session_expires)?;
        let we_refresh = who.unwrap_or(Refresher::Uac) == Refresher::Uac;
        Some(TimerState::new(
            now,
            interval.max(1),
            we_refresh,
            config.refresh,
        ))
    }

    /// RFC 4028 §7.4: a 422 to our INVITE names the Min-SE the UAS wants;
    /// send the INVITE again (new branch, next CSeq) with that interval,
    /// once. `false` when there is nothing to retry.
    fn retry_after_422(&mut self, rng: &mut SeededRng, response: &Message) -> bool {
        let asked = self
            .invite
            .headers
            .get("Session-Expires")
            .and_then(timer::parse_session_expires);
        let min_se: Option<u32> = response
            .headers
            .get("Min-SE")
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse().ok());
        let (Some((interval, who)), Some(min_se)) = (asked, min_se) else {
            return false;
        };
        if self.config.timer.is_none()
            || min_se <= interval
            || self.state != SessionState::Initial
            || self.cancel_requested
        {
            return false;
        }
        // Credentials answered the last challenge with its nonce count;
        // they are not sent again with the same count (RFC 7616 §3.4):
        // a challenger asks afresh and the retry above answers it.
        self.invite.headers.remove("Authorization");
        self.invite.headers.remove("Proxy-Authorization");
        self.invite
            .headers
            .set("Session-Expires", timer::session_expires(min_se, who));
        self.invite.headers.set("Min-SE", min_se.to_string());
        self.resend_invite(rng);
        true
    }

    /// The INVITE again, changed, in a new transaction of the same call:
    /// CSeq up by one, a new branch (RFC 3261 §8.1.3.5, §22.2). It has had
    /// no provisional, so a CANCEL waits for one (§9.1).
    fn resend_invite(&mut self, rng: &mut SeededRng) {
        self.provisional_seen = false;
        self.cancel_sent = false;
        let seq = self.invite.cseq().map(|c| c.seq + 1).unwrap_or(2);
        self.invite.headers.set("CSeq", format!("{seq} INVITE"));
        let branch = rng.branch();
        self.invite_key = TransactionKey {
            branch: branch.clone(),
            method: Method::Invite,
        };
        self.keys.push(self.invite_key.clone());
        let hop = self.initial_hop.clone();
        self.actions.push_back(SessionAction::Request {
            request: self.invite.clone(),
            hop,
            branch,
        });
    }

    /// RFC 3261 §22.2: answer a 401/407 to our INVITE with credentials for
    /// its realm, in a new INVITE of the same call (CSeq up by one, a new
    /// branch). A second challenge to credentials is a wrong password
    /// unless it says `stale=true` (RFC 7616 §3.3): then the call fails
    /// with it. At most three tries in all.
    fn retry_with_credentials(&mut self, rng: &mut SeededRng, response: &Message) -> bool {
        let code = response.status().unwrap_or(0);
        let (challenge_header, answer_header) = if code == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        if self.state != SessionState::Initial || self.cancel_requested || self.auth_tries >= 2 {
            return false;
        }
        let challenges: Vec<digest::Challenge> = response
            .headers
            .lines(challenge_header)
            .filter_map(|v| digest::Challenge::parse(v).ok())
            .filter(|c| self.config.logins.iter().any(|l| l.realm == c.realm))
            .collect();
        let Some(challenge) = digest::pick(&challenges) else {
            return false;
        };
        let answered_before = self.invite.headers.contains(answer_header);
        if answered_before && !challenge.stale {
            return false; // the credentials were refused
        }
        let Some(login) = self
            .config
            .logins
            .iter()
            .find(|l| l.realm == challenge.realm)
        else {
            return false;
        };
        let uri = self.invite.request_uri().unwrap_or_default().to_string();
        let cnonce = rng.hex(16);
        let Ok(credentials) = digest::answer(
            challenge,
            &login.username,
            &login.password,
            "INVITE",
            &uri,
            &cnonce,
            1,
        ) else {
            return false;
        };
        self.auth_tries += 1;
        self.invite
            .headers
            .set(answer_header, credentials.to_string());
        self.resend_invite(rng);
        true
    }

    /// Our refresh is due (a re-INVITE with the description unchanged, so
    /// its o= version stays: RFC 3264 §8), or the peer's is overdue (BYE).
    fn session_timer_due(&mut self, now: Instant, rng: &mut SeededRng) {
        let Some(t) = self.timer.clone() else {
            return;
        };
        if t.expires_at.is_some_and(|at| now >= at) {
            if let Some(t) = self.timer.as_mut() {
                t.expires_at = None;
            }
            if matches!(self.state, SessionState::Confirmed | SessionState::Accepted) {
                let reason = (
                    "Reason".to_string(),
                    "SIP;cause=408;text=\"Session expired\"".to_string(),
                );
                self.send_bye(now, rng, vec![reason], EndReason::SessionExpired);
            }
            return;
        }
        if t.refresh_at.is_none_or(|at| now < at) {
            return;
        }
        let busy = self.state != SessionState::Confirmed
            || self.reinvite_out.is_some()
            || self.reinvite_in.is_some()
            || self.glare_retry.is_some()
            || !self.oa.is_settled();
        let local = self.oa.local.clone();
        let method = self
            .config
            .timer
            .as_ref()
            .map(|c| c.refresh_with)
            .unwrap_or_default();
        let update = match method {
            RefreshMethod::Reinvite => false,
            RefreshMethod::Update => self.peer_allows("UPDATE"),
            RefreshMethod::UpdateAlways => true,
        };
        match local {
            Some(_) if !busy && update && self.refresh_update.is_none() => {
                if let Some(t) = self.timer.as_mut() {
                    t.refresh_at = None; // until the refresh is answered
                }
                self.send_update_refresh(rng, &t);
            }
            Some(sd) if !busy => {
                if let Some(t) = self.timer.as_mut() {
                    t.refresh_at = None; // until the refresh is answered
                }
                let _ = self.reinvite(rng, sd, Vec::new());
            }
            _ => {
                // Another INVITE is in progress: try again shortly.
                if let Some(t) = self.timer.as_mut() {
                    t.refresh_at = Some(now + self.config.timers.t1);
                }
            }
        }
    }

    // ----- internals -----

    /// UAS, INVITE not yet finally answered, `code` in `codes`, fork
    /// known: the tag to answer with.
    /// Whether the peer's Allow (its INVITE to us, or its 2xx to ours)
    /// lists `method`.
    fn peer_allows(&self, method: &str) -> bool {
        let m = match self.side {
            Side::Uas => Some(&self.invite),
            Side::Uac => self.final_response.as_ref(),
        };
        m.is_some_and(|m| {
            m.headers
                .values("Allow")
                .any(|x| x.trim().eq_ignore_ascii_case(method))
        })
    }

    /// A session refresh by UPDATE without a body (RFC 4028 §7.4, §8.4):
    /// the interval and the refresher, nothing else.
    fn send_update_refresh(&mut self, rng: &mut SeededRng, t: &TimerState) {
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let mut req = dialog.request(Method::Update);
        let hop = Hop::Uri(dialog.next_hop());
        req.headers.push("Supported", "timer");
        req.headers.push(
            "Session-Expires",
            timer::session_expires(t.interval, Some(t.refresher_for_our_request())),
        );
        let branch = rng.branch();
        let key = TransactionKey {
            branch: branch.clone(),
            method: Method::Update,
        };
        self.keys.push(key.clone());
        self.refresh_update = Some(key);
        self.actions.push_back(SessionAction::Request {
            request: req,
            hop,
            branch,
        });
    }

    /// The peer's UPDATE, when we answer refreshes ourselves: one without
    /// a body refreshes the session (its Session-Expires, never below our
    /// Min-SE: 422); one with an offer is not taken (488).
    fn on_update(&mut self, now: Instant, key: TransactionKey, request: Message, tag: &str) {
        let reply = |code: u16, reason: &str| Reply::new(code, reason);
        if !request.body.is_empty() {
            let r = reply(488, "Not Acceptable Here")
                .header("Warning", "399 drlab \"offers in UPDATE are not taken\"");
            let (resp, _) = self.build_response(&request, tag, &r);
            return self.respond(key, resp);
        }
        let asked = request
            .headers
            .get("Session-Expires")
            .and_then(timer::parse_session_expires);
        let (Some(config), Some((interval, who))) = (self.config.timer.clone(), asked) else {
            // Not a refresh we know how to read: a plain 200.
            let (resp, _) = self.build_response(&request, tag, &reply(200, "OK"));
            return self.respond(key, resp);
        };
        if interval < config.min_se {
            let r = reply(422, "Session Interval Too Small")
                .header("Min-SE", config.min_se.to_string());
            let (resp, _) = self.build_response(&request, tag, &r);
            return self.respond(key, resp);
        }
        // The UPDATE's sender names the refresher; none: it refreshes.
        let refresher = who.unwrap_or(Refresher::Uac);
        let mut r = reply(200, "OK").header(
            "Session-Expires",
            timer::session_expires(interval, Some(refresher)),
        );
        if refresher == Refresher::Uac {
            r = r.header("Require", "timer");
        }
        let (resp, _) = self.build_response(&request, tag, &r);
        self.respond(key, resp);
        self.timer = Some(TimerState::new(
            now,
            interval,
            refresher == Refresher::Uas,
            config.refresh,
        ));
    }

    fn uas_can_answer(
        &self,
        op: &'static str,
        codes: std::ops::Range<u16>,
        fork: usize,
        code: u16,
    ) -> Result<String, SessionError> {
        self.expect_side(Side::Uas, op)?;
        if !matches!(self.state, SessionState::Initial | SessionState::Early) {
            return Err(self.wrong(op));
        }
        if !codes.contains(&code) {
            return Err(SessionError::BadMessage(format!(
                "cannot {op} with {code} (allowed: {}-{})",
                codes.start,
                codes.end - 1
            )));
        }
        self.forks
            .get(fork)
            .cloned()
            .ok_or(SessionError::NoSuchFork(fork))
    }

    fn expect_side(&self, side: Side, op: &'static str) -> Result<(), SessionError> {
        if self.side == side {
            Ok(())
        } else {
            Err(self.wrong(op))
        }
    }

    fn wrong(&self, op: &'static str) -> SessionError {
        SessionError::WrongState {
            op,
            state: self.state,
        }
    }

    /// UAC: the Contact of our INVITE (it names us to the peer for the
    /// whole dialog, RFC 3261 §12.1.2).
    fn our_contact(&self) -> String {
        self.invite
            .headers
            .get("Contact")
            .map(str::to_string)
            .unwrap_or_else(|| self.config.contact.clone())
    }

    fn respond(&mut self, key: TransactionKey, response: Message) {
        if !self.keys.contains(&key) {
            self.keys.push(key.clone());
        }
        self.actions
            .push_back(SessionAction::Respond { key, response });
    }

    /// A response to `request` with `tag` in To, Contact (the reply's, else
    /// ours) on 1xx/2xx to INVITE, the reply's headers and body. Returns
    /// it and the Contact it carries.
    fn build_response(&self, request: &Message, tag: &str, reply: &Reply) -> (Message, String) {
        let mut r = response_to(request, reply.code, &reply.reason, Some(tag));
        let contact = reply
            .headers
            .iter()
            .find(|(k, _)| crate::sip::wire::name_is(k, "Contact"))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| self.config.contact.clone());
        let dialog_forming = request.method() == Some(&Method::Invite) && reply.code < 300;
        if dialog_forming
            && !reply
                .headers
                .iter()
                .any(|(k, _)| crate::sip::wire::name_is(k, "Contact"))
        {
            r.headers.push("Contact", contact.clone());
        }
        // Our own Record-Routes go above those copied from the request,
        // in their order, where a proxy inserts its own (RFC 3261 §16.6
        // item 4), so the caller's route set (the list reversed) reaches
        // us last.
        let mut above = r.headers.0.iter().position(|h| h.is("Record-Route"));
        for (k, v) in &reply.headers {
            match above.as_mut() {
                Some(i) if crate::sip::wire::name_is(k, "Record-Route") => {
                    r.headers.0.insert(*i, Header::new(k.clone(), v.clone()));
                    *i += 1;
                }
                _ => r.headers.push(k.clone(), v.clone()),
            }
        }
        if let Some(sd) = &reply.sdp {
            r.set_body("application/sdp", sd.to_text().into_bytes());
        } else if let Some((ct, body)) = &reply.body {
            r.set_body(ct, body.clone());
        }
        (r, contact)
    }

    fn request_of_reinvite(&mut self, _key: &TransactionKey) -> Result<Message, SessionError> {
        self.pending_reinvite_request
            .take()
            .ok_or_else(|| SessionError::BadMessage("the re-INVITE is gone".into()))
    }

    fn finish(&mut self, now: Instant, reason: EndReason) {
        if self.state == SessionState::Terminated {
            return;
        }
        self.state = SessionState::Terminated;
        self.cancel_deadline = None;
        self.glare_retry = None;
        self.timer = None;
        // Retransmitted 2xx and ACKs keep arriving for 64·T1 on UDP.
        let linger = if self.reliable {
            Duration::ZERO
        } else {
            self.config.timers.t1x64()
        };
        self.linger_until = Some(now + linger);
        self.end = Some(reason.clone());
        self.events.push_back(SessionEvent::Ended { reason });
    }

    fn send_cancel_if_allowed(&mut self) {
        if self.cancel_requested && self.provisional_seen && !self.cancel_sent {
            self.cancel_sent = true;
            self.actions.push_back(SessionAction::Cancel {
                invite: self.invite_key.clone(),
            });
        }
    }

    fn send_bye(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        headers: Vec<(String, String)>,
        reason: EndReason,
    ) {
        let Some(dialog) = self.dialog.as_mut() else {
            self.finish(now, reason);
            return;
        };
        let mut bye = dialog.request(Method::Bye);
        for (k, v) in headers {
            bye.headers.push(k, v);
        }
        let hop = Hop::Uri(dialog.next_hop());
        let branch = rng.branch();
        let key = TransactionKey {
            branch: branch.clone(),
            method: Method::Bye,
        };
        self.keys.push(key.clone());
        self.pending_bye = Some(key);
        self.deferred_bye = None;
        self.ending = Some(reason);
        self.state = SessionState::Terminating;
        self.actions.push_back(SessionAction::Request {
            request: bye,
            hop,
            branch,
        });
    }

    fn ack_2xx(&mut self, rng: &mut SeededRng, dialog: &Dialog, seq: u32) {
        if let Some(a) = self
            .acks
            .iter()
            .find(|a| a.remote_tag == dialog.remote_tag && a.seq == seq)
        {
            // A retransmitted 2xx: the same ACK again.
            let a = a.clone();
            self.actions.push_back(SessionAction::Ack {
                ack: a.ack,
                hop: a.hop,
                branch: a.branch,
            });
            return;
        }
        let mut ack = dialog.ack(seq);
        // RFC 3261 §13.2.2.4: the ACK carries the INVITE's credentials.
        for name in ["Authorization", "Proxy-Authorization"] {
            for v in self
                .invite
                .headers
                .lines(name)
                .map(str::to_string)
                .collect::<Vec<_>>()
            {
                ack.headers.push(name, v);
            }
        }
        let hop = Hop::Uri(dialog.next_hop());
        let branch = rng.branch();
        self.acks.push(SentAck {
            remote_tag: dialog.remote_tag.clone(),
            seq,
            ack: ack.clone(),
            hop: hop.clone(),
            branch: branch.clone(),
        });
        self.actions
            .push_back(SessionAction::Ack { ack, hop, branch });
    }

    fn on_response(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        key: TransactionKey,
        response: Message,
    ) {
        if key == self.invite_key {
            return self.on_invite_response(now, rng, response);
        }
        let code = response.status().unwrap_or(0);
        if self.reinvite_out.as_ref().is_some_and(|r| r.key == key) {
            return self.on_reinvite_response(now, rng, response);
        }
        if key.method == Method::Invite && (200..300).contains(&code) {
            // A retransmitted 2xx to an earlier re-INVITE: ACK it again.
            if let (Some(d), Ok(cseq)) = (self.dialog.clone(), response.cseq()) {
                self.ack_2xx(rng, &d, cseq.seq);
            }
            return;
        }
        if self.pending_bye.as_ref() == Some(&key) && code >= 200 {
            self.pending_bye = None;
            let reason = self.ending.take().unwrap_or(EndReason::LocalBye);
            self.finish(now, reason);
            return;
        }
        if code >= 200 && self.refresh_update.as_ref() == Some(&key) {
            self.refresh_update = None;
            if (200..300).contains(&code) {
                self.timer = self.negotiated_as_uac(now, &response).or(self.timer.take());
                if let Some(t) = self.timer.as_mut() {
                    t.restart(now);
                }
            } else if matches!(code, 408 | 481) {
                // RFC 4028 §10: a refresh answered 408/481 ends the session.
                self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code });
            }
            // Any other failure: no refresh happened; the session runs
            // out at its interval (the peer ends it).
            return;
        }
        if code >= 200 && self.requests_out.contains(&key) {
            self.requests_out.retain(|k| k != &key);
            self.events.push_back(SessionEvent::Response {
                key,
                code,
                response: Some(response),
            });
            if matches!(code, 408 | 481) && self.state == SessionState::Confirmed {
                self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code });
            }
        }
    }

    fn on_invite_response(&mut self, now: Instant, rng: &mut SeededRng, response: Message) {
        let code = response.status().unwrap_or(0);
        let tag = response
            .to_header()
            .ok()
            .and_then(|t| t.tag().map(str::to_string));
        match code {
            100..=199 => {
                self.provisional_seen = true;
                self.send_cancel_if_allowed();
                if code == 100 || self.state == SessionState::Terminated {
                    return;
                }
                if let Some(tag) = &tag {
                    if !self.early.iter().any(|d| &d.remote_tag == tag) {
                        let own = |u: &str| self.config.is_own_route(u);
                        if let Ok(d) =
                            Dialog::as_uac(&self.invite, &response, self.our_contact(), own)
                        {
                            self.early.push(d);
                        }
                    }
                    if self.state == SessionState::Initial {
                        self.state = SessionState::Early;
                    }
                }
                let sdp = parse_sdp(&response);
                if let Some(sd) = &sdp {
                    self.oa.receive_early(sd.clone());
                }
                self.events
                    .push_back(SessionEvent::Progress { response, sdp });
            }
            200..=299 => self.on_invite_2xx(now, rng, response, tag),
            422 if self.retry_after_422(rng, &response) => {}
            401 | 407 if self.retry_with_credentials(rng, &response) => {}
            _ => {
                if self.state == SessionState::Terminated || self.dialog.is_some() {
                    return;
                }
                self.final_response = Some(response.clone());
                let reason = if code == 487 && self.cancel_requested {
                    EndReason::Cancelled
                } else {
                    EndReason::Rejected {
                        code,
                        reason: response
                            .summary()
                            .split_once(' ')
                            .map_or(String::new(), |x| x.1.to_string()),
                        // delta-seconds first; a comment or parameters may follow.
                        retry_after: response.headers.get("Retry-After").and_then(|v| {
                            let digits: String =
                                v.trim().chars().take_while(char::is_ascii_digit).collect();
                            digits.parse().ok()
                        }),
                        cause: response.headers.get("Reason").map(str::to_string),
                    }
                };
                self.finish(now, reason);
            }
        }
    }

    fn on_invite_2xx(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        response: Message,
        tag: Option<String>,
    ) {
        let seq = self.invite.cseq().map(|c| c.seq).unwrap_or(1);
        let known = self
            .dialog
            .as_ref()
            .filter(|d| Some(&d.remote_tag) == tag.as_ref())
            .cloned();
        if let Some(d) = known {
            return self.ack_2xx(rng, &d, seq);
        }
        // The dialog comes from the 2xx, not from an early dialog of the
        // same fork: its Record-Route and Contact are the ones that count
        // (§12.1.2, §12.2.1.2).
        let own = |u: &str| self.config.is_own_route(u);
        let dialog = match Dialog::as_uac(&self.invite, &response, self.our_contact(), own) {
            Ok(d) => d,
            Err(_) => return, // no To-tag or no Contact: nothing we can ACK
        };
        self.ack_2xx(rng, &dialog, seq);
        if self.dialog.is_some() || self.state == SessionState::Terminated {
            // A 2xx from a second fork (§13.2.2.4): ACK it, then BYE it.
            let mut d = dialog;
            let bye = d.request(Method::Bye);
            let branch = rng.branch();
            self.keys.push(TransactionKey {
                branch: branch.clone(),
                method: Method::Bye,
            });
            self.actions.push_back(SessionAction::Request {
                request: bye,
                hop: Hop::Uri(d.next_hop()),
                branch,
            });
            return;
        }
        self.provisional_seen = true;
        self.final_response = Some(response.clone());
        self.dialog = Some(dialog);
        // The early dialogs are over: their buffer goes too (see pop_or_free).
        self.early = Vec::new();
        self.state = SessionState::Confirmed;
        self.cancel_deadline = None;
        self.timer = self.negotiated_as_uac(now, &response);
        let sdp = parse_sdp(&response);
        if let Some(sd) = &sdp {
            self.oa.receive(sd.clone());
        }
        if self.cancel_requested {
            // The 2xx crossed our CANCEL: the call is up, end it.
            self.send_bye(now, rng, Vec::new(), EndReason::Cancelled);
            return;
        }
        self.events
            .push_back(SessionEvent::Answered { response, sdp });
    }

    fn on_reinvite_response(&mut self, now: Instant, rng: &mut SeededRng, response: Message) {
        let code = response.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        let Some(out) = self.reinvite_out.take() else {
            return;
        };
        if (200..300).contains(&code) {
            if let Some(d) = self.dialog.clone() {
                self.ack_2xx(rng, &d, out.seq);
            }
            if self.timer.is_some() {
                self.timer = self.negotiated_as_uac(now, &response).or(self.timer.take());
                if let Some(t) = self.timer.as_mut() {
                    t.restart(now);
                }
            }
            let sdp = parse_sdp(&response);
            if let Some(sd) = &sdp {
                self.oa.receive(sd.clone());
            }
            self.events
                .push_back(SessionEvent::ReInviteDone { result: Ok(sdp) });
            return;
        }
        self.oa.rollback(out.before.clone());
        match code {
            491 => {
                // §14.1: the Call-ID's owner (the UAC of the dialog) waits
                // 2.1–4 s, the other side 0–2 s, in units of 10 ms.
                let units = match self.side {
                    Side::Uac => 210 + rng.next_u32() % 191,
                    Side::Uas => rng.next_u32() % 201,
                };
                let at = now + Duration::from_millis(units as u64 * 10);
                self.glare_retry = Some((at, out.offer, out.headers));
            }
            481 => self.finish(now, EndReason::DialogLost { code }),
            408 => self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code }),
            _ => self
                .events
                .push_back(SessionEvent::ReInviteDone { result: Err(code) }),
        }
    }

    fn dialog_for(&mut self, request: &Message) -> Option<&mut Dialog> {
        if self.dialog.as_ref().is_some_and(|d| d.matches(request)) {
            return self.dialog.as_mut();
        }
        self.early.iter_mut().find(|d| d.matches(request))
    }

    fn on_request(&mut self, now: Instant, key: TransactionKey, request: Message) {
        self.keys.push(key.clone());
        let method = request.method().cloned().unwrap_or(Method::Ack);
        let seq = request.cseq().map(|c| c.seq).unwrap_or(0);
        let tag = request
            .to_header()
            .ok()
            .and_then(|t| t.tag().map(str::to_string))
            .unwrap_or_default();
        let in_order = match self.dialog_for(&request) {
            None => {
                let r = response_to(&request, 481, "Call/Transaction Does Not Exist", None);
                return self.respond(key, r);
            }
            Some(d) => d.accept_remote_seq(seq, &method),
        };
        if !in_order {
            // §12.2.2: a CSeq lower than one already seen.
            let r = response_to(&request, 500, "Server Internal Error", Some(&tag));
            return self.respond(key, r);
        }
        match method {
            Method::Bye => self.on_bye(now, key, request, &tag),
            Method::Invite => self.on_reinvite(key, request, &tag),
            Method::Update if self.config.accept_update => self.on_update(now, key, request, &tag),
            _ => self
                .events
                .push_back(SessionEvent::Request { key, request }),
        }
    }

    fn on_bye(&mut self, now: Instant, key: TransactionKey, request: Message, tag: &str) {
        let ok = response_to(&request, 200, "OK", Some(tag));
        self.respond(key, ok);
        let reason = request.headers.get("Reason").map(str::to_string);
        match (self.side, self.state) {
            (_, SessionState::Terminated) => {}
            (Side::Uas, SessionState::Initial | SessionState::Early) => {
                // §15.1.2: a BYE on an early dialog ends the INVITE with 487.
                let tag0 = self.forks[0].clone();
                let r = response_to(&self.invite, 487, "Request Terminated", Some(&tag0));
                self.final_response = Some(r.clone());
                self.respond(self.invite_key.clone(), r);
                self.finish(now, EndReason::RemoteBye { reason });
            }
            (Side::Uac, SessionState::Initial | SessionState::Early) => {
                // The early dialog is over; the INVITE goes on for other forks
                // unless this was the only one, then it is cancelled.
                let from = request
                    .from_header()
                    .ok()
                    .and_then(|f| f.tag().map(str::to_string));
                self.early.retain(|d| Some(&d.remote_tag) != from.as_ref());
                if self.early.is_empty() {
                    let _ = self.cancel(now);
                }
            }
            _ => self.finish(now, EndReason::RemoteBye { reason }),
        }
    }

    fn on_reinvite(&mut self, key: TransactionKey, request: Message, tag: &str) {
        let busy_initial = matches!(self.state, SessionState::Initial | SessionState::Early);
        if self.reinvite_out.is_some() {
            // §14.2: glare, our own re-INVITE is pending. (While we wait to
            // retry after a 491 we take the peer's: that is what the
            // asymmetric §14.1 wait is for.)
            let r = response_to(&request, 491, "Request Pending", Some(tag));
            return self.respond(key, r);
        }
        if self.reinvite_in.is_some() || busy_initial || !self.oa.is_settled() {
            // §14.2: an INVITE in progress the other way: 500 with Retry-After.
            let mut r = response_to(&request, 500, "Server Internal Error", Some(tag));
            r.headers.push("Retry-After", "1");
            return self.respond(key, r);
        }
        let offer = parse_sdp(&request);
        if let Some(sd) = &offer {
            self.oa.receive(sd.clone());
        }
        self.reinvite_in = Some(key);
        self.pending_reinvite_request = Some(request.clone());
        self.events
            .push_back(SessionEvent::ReInvite { request, offer });
    }

    fn on_ack(&mut self, now: Instant, rng: &mut SeededRng, request: Message) {
        let initial = request
            .cseq()
            .is_ok_and(|c| Some(c.seq) == self.invite.cseq().ok().map(|i| i.seq));
        if let Some(sd) = parse_sdp(&request) {
            // The answer to an offer we made in a 2xx (delayed offer).
            if matches!(self.oa.state, super::OaState::OfferSent(_)) {
                self.oa.receive(sd);
            }
        }
        if initial && self.state == SessionState::Accepted {
            self.state = SessionState::Confirmed;
            self.events.push_back(SessionEvent::Confirmed);
            if let Some(headers) = self.deferred_bye.take() {
                self.send_bye(now, rng, headers, EndReason::LocalBye);
            }
        }
    }

    fn on_cancelled(&mut self, now: Instant) {
        if !matches!(self.state, SessionState::Initial | SessionState::Early) {
            return;
        }
        let tag = self.forks[0].clone();
        let r = response_to(&self.invite, 487, "Request Terminated", Some(&tag));
        self.final_response = Some(r.clone());
        self.respond(self.invite_key.clone(), r);
        self.finish(now, EndReason::Cancelled);
    }

    fn on_failure(
        &mut self,
        now: Instant,
        rng: &mut SeededRng,
        key: TransactionKey,
        reason: Option<String>,
    ) {
        if key == self.invite_key {
            if self.state == SessionState::Terminated || self.dialog.is_some() {
                return;
            }
            let end = match (reason, self.cancel_requested) {
                (_, true) => EndReason::Cancelled,
                (Some(r), false) => EndReason::TransportError(r),
                (None, false) => EndReason::Timeout,
            };
            return self.finish(now, end);
        }
        if self.reinvite_out.as_ref().is_some_and(|r| r.key == key) {
            // §14.1: a re-INVITE that times out is treated as 408.
            let out = self.reinvite_out.take();
            self.oa.rollback(out.and_then(|o| o.before));
            return self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code: 408 });
        }
        if self.refresh_update.as_ref() == Some(&key) {
            self.refresh_update = None;
            if self.state == SessionState::Confirmed {
                self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code: 408 });
            }
            return;
        }
        if self.requests_out.contains(&key) {
            // No answer (Timer F) or not sendable: reported as 408 (§8.1.3.1).
            self.requests_out.retain(|k| k != &key);
            self.events.push_back(SessionEvent::Response {
                key,
                code: 408,
                response: None,
            });
            if self.state == SessionState::Confirmed {
                self.send_bye(now, rng, Vec::new(), EndReason::DialogLost { code: 408 });
            }
            return;
        }
        if self.pending_bye.as_ref() == Some(&key) {
            self.pending_bye = None;
            let end = match reason {
                Some(r) => EndReason::TransportError(r),
                None => self.ending.take().unwrap_or(EndReason::LocalBye),
            };
            self.finish(now, end);
        }
    }

    fn on_no_ack(&mut self, now: Instant, rng: &mut SeededRng, key: TransactionKey) {
        // RFC 3261 §13.3.1.4 (and §14.2 for a re-INVITE): no ACK for our 2xx
        // in 64·T1 ends the session with a BYE.
        let ours = key == self.invite_key || self.keys.contains(&key);
        if !ours
            || matches!(
                self.state,
                SessionState::Terminating | SessionState::Terminated
            )
        {
            return;
        }
        if self.state == SessionState::Accepted {
            self.state = SessionState::Confirmed;
        }
        self.send_bye(now, rng, Vec::new(), EndReason::NoAck);
    }
}
