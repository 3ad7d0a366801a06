//! What the drlab simulators (teams-sim, carrier-sim, the harness) share
//! and the reference SBC does not carry: far-end behaviour ([`far_end`]),
//! the audio probe and media hosts ([`probe`]), the test PKI ([`pki`]) and
//! the line console ([`console`]).

pub mod console;
pub mod far_end;
pub mod pki;
pub mod probe;

pub use probe::{
    media_host, media_host_channel, AudioProbe, MediaHostHandle, MediaStats, ProbeCommand,
    ProbeDriver, ProbeOpen, ProbePlan,
};
pub mod scripted_sbc;
