//! One lock's worth of the memory store: a table per slot layout, the policies whose states
//! it holds, and eviction when the store is full.

use hashbrown::HashTable;

use super::key_hash::KeyHash;
use super::slot::{CompactSlot, EvictionRank, GeneralSlot, Slot, StateKind, Written};
use super::table::{Record, Request, Store, Table};
use crate::algorithm::{Policy, PolicyId, Verdict};
use crate::limit::Resolved;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};

/// Evictions go on while the store is full, one line per interval says so.
static EVICTING: LogThrottle = LogThrottle::new(LOG_INTERVAL);

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
        let kind = StateKind::of(policy);
        let slot_key = key.slot_key(policy_id);
        // The general table holds a compact kind's state only when the compact table could
        // not keep it exactly; it is empty otherwise, so this costs nothing on the hot path.
        let (verdict, to_insert) = if !kind.is_compact() || self.general.contains(slot_key) {
            self.general.apply(slot_key, policy, request, record, store)
        } else {
            self.compact.apply(slot_key, policy, request, record, store)
        };
        if let Some(written) = to_insert {
            // Only a new slot can make a policy known: an existing one was inserted here.
            self.known_policies.insert(policy_id);
            self.insert(slot_key, kind, written, request.now_ms, store);
        }
        verdict
    }

    /// Stores a state for a key that neither table holds, in the compact table if it can keep
    /// it exactly, making room first if the store is full.
    fn insert(
        &mut self,
        slot_key: u64,
        kind: StateKind,
        written: Written,
        now_ms: u64,
        store: Store<'_>,
    ) {
        if store.occupancy.is_full() {
            self.make_room(now_ms, store);
        }
        if kind.is_compact() && CompactSlot::holds(&written.state, now_ms) {
            self.compact.insert(slot_key, written, now_ms, store);
        } else {
            self.general.insert(slot_key, written, now_ms, store);
        }
    }

    /// The store is full: drop this shard's expired states, or if there are none the eighth of
    /// its states whose loss changes least ([`EvictionRank`]: most headroom left, then soonest
    /// expiry), so eviction runs once per many inserts rather than on each. A key at its limit
    /// goes only after every fresher one of its shard.
    fn make_room(&mut self, now_ms: u64, store: Store<'_>) {
        let swept = self.sweep(now_ms, store);
        store.occupancy.removed(swept);
        if swept > 0 {
            return;
        }
        let mut ranks: Vec<EvictionRank> = self
            .compact
            .eviction_ranks(store.epoch)
            .chain(self.general.eviction_ranks(store.epoch))
            .collect();
        if ranks.is_empty() {
            return;
        }
        let evict = (ranks.len() / 8).max(1);
        let (_, threshold, _) = ranks.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        // Every slot ranked below the threshold goes, and as many ranked at it as make up the
        // count, whichever comes first in the tables.
        let below = ranks.iter().filter(|rank| **rank < threshold).count();
        let mut at_threshold = evict - below;
        let evicted = self
            .compact
            .evict(threshold, &mut at_threshold, store.epoch)
            + self
                .general
                .evict(threshold, &mut at_threshold, store.epoch);
        store.occupancy.removed(evicted);
        crate::metrics::record_memory_evictions(evicted);
        if let Some(suppressed) = EVICTING.admit(&"memory backend full") {
            tracing::warn!(
                evicted,
                max_keys = store.occupancy.max(),
                suppressed,
                "memory backend full: evicted live state, the keys furthest from their limits \
                 first; raise max_keys above the number of live keys"
            );
        }
    }

    /// The hot path of a single-quota check that records when allowed: the quota's live state,
    /// decided and written in its slot in one probe (a fixed window or bucket on its two
    /// integers). `None` when the general path of [`Shard::apply`] must decide: a new key, a
    /// state no longer live, or several quotas.
    #[inline]
    pub(super) fn check_live(
        &mut self,
        key: KeyHash,
        resolved: &Resolved,
        request: Request,
        store: Store<'_>,
    ) -> Option<Verdict> {
        let ([policy], [policy_id]) = (resolved.policies(), resolved.ids()) else {
            return None;
        };
        let slot_key = key.slot_key(*policy_id);
        let Request { now_ms, cost } = request;
        // A slot key lives in one table at a time (`apply` moves a spilled state out of the
        // compact table, and writes there only while the general table lacks the key), so a
        // slot found here is the key's state.
        match resolved.single_compact() {
            Some(compact) => {
                self.compact
                    .get_mut(slot_key)?
                    .check_live(compact, now_ms, cost, store.epoch)
            }
            None => self
                .general
                .get_mut(slot_key)?
                .check_live(policy, now_ms, cost),
        }
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

    /// Drops every expired state of both tables; returns how many (the caller updates the
    /// occupancy).
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
