//! carrier-sim: a carrier SIP trunk (UDP, plain RTP, national number
//! format) and the PSTN phones behind it.
//!
//! The trunk signals for its phones, as a PSTN gateway does; each phone's
//! audio comes from its own media host (an [`sbc::media::AudioProbe`]
//! opened on the phone's address), so media crosses the simulated network
//! from the phone itself.

pub mod config;
pub mod trunk;
