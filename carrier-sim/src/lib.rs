//! carrier-sim: a carrier SIP trunk (UDP, plain RTP, national number
//! format) and the PSTN phones behind it.
//!
//! The trunk signals for its phones, as a PSTN gateway does; each phone's
//! audio comes from its own media host (an audio probe of
//! [`drlab_sim::probe`] opened on the phone's address), so media crosses
//! the simulated network from the phone itself.

pub mod config;
pub mod load;
pub mod trunk;
