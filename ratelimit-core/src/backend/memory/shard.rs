//! One lock's worth of the memory store: a table per slot layout, and the policies whose
//! states it holds.

use hashbrown::HashTable;

use super::key_hash::KeyHash;
use super::slot::{CompactSlot, GeneralSlot, StateKind};
use super::table::{Record, Request, Store, Table};
use crate::algorithm::{CompactPolicy, Policy, PolicyId, Verdict};

/// How many distinct policies a shard remembers for [`Shard::remove`]. A program has one per
/// limit (and per tier of a per-request rate); past this many, the states of further policies
/// are still kept and expire on their own, but a reset no longer finds them.
const MAX_KNOWN_POLICIES: usize = 4_096;

#[derive(Debug, Default)]
pub(super) struct Shard {
    /// Fixed windows and buckets.
    compact: Table<CompactSlot>,
    /// Sliding logs and counters.
    general: Table<GeneralSlot>,
    /// Every policy that has stored a state here: a slot's key is a digest of the user key and
    /// the policy, so a reset of one user key looks up its slot under each of these.
    known_policies: KnownPolicies,
}

impl Shard {
    /// The verdict of `policy` (whose id is `policy_id`) on `key`'s state, recording the
    /// request as `record` says.
    #[inline]
    pub(super) fn apply(
        &mut self,
        key: KeyHash,
        policy_id: PolicyId,
        policy: &Policy,
        request: Request,
        record: Record,
        store: Store<'_>,
    ) -> Verdict {
        if record != Record::Nothing {
            self.known_policies.insert(policy_id);
        }
        let kind = StateKind::of(policy);
        let slot_key = key.slot_key(policy_id);
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
        policy_id: PolicyId,
        policy: &CompactPolicy,
        request: Request,
        store: Store<'_>,
    ) -> Option<Verdict> {
        // A slot key lives in one table at a time (`apply` moves a spilled state out of the
        // compact table, and writes there only while the general table lacks the key), so a
        // compact slot found here is the key's state.
        self.compact.get_mut(key.slot_key(policy_id))?.check_live(
            policy,
            request.now_ms,
            request.cost,
            store.epoch,
        )
    }

    /// Forgets every state of `key`: every policy, every layout. Returns how many there were.
    pub(super) fn remove(&mut self, key: KeyHash) -> usize {
        let mut removed = 0;
        for policy_id in self.known_policies.iter() {
            let slot_key = key.slot_key(policy_id);
            removed += usize::from(self.compact.remove(slot_key));
            removed += usize::from(self.general.remove(slot_key));
        }
        removed
    }

    /// Drops every expired state; returns how many (the caller updates the occupancy).
    pub(super) fn sweep(&mut self, now_ms: u64, store: Store<'_>) -> usize {
        self.compact.sweep(now_ms, store.epoch) + self.general.sweep(now_ms, store.epoch)
    }
}

/// A set of policy ids, hashed by the id itself (ids are already spread over 64 bits).
#[derive(Debug, Default)]
struct KnownPolicies {
    ids: HashTable<PolicyId>,
    /// Whether the set was full when a new id came, so the warning is logged once.
    overflowed: bool,
}

impl KnownPolicies {
    #[inline]
    fn insert(&mut self, id: PolicyId) {
        if self.ids.find(id.get(), |known| *known == id).is_some() {
            return;
        }
        if self.ids.len() >= MAX_KNOWN_POLICIES {
            if !self.overflowed {
                self.overflowed = true;
                tracing::warn!(
                    max = MAX_KNOWN_POLICIES,
                    "memory backend: more distinct limits than a reset can find; \
                     states of the further ones expire on their own"
                );
            }
            return;
        }
        self.ids.insert_unique(id.get(), id, |known| known.get());
    }

    fn iter(&self) -> impl Iterator<Item = PolicyId> + '_ {
        self.ids.iter().copied()
    }
}
