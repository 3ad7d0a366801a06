//! The SIP core, bottom up: [`wire`] (messages and framing), [`sdp`],
//! [`transport`] (UDP/TCP/TLS over a network trait, with a trace tap),
//! [`transaction`] (RFC 3261 §17 state machines), [`endpoint`]
//! (transactions matched per host), [`dialog`] and [`session`] (INVITE
//! sessions, RFC 3261 §12–15), and [`ua`], the sans-IO core a role drives.
//! Names are resolved once into a [`routing`] table.

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod rng;
pub mod routing;
pub mod sdp;
pub mod session;
pub mod transaction;
pub mod transport;
pub mod ua;
pub mod wire;

use std::collections::VecDeque;

/// Pop the front of a queue that a sans-IO object hands out through its
/// `poll_*` methods, and give the buffer back once the queue is empty.
/// Transactions and sessions linger up to 32 s after their last message
/// (RFC 3261 Timers J/K/L/M), and a queue keeps the capacity of its
/// busiest moment: under load that was ~12 % of the sbc's heap (massif,
/// issue 15). An empty `VecDeque` holds no allocation.
pub(crate) fn pop_or_free<T>(queue: &mut VecDeque<T>) -> Option<T> {
    let item = queue.pop_front();
    if item.is_none() && queue.capacity() > 0 {
        *queue = VecDeque::new();
    }
    item
}

#[cfg(test)]
mod tests {
    use super::pop_or_free;
    use std::collections::VecDeque;

    #[test]
    fn a_drained_queue_gives_its_buffer_back_and_keeps_its_order() {
        let mut q: VecDeque<u32> = (1..=5).collect();
        assert!(q.capacity() >= 5);
        let got: Vec<u32> = std::iter::from_fn(|| pop_or_free(&mut q)).collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
        assert_eq!(q.capacity(), 0, "the emptied queue still holds its buffer");
        q.push_back(6);
        assert_eq!(pop_or_free(&mut q), Some(6));
    }
}
