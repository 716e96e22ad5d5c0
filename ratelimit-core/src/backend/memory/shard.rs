//! One lock's worth of the memory store: a table per slot layout.

use super::key_hash::KeyHash;
use super::slot::{CompactSlot, GeneralSlot, StateKind};
use super::table::{Record, Request, Store, Table};
use crate::algorithm::{CompactPolicy, Policy, Verdict};
use crate::rate::MAX_QUOTAS;

#[derive(Debug, Default)]
pub(super) struct Shard {
    /// Fixed windows and buckets.
    compact: Table<CompactSlot>,
    /// Sliding logs and counters.
    general: Table<GeneralSlot>,
}

impl Shard {
    /// The verdict of `policy`, quota number `quota_index` of `key`'s limit, recording the
    /// request as `record` says.
    #[inline]
    pub(super) fn apply(
        &mut self,
        key: KeyHash,
        quota_index: usize,
        policy: &Policy,
        request: Request,
        record: Record,
        store: Store<'_>,
    ) -> Verdict {
        let kind = StateKind::of(policy);
        let slot_key = key.slot_key(kind, quota_index);
        // The general table holds a compact kind's state only when the compact table could
        // not keep it exactly; it is empty otherwise, so this costs nothing on the hot path.
        if !kind.is_compact() || self.general.contains(slot_key) {
            let (verdict, _) = self.general.apply(slot_key, policy, request, record, store);
            return verdict;
        }
        let (verdict, spilled) = self.compact.apply(slot_key, policy, request, record, store);
        if let Some((state, expires_at)) = spilled {
            self.general
                .insert(slot_key, state, expires_at, request.now_ms, store);
        }
        verdict
    }

    /// The hot path of a single-quota check that records when allowed: a fixed window or
    /// bucket whose live state sits in the compact table. `None` when the general path of
    /// [`Shard::apply`] must decide.
    #[inline]
    pub(super) fn check_live(
        &mut self,
        key: KeyHash,
        policy: &CompactPolicy,
        request: Request,
        store: Store<'_>,
    ) -> Option<Verdict> {
        // A slot key lives in one table at a time (`apply` moves a spilled state out of the
        // compact table, and writes there only while the general table lacks the key), so a
        // compact slot found here is the key's state.
        self.compact
            .get_mut(key.slot_key(StateKind::of_compact(policy), 0))?
            .check_live(policy, request.now_ms, request.cost, store.epoch)
    }

    /// Forgets every state of `key`: every quota, every layout. Returns how many there were.
    pub(super) fn remove(&mut self, key: KeyHash) -> usize {
        let mut removed = 0;
        for kind in StateKind::ALL {
            for quota_index in 0..MAX_QUOTAS {
                let slot_key = key.slot_key(kind, quota_index);
                removed += usize::from(self.compact.remove(slot_key));
                removed += usize::from(self.general.remove(slot_key));
            }
        }
        removed
    }

    /// Drops every expired state; returns how many (the caller updates the occupancy).
    pub(super) fn sweep(&mut self, now_ms: u64, store: Store<'_>) -> usize {
        self.compact.sweep(now_ms, store.epoch) + self.general.sweep(now_ms, store.epoch)
    }
}
