//! Media: SDES-keyed SRTP (RFC 4568, RFC 3711) on webrtc-srtp, the SBC's
//! RTP ↔ SRTP relay (a sans-IO core and the driver that owns its
//! sockets), media ports from a configured range, ICE-lite on a STUN
//! codec of its own (media bypass), and the watch that ends calls without
//! media.

pub mod dtmf;
pub mod ice;
pub mod ports;
pub mod quality;
pub mod relay;
pub mod silence;
pub mod srtp;
pub mod stun;

pub use ports::PortAllocator;
pub use relay::{
    RelayCommand, RelayCore, RelayDriver, RelayEvent, RelayLeg, RelayPlan, RelayStats,
};
pub use srtp::{SrtpError, SrtpKey};
