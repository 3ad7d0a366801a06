//! What every party knows of the Direct Routing interface (behaviour §1,
//! §2): the hub's public proxies, in the order an SBC tries them.

/// The hub's proxies, in the order an SBC tries them (Direct Routing plan).
pub const HUB_FQDNS: [&str; 3] = [
    "sip.pstnhub.microsoft.com",
    "sip2.pstnhub.microsoft.com",
    "sip3.pstnhub.microsoft.com",
];

/// The hub's TLS port (behaviour §1: SBC → hub goes to 5061).
pub const HUB_PORT: u16 = 5061;
