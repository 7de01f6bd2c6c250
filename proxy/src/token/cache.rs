//! Two small bounded caches: verified tokens, and minted tokens for reuse.
//!
//! The verified cache is keyed by the SHA-256 of the whole compact token, never by signature
//! bytes: ECDSA signatures are malleable (`(r, s)` and `(r, n−s)` both verify, JWT-45 in
//! docs/security.md), so two distinct tokens may share claims, and one token may not be
//! found under another's signature. It stores what the peer-independent checks established, not
//! a decision: binding, audience and time are checked again on every hit.
//!
//! Both are a `HashMap` behind a mutex with an expiry per entry, checked on `get`. When full, an
//! insert first drops expired entries, then the half that expires soonest: O(n) once per n/2
//! inserts at worst, and never unbounded.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};

/// A bounded map whose entries expire.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    capacity: usize,
    entries: Mutex<HashMap<K, (V, u64)>>,
}

// === impl Bounded ===

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    /// An empty cache of at most `capacity` entries; 0 disables it.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entry for `key`, if it is still valid at `now` (seconds).
    pub(crate) fn get(&self, key: &K, now: u64) -> Option<V> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some((value, until)) if *until >= now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `value` under `key` until `until` (seconds, inclusive).
    pub(crate) fn insert(&self, key: K, value: V, until: u64, now: u64) {
        if self.capacity == 0 || until < now {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // Sized for good the first time the cache fills. The map reuses a dropped entry's
            // slot only once it rehashes, and rehashes in place only while at most half its
            // capacity is in use; sized for the cache alone, it fills with dropped slots and
            // doubles much later (22 minutes into a soak at 500 req/s), a step in RSS long
            // after warm-up. At twice the cache's size it never grows again.
            if entries.capacity() < self.capacity.saturating_mul(2) {
                entries.reserve(self.capacity);
            }
            entries.retain(|_, (_, expiry)| *expiry >= now);
            if entries.len() >= self.capacity {
                let mut expiries: Vec<u64> = entries.values().map(|(_, e)| *e).collect();
                let half = expiries.len() / 2;
                let (_, cutoff, _) = expiries.select_nth_unstable(half);
                let cutoff = *cutoff;
                entries.retain(|_, (_, expiry)| *expiry > cutoff);
            }
        }
        entries.insert(key, (value, until));
    }

    /// How many entries are held (expired ones included until touched).
    pub(crate) fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_served_until_its_expiry_and_dropped_after() {
        let cache = Bounded::<u8, &str>::new(4);
        cache.insert(1, "one", 100, 50);
        assert_eq!(cache.get(&1, 100), Some("one"));
        assert_eq!(cache.get(&1, 101), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_half() {
        let cache = Bounded::<u8, u8>::new(4);
        for k in 0..4 {
            cache.insert(k, k, 100 + u64::from(k), 0);
        }
        cache.insert(9, 9, 200, 0);
        assert!(cache.len() <= 4, "{}", cache.len());
        assert_eq!(cache.get(&9, 0), Some(9));
        assert_eq!(
            cache.get(&3, 0),
            Some(3),
            "the latest-expiring entry survives"
        );
        assert_eq!(cache.get(&0, 0), None, "the soonest-expiring entry went");
        cache.insert(10, 10, 300, 150);
        assert_eq!(cache.get(&10, 150), Some(10));
        assert!(cache.len() <= 4);
    }

    #[test]
    fn a_full_cache_takes_its_final_size_when_it_first_fills() {
        let cache = Bounded::<u32, u32>::new(64);
        for k in 0..64 {
            cache.insert(k, k, 100, 0);
        }
        cache.insert(64, 64, 100, 0);
        let sized = cache.entries.lock().unwrap().capacity();
        assert!(sized >= 128, "{sized}");
        // Churn of expired and new entries never resizes it again.
        for round in 1..50u64 {
            for k in 0..64u32 {
                cache.insert(
                    k + 64 * u32::try_from(round).unwrap(),
                    k,
                    100 + round,
                    round + 99,
                );
            }
        }
        assert_eq!(cache.entries.lock().unwrap().capacity(), sized);
    }

    #[test]
    fn a_cache_of_capacity_zero_holds_nothing() {
        let cache = Bounded::<u8, u8>::new(0);
        cache.insert(1, 1, 100, 0);
        assert_eq!(cache.get(&1, 0), None);
    }

    #[test]
    fn an_entry_already_expired_is_not_stored() {
        let cache = Bounded::<u8, u8>::new(2);
        cache.insert(1, 1, 10, 11);
        assert_eq!(cache.len(), 0);
    }
}
