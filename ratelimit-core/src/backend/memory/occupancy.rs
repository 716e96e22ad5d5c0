//! The store-wide count of stored states, against `max_keys`. Shared by the shards so the
//! bound holds for the store, not per shard (hashed keys never split evenly).

use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// The bound: `max_keys`.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    pub(super) fn is_full(&self) -> bool {
        self.stored() >= self.max
    }

    pub(super) fn added(&self) {
        self.stored.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn removed(&self, count: usize) {
        if count > 0 {
            self.stored.fetch_sub(count, Ordering::Relaxed);
        }
    }
}
