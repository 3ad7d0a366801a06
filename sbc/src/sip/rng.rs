//! Seeded randomness for protocol identifiers (RFC 3261 §8.1.1.4 Call-ID,
//! §19.3 tags, §8.1.1.7 branches) and media (SSRC, SRTP keys).
//!
//! A world has one seed; each host draws from its own stream, derived from
//! the seed and the host's name with a stable hash, so that adding a host
//! does not change what the others draw.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct SeededRng(ChaCha8Rng, Shard);

/// Which of `count` SIP cores this stream draws for: the Call-IDs (and
/// other routing tokens) it makes are ones [`shard_of`] sends back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The only core: every identifier is its own.
    pub const ONE: Shard = Shard { index: 0, count: 1 };

    /// Whether an identifier routed by `key` comes to this core.
    pub fn owns(self, key: &str) -> bool {
        shard_of(key, self.count) == self.index
    }
}

/// The core (of `count`) that messages keyed by `key` (a Call-ID, or a
/// token of ours in a Request-URI) belong to: FNV-1a of the key, so the
/// dispatcher and the core that made the key agree without asking.
pub fn shard_of(key: &str, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    (fnv1a(key.as_bytes()) % count as u64) as usize
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(ChaCha8Rng::seed_from_u64(seed), Shard::ONE)
    }

    /// This stream, drawing identifiers for core `shard`.
    pub fn for_shard(mut self, shard: Shard) -> Self {
        self.1 = shard;
        self
    }

    /// The stream for host `name` in a world seeded with `seed`.
    pub fn for_host(seed: u64, name: &str) -> Self {
        Self::new(seed ^ fnv1a(name.as_bytes()))
    }

    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf)
    }

    /// `len` lowercase hex digits.
    pub fn hex(&mut self, len: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| HEX[(self.0.next_u32() & 15) as usize] as char)
            .collect()
    }

    /// A new branch with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        format!("{}{}", crate::sip::wire::BRANCH_COOKIE, self.hex(16))
    }

    pub fn tag(&mut self) -> String {
        self.hex(10)
    }

    /// A new Call-ID `<hex>@<host>` that this stream's core owns (drawn
    /// again until it is: `count` draws on average; with one core, the
    /// first, so a single core draws exactly what it always did).
    pub fn call_id(&mut self, host: &str) -> String {
        loop {
            let id = format!("{}@{}", self.hex(24), host);
            if self.1.owns(&id) {
                return id;
            }
        }
    }

    /// `prefix` and `len` hex digits, a token this stream's core owns (a
    /// user part of ours that a peer will send a new request to).
    pub fn owned_token(&mut self, prefix: &str, len: usize) -> String {
        loop {
            let token = format!("{prefix}{}", self.hex(len));
            if self.1.owns(&token) {
                return token;
            }
        }
    }
}

/// A seed nobody can predict, for the real-socket binaries when their
/// configuration pins none (simulated worlds always take theirs from the
/// scenario). The OS-keyed std hasher avoids another dependency.
pub fn unpredictable_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// FNV-1a, 64-bit: stable across platforms and Rust versions (std's hasher is not promised to be).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_host_draw_the_same() {
        let mut a = SeededRng::for_host(42, "sbc.example.com");
        let mut b = SeededRng::for_host(42, "sbc.example.com");
        assert_eq!(a.branch(), b.branch());
        let mut c = SeededRng::for_host(42, "sip.pstnhub.microsoft.com");
        assert_ne!(a.hex(16), c.hex(16));
        assert!(a.branch().starts_with("z9hG4bK"));
    }

    #[test]
    fn a_core_draws_only_call_ids_it_owns() {
        for count in 2..5 {
            for index in 0..count {
                let shard = Shard { index, count };
                let mut rng = SeededRng::new(7).for_shard(shard);
                for _ in 0..50 {
                    let id = rng.call_id("sbc.example.com");
                    assert_eq!(shard_of(&id, count), index, "{id}");
                    let token = rng.owned_token("xfer-", 16);
                    assert!(token.starts_with("xfer-"));
                    assert_eq!(shard_of(&token, count), index, "{token}");
                }
            }
        }
    }

    #[test]
    fn one_core_draws_what_it_always_did() {
        // The first draw, unconditionally: a single core's traces do not
        // move with sharding built in.
        let mut plain = SeededRng::new(9);
        let mut one = SeededRng::new(9).for_shard(Shard::ONE);
        let expected = format!("{}@h", plain.hex(24));
        assert_eq!(one.call_id("h"), expected);
        assert_eq!(one.hex(8), plain.hex(8));
    }

    #[test]
    fn foreign_call_ids_spread_over_the_cores() {
        // Call-IDs from a peer (SIPp's `<n>-<pid>@<ip>` style): the cores
        // share them evenly, within 10 % of a fair share over 4,000.
        let mut per = [0usize; 4];
        for n in 0..4000 {
            per[shard_of(&format!("{n}-4242@127.0.3.1"), 4)] += 1;
        }
        for c in per {
            assert!((900..=1100).contains(&c), "{per:?}");
        }
    }
}
