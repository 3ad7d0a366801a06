//! The user agent core a role drives: the [`EndpointCore`] (transactions),
//! the [`SessionSet`] (INVITE sessions and dialogs) and the routing table,
//! sans-IO. It routes what the endpoint reports to the session it belongs
//! to, carries out what sessions ask (resolving next hops through the
//! table), answers requests for unknown dialogs with 481 (RFC 3261
//! §12.2.2), and hands the role [`UaEvent`]s.
//!
//! # Drive contract
//! The driver feeds it transport input (`handle_message`,
//! `handle_malformed`, `handle_send_failure`, `handle_tls_refused`) and
//! time (`handle_timeout` once `poll_timeout` has passed); the role calls
//! the session and request methods. After every call, drain
//! `poll_transmit` (to the wire) and `poll_event` (to the role), then sleep
//! until `poll_timeout`. `now` is always a parameter: the UA never reads a
//! clock, and it draws every identifier from the [`SeededRng`] it owns.

use crate::sip::endpoint::{EndpointConfig, EndpointCore, EndpointEvent, LocalPorts, Transmit};
use crate::sip::rng::SeededRng;
use crate::sip::routing::{RouteError, RoutingTable};
use crate::sip::sdp::SessionDescription;
use crate::sip::session::SessionInput;
use crate::sip::session::{
    timer_precheck, uas_precheck, Hop, InviteSession, Reply, SessionAction, SessionConfig,
    SessionError, SessionEvent, SessionId, SessionSet,
};
use crate::sip::transaction::{response_to, ServerEvent, TransactionKey};
use crate::sip::transport::{Source, Target};
use crate::sip::wire::{Message, Method, WireError};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct UaConfig {
    pub endpoint: EndpointConfig,
    pub session: SessionConfig,
}

/// What the role hears.
#[derive(Debug)]
pub enum UaEvent {
    Session {
        id: SessionId,
        event: SessionEvent,
    },
    /// A request outside any dialog that is not an INVITE (OPTIONS,
    /// REGISTER, MESSAGE...): answer with [`UserAgent::respond`].
    Request {
        key: TransactionKey,
        request: Message,
        raw: Vec<u8>,
        source: Source,
    },
    /// A response to a request sent with [`UserAgent::send_request`].
    Response {
        key: TransactionKey,
        response: Message,
    },
    /// Such a request failed: timed out (`reason: None`) or could not be sent.
    Failed {
        key: TransactionKey,
        reason: Option<String>,
    },
    /// A new INVITE refused before any session was made (see [`uas_precheck`]).
    Refused {
        request: Message,
        code: u16,
        why: String,
    },
    Malformed {
        error: WireError,
        source: Source,
    },
    TlsRefused {
        remote: SocketAddr,
        inbound: bool,
        reason: String,
    },
}

/// How much state a user agent holds (the no-state-left checks read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UaCounts {
    pub sessions: usize,
    pub transactions: usize,
    pub sessions_reaped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaError {
    Session(SessionError),
    Route(RouteError),
    Wire(WireError),
}

impl std::fmt::Display for UaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UaError::Session(e) => e.fmt(f),
            UaError::Route(e) => e.fmt(f),
            UaError::Wire(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UaError {}

impl From<SessionError> for UaError {
    fn from(e: SessionError) -> Self {
        UaError::Session(e)
    }
}

pub struct UserAgent {
    endpoint: EndpointCore,
    sessions: SessionSet,
    routing: RoutingTable,
    rng: SeededRng,
    /// Shared with every session made from it (copied on write).
    config: Arc<SessionConfig>,
    events: VecDeque<UaEvent>,
    /// Counted, not passed up: ACKs and stray requests for no dialog.
    unmatched: u64,
}

impl UserAgent {
    pub fn new(config: UaConfig, ports: LocalPorts, routing: RoutingTable, rng: SeededRng) -> Self {
        let mut session = config.session;
        session.timers = config.endpoint.timers;
        UserAgent {
            endpoint: EndpointCore::new(config.endpoint, ports),
            sessions: SessionSet::new(),
            routing,
            rng,
            config: Arc::new(session),
            events: VecDeque::new(),
            unmatched: 0,
        }
    }

    pub fn rng(&mut self) -> &mut SeededRng {
        &mut self.rng
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    pub fn endpoint(&self) -> &EndpointCore {
        &self.endpoint
    }

    /// Limit new requests per source (see [`crate::sip::endpoint::Admission`]).
    pub fn set_admission(&mut self, admission: Option<crate::sip::endpoint::Admission>) {
        self.endpoint.set_admission(admission);
    }

    /// Shed new INVITEs that waited too long (see
    /// [`crate::sip::endpoint::Overload`]).
    pub fn set_overload(&mut self, overload: Option<crate::sip::endpoint::Overload>) {
        self.endpoint.set_overload(overload);
    }

    /// The start or end of an overload episode, once each (see
    /// [`crate::sip::endpoint::EndpointCore::overload_note`]).
    pub fn overload_note(&mut self, now: Instant) -> Option<crate::sip::endpoint::OverloadNote> {
        self.endpoint.overload_note(now)
    }

    /// How long the next message waited in the driver's queue.
    pub fn note_queue_delay(&mut self, now: Instant, delay: Duration) {
        self.endpoint.note_queue_delay(now, delay);
    }

    pub fn session_config(&self) -> &SessionConfig {
        &self.config
    }

    /// For sessions made from now on.
    pub fn session_config_mut(&mut self) -> &mut SessionConfig {
        Arc::make_mut(&mut self.config)
    }

    pub fn session(&self, id: SessionId) -> Option<&InviteSession> {
        self.sessions.get(id)
    }

    /// Whether a session of this Call-ID is held.
    pub fn has_call_id(&self, call_id: &str) -> bool {
        self.sessions.has_call_id(call_id)
    }

    pub fn counts(&self) -> UaCounts {
        UaCounts {
            sessions: self.sessions.len(),
            transactions: self.endpoint.transactions(),
            sessions_reaped: self.sessions.reaped(),
        }
    }

    /// ACKs and in-dialog requests that matched no session.
    pub fn unmatched(&self) -> u64 {
        self.unmatched
    }

    // ----- driver side -----

    pub fn handle_message(&mut self, now: Instant, message: Message, raw: Vec<u8>, source: Source) {
        self.endpoint.handle_message(now, message, raw, source);
        self.dispatch(now);
    }

    pub fn handle_malformed(&mut self, now: Instant, error: WireError, raw: &[u8], source: Source) {
        self.endpoint.handle_malformed(error, raw, source);
        self.dispatch(now);
    }

    pub fn handle_send_failure(&mut self, now: Instant, key: &TransactionKey, reason: String) {
        self.endpoint.handle_send_failure(key, reason);
        self.dispatch(now);
    }

    /// A TCP/TLS connection closed (see [`EndpointCore::handle_connection_closed`]).
    pub fn handle_connection_closed(
        &mut self,
        now: Instant,
        transport: crate::sip::transport::TransportKind,
        remote: SocketAddr,
    ) {
        self.endpoint.handle_connection_closed(transport, remote);
        self.dispatch(now);
    }

    pub fn handle_tls_refused(&mut self, remote: SocketAddr, inbound: bool, reason: String) {
        self.endpoint.handle_tls_refused(remote, inbound, reason);
        if let Some(EndpointEvent::TlsRefused {
            remote,
            inbound,
            reason,
        }) = self.endpoint.poll_event()
        {
            self.events.push_back(UaEvent::TlsRefused {
                remote,
                inbound,
                reason,
            });
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        self.dispatch(now);
        for id in self.sessions.due(now) {
            if let Some(s) = self.sessions.get_mut(id) {
                s.handle_timeout(now, &mut self.rng);
            }
            self.pump(now, id);
        }
        self.sessions.reap(now);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.endpoint.poll_timeout(), self.sessions.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- sessions -----

    /// Start a UAC session: `invite` is built by the role (see
    /// [`crate::sip::session::RequestBuilder`]), `sdp` is the offer.
    pub fn invite(
        &mut self,
        now: Instant,
        invite: Message,
        sdp: Option<SessionDescription>,
        hop: Hop,
    ) -> Result<SessionId, UaError> {
        let config = Arc::clone(&self.config);
        self.invite_with(now, invite, sdp, hop, &config)
    }

    /// [`Self::invite`] with a configuration of its own for this session
    /// (the hub's bypass calls go without session timers).
    pub fn invite_with(
        &mut self,
        now: Instant,
        invite: Message,
        sdp: Option<SessionDescription>,
        hop: Hop,
        config: &Arc<SessionConfig>,
    ) -> Result<SessionId, UaError> {
        let id = self.sessions.next_id();
        let s = InviteSession::uac(id, config, &mut self.rng, invite, sdp, hop)?;
        self.sessions.insert(s);
        self.pump(now, id);
        Ok(id)
    }

    fn with<T>(
        &mut self,
        now: Instant,
        id: SessionId,
        f: impl FnOnce(&mut InviteSession, &mut SeededRng) -> Result<T, SessionError>,
    ) -> Result<T, UaError> {
        let s = self
            .sessions
            .get_mut(id)
            .ok_or(SessionError::NoSuchSession(id))?;
        let r = f(s, &mut self.rng);
        self.pump(now, id);
        self.dispatch(now);
        Ok(r?)
    }

    pub fn add_fork(&mut self, now: Instant, id: SessionId) -> Result<usize, UaError> {
        self.with(now, id, |s, rng| s.add_fork(rng))
    }

    pub fn provisional(
        &mut self,
        now: Instant,
        id: SessionId,
        fork: usize,
        reply: Reply,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.provisional(now, fork, reply))
    }

    pub fn accept(
        &mut self,
        now: Instant,
        id: SessionId,
        fork: usize,
        reply: Reply,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.accept(now, fork, reply))
    }

    pub fn reject(&mut self, now: Instant, id: SessionId, reply: Reply) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.reject(now, reply))
    }

    pub fn cancel(&mut self, now: Instant, id: SessionId) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.cancel(now))
    }

    pub fn bye(
        &mut self,
        now: Instant,
        id: SessionId,
        headers: Vec<(String, String)>,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, rng| s.bye(now, rng, headers))
    }

    pub fn bye_now(
        &mut self,
        now: Instant,
        id: SessionId,
        headers: Vec<(String, String)>,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, rng| s.bye_now(now, rng, headers))
    }

    /// End a session whatever its state (CANCEL, a final `failure`, or BYE).
    pub fn hang_up(
        &mut self,
        now: Instant,
        id: SessionId,
        failure: Reply,
        headers: Vec<(String, String)>,
    ) {
        let _ = self.with(now, id, |s, rng| {
            s.hang_up(now, rng, failure, headers);
            Ok(())
        });
    }

    pub fn reinvite(
        &mut self,
        now: Instant,
        id: SessionId,
        offer: SessionDescription,
        headers: Vec<(String, String)>,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, rng| s.reinvite(rng, offer, headers))
    }

    pub fn answer_reinvite(
        &mut self,
        now: Instant,
        id: SessionId,
        reply: Reply,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.answer_reinvite(now, reply))
    }

    pub fn reject_reinvite(
        &mut self,
        now: Instant,
        id: SessionId,
        reply: Reply,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, _| s.reject_reinvite(reply))
    }

    pub fn respond_in_dialog(
        &mut self,
        now: Instant,
        id: SessionId,
        key: TransactionKey,
        request: &Message,
        reply: Reply,
    ) -> Result<(), UaError> {
        self.with(now, id, |s, _| {
            s.respond_in_dialog(key, request, reply);
            Ok(())
        })
    }

    /// Send an in-dialog request other than INVITE, ACK, BYE or CANCEL
    /// (REFER, NOTIFY...); its answer comes as [`SessionEvent::Response`].
    pub fn request_in_dialog(
        &mut self,
        now: Instant,
        id: SessionId,
        method: Method,
        headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> Result<TransactionKey, UaError> {
        self.with(now, id, |s, rng| s.request(rng, method, headers, body))
    }

    /// A NOTIFY of a REFER's implicit subscription (RFC 3515 §2.4.5):
    /// `Event: refer`, the status as `message/sipfrag`, the subscription
    /// active or (`last`) terminated.
    pub fn notify_refer(
        &mut self,
        now: Instant,
        id: SessionId,
        code: u16,
        reason: &str,
        last: bool,
    ) -> Result<TransactionKey, UaError> {
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let headers = vec![
            ("Event".to_string(), "refer".to_string()),
            ("Subscription-State".to_string(), state.to_string()),
        ];
        let body = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
        let sipfrag = Some(("message/sipfrag;version=2.0".to_string(), body));
        self.request_in_dialog(now, id, Method::Notify, headers, sipfrag)
    }

    // ----- outside dialogs -----

    /// Send a request outside any session (OPTIONS, REGISTER...) in a
    /// client transaction of its own. Its answer comes back as
    /// [`UaEvent::Response`], or [`UaEvent::Failed`].
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Message,
        hop: Hop,
    ) -> Result<TransactionKey, UaError> {
        let target = self.resolve(&hop).map_err(UaError::Route)?;
        let branch = self.rng.branch();
        let key = self
            .endpoint
            .send_request(now, request, target, &branch)
            .map_err(UaError::Wire)?;
        Ok(key)
    }

    /// Answer an out-of-dialog request through its server transaction.
    pub fn respond(&mut self, now: Instant, key: &TransactionKey, response: Message) -> bool {
        self.endpoint.respond(now, key, response)
    }

    /// Answer an out-of-dialog request with a status (and a new To-tag for
    /// a final response, RFC 3261 §8.2.6.2).
    pub fn reply(
        &mut self,
        now: Instant,
        key: &TransactionKey,
        code: u16,
        reason: &str,
        headers: Vec<(String, String)>,
    ) -> bool {
        let Some(req) = self.endpoint.server_request(key) else {
            return false;
        };
        let tag = (code > 100).then(|| self.rng.tag());
        let mut r = response_to(req, code, reason, tag.as_deref());
        for (k, v) in headers {
            r.headers.push(k, v);
        }
        self.endpoint.respond(now, key, r)
    }

    pub fn resolve(&self, hop: &Hop) -> Result<Target, RouteError> {
        match hop {
            Hop::Target(t) => Ok(t.clone()),
            Hop::Uri(u) => self.routing.target_for_uri(u),
        }
    }

    // ----- internals -----

    fn dispatch(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                EndpointEvent::Request {
                    key,
                    request,
                    raw,
                    source,
                } => self.on_request(now, key, request, raw, source),
                EndpointEvent::Ack { request, .. } => match self.sessions.by_dialog(&request) {
                    Some(id) => self.feed(now, id, SessionInput::Ack { request }),
                    None => self.unmatched += 1,
                },
                EndpointEvent::Cancelled { key } => {
                    if let Some(id) = self.sessions.by_transaction(&key) {
                        self.feed(now, id, SessionInput::Cancelled);
                    }
                }
                EndpointEvent::Response { key, response } => {
                    let id = self
                        .sessions
                        .by_transaction(&key)
                        .or_else(|| self.sessions.by_dialog(&response));
                    match id {
                        Some(id) => self.feed(now, id, SessionInput::Response { key, response }),
                        None if key.method == Method::Invite => self.unmatched += 1,
                        None => self.events.push_back(UaEvent::Response { key, response }),
                    }
                }
                EndpointEvent::Timeout { key } => match self.sessions.by_transaction(&key) {
                    Some(id) => self.feed(now, id, SessionInput::Timeout { key }),
                    None => self.events.push_back(UaEvent::Failed { key, reason: None }),
                },
                EndpointEvent::SendFailed { key, reason } => {
                    match self.sessions.by_transaction(&key) {
                        Some(id) => self.feed(now, id, SessionInput::SendFailed { key, reason }),
                        None => self.events.push_back(UaEvent::Failed {
                            key,
                            reason: Some(reason),
                        }),
                    }
                }
                EndpointEvent::Server {
                    key,
                    event: ServerEvent::NoAckFor2xx,
                } => {
                    if let Some(id) = self.sessions.by_transaction(&key) {
                        self.feed(now, id, SessionInput::NoAck { key });
                    }
                }
                EndpointEvent::Server { .. } => {}
                EndpointEvent::Malformed { error, source } => {
                    self.events.push_back(UaEvent::Malformed { error, source })
                }
                EndpointEvent::TlsRefused {
                    remote,
                    inbound,
                    reason,
                } => self.events.push_back(UaEvent::TlsRefused {
                    remote,
                    inbound,
                    reason,
                }),
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        key: TransactionKey,
        request: Message,
        raw: Vec<u8>,
        source: Source,
    ) {
        let has_to_tag = request.to_header().ok().is_some_and(|t| t.tag().is_some());
        if has_to_tag {
            match self.sessions.by_dialog(&request) {
                Some(id) => self.feed(now, id, SessionInput::Request { key, request }),
                None => {
                    // RFC 3261 §12.2.2: a request for a dialog we do not know.
                    self.unmatched += 1;
                    let r = response_to(&request, 481, "Call/Transaction Does Not Exist", None);
                    self.endpoint.respond(now, &key, r);
                }
            }
            return;
        }
        if request.method() != Some(&Method::Invite) {
            self.events.push_back(UaEvent::Request {
                key,
                request,
                raw,
                source,
            });
            return;
        }
        let checked = if self.config.uas_checks {
            uas_precheck(&request, &self.config)
        } else {
            Ok(())
        };
        {
            if let Err(p) = checked.and_then(|()| timer_precheck(&request, &self.config)) {
                let tag = self.rng.tag();
                let mut r = response_to(&request, p.code, p.reason, Some(&tag));
                for (k, v) in p.headers {
                    r.headers.push(k, v);
                }
                self.endpoint.respond(now, &key, r);
                self.events.push_back(UaEvent::Refused {
                    request,
                    code: p.code,
                    why: p.why,
                });
                return;
            }
        }
        let id = self.sessions.next_id();
        let s = InviteSession::uas(id, &self.config, &mut self.rng, key, request, raw, source);
        self.sessions.insert(s);
        self.pump(now, id);
    }

    fn feed(&mut self, now: Instant, id: SessionId, input: SessionInput) {
        if let Some(s) = self.sessions.get_mut(id) {
            s.handle(now, &mut self.rng, input);
        }
        self.pump(now, id);
    }

    /// Carry out what session `id` asked for and pass its events up.
    fn pump(&mut self, now: Instant, id: SessionId) {
        loop {
            let mut failures = Vec::new();
            while let Some(action) = self.sessions.get_mut(id).and_then(|s| s.poll_action()) {
                match action {
                    SessionAction::Request {
                        request,
                        hop,
                        branch,
                    } => {
                        let key = TransactionKey {
                            branch: branch.clone(),
                            method: request.method().cloned().unwrap_or(Method::Invite),
                        };
                        let sent = self.resolve(&hop).map_err(|e| e.to_string()).and_then(|t| {
                            self.endpoint
                                .send_request(now, request, t, &branch)
                                .map_err(|e| e.to_string())
                        });
                        if let Err(reason) = sent {
                            failures.push(SessionInput::SendFailed { key, reason });
                        }
                    }
                    SessionAction::Ack { ack, hop, branch } => {
                        if let Ok(t) = self.resolve(&hop) {
                            self.endpoint.send_ack(ack, t, &branch);
                        }
                    }
                    SessionAction::Respond { key, response } => {
                        self.endpoint.respond(now, &key, response);
                    }
                    SessionAction::Cancel { invite } => {
                        if let Some(k) = self.endpoint.send_cancel(now, &invite) {
                            self.sessions.index_key(k, id);
                        }
                    }
                }
            }
            self.sessions.index(id);
            while let Some(event) = self.sessions.get_mut(id).and_then(|s| s.poll_event()) {
                self.events.push_back(UaEvent::Session { id, event });
            }
            if failures.is_empty() {
                break;
            }
            for f in failures {
                if let Some(s) = self.sessions.get_mut(id) {
                    s.handle(now, &mut self.rng, f);
                }
            }
        }
    }
}
