//! The SIP core, bottom up: [`wire`] (messages and framing), [`sdp`],
//! [`transport`] (UDP/TCP/TLS over a network trait, with a trace tap),
//! [`transaction`] (RFC 3261 §17 state machines).

pub mod dialog;
pub mod endpoint;
pub mod rng;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod wire;
