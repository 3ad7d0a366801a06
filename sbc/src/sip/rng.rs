//! Seeded randomness for protocol identifiers (RFC 3261 §8.1.1.4 Call-ID,
//! §19.3 tags, §8.1.1.7 branches) and media (SSRC, SRTP keys).
//!
//! A world has one seed; each host draws from its own stream, derived from
//! the seed and the host's name with a stable hash, so that adding a host
//! does not change what the others draw.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(ChaCha8Rng::seed_from_u64(seed))
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

    pub fn call_id(&mut self, host: &str) -> String {
        format!("{}@{}", self.hex(24), host)
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
}
