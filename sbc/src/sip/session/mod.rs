//! INVITE sessions and their dialogs (RFC 3261 §12–§15, RFC 6026; "dialog
//! usages" in the sense of RFC 5057), sans-IO.
//!
//! An [`InviteSession`] is one INVITE-created usage, UAC or UAS: its early
//! dialogs (one per To-tag: forks), the confirmed dialog, ACK of the 2xx
//! and re-ACK of its retransmissions, BYE, CANCEL and 487, the offer/answer
//! state (RFC 3264, re-offers with the `o=` version rule, 491 on glare and
//! the §14.1 retry), and a typed [`EndReason`]. A [`SessionSet`] routes
//! what the endpoint reports to the session it belongs to (by transaction
//! and by dialog), answers 481 for dialogs it does not know, and reaps
//! sessions once they have ended and lingered long enough to absorb
//! retransmissions.
//!
//! # Drive contract
//! Nothing here owns a socket, a clock or a random source. Every call
//! takes `now` (and the seeded RNG where it draws tags or branches); after
//! each call, drain [`InviteSession::poll_action`] (messages for the
//! endpoint to send: requests with their branch, responses for a server
//! transaction, ACKs, CANCELs) and [`InviteSession::poll_event`] (what the
//! role must hear), then wake it at [`InviteSession::poll_timeout`]. The
//! [`crate::sip::ua::UserAgent`] does this for every session it holds.

mod invite;
mod offer_answer;
mod request;
mod set;
pub mod timer;

pub use invite::{InviteSession, SessionError, SessionInput, SessionState, Side};
pub use offer_answer::{OaState, OfferAnswer};
pub use request::RequestBuilder;
pub use set::{timer_precheck, uas_precheck, Precheck, SessionSet};
pub use timer::{RefreshMethod, Refresher, SessionTimerConfig};

use crate::sip::sdp::SessionDescription;
use crate::sip::transaction::{TimerConfig, TransactionKey};
use crate::sip::transport::{Source, Target};
use crate::sip::wire::Message;
use std::fmt;

/// A session's handle, unique within its [`SessionSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// Where a request goes: a target the role chose (an initial INVITE), or a
/// URI the routing table resolves (in-dialog requests: the dialog's next hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hop {
    Target(Target),
    Uri(String),
}

/// What a session asks of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionAction {
    /// Start a client transaction; the endpoint adds a Via with `branch`.
    Request {
        request: Message,
        hop: Hop,
        branch: String,
    },
    /// Send an ACK for a 2xx (no transaction, RFC 3261 §13.2.2.4).
    Ack {
        ack: Message,
        hop: Hop,
        branch: String,
    },
    /// Answer through server transaction `key`.
    Respond {
        key: TransactionKey,
        response: Message,
    },
    /// CANCEL the pending INVITE client transaction `invite` (§9.1).
    Cancel { invite: TransactionKey },
}

/// What the role hears from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A new INVITE (UAS). The role answers with provisional/accept/reject.
    /// `raw` is the request as it arrived, for judges that read bytes.
    Incoming {
        request: Message,
        raw: Vec<u8>,
        source: Source,
    },
    /// UAC: a provisional response (To-tag and SDP, if any, inside).
    Progress {
        response: Message,
        sdp: Option<SessionDescription>,
    },
    /// UAC: the first 2xx (it has been ACKed).
    Answered {
        response: Message,
        sdp: Option<SessionDescription>,
    },
    /// UAS: the ACK for our 2xx arrived.
    Confirmed,
    /// The peer sent a re-INVITE (an offer, or none: offer-less).
    /// Answer with `answer_reinvite` or `reject_reinvite`.
    ReInvite {
        request: Message,
        offer: Option<SessionDescription>,
    },
    /// Our re-INVITE ended: `Ok` with the answer, or the final status.
    ReInviteDone {
        result: Result<Option<SessionDescription>, u16>,
    },
    /// Any other request in the dialog (INFO, NOTIFY, REFER, UPDATE...).
    /// Answer with `respond_in_dialog`.
    Request {
        key: TransactionKey,
        request: Message,
    },
    /// The final response to a request we sent with `request` (REFER,
    /// NOTIFY...): `response` is `None` when none came (Timer F, or it
    /// could not be sent) and `code` is then 408.
    Response {
        key: TransactionKey,
        code: u16,
        response: Option<Message>,
    },
    /// The session is over; it is reaped once it has lingered.
    Ended { reason: EndReason },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// A final non-2xx to the INVITE (received as UAC, sent as UAS), with
    /// its Retry-After in seconds, if any (RFC 3261 §20.33), and its
    /// `Reason` header as written (RFC 3326: `Q.850;cause=17;text="…"`),
    /// so a B2BUA can pass the PSTN's cause on.
    Rejected {
        code: u16,
        reason: String,
        retry_after: Option<u32>,
        cause: Option<String>,
    },
    /// CANCELled before an answer (either side).
    Cancelled,
    /// No response to the INVITE at all within Timer B (RFC 3261 §17.1.1.2).
    Timeout,
    /// The INVITE or the BYE could not be sent.
    TransportError(String),
    /// The peer sent BYE (with its Reason header, if any).
    RemoteBye { reason: Option<String> },
    /// We sent BYE.
    LocalBye,
    /// Our 2xx was retransmitted for 64·T1 without an ACK (RFC 3261
    /// §13.3.1.4); a BYE was sent.
    NoAck,
    /// Nobody refreshed the session in time (RFC 4028 §10); a BYE was sent.
    SessionExpired,
    /// The peer answered a re-INVITE or in-dialog request with 481 or 408:
    /// the dialog is gone (§14.1, §12.2.1.2).
    DialogLost { code: u16 },
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Rejected { code, reason, .. } => write!(f, "{code} {reason}"),
            EndReason::Cancelled => write!(f, "cancelled"),
            EndReason::Timeout => write!(f, "no response (Timer B)"),
            EndReason::TransportError(e) => write!(f, "transport error: {e}"),
            EndReason::RemoteBye { reason: Some(r) } => write!(f, "BYE from peer ({r})"),
            EndReason::RemoteBye { reason: None } => write!(f, "BYE from peer"),
            EndReason::LocalBye => write!(f, "BYE sent"),
            EndReason::SessionExpired => write!(f, "session expired (no refresh, RFC 4028)"),
            EndReason::NoAck => write!(f, "no ACK for 2xx (BYE sent)"),
            EndReason::DialogLost { code } => write!(f, "dialog lost ({code})"),
        }
    }
}

/// How a session behaves where the RFCs leave a choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our Contact on requests and on responses that set none.
    pub contact: String,
    pub timers: TimerConfig,
    /// Extensions we support; a `Require` naming another gets 420 (§8.2.2.3).
    pub supported: Vec<String>,
    /// Run the generic UAS checks on new INVITEs (Contact present,
    /// `Require` supported). A judge that applies its own rules turns this off.
    pub uas_checks: bool,
    /// Record-Route URIs that are ours (hosts we put in Record-Route on
    /// requests we send): never a hop of our own route set.
    pub own_routes: Vec<String>,
    /// Session timers (RFC 4028); `None`: we do not support them.
    pub timer: Option<SessionTimerConfig>,
    /// Answer a peer's UPDATE refresh (no body, RFC 3311 + RFC 4028 §9)
    /// in the session layer; off: UPDATE goes to the role like any other
    /// request. A party that turns it on lists UPDATE in its Allow.
    pub accept_update: bool,
    /// Credentials for digest challenges (401/407) to our INVITEs, by
    /// realm (RFC 3261 §22.2): a challenge for another realm ends the call
    /// with its status.
    pub logins: Vec<DigestLogin>,
}

/// A username and password for one realm.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestLogin {
    pub realm: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for DigestLogin {
    // Never a password in a log line or a failure report.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestLogin")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SessionConfig {
    pub fn new(contact: impl Into<String>) -> Self {
        SessionConfig {
            contact: contact.into(),
            timers: TimerConfig::default(),
            supported: Vec::new(),
            uas_checks: true,
            own_routes: Vec::new(),
            timer: None,
            accept_update: false,
            logins: Vec::new(),
        }
    }

    pub(crate) fn is_own_route(&self, uri: &str) -> bool {
        let host = |u: &str| {
            crate::sip::wire::Uri::parse(u)
                .ok()
                .and_then(|u| u.host())
                .map(|h| h.to_ascii_lowercase())
        };
        // Most roles have no routes of their own: no URI to parse then
        // (this runs for every Record-Route of every dialog made).
        if self.own_routes.is_empty() {
            return false;
        }
        let Some(h) = host(uri) else { return false };
        self.own_routes
            .iter()
            .any(|o| o.eq_ignore_ascii_case(&h) || host(o).is_some_and(|x| x == h))
    }
}

/// A response a role asks a session to send: status, extra headers in
/// order, and SDP (offer/answer) or another body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub sdp: Option<SessionDescription>,
    /// A non-SDP body: (content type, bytes).
    pub body: Option<(String, Vec<u8>)>,
}

impl Reply {
    pub fn new(code: u16, reason: &str) -> Self {
        Reply {
            code,
            reason: reason.to_string(),
            ..Default::default()
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn sdp(mut self, sd: SessionDescription) -> Self {
        self.sdp = Some(sd);
        self
    }
}

#[cfg(test)]
mod tests;
