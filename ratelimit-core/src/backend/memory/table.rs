//! One layout's hash table within a shard: a quota decided in one probe, amortised expiry
//! sweeping, and the eviction of slots its shard chose.

use hashbrown::HashTable;

use super::occupancy::Occupancy;
use super::pressure::Pressure;
use super::slot::{Epoch, EvictionRank, Slot, Written};
use crate::algorithm::{Policy, State, Verdict};

/// What a call does with the state once it has a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Record {
    /// Nothing (a peek, or the first pass over a compound rate).
    Nothing,
    /// The request, if this quota's own verdict allows it (a single-quota check).
    IfAllowed,
    /// The request, if the limit as a whole decided `allowed` (a compound rate's second pass).
    Decided { allowed: bool },
}

/// One request against one quota: when, and how much.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    pub(super) now_ms: u64,
    pub(super) cost: u64,
}

/// A state for a key this table does not hold (any more), for the shard to insert: a new key,
/// or a state this layout cannot keep exactly (see [`Slot::holds`]).
pub(super) type ToInsert = Option<Written>;

/// What every call on a table needs from the store around it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Store<'a> {
    pub(super) occupancy: &'a Occupancy,
    pub(super) epoch: Epoch,
}

pub(super) struct Table<S> {
    slots: HashTable<S>,
    /// New keys since the last sweep; a sweep runs once this reaches the size the table had
    /// after the last sweep (at least `MIN_SWEEP_INTERVAL`). The table is then at most twice
    /// that size, so each new key pays for at most two slots' worth of sweeping.
    inserts_since_sweep: usize,
    len_after_sweep: usize,
}

impl<S> std::fmt::Debug for Table<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            slots: HashTable::new(),
            inserts_since_sweep: 0,
            len_after_sweep: 0,
        }
    }
}

/// Sweeping smaller tables than this on every few inserts would cost more than it frees.
const MIN_SWEEP_INTERVAL: usize = 1_024;

impl<S: Slot> Table<S> {
    /// The verdict of `policy` on a request of `cost` for the state at `key`, recording it as
    /// `record` says: one probe, the slot updated in place. A state for a key the table does
    /// not hold, or one it cannot hold exactly (its old slot then removed), is handed back for
    /// the shard to insert, so that the shard can make room first.
    #[inline]
    pub(super) fn apply(
        &mut self,
        key: u64,
        policy: &Policy,
        request: Request,
        record: Record,
        store: Store<'_>,
    ) -> (Verdict, ToInsert) {
        let Request { now_ms, cost } = request;
        if let Some(slot) = self.slots.find_mut(key, |slot| slot.key() == key) {
            let current = slot.take_live(policy, now_ms);
            let verdict = policy.evaluate(current.as_ref(), now_ms, cost);
            match next_state(policy, record, &verdict, current, now_ms, cost) {
                Next::Write(written) if S::holds(&written.state, now_ms) => {
                    slot.store(written, store.epoch);
                }
                Next::Write(written) => {
                    self.remove(key);
                    store.occupancy.removed(1);
                    return (verdict, Some(written));
                }
                Next::Keep(Some(state)) => slot.restore(state),
                Next::Keep(None) => {}
            }
            return (verdict, None);
        }
        let verdict = policy.evaluate(None, now_ms, cost);
        match next_state(policy, record, &verdict, None, now_ms, cost) {
            Next::Write(written) => (verdict, Some(written)),
            Next::Keep(_) => (verdict, None),
        }
    }

    /// The slot stored at `key`, if any.
    #[inline]
    pub(super) fn get_mut(&mut self, key: u64) -> Option<&mut S> {
        self.slots.find_mut(key, |slot| slot.key() == key)
    }

    /// Whether a state is stored at `key`.
    pub(super) fn contains(&self, key: u64) -> bool {
        !self.slots.is_empty() && self.slots.find(key, |slot| slot.key() == key).is_some()
    }

    /// Stores a state for a key the table does not hold yet; the shard made room for it if the
    /// store was full. Sweeps the table first once enough keys came since its last sweep.
    pub(super) fn insert(&mut self, key: u64, written: Written, now_ms: u64, store: Store<'_>) {
        let slot = S::new(key, written, store.epoch);
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= self.len_after_sweep.max(MIN_SWEEP_INTERVAL) {
            store.occupancy.removed(self.sweep(now_ms, store.epoch));
        }
        store.occupancy.added();
        self.slots.insert_unique(slot.key(), slot, S::key);
    }

    /// Forgets the state at `key`; returns whether there was one.
    pub(super) fn remove(&mut self, key: u64) -> bool {
        self.slots
            .find_entry(key, |slot| slot.key() == key)
            .map(|entry| entry.remove())
            .is_ok()
    }

    /// Drops every slot a sweep may drop at `now_ms`; returns how many (the caller updates
    /// the occupancy).
    pub(super) fn sweep(&mut self, now_ms: u64, epoch: Epoch) -> usize {
        self.inserts_since_sweep = 0;
        let before = self.slots.len();
        self.slots.retain(|slot| slot.sweepable_at(epoch) > now_ms);
        self.len_after_sweep = self.slots.len();
        before - self.slots.len()
    }

    /// Every slot's [`EvictionRank`], for the shard to choose what to evict.
    pub(super) fn eviction_ranks(&self, epoch: Epoch) -> impl Iterator<Item = EvictionRank> + '_ {
        self.slots.iter().map(move |slot| slot.eviction_rank(epoch))
    }

    /// Drops every slot ranked below `threshold`, and slots ranked at it while `at_threshold`
    /// (decremented for each) lasts. Returns how many went (the caller updates the occupancy).
    pub(super) fn evict(
        &mut self,
        threshold: EvictionRank,
        at_threshold: &mut usize,
        epoch: Epoch,
    ) -> usize {
        let before = self.slots.len();
        self.slots.retain(|slot| {
            let rank = slot.eviction_rank(epoch);
            if rank < threshold {
                return false;
            }
            if rank == threshold && *at_threshold > 0 {
                *at_threshold -= 1;
                return false;
            }
            true
        });
        self.len_after_sweep = self.slots.len();
        before - self.slots.len()
    }
}

enum Next {
    /// Store this new state.
    Write(Written),
    /// Leave the slot as it was (putting back the state taken out of it, if any).
    Keep(Option<State>),
}

/// What the slot holds after a call: the admitted request, a bucket's first rejection (its
/// refill clock starts then), or what it held before. A written state carries the pressure of
/// the verdict that wrote it.
#[inline(always)]
fn next_state(
    policy: &Policy,
    record: Record,
    verdict: &Verdict,
    current: Option<State>,
    now_ms: u64,
    cost: u64,
) -> Next {
    let allowed = match record {
        Record::Nothing => return Next::Keep(current),
        Record::IfAllowed => verdict.allowed,
        Record::Decided { allowed } => allowed,
    };
    let pressure = Pressure::of(verdict.remaining, verdict.limit);
    if allowed {
        let state = policy.admit(current, now_ms, cost);
        let expires_at = policy.expires_after_admitting(verdict, &state, now_ms);
        return Next::Write(Written {
            state,
            expires_at,
            pressure,
        });
    }
    match current {
        Some(state) => Next::Keep(Some(state)),
        None => match policy.state_after_first_rejection(now_ms) {
            Some(state) => {
                let expires_at = policy.expires_at(&state, now_ms);
                Next::Write(Written {
                    state,
                    expires_at,
                    pressure,
                })
            }
            None => Next::Keep(None),
        },
    }
}
