//! One layout's hash table within a shard: a quota decided in one probe, amortised expiry
//! sweeping, and eviction when the store is full.

use hashbrown::HashTable;

use super::occupancy::Occupancy;
use super::slot::{Epoch, Slot};
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

/// A state the table could not keep exactly (see [`Slot::holds`]), for the caller to keep in
/// another table, with the instant it expires.
pub(super) type Spilled = Option<(State, u64)>;

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
    /// `record` says: one probe, the slot updated in place. A new state this table cannot hold
    /// exactly is handed back instead of stored (its old slot, if any, removed).
    #[inline]
    pub(super) fn apply(
        &mut self,
        key: u64,
        policy: &Policy,
        request: Request,
        record: Record,
        store: Store<'_>,
    ) -> (Verdict, Spilled) {
        let Request { now_ms, cost } = request;
        if let Some(slot) = self.slots.find_mut(key, |slot| slot.key() == key) {
            let current = slot.take_live(policy, now_ms);
            let verdict = policy.evaluate(current.as_ref(), now_ms, cost);
            match next_state(policy, record, &verdict, current, now_ms, cost) {
                Next::Write(state, expires_at) if S::holds(&state, now_ms) => {
                    slot.store(state, expires_at, store.epoch);
                }
                Next::Write(state, expires_at) => {
                    self.remove(key);
                    store.occupancy.removed(1);
                    return (verdict, Some((state, expires_at)));
                }
                Next::Keep(Some(state)) => slot.restore(state),
                Next::Keep(None) => {}
            }
            return (verdict, None);
        }
        let verdict = policy.evaluate(None, now_ms, cost);
        match next_state(policy, record, &verdict, None, now_ms, cost) {
            Next::Write(state, expires_at) if S::holds(&state, now_ms) => {
                self.insert(key, state, expires_at, now_ms, store);
            }
            Next::Write(state, expires_at) => return (verdict, Some((state, expires_at))),
            Next::Keep(_) => {}
        }
        (verdict, None)
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

    /// Stores a state for a key the table does not hold yet.
    pub(super) fn insert(
        &mut self,
        key: u64,
        state: State,
        expires_at: u64,
        now_ms: u64,
        store: Store<'_>,
    ) {
        let slot = S::new(key, state, expires_at, store.epoch);
        self.inserts_since_sweep += 1;
        if self.inserts_since_sweep >= self.len_after_sweep.max(MIN_SWEEP_INTERVAL) {
            store.occupancy.removed(self.sweep(now_ms, store.epoch));
        }
        if store.occupancy.is_full() {
            store.occupancy.removed(self.make_room(now_ms, store.epoch));
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

    /// The store is full: drop this table's expired slots, or if there are none its
    /// soonest-to-expire eighth, so eviction runs once per many inserts rather than on each.
    /// Returns how many slots went.
    fn make_room(&mut self, now_ms: u64, epoch: Epoch) -> usize {
        let swept = self.sweep(now_ms, epoch);
        if swept > 0 || self.slots.is_empty() {
            return swept;
        }
        let mut expiries: Vec<u64> = self
            .slots
            .iter()
            .map(|slot| slot.sweepable_at(epoch))
            .collect();
        let evict = (expiries.len() / 8).max(1);
        let (_, threshold, _) = expiries.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        let mut evicted = 0;
        self.slots.retain(|slot| {
            let keep = slot.sweepable_at(epoch) > threshold || evicted >= evict;
            if !keep {
                evicted += 1;
            }
            keep
        });
        self.len_after_sweep = self.slots.len();
        tracing::debug!(
            evicted,
            "memory backend full: evicted the soonest-to-expire keys"
        );
        evicted
    }
}

enum Next {
    /// Store this new state, which expires at the given instant.
    Write(State, u64),
    /// Leave the slot as it was (putting back the state taken out of it, if any).
    Keep(Option<State>),
}

/// What the slot holds after a call: the admitted request, a bucket's first rejection (its
/// refill clock starts then), or what it held before.
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
    if allowed {
        let state = policy.admit(current, now_ms, cost);
        let expires_at = policy.expires_after_admitting(verdict, &state, now_ms);
        return Next::Write(state, expires_at);
    }
    match current {
        Some(state) => Next::Keep(Some(state)),
        None => match policy.state_after_first_rejection(now_ms) {
            Some(state) => {
                let expires_at = policy.expires_at(&state, now_ms);
                Next::Write(state, expires_at)
            }
            None => Next::Keep(None),
        },
    }
}
