//! Media: SDES-keyed SRTP (RFC 4568, RFC 3711) on webrtc-srtp, the SBC's
//! RTP ↔ SRTP relay, and the audio probe the simulated far ends use to
//! prove that frames arrive decrypted and in order.

pub mod probe;
pub mod relay;
pub mod srtp;

pub use probe::{media_host, AudioProbe, MediaStats, ProbeOpen, ProbePlan};
pub use relay::{MediaRelay, RelayLeg, RelayPlan, RelayStats};
pub use srtp::{SrtpError, SrtpKey};
