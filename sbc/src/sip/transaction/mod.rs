//! RFC 3261 §17 transactions, sans-IO, with the RFC 6026 Accepted states.
//!
//! # Drive contract
//! A transaction never touches a socket or a clock. The caller:
//! 1. creates it (`ClientTransaction::new`, `ServerTransaction::new`) or
//!    feeds it (`handle_*`), passing the current time;
//! 2. drains `poll_transmit()` (messages to send on the transaction's
//!    transport) and `poll_event()` (what the transaction user must know);
//! 3. sleeps until `poll_timeout()`, then calls `handle_timeout(now)`.
//!
//! ```
//! # use sbc::sip::transaction::*;
//! # use sbc::sip::wire::Message;
//! # use std::time::Instant;
//! /// Drive one transaction with no peer: it retransmits, then times out.
//! fn drive(request: Message, start: Instant, mut send: impl FnMut(Message)) -> Vec<ClientEvent> {
//!     let mut tx = ClientTransaction::new(request, false, TimerConfig::default(), start).unwrap();
//!     let mut events = Vec::new();
//!     loop {
//!         while let Some(m) = tx.poll_transmit() { send(m) }
//!         while let Some(ev) = tx.poll_event() { events.push(ev) }
//!         // A real driver sleeps until the deadline or a response arrives
//!         // (then calls tx.handle_response); here time just jumps.
//!         let Some(deadline) = tx.poll_timeout() else { return events };
//!         tx.handle_timeout(deadline);
//!     }
//! }
//! # let raw = "OPTIONS sip:b SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! let mut sent = 0;
//! let events = drive(Message::parse(raw.as_bytes()).unwrap(), Instant::now(), |_| sent += 1);
//! assert_eq!(events, vec![ClientEvent::Timeout]);
//! assert_eq!(sent, 11); // Timer E: 0.5, 1, 2, 4, 4, 4... until Timer F at 32 s
//! ```
//!
//! Retransmission happens on unreliable transports only (§17.1.1.2,
//! §17.1.2.2, §17.2.1); on TCP/TLS the waiting timers (D, I, J, K) are zero.

mod client;
mod server;
mod timers;

pub use client::{
    build_ack_for_non_2xx, build_cancel, ClientEvent, ClientState, ClientTransaction,
};
pub use server::{response_to, ServerEvent, ServerState, ServerTransaction};
pub use timers::{Timer, TimerConfig};

use crate::sip::wire::{Message, Method, WireError};

/// How a message finds its transaction (RFC 3261 §17.1.3, §17.2.3): the top
/// Via branch and the method, where an ACK belongs to its INVITE and a CANCEL
/// has a transaction of its own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionKey {
    pub branch: String,
    pub method: Method,
}

impl TransactionKey {
    /// The key of a request as a server transaction sees it.
    pub fn for_request(req: &Message) -> Result<TransactionKey, WireError> {
        let via = req.top_via()?;
        let branch = via.branch.ok_or(WireError::BadHeaderValue {
            header: "Via",
            value: req.headers.get("Via").unwrap_or_default().to_string(),
            reason: "no branch parameter".into(),
        })?;
        let method = match req.method() {
            Some(Method::Ack) | Some(Method::Invite) => Method::Invite,
            Some(m) => m.clone(),
            None => req.cseq()?.method,
        };
        Ok(TransactionKey { branch, method })
    }

    /// The key of a response as a client transaction sees it (§17.1.3):
    /// top Via branch and the CSeq method.
    pub fn for_response(resp: &Message) -> Result<TransactionKey, WireError> {
        let via = resp.top_via()?;
        let branch = via.branch.ok_or(WireError::MissingHeader {
            header: "Via branch",
        })?;
        Ok(TransactionKey {
            branch,
            method: resp.cseq()?.method,
        })
    }
}

#[cfg(test)]
mod tests;
