//! A role's calls (or any items with timers), their next timers in
//! deadline order, and how many carry a flag the role counts.
//!
//! The driver asks a role for its earliest timer after every turn, and
//! under load a turn is one message: a scan of every call held for it was
//! 14 % of the sbc's CPU at 400 calls/s and 21 % of teams-sim's at 600
//! (docs/benchmarks.md). A call's timers are its own fields, set in many
//! places, so those places cannot keep the index. Every mutable access
//! goes through [`TimedMap`] instead, which notes the item as touched; the
//! index takes the touched items' timers again before it is read. The map
//! is private, so no mutable path escapes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What [`TimedMap`] indexes of an item.
pub trait Timed {
    /// The item's earliest timer.
    fn wake(&self) -> Option<Instant>;
    /// A state the owner counts often (the B2BUA: a call in setup).
    fn flagged(&self) -> bool {
        false
    }
}

pub struct TimedMap<K, V> {
    /// Boxed: a call is a large struct, and a B-tree node holds eleven
    /// values inline, moving them on every insert and remove.
    map: BTreeMap<K, Box<V>>,
    index: RefCell<Index<K>>,
}

impl<K, V> Default for TimedMap<K, V> {
    fn default() -> Self {
        TimedMap {
            map: BTreeMap::new(),
            index: RefCell::new(Index {
                touched: Vec::new(),
                wake_of: BTreeMap::new(),
                by_wake: BTreeSet::new(),
                flagged: BTreeSet::new(),
            }),
        }
    }
}

struct Index<K> {
    /// Items handed out mutably since the index last read them.
    touched: Vec<K>,
    wake_of: BTreeMap<K, Instant>,
    by_wake: BTreeSet<(Instant, K)>,
    flagged: BTreeSet<K>,
}

impl<K: Ord + Copy> Index<K> {
    fn set<V: Timed>(&mut self, id: K, item: Option<&V>) {
        if let Some(old) = self.wake_of.remove(&id) {
            self.by_wake.remove(&(old, id));
        }
        if let Some(w) = item.and_then(V::wake) {
            self.wake_of.insert(id, w);
            self.by_wake.insert((w, id));
        }
        if item.is_some_and(V::flagged) {
            self.flagged.insert(id);
        } else {
            self.flagged.remove(&id);
        }
    }

    /// Take the touched items' timers again.
    fn refresh<V: Timed>(&mut self, map: &BTreeMap<K, Box<V>>) {
        for id in std::mem::take(&mut self.touched) {
            self.set(id, map.get(&id).map(|v| &**v));
        }
    }
}

impl<K: Ord + Copy + std::fmt::Debug, V: Timed> TimedMap<K, V> {
    pub fn get(&self, id: &K) -> Option<&V> {
        self.map.get(id).map(|v| &**v)
    }

    pub fn get_mut(&mut self, id: &K) -> Option<&mut V> {
        let item = self.map.get_mut(id)?;
        self.index.get_mut().touched.push(*id);
        Some(&mut **item)
    }

    pub fn insert(&mut self, id: K, item: V) -> Option<V> {
        self.index.get_mut().touched.push(id);
        self.map.insert(id, Box::new(item)).map(|v| *v)
    }

    pub fn remove(&mut self, id: &K) -> Option<V> {
        let item = self.map.remove(id)?;
        self.index.get_mut().set::<V>(*id, None);
        Some(*item)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|v| &**v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, v)| (k, &**v))
    }

    /// How many items are flagged (see [`Timed::flagged`]).
    pub fn flagged(&self) -> usize {
        let mut index = self.index.borrow_mut();
        index.refresh(&self.map);
        let n = index.flagged.len();
        debug_assert_eq!(
            n,
            self.map.values().filter(|v| v.flagged()).count(),
            "the flag index missed a change"
        );
        n
    }

    /// The earliest timer of any item.
    pub fn next_wake(&self) -> Option<Instant> {
        let mut index = self.index.borrow_mut();
        index.refresh(&self.map);
        let next = index.by_wake.first().map(|(t, _)| *t);
        // Debug builds (every test) check the index against a full scan.
        debug_assert_eq!(
            next,
            self.map.values().filter_map(|v| v.wake()).min(),
            "the timer index missed a change"
        );
        next
    }

    /// The items with a timer at or before `now`, in key order.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let index = self.index.get_mut();
        index.refresh(&self.map);
        let mut ids: Vec<K> = (index.by_wake.iter())
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        #[cfg(debug_assertions)]
        {
            let scan: Vec<K> = (self.map.iter())
                .filter(|(_, v)| v.wake().is_some_and(|t| t <= now))
                .map(|(id, _)| *id)
                .collect();
            debug_assert_eq!(ids, scan, "the timer index missed a change");
        }
        ids
    }
}

/// `map[&id]` for an item known to be held (panics otherwise, as a map's).
impl<K: Ord, V> std::ops::Index<&K> for TimedMap<K, V> {
    type Output = V;

    fn index(&self, id: &K) -> &V {
        &self.map[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Item(Option<Instant>, bool);

    impl Timed for Item {
        fn wake(&self) -> Option<Instant> {
            self.0
        }
        fn flagged(&self) -> bool {
            self.1
        }
    }

    /// Changes made through `get_mut` and `insert` reach the index; what is
    /// removed leaves it; due items come in key order.
    #[test]
    #[allow(clippy::disallowed_methods)] // a fake clock's origin
    fn the_index_follows_every_change() {
        let t0 = Instant::now();
        let at = |ms: u64| Some(t0 + Duration::from_millis(ms));
        let mut m: TimedMap<u64, Item> = TimedMap::default();
        m.insert(3, Item(at(30), true));
        m.insert(1, Item(at(10), false));
        m.insert(2, Item(None, true));
        assert_eq!(m.next_wake(), at(10));
        assert_eq!(m.flagged(), 2);
        m.get_mut(&1).unwrap().0 = at(40);
        m.get_mut(&2).unwrap().1 = false;
        assert_eq!(m.next_wake(), at(30));
        assert_eq!(m.flagged(), 1);
        m.get_mut(&2).unwrap().0 = at(5);
        assert_eq!(m.due(t0 + Duration::from_millis(35)), [2, 3]);
        m.remove(&2);
        m.remove(&3);
        assert_eq!((m.next_wake(), m.flagged(), m.len()), (at(40), 0, 1));
    }
}
