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
//! ```no_run
//! # use sbc::sip::transaction::*;
//! # use sbc::sip::wire::Message;
//! # fn send(_: Message) {}
//! # fn wait_until(_: std::time::Instant) -> std::time::Instant { unimplemented!() }
//! # let request: Message = unimplemented!();
//! # let now = std::time::Instant::now();
//! let mut tx = ClientTransaction::new(request, false, TimerConfig::default(), now).unwrap();
//! loop {
//!     while let Some(m) = tx.poll_transmit() { send(m) }
//!     while let Some(ev) = tx.poll_event() { println!("{ev:?}") }
//!     let Some(deadline) = tx.poll_timeout() else { break };
//!     let now = wait_until(deadline); // or a response arrives: tx.handle_response(..)
//!     tx.handle_timeout(now);
//! }
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
