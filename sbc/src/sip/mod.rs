//! The SIP core, bottom up: [`wire`] (messages and framing), [`sdp`],
//! [`transport`] (UDP/TCP/TLS over a network trait, with a trace tap),
//! [`transaction`] (RFC 3261 §17 state machines), [`endpoint`]
//! (transactions matched per host), [`dialog`] and [`session`] (INVITE
//! sessions, RFC 3261 §12–15), and [`ua`], the sans-IO core a role drives.
//! Names are resolved once into a [`routing`] table.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod rng;
pub mod routing;
pub mod sdp;
pub mod session;
pub mod transaction;
pub mod transport;
pub mod ua;
pub mod wire;
