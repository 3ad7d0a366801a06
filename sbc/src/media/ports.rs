//! Media ports from a configured range: an RTP port is even and its RTCP
//! neighbour (port + 1) is kept free with it (RFC 3550 §11). Ports are
//! handed out round-robin, so a port just released (whose socket may not
//! be closed yet) is the last to come back, and never while in use.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::RangeInclusive;

#[derive(Debug, Clone)]
pub struct PortAllocator {
    first: u16,
    last: u16,
    next: u16,
    in_use: BTreeSet<u16>,
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
        })
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
        self.in_use.remove(&port);
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
    fn a_range_without_a_pair_is_refused() {
        assert!(PortAllocator::new(40000..=40000).is_err());
        assert!(PortAllocator::new(100..=200).is_err());
        assert_eq!(PortAllocator::new(40002..=40010).unwrap().capacity(), 4);
    }
}
