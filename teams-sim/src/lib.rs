//! teams-sim: a simulated Microsoft Teams Direct Routing PSTN hub.
//!
//! Each proxy (`sip`, `sip2`, `sip3.pstnhub.microsoft.com`) runs
//! [`hub::run_proxy`] on any [`sbc::sip::transport::Network`]. The proxies
//! of one tenant share a [`hub::HubView`]: SBC health, calls and refusals,
//! which is what a certification step reads. Behaviour follows
//! `shared/teams-hub-behaviour.md`; the numbers in comments (`§9.7`) are
//! its conformance cases.

pub mod config;
pub mod hub;
