//! One lock's worth of the memory store, with amortised expiry sweeping and bounded size.

use std::collections::HashMap;

use super::key_hash::{KeyHash, PassThrough};
use crate::algorithm::State;

/// A stored state and the instant after which it means nothing.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) expires_at: u64,
    pub(super) state: State,
}

#[derive(Debug)]
pub(super) struct Shard {
    entries: HashMap<KeyHash, Entry, PassThrough>,
    /// Writes since the last sweep; a sweep runs once this reaches the size the shard had after
    /// the last sweep (at least `MIN_SWEEP_INTERVAL`). The shard is then at most twice that
    /// size, so each write pays for at most two entries' worth of sweeping.
    writes_since_sweep: usize,
    len_after_sweep: usize,
    max_entries: usize,
}

/// Sweeping smaller shards than this on every few writes would cost more than it frees.
const MIN_SWEEP_INTERVAL: usize = 1_024;

impl Shard {
    pub(super) fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::with_hasher(PassThrough),
            writes_since_sweep: 0,
            len_after_sweep: 0,
            max_entries: max_entries.max(1),
        }
    }

    /// The live state at `now_ms` (an expired state reads as none).
    pub(super) fn get(&self, key: KeyHash, now_ms: u64) -> Option<&State> {
        self.entries
            .get(&key)
            .filter(|entry| entry.expires_at > now_ms)
            .map(|entry| &entry.state)
    }

    /// Removes and returns the live state at `now_ms`.
    pub(super) fn take(&mut self, key: KeyHash, now_ms: u64) -> Option<State> {
        self.entries
            .remove(&key)
            .filter(|entry| entry.expires_at > now_ms)
            .map(|entry| entry.state)
    }

    pub(super) fn insert(&mut self, key: KeyHash, entry: Entry, now_ms: u64) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep >= self.len_after_sweep.max(MIN_SWEEP_INTERVAL) {
            self.sweep(now_ms);
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.make_room(now_ms);
        }
        self.entries.insert(key, entry);
    }

    pub(super) fn remove(&mut self, key: KeyHash) -> bool {
        self.entries.remove(&key).is_some()
    }

    /// Drops every expired entry; returns how many.
    pub(super) fn sweep(&mut self, now_ms: u64) -> u64 {
        self.writes_since_sweep = 0;
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.expires_at > now_ms);
        self.len_after_sweep = self.entries.len();
        (before - self.entries.len()) as u64
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The shard is full: drop expired entries first, then the soonest-to-expire eighth, so
    /// eviction runs once per many inserts rather than on each.
    fn make_room(&mut self, now_ms: u64) {
        self.sweep(now_ms);
        if self.entries.len() < self.max_entries {
            return;
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
        tracing::debug!(
            evicted,
            "memory backend shard full: evicted the soonest-to-expire keys"
        );
    }
}
