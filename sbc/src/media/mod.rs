//! Media: SDES-keyed SRTP (RFC 4568, RFC 3711) on webrtc-srtp, the SBC's
//! RTP ↔ SRTP relay (a sans-IO core and the driver that owns its
//! sockets), and media ports from a configured range.

pub mod ice;
pub mod ports;
pub mod relay;
pub mod srtp;
pub mod stun;

pub use ports::PortAllocator;
pub use relay::{
    RelayCommand, RelayCore, RelayDriver, RelayEvent, RelayLeg, RelayPlan, RelayStats,
};
pub use srtp::{SrtpError, SrtpKey};
