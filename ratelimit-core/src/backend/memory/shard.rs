//! One lock's worth of the memory store, with amortised expiry sweeping, and the store-wide
//! occupancy that bounds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::key_hash::{KeyHash, PassThrough};
use crate::algorithm::State;

/// A stored state and the instant after which it means nothing.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) expires_at: u64,
    pub(super) state: State,
}

/// How many states the whole store holds, against `max_keys`. Shared by the shards so the
/// bound holds for the store, not per shard (hashed keys never split evenly).
#[derive(Debug)]
pub(super) struct Occupancy {
    stored: AtomicUsize,
    max: usize,
}

impl Occupancy {
    pub(super) fn new(max: usize) -> Self {
        Self {
            stored: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    pub(super) fn stored(&self) -> usize {
        self.stored.load(Ordering::Relaxed)
    }

    fn is_full(&self) -> bool {
        self.stored() >= self.max
    }

    fn added(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Records what a `cleanup` sweep removed.
    pub(super) fn removed_by_sweep(&self, count: usize) {
        self.removed(count);
    }

    fn removed(&self, count: usize) {
        self.stored.fetch_sub(count, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub(super) struct Shard {
    entries: HashMap<KeyHash, Entry, PassThrough>,
    /// Writes since the last sweep; a sweep runs once this reaches the size the shard had after
    /// the last sweep (at least `MIN_SWEEP_INTERVAL`). The shard is then at most twice that
    /// size, so each write pays for at most two entries' worth of sweeping.
    writes_since_sweep: usize,
    len_after_sweep: usize,
}

/// Sweeping smaller shards than this on every few writes would cost more than it frees.
const MIN_SWEEP_INTERVAL: usize = 1_024;

impl Shard {
    /// The live entry at `now_ms` (an expired one reads as none), for an update in place.
    pub(super) fn live_mut(&mut self, key: KeyHash, now_ms: u64) -> Option<&mut Entry> {
        self.entries
            .get_mut(&key)
            .filter(|entry| entry.expires_at > now_ms)
    }

    /// The live state at `now_ms` (an expired state reads as none).
    pub(super) fn get(&self, key: KeyHash, now_ms: u64) -> Option<&State> {
        self.entries
            .get(&key)
            .filter(|entry| entry.expires_at > now_ms)
            .map(|entry| &entry.state)
    }

    /// Removes and returns the live state at `now_ms`.
    pub(super) fn take(
        &mut self,
        key: KeyHash,
        now_ms: u64,
        occupancy: &Occupancy,
    ) -> Option<State> {
        let entry = self.entries.remove(&key)?;
        occupancy.removed(1);
        (entry.expires_at > now_ms).then_some(entry.state)
    }

    pub(super) fn insert(
        &mut self,
        key: KeyHash,
        entry: Entry,
        now_ms: u64,
        occupancy: &Occupancy,
    ) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= self.len_after_sweep.max(MIN_SWEEP_INTERVAL) {
            occupancy.removed(self.sweep(now_ms));
        }
        if !self.entries.contains_key(&key) {
            if occupancy.is_full() {
                occupancy.removed(self.make_room(now_ms));
            }
            occupancy.added();
        }
        self.entries.insert(key, entry);
    }

    pub(super) fn remove(&mut self, key: KeyHash, occupancy: &Occupancy) {
        if self.entries.remove(&key).is_some() {
            occupancy.removed(1);
        }
    }

    /// Drops every expired entry; returns how many (the caller updates the occupancy).
    pub(super) fn sweep(&mut self, now_ms: u64) -> usize {
        self.writes_since_sweep = 0;
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.expires_at > now_ms);
        self.len_after_sweep = self.entries.len();
        before - self.entries.len()
    }

    /// The store is full: drop this shard's expired entries, or if there are none its
    /// soonest-to-expire eighth, so eviction runs once per many inserts rather than on each.
    /// Returns how many entries went.
    fn make_room(&mut self, now_ms: u64) -> usize {
        let swept = self.sweep(now_ms);
        if swept > 0 || self.entries.is_empty() {
            return swept;
        }
        let mut expiries: Vec<u64> = self
            .entries
            .values()
            .map(|entry| entry.expires_at)
            .collect();
        let evict = (expiries.len() / 8).max(1);
        let (_, threshold, _) = expiries.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        let mut evicted = 0;
        self.entries.retain(|_, entry| {
            let keep = entry.expires_at > threshold || evicted >= evict;
            if !keep {
                evicted += 1;
            }
            keep
        });
        self.len_after_sweep = self.entries.len();
        tracing::debug!(
            evicted,
            "memory backend full: evicted the soonest-to-expire keys"
        );
        evicted
    }
}
