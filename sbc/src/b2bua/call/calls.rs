//! The calls the B2BUA holds, their next timers in deadline order, and
//! which of them are in setup.
//!
//! The driver asks for the earliest timer after every turn, and under load
//! a turn is one message: a scan of every call held for it was 14 % of the
//! sbc's CPU at 400 calls/s (docs/benchmarks.md); admission counted the
//! calls in setup by a scan for each new INVITE. A call's timers are its
//! own fields, set in many places, so the index cannot be kept by those
//! places. Every mutable access goes through [`Calls`] instead, which notes
//! the call as touched; the index takes the touched calls' timers again
//! before it is read. The map is private, so no mutable path escapes.

use super::Call;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

#[derive(Default)]
pub(crate) struct Calls {
    map: BTreeMap<u64, Call>,
    index: RefCell<Index>,
}

#[derive(Default)]
struct Index {
    /// Calls handed out mutably since the index last read them.
    touched: Vec<u64>,
    wake_of: BTreeMap<u64, Instant>,
    by_wake: BTreeSet<(Instant, u64)>,
    in_setup: BTreeSet<u64>,
}

impl Index {
    fn set(&mut self, id: u64, call: Option<&Call>) {
        if let Some(old) = self.wake_of.remove(&id) {
            self.by_wake.remove(&(old, id));
        }
        if let Some(w) = call.and_then(Call::wake) {
            self.wake_of.insert(id, w);
            self.by_wake.insert((w, id));
        }
        if call.is_some_and(Call::in_setup) {
            self.in_setup.insert(id);
        } else {
            self.in_setup.remove(&id);
        }
    }

    /// Take the touched calls' timers again.
    fn refresh(&mut self, map: &BTreeMap<u64, Call>) {
        for id in std::mem::take(&mut self.touched) {
            self.set(id, map.get(&id));
        }
    }
}

impl Calls {
    pub(crate) fn get(&self, id: &u64) -> Option<&Call> {
        self.map.get(id)
    }

    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut Call> {
        let call = self.map.get_mut(id)?;
        self.index.get_mut().touched.push(*id);
        Some(call)
    }

    pub(crate) fn insert(&mut self, id: u64, call: Call) {
        self.index.get_mut().touched.push(id);
        self.map.insert(id, call);
    }

    pub(crate) fn remove(&mut self, id: &u64) -> Option<Call> {
        let call = self.map.remove(id)?;
        self.index.get_mut().set(*id, None);
        Some(call)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Call> {
        self.map.values()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &Call)> {
        self.map.iter()
    }

    /// How many calls are in setup (see [`Call::in_setup`]).
    pub(crate) fn in_setup(&self) -> usize {
        let mut index = self.index.borrow_mut();
        index.refresh(&self.map);
        let n = index.in_setup.len();
        debug_assert_eq!(
            n,
            self.map.values().filter(|c| c.in_setup()).count(),
            "the in-setup index missed a change"
        );
        n
    }

    /// The earliest timer of any call.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let mut index = self.index.borrow_mut();
        index.refresh(&self.map);
        let next = index.by_wake.first().map(|(t, _)| *t);
        // Debug builds (every test) check the index against a full scan.
        debug_assert_eq!(
            next,
            self.map.values().filter_map(Call::wake).min(),
            "the call timer index missed a change"
        );
        next
    }

    /// The calls with a timer at or before `now`, in id order.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<u64> {
        let index = self.index.get_mut();
        index.refresh(&self.map);
        let mut ids: Vec<u64> = index
            .by_wake
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        #[cfg(debug_assertions)]
        {
            let scan: Vec<u64> = (self.map.iter())
                .filter(|(_, c)| c.wake().is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            debug_assert_eq!(ids, scan, "the call timer index missed a change");
        }
        ids
    }
}

/// `calls[&id]` for a call known to be held (panics otherwise, as a map's).
impl std::ops::Index<&u64> for Calls {
    type Output = Call;

    fn index(&self, id: &u64) -> &Call {
        &self.map[id]
    }
}
