//! The trace tap: every SIP message a transport sends or receives (after
//! TLS decryption), with the time, both addresses and the transport.

use super::TransportKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Time since the world started ([`super::Network::elapsed`]).
    pub at: std::time::Duration,
    /// The host that sent or received (its name in the world, or a label).
    pub host: String,
    pub direction: Direction,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub transport: TransportKind,
    pub raw: Vec<u8>,
}

/// Receives trace events. Implementations must be cheap and never block.
pub trait Tap: Send + Sync + 'static {
    fn record(&self, event: TraceEvent);
}

/// A tap that keeps every event in memory, shared by all hosts of a world.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<TraceEvent>>>);

impl Recorder {
    pub fn events(&self) -> Vec<TraceEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Tap for Recorder {
    fn record(&self, event: TraceEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

/// Prints every message with its time, host, transport and addresses to
/// standard error: the `--trace` of the binaries.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrTap;

impl Tap for StderrTap {
    fn record(&self, e: TraceEvent) {
        let arrow = match e.direction {
            Direction::Sent => "->",
            Direction::Received => "<-",
        };
        eprintln!(
            "{:>10.3} {} {} {} {} {}\n{}",
            e.at.as_secs_f64(),
            e.host,
            e.transport,
            e.local,
            arrow,
            e.remote,
            String::from_utf8_lossy(&e.raw)
        );
    }
}

/// Both taps see every event (a counter and `--trace`, say).
pub struct Tee(pub Arc<dyn Tap>, pub Arc<dyn Tap>);

impl Tap for Tee {
    fn record(&self, e: TraceEvent) {
        self.0.record(e.clone());
        self.1.record(e);
    }
}
