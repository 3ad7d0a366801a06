//! The endpoint: transactions matched and timed for one host, sans-IO
//! ([`EndpointCore`]). The [`crate::driver`] of each world feeds it bytes
//! and time and puts what it hands back on the wire.

pub mod admission;
mod core;

pub use self::admission::{Admission, AdmissionStats, Decision, Rate, RateLimits};

pub use self::core::{
    Destination, EndpointConfig, EndpointCore, EndpointEvent, EndpointStats, LocalPorts, Overload,
    OverloadNote, Transmit, OVERLOAD_QUIET,
};
