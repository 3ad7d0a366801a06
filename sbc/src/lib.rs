//! drlab's reference Session Border Controller, and the SIP stack it is
//! built on.
//!
//! [`sip`] is the protocol core shared with the simulators (teams-sim,
//! carrier-sim): wire format, SDP, transports, transactions, sessions and
//! the user agent core, sans-IO where it holds state. [`driver`] is the
//! one async loop per host that moves bytes and time in and out of a role,
//! on tokio sockets or inside a turmoil simulation. [`media`] is SRTP and
//! the relay; [`b2bua`] is the SBC's policy.

pub mod b2bua;
pub mod config;
pub mod direct_routing;
pub mod driver;
pub mod media;
pub mod problems;
pub mod records;
pub mod sip;
