//! Media ports from a configured range: an RTP port is even and its RTCP
//! neighbour (port + 1) is kept free with it (RFC 3550 §11). Ports are
//! handed out round-robin, so a port just released (whose socket may not
//! be closed yet) is the last to come back, and never while in use; or, for
//! an SBC facing the internet ([`PortAllocator::random`]), at random from
//! the seeded stream, so that an off-path host cannot guess the next
//! call's ports from the last one's (RFC 3550 §9 leaves this to the
//! implementation; RFC 8445 §5.1.1.1 asks for unpredictable ports), with
//! recently released ports held back a while for the same reason as above.

use crate::sip::rng::SeededRng;
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::ops::RangeInclusive;

#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    next: u16,
    in_use: BTreeSet<u16>,
    /// Random mode: the stream to draw from, and ports released lately,
    /// not handed out again while others are free.
    rng: Option<SeededRng>,
    resting: VecDeque<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError(pub String);

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RangeError {}

impl PortAllocator {
    /// Even RTP ports within `range` (both ends inclusive); at least one pair.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, RangeError> {
        let first = range.start().saturating_add(range.start() % 2);
        let last = *range.end();
        if *range.start() < 1024 || first >= last {
            return Err(RangeError(format!(
                "{}-{} holds no RTP/RTCP port pair above 1023",
                range.start(),
                range.end()
            )));
        }
        Ok(PortAllocator {
            first,
            last,
            next: first,
            in_use: BTreeSet::new(),
            rng: None,
            resting: VecDeque::new(),
        })
    }

    /// Hand ports out at random, drawn from `rng`.
    pub fn random(mut self, rng: SeededRng) -> Self {
        self.rng = Some(rng);
        self
    }

    /// How many released ports rest before they may come back: half the
    /// range, at most 64.
    fn rest(&self) -> usize {
        (self.capacity() / 2).min(64)
    }

    /// How many RTP ports (pairs) the range holds.
    pub fn capacity(&self) -> usize {
        ((self.last - 1 - self.first) / 2 + 1) as usize
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free even port, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<u16> {
        let capacity = self.capacity();
        if let Some(rng) = self.rng.as_mut() {
            // A random start, then the first free, rested port from there:
            // one draw per call, whatever the occupancy.
            let start = (rng.next_u64() % capacity as u64) as usize;
            for i in 0..capacity {
                let p = self.first + 2 * ((start + i) % capacity) as u16;
                if !self.in_use.contains(&p) && !self.resting.contains(&p) {
                    self.in_use.insert(p);
                    return Some(p);
                }
            }
            // Every free port is resting: the longest-rested one.
            let p = self.resting.pop_front()?;
            self.in_use.insert(p);
            return Some(p);
        }
        for _ in 0..self.capacity() {
            let p = self.next;
            self.next = if p.saturating_add(2) > self.last.saturating_sub(1) {
                self.first
            } else {
                p + 2
            };
            if self.in_use.insert(p) {
                return Some(p);
            }
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        if self.in_use.remove(&port) && self.rng.is_some() {
            self.resting.push_back(port);
            if self.resting.len() > self.rest() {
                self.resting.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_even_round_robin_and_never_handed_out_twice() {
        let mut a = PortAllocator::new(40001..=40009).unwrap();
        assert_eq!(a.capacity(), 4);
        let got: Vec<u16> = (0..4).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, [40002, 40004, 40006, 40008]);
        assert_eq!(a.allocate(), None, "exhausted");
        a.release(40004);
        assert_eq!(a.allocate(), Some(40004));
        a.release(40002);
        a.release(40006);
        // Round-robin: the next in turn, not the lowest free one.
        assert_eq!(a.allocate(), Some(40006));
        assert_eq!(a.allocate(), Some(40002));
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn random_ports_are_even_in_range_unique_seeded_and_rest_after_release() {
        let make = |seed| {
            PortAllocator::new(40000..=40999)
                .unwrap()
                .random(SeededRng::new(seed))
        };
        let mut a = make(1);
        let got: Vec<u16> = (0..8).map(|_| a.allocate().unwrap()).collect();
        assert!(got
            .iter()
            .all(|p| p % 2 == 0 && (40000..=40998).contains(p)));
        let unique: BTreeSet<u16> = got.iter().copied().collect();
        assert_eq!(unique.len(), 8, "{got:?}");
        // Not the round-robin sequence: consecutive ports are not adjacent.
        assert!(got.windows(2).any(|w| w[1] != w[0] + 2), "{got:?}");
        // The same seed, the same ports; another seed, others.
        let mut b = make(1);
        assert_eq!(
            (0..8).map(|_| b.allocate().unwrap()).collect::<Vec<_>>(),
            got
        );
        let mut c = make(2);
        assert_ne!(
            (0..8).map(|_| c.allocate().unwrap()).collect::<Vec<_>>(),
            got
        );
        // A released port rests while others are free.
        let mut small = PortAllocator::new(40000..=40009)
            .unwrap()
            .random(SeededRng::new(3));
        let all: Vec<u16> = (0..5).map(|_| small.allocate().unwrap()).collect();
        assert_eq!(small.allocate(), None, "exhausted");
        small.release(all[0]);
        small.release(all[1]);
        // Both free ports rest (rest = 2): the longest-rested comes back.
        assert_eq!(small.allocate(), Some(all[0]));
        assert_eq!(small.allocate(), Some(all[1]));
        assert_eq!(small.in_use(), 5);
    }

    #[test]
    fn a_range_without_a_pair_is_refused() {
        assert!(PortAllocator::new(40000..=40000).is_err());
        assert!(PortAllocator::new(100..=200).is_err());
        assert_eq!(PortAllocator::new(40002..=40010).unwrap().capacity(), 4);
    }
}
