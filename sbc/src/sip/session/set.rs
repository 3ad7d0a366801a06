//! The sessions of one user agent, found by transaction and by dialog,
//! and reaped once over; and the checks a UAS makes on every new INVITE.

use super::invite::InviteSession;
use super::{SessionConfig, SessionId};
use crate::sip::transaction::TransactionKey;
use crate::sip::wire::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct SessionSet {
    /// Boxed: a session is ~2.8 KB, and a B-tree node holds eleven values
    /// inline, moving them on every insert and remove (issue 15).
    sessions: BTreeMap<SessionId, Box<InviteSession>>,
    by_tx: BTreeMap<TransactionKey, SessionId>,
    /// (Call-ID, one of our tags) → session.
    by_dialog: BTreeMap<(String, String), SessionId>,
    /// What each session put in `by_tx` and `by_dialog`, to take out again
    /// when it is reaped.
    filed: BTreeMap<SessionId, Filed>,
    /// Every session's next timer in deadline order, and where each
    /// stands: the earliest is read after every message the UA handles,
    /// so it must not cost a visit to every session (a busy SBC holds
    /// thousands). Brought up to date by [`SessionSet::index`], which the
    /// UA calls after every change to a session.
    timers: BTreeSet<(Instant, SessionId)>,
    scheduled: BTreeMap<SessionId, Instant>,
    /// Sessions in state Terminated by when they may be reaped (`None`:
    /// at once; it sorts first): `reap` looks only at the front.
    ended: BTreeSet<(Option<Instant>, SessionId)>,
    reapable_from: BTreeMap<SessionId, Option<Instant>>,
    next_id: u64,
    reaped: u64,
}

#[derive(Debug, Default)]
struct Filed {
    keys: Vec<TransactionKey>,
    dialogs: Vec<(String, String)>,
    /// How many of the session's keys and local tags were looked at.
    keys_seen: usize,
    tags_seen: usize,
}

impl SessionSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn next_id(&mut self) -> SessionId {
        self.next_id += 1;
        SessionId(self.next_id)
    }

    pub fn insert(&mut self, s: InviteSession) {
        let id = s.id();
        self.sessions.insert(id, Box::new(s));
        self.index(id);
    }

    /// Record the keys and tags a session has gained since it was last
    /// indexed, its next timer, and whether it has ended.
    pub fn index(&mut self, id: SessionId) {
        let Some(s) = self.sessions.get(&id) else {
            return;
        };
        let filed = self.filed.entry(id).or_default();
        // A session's keys and tags only grow: look at the new ones alone
        // (this runs after every change to a session, and a lookup by a
        // string key is most of what it costs).
        for k in s.keys().get(filed.keys_seen..).unwrap_or_default() {
            if !self.by_tx.contains_key(k) {
                self.by_tx.insert(k.clone(), id);
                filed.keys.push(k.clone());
            }
        }
        filed.keys_seen = s.keys().len();
        for tag in s.local_tags().get(filed.tags_seen..).unwrap_or_default() {
            let dialog = (s.call_id().to_string(), tag.clone());
            if !self.by_dialog.contains_key(&dialog) {
                self.by_dialog.insert(dialog.clone(), id);
                filed.dialogs.push(dialog);
            }
        }
        filed.tags_seen = s.local_tags().len();
        if let Some(from) = s.reapable_from() {
            if let Some(old) = self.reapable_from.insert(id, from) {
                self.ended.remove(&(old, id));
            }
            self.ended.insert((from, id));
        }
        let next = s.poll_timeout();
        self.schedule(id, next);
    }

    fn schedule(&mut self, id: SessionId, next: Option<Instant>) {
        let old = self.scheduled.get(&id).copied();
        if old == next {
            return;
        }
        if let Some(old) = old {
            self.timers.remove(&(old, id));
        }
        match next {
            Some(at) => {
                self.timers.insert((at, id));
                self.scheduled.insert(id, at);
            }
            None => {
                self.scheduled.remove(&id);
            }
        }
    }

    /// Map a transaction the endpoint created for a session (a CANCEL).
    pub fn index_key(&mut self, key: TransactionKey, id: SessionId) {
        self.by_tx.insert(key.clone(), id);
        self.filed.entry(id).or_default().keys.push(key);
    }

    pub fn get(&self, id: SessionId) -> Option<&InviteSession> {
        self.sessions.get(&id).map(|s| &**s)
    }

    pub fn get_mut(&mut self, id: SessionId) -> Option<&mut InviteSession> {
        self.sessions.get_mut(&id).map(|s| &mut **s)
    }

    pub fn by_transaction(&self, key: &TransactionKey) -> Option<SessionId> {
        self.by_tx.get(key).copied()
    }

    /// The session whose dialog `msg` belongs to: Call-ID and our tag, which
    /// is in To for a request to us and in From for a response to us.
    pub fn by_dialog(&self, msg: &Message) -> Option<SessionId> {
        let call_id = msg.call_id().ok()?.to_string();
        let ours = if msg.is_request() {
            msg.to_header().ok()?.tag()?.to_string()
        } else {
            msg.from_header().ok()?.tag()?.to_string()
        };
        self.by_dialog.get(&(call_id, ours)).copied()
    }

    /// Whether a session of this Call-ID is held (any of our tags).
    pub fn has_call_id(&self, call_id: &str) -> bool {
        self.by_dialog
            .range((call_id.to_string(), String::new())..)
            .next()
            .is_some_and(|((c, _), _)| c == call_id)
    }

    pub fn ids(&self) -> Vec<SessionId> {
        self.sessions.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Sessions reaped so far.
    pub fn reaped(&self) -> u64 {
        self.reaped
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let next = self.timers.first().map(|(at, _)| *at);
        debug_assert_eq!(
            next,
            self.sessions
                .values()
                .filter_map(|s| s.poll_timeout())
                .min(),
            "the session timer index disagrees with the sessions"
        );
        debug_assert_eq!(self.scheduled.len(), self.timers.len());
        debug_assert!(
            (self.filed.keys()).all(|id| self.sessions.contains_key(id)),
            "a reaped session is still filed"
        );
        next
    }

    /// Sessions with a timer due at `now`, in id order.
    pub fn due(&self, now: Instant) -> Vec<SessionId> {
        let due: BTreeSet<SessionId> = (self.timers.iter())
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        due.into_iter().collect()
    }

    /// Remove every session that has ended and lingered; returns their ids.
    pub fn reap(&mut self, now: Instant) -> Vec<SessionId> {
        let due: BTreeSet<SessionId> = (self.ended.iter())
            .take_while(|(from, _)| from.is_none_or(|t| t <= now))
            .map(|(_, id)| *id)
            .collect();
        let done: Vec<SessionId> = (due.into_iter())
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.is_reapable(now)))
            .collect();
        for id in &done {
            self.sessions.remove(id);
            if let Some(from) = self.reapable_from.remove(id) {
                self.ended.remove(&(from, *id));
            }
            self.schedule(*id, None);
            let filed = self.filed.remove(id).unwrap_or_default();
            for k in filed.keys {
                if self.by_tx.get(&k) == Some(id) {
                    self.by_tx.remove(&k);
                }
            }
            for d in filed.dialogs {
                if self.by_dialog.get(&d) == Some(id) {
                    self.by_dialog.remove(&d);
                }
            }
        }
        self.reaped += done.len() as u64;
        debug_assert!(
            self.sessions.values().all(|s| !s.is_reapable(now)),
            "the reaping index missed a session"
        );
        done
    }
}

/// Why a new INVITE is refused before any session is made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precheck {
    pub code: u16,
    pub reason: &'static str,
    /// Headers the answer must carry (`Unsupported` with a 420).
    pub headers: Vec<(String, String)>,
    pub why: String,
}

/// The checks RFC 3261 asks of every UAS for a new INVITE: a Contact it can
/// send in-dialog requests to (§8.1.1.8: an INVITE MUST carry exactly one;
/// 400 otherwise), and no `Require` option it does not support (§8.2.2.3:
/// 420 listing them in `Unsupported`).
/// RFC 4028 §9: a Session-Expires below our Min-SE is refused with 422,
/// naming our Min-SE (checked whenever we do session timers).
pub fn timer_precheck(request: &Message, config: &SessionConfig) -> Result<(), Precheck> {
    let Some(t) = &config.timer else {
        return Ok(());
    };
    let asked = request
        .headers
        .get("Session-Expires")
        .and_then(super::timer::parse_session_expires);
    match asked {
        Some((interval, _)) if interval < t.min_se => Err(Precheck {
            code: 422,
            reason: "Session Interval Too Small",
            headers: vec![("Min-SE".into(), t.min_se.to_string())],
            why: format!(
                "Session-Expires {interval} is below our Min-SE {} (RFC 4028 §9)",
                t.min_se
            ),
        }),
        _ => Ok(()),
    }
}

pub fn uas_precheck(request: &Message, config: &SessionConfig) -> Result<(), Precheck> {
    let contacts = request.contacts().map_err(|e| Precheck {
        code: 400,
        reason: "Bad Request",
        headers: Vec::new(),
        why: format!("unreadable Contact: {e}"),
    })?;
    if contacts.len() != 1 {
        let why = if contacts.is_empty() {
            "no Contact (RFC 3261 §8.1.1.8)".to_string()
        } else {
            format!(
                "{} Contacts in an INVITE (exactly one allowed)",
                contacts.len()
            )
        };
        return Err(Precheck {
            code: 400,
            reason: if contacts.is_empty() {
                "Missing Contact"
            } else {
                "Bad Request"
            },
            headers: Vec::new(),
            why,
        });
    }
    let unsupported: Vec<String> = request
        .headers
        .values("Require")
        .filter(|opt| !config.supported.iter().any(|s| s.eq_ignore_ascii_case(opt)))
        .filter(|opt| !(opt.eq_ignore_ascii_case("timer") && config.timer.is_some()))
        .map(str::to_string)
        .collect();
    if !unsupported.is_empty() {
        return Err(Precheck {
            code: 420,
            reason: "Bad Extension",
            headers: vec![("Unsupported".into(), unsupported.join(", "))],
            why: format!("Require: {} is not supported", unsupported.join(", ")),
        });
    }
    Ok(())
}
