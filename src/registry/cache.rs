//! A map bounded in entries that forgets the one used longest ago.
//!
//! The resolver keeps three of them (tags, contents, authorizations), each
//! behind its own lock and never held across a wait. Eviction scans for
//! the oldest use: the maps hold at most a few thousand entries and are
//! written only when a registry was asked, so a scan is cheaper than the
//! request that caused it, and simpler than a linked order.

use std::collections::HashMap;
use std::hash::Hash;

pub struct Bounded<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// A map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Bounded<K, V> {
        Bounded {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            &*value
        })
    }

    /// Sets `key`, forgetting the entry used longest ago if the map is
    /// full.
    pub fn insert(&mut self, key: K, value: V) {
        self.clock += 1;
        if !self.entries.contains_key(&key)
            && self.entries.len() >= self.capacity
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, (value, self.clock));
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_forgets_the_entry_used_longest_ago() {
        let mut map = Bounded::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.get(&"a"), Some(&1));
        map.insert("c", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&"b"), None, "b was used longest ago");
        assert_eq!(map.get(&"a"), Some(&1));
        assert_eq!(map.get(&"c"), Some(&3));
        map.insert("c", 4);
        assert_eq!(map.len(), 2, "replacing a key forgets nothing");
        assert_eq!(map.get(&"c"), Some(&4));
    }
}
