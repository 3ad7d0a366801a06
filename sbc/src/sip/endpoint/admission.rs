//! Admission of new requests per source, before any transaction is made
//! (sans-IO: the caller passes `now`).
//!
//! An SBC on the public internet meets floods: a scanner's INVITEs from an
//! unknown address, or a carrier retrying a storm of calls. Each new
//! request that gets a server transaction holds state for up to 32 s
//! (Timer H/J, RFC 3261 §17.2), so the cheapest defence is to decide before
//! one exists. Token buckets, one per source address and method class:
//!
//! - a **trusted** source (a configured carrier gateway, a hub proxy) over
//!   its rate gets a stateless `503 Service Unavailable` with
//!   `Retry-After` (RFC 3261 §21.5.4): a well-behaved peer backs off or
//!   tries another route instead of retransmitting;
//! - an **unknown** source shares one small bucket per address and one
//!   for all unknown addresses together (spoofed source addresses must not
//!   each get a fresh burst); over it, the request is dropped and counted:
//!   answering a flood amplifies it.
//!
//! Requests inside a dialog (a To tag) on an authenticated connection (a
//! hub proxy's TLS) are never limited: they belong to calls already
//! admitted; on UDP they take the class buckets (a spoofed carrier address
//! could send them too). ACK never meets the gate; a CANCEL does when it
//! matches no INVITE (its 481 would be a transaction of its own).

use crate::sip::wire::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

/// A rate: `per_second` tokens refill a bucket holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Rate { per_second, burst }
    }
}

/// The limits [`Admission`] applies.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// New INVITEs per trusted source.
    pub invite: Rate,
    /// REGISTERs per trusted source.
    pub register: Rate,
    /// OPTIONS per trusted source.
    pub options: Rate,
    /// Any other new request outside a dialog per trusted source.
    pub other: Rate,
    /// All new requests of one unknown source, any method.
    pub unknown_source: Rate,
    /// All new requests of all unknown sources together.
    pub unknown_total: Rate,
    /// The Retry-After of the 503 a trusted source gets over its rate.
    pub retry_after_secs: u32,
}

impl Default for RateLimits {
    /// Far above what a trunk of a few hundred channels sends (a busy hour
    /// of 300 channels sets up ~5 calls/s; the hub sends one OPTIONS a
    /// minute per proxy), far below what hurts: see `docs/security.md`.
    fn default() -> Self {
        RateLimits {
            invite: Rate::new(100.0, 200),
            register: Rate::new(10.0, 20),
            options: Rate::new(10.0, 20),
            other: Rate::new(100.0, 200),
            unknown_source: Rate::new(2.0, 4),
            unknown_total: Rate::new(20.0, 40),
            retry_after_secs: 5,
        }
    }
}

/// What the gate says of one new request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    /// A trusted source over its rate: answer 503 with this Retry-After.
    Busy {
        retry_after_secs: u32,
    },
    /// An unknown source over its rate: send nothing.
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Invite,
    Register,
    Options,
    Other,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        self.at = now;
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Buckets kept before idle (full) ones are forgotten: a flood from many
/// addresses must not grow memory without bound.
pub const MAX_BUCKETS: usize = 4096;

/// What the gate counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Trusted sources' requests answered 503 for their rate.
    pub busy: u64,
    /// Unknown sources' requests dropped for their rate.
    pub dropped: u64,
    /// Unknown sources' requests admitted (the role may still refuse them).
    pub unknown_admitted: u64,
}

#[derive(Debug, Clone)]
pub struct Admission {
    limits: RateLimits,
    trusted: BTreeSet<IpAddr>,
    buckets: BTreeMap<(IpAddr, Class), Bucket>,
    unknown_total: Option<Bucket>,
    stats: AdmissionStats,
}

impl Admission {
    pub fn new(limits: RateLimits) -> Self {
        Admission {
            limits,
            trusted: BTreeSet::new(),
            buckets: BTreeMap::new(),
            unknown_total: None,
            stats: AdmissionStats::default(),
        }
    }

    /// Addresses whose requests are limited per method and answered 503
    /// when over (the peers the SBC is configured with).
    pub fn trust(&mut self, ip: IpAddr) {
        self.trusted.insert(ip);
    }

    pub fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted.contains(ip)
    }

    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// How many per-source buckets are held now.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Decide on a new request from `source` (`in_dialog`: it has a To tag;
    /// `authenticated`: it came on a TLS connection whose client
    /// certificate the listener accepted, a hub proxy whatever address it
    /// connects from: Microsoft's proxies connect from whole ranges, not
    /// only the addresses their names resolve to).
    pub fn decide(
        &mut self,
        now: Instant,
        source: IpAddr,
        method: Option<&Method>,
        in_dialog: bool,
        authenticated: bool,
    ) -> Decision {
        let trusted = authenticated || self.trusted.contains(&source);
        // In-dialog requests pass only on an authenticated connection: on
        // UDP a spoofed carrier address could send To-tagged requests at
        // line rate, each a transaction for 32 s (they take the class
        // buckets below, far above a dialog's needs).
        if authenticated && in_dialog {
            return Decision::Admit;
        }
        let (class, rate) = if trusted {
            match method {
                Some(Method::Invite) => (Class::Invite, self.limits.invite),
                Some(Method::Register) => (Class::Register, self.limits.register),
                Some(Method::Options) => (Class::Options, self.limits.options),
                _ => (Class::Other, self.limits.other),
            }
        } else {
            (Class::Unknown, self.limits.unknown_source)
        };
        let total_rate = self.limits.unknown_total;
        if !trusted {
            // The shared bucket is looked at first (a spoofed flood from
            // many addresses is held to one rate however many buckets it
            // would open) but taken from last: one address over its own
            // rate must not spend everyone else's.
            let total = self
                .unknown_total
                .get_or_insert_with(|| Bucket::full(total_rate, now));
            total.refill(total_rate, now);
            if total.tokens < 1.0 {
                self.stats.dropped += 1;
                return Decision::Drop;
            }
        }
        if !self.buckets.contains_key(&(source, class)) && self.buckets.len() >= MAX_BUCKETS {
            self.forget_idle(now);
        }
        let bucket = self
            .buckets
            .entry((source, class))
            .or_insert_with(|| Bucket::full(rate, now));
        if bucket.take(rate, now) {
            if !trusted {
                self.stats.unknown_admitted += 1;
                if let Some(total) = self.unknown_total.as_mut() {
                    total.take(total_rate, now);
                }
            }
            Decision::Admit
        } else if trusted {
            self.stats.busy += 1;
            Decision::Busy {
                retry_after_secs: self.limits.retry_after_secs,
            }
        } else {
            self.stats.dropped += 1;
            Decision::Drop
        }
    }

    /// Forget buckets that have refilled: they hold nothing a fresh one
    /// would not. Still too many (a live flood from more addresses than
    /// [`MAX_BUCKETS`]): forget the unknown sources' buckets, whose shared
    /// bucket still holds them to one rate.
    fn forget_idle(&mut self, now: Instant) {
        let limits = self.limits.clone();
        let rate_of = |class: Class| match class {
            Class::Invite => limits.invite,
            Class::Register => limits.register,
            Class::Options => limits.options,
            Class::Other => limits.other,
            Class::Unknown => limits.unknown_source,
        };
        self.buckets.retain(|(_, class), b| {
            let rate = rate_of(*class);
            b.refill(rate, now);
            b.tokens < f64::from(rate.burst)
        });
        if self.buckets.len() >= MAX_BUCKETS {
            self.buckets
                .retain(|(_, class), _| *class != Class::Unknown);
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a fake clock's origin
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_trusted_source_gets_its_burst_then_503_then_its_rate() {
        let mut a = Admission::new(RateLimits {
            invite: Rate::new(10.0, 3),
            ..RateLimits::default()
        });
        a.trust(ip("192.0.2.10"));
        let t0 = Instant::now();
        let inv = Some(&Method::Invite);
        for _ in 0..3 {
            assert_eq!(
                a.decide(t0, ip("192.0.2.10"), inv, false, false),
                Decision::Admit
            );
        }
        assert_eq!(
            a.decide(t0, ip("192.0.2.10"), inv, false, false),
            Decision::Busy {
                retry_after_secs: 5
            }
        );
        // OPTIONS has a bucket of its own; in-dialog requests pass.
        assert_eq!(
            a.decide(t0, ip("192.0.2.10"), Some(&Method::Options), false, false),
            Decision::Admit
        );
        assert_eq!(
            a.decide(t0, ip("192.0.2.10"), Some(&Method::Bye), true, false),
            Decision::Admit
        );
        // In-dialog requests take the class buckets on UDP (a spoofed
        // carrier address), and pass on an authenticated connection.
        let mut tight = Admission::new(RateLimits {
            other: Rate::new(1.0, 1),
            ..RateLimits::default()
        });
        tight.trust(ip("192.0.2.10"));
        let bye = Some(&Method::Bye);
        assert_eq!(
            tight.decide(t0, ip("192.0.2.10"), bye, true, false),
            Decision::Admit
        );
        assert_ne!(
            tight.decide(t0, ip("192.0.2.10"), bye, true, false),
            Decision::Admit
        );
        assert_eq!(
            tight.decide(t0, ip("192.0.2.10"), bye, true, true),
            Decision::Admit
        );
        // 10 per second: one more after 100 ms, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            a.decide(t1, ip("192.0.2.10"), inv, false, false),
            Decision::Admit
        );
        assert_ne!(
            a.decide(t1, ip("192.0.2.10"), inv, false, false),
            Decision::Admit
        );
        assert_eq!(a.stats().busy, 2);
    }

    #[test]
    fn unknown_sources_are_dropped_over_their_own_and_their_shared_rate() {
        let mut a = Admission::new(RateLimits {
            unknown_source: Rate::new(1.0, 2),
            unknown_total: Rate::new(1.0, 3),
            ..RateLimits::default()
        });
        let t0 = Instant::now();
        let inv = Some(&Method::Invite);
        assert_eq!(
            a.decide(t0, ip("203.0.113.1"), inv, false, false),
            Decision::Admit
        );
        assert_eq!(
            a.decide(t0, ip("203.0.113.1"), inv, false, false),
            Decision::Admit
        );
        // Its own bucket is empty: dropped, never a 503 (no amplification),
        // and an in-dialog request from an unknown source is no exception.
        assert_eq!(
            a.decide(t0, ip("203.0.113.1"), inv, true, false),
            Decision::Drop
        );
        // Another address: the drop above spent no shared token (one
        // address over its rate must not starve the others), so it is
        // admitted, and the shared bucket is empty after three admissions.
        assert_eq!(
            a.decide(t0, ip("203.0.113.2"), inv, false, false),
            Decision::Admit
        );
        assert_eq!(
            a.decide(t0, ip("203.0.113.3"), inv, false, false),
            Decision::Drop
        );
        assert_eq!(a.stats().dropped, 2);
        assert_eq!(a.stats().unknown_admitted, 3);
        // The same address on a TLS connection the listener authenticated
        // (a hub proxy from an address its name does not resolve to).
        assert_eq!(
            a.decide(t0, ip("203.0.113.2"), inv, false, true),
            Decision::Admit
        );
    }

    #[test]
    fn a_flood_from_many_addresses_keeps_memory_bounded() {
        let mut a = Admission::new(RateLimits {
            unknown_total: Rate::new(1e9, u32::MAX),
            ..RateLimits::default()
        });
        let t0 = Instant::now();
        for i in 0..(3 * MAX_BUCKETS as u32) {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            a.decide(t0, src, Some(&Method::Invite), false, false);
            assert!(a.buckets() <= MAX_BUCKETS, "{} buckets", a.buckets());
        }
    }
}
