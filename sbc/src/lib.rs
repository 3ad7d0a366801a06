//! drlab's reference Session Border Controller, and the SIP stack it is
//! built on.
//!
//! [`sip`] is the protocol core shared with the simulators (teams-sim,
//! carrier-sim): wire format, SDP, transports, transactions. It is sans-IO
//! where it holds state (transactions take time as a parameter) and generic
//! over [`sip::transport::Network`] where it moves bytes, so the same code
//! runs on tokio sockets and inside a turmoil simulation. [`pki`] mints
//! test certificates.

pub mod b2bua;
pub mod config;
pub mod console;
pub mod media;
pub mod pki;
pub mod sip;
