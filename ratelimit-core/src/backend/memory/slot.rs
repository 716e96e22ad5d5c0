//! What one table slot holds: a quota's state for one key, and when a sweep may drop it.
//!
//! Two layouts, so the common states stay small. Fixed windows and buckets are two integers:
//! they live in a 28-byte [`CompactSlot`] (8-byte key digest, 16-byte state, 4 bytes of
//! coarse expiry and [`Pressure`]), which with the table's control byte and load factor comes
//! to under 64 bytes per key. The sliding log (a list) and the sliding counter (three
//! integers) live in a [`GeneralSlot`] holding the whole [`State`], an exact expiry and the
//! pressure, and so does a bucket written after an injected clock stepped back (see
//! [`Slot::holds`]).

use super::pressure::Pressure;
use crate::algorithm::{Admitted, BucketState, CompactPolicy, Policy, State, Verdict, WindowState};

/// Which layout, and which reading of the stored integers, a policy's state uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StateKind {
    Window,
    Bucket,
    Counter,
    Log,
}

impl StateKind {
    pub(super) fn of(policy: &Policy) -> Self {
        match policy {
            Policy::FixedWindow { .. } => Self::Window,
            Policy::TokenBucket { .. } | Policy::LeakyBucket { .. } => Self::Bucket,
            Policy::SlidingWindowCounter { .. } => Self::Counter,
            Policy::SlidingWindow { .. } => Self::Log,
        }
    }

    pub(super) fn is_compact(self) -> bool {
        matches!(self, Self::Window | Self::Bucket)
    }
}

/// The store's time origin, so compact slots can keep expiry in 32 bits of ticks.
#[derive(Clone, Copy, Debug)]
pub(super) struct Epoch {
    pub(super) millis: u64,
}

impl Epoch {
    /// The tick after the one that holds `at_ms` (never earlier than `at_ms`, at most a tick
    /// later; one shift and an add on the hot path, where rounding up exactly takes four
    /// instructions), at most [`MAX_TICKS`].
    #[inline(always)]
    fn ticks_until(self, at_ms: u64) -> u32 {
        let ticks = at_ms.saturating_sub(self.millis) / TICK_MS + 1;
        // At most `MAX_TICKS`, so the cast keeps every bit.
        ticks.min(MAX_TICKS) as u32
    }

    fn millis_at(self, ticks: u32) -> u64 {
        self.millis.saturating_add(u64::from(ticks) * TICK_MS)
    }
}

/// The unit of a compact slot's expiry: about a second, a power of two so that every write
/// converts with a shift.
const TICK_MS: u64 = 1_024;

/// A compact slot keeps its expiry in the low 30 bits of a word whose top two bits are its
/// [`Pressure`]: 2^30 ticks are 34 years after the store was built.
const TICK_BITS: u32 = 30;

const MAX_TICKS: u64 = (1 << TICK_BITS) - 1;

/// How eagerly a slot is evicted when its shard needs room, lowest first: the entries whose
/// loss changes least (lowest pressure), then the soonest to expire (the instant a sweep may
/// drop it, ms).
pub(super) type EvictionRank = (Pressure, u64);

/// A state as a call leaves it: what to store, when a sweep may drop it, and how much its loss
/// would change.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) state: State,
    pub(super) expires_at: u64,
    pub(super) pressure: Pressure,
}

/// A slot of either layout, as the table sees it.
pub(super) trait Slot {
    /// A slot holding `written`.
    fn new(key: u64, written: Written, epoch: Epoch) -> Self;

    fn key(&self) -> u64;

    /// Whether a slot of this layout keeps `state`, written at `now_ms`, exactly.
    fn holds(state: &State, now_ms: u64) -> bool;

    /// When a sweep may drop the slot (ms): never before the state is forgotten.
    fn sweepable_at(&self, epoch: Epoch) -> u64;

    /// How much forgetting the state would change, as of its last write.
    fn pressure(&self) -> Pressure;

    /// Where the slot stands in the order of eviction.
    fn eviction_rank(&self, epoch: Epoch) -> EvictionRank {
        (self.pressure(), self.sweepable_at(epoch))
    }

    /// The state if `policy` still remembers it at `now_ms`, moved out of the slot; put it
    /// back with [`Slot::restore`] or replace it with [`Slot::store`].
    fn take_live(&mut self, policy: &Policy, now_ms: u64) -> Option<State>;

    fn store(&mut self, written: Written, epoch: Epoch);

    /// Puts back a state taken by [`Slot::take_live`], unchanged.
    fn restore(&mut self, state: State);
}

/// A fixed window or bucket in 28 bytes: 4-byte alignment lets the 4-byte expiry follow the
/// 8-byte fields without padding. Fields are only ever copied, never borrowed.
#[repr(C, packed(4))]
#[derive(Clone, Copy)]
pub(super) struct CompactSlot {
    key: u64,
    /// `window_start` or a bucket's `level`.
    first: u64,
    /// `count` or a bucket's `last_ms`.
    second: u64,
    /// The [`Pressure`] in the top two bits; below them the ticks from the epoch after which a
    /// sweep may drop the slot, rounded up (liveness itself is exact:
    /// [`Policy::is_forgotten`]).
    pressure_and_ticks: u32,
}

/// The word of [`CompactSlot::pressure_and_ticks`].
#[inline(always)]
fn pressure_and_ticks(pressure: Pressure, ticks: u32) -> u32 {
    (pressure.bits() << TICK_BITS) | ticks
}

impl CompactSlot {
    fn state(&self, policy: &Policy) -> State {
        let (first, second) = (self.first, self.second);
        if StateKind::of(policy) == StateKind::Window {
            State::Window(WindowState {
                window_start: first,
                count: second,
            })
        } else {
            State::Bucket(BucketState {
                level: first,
                last_ms: second,
            })
        }
    }

    fn write(&mut self, state: &State) {
        (self.first, self.second) = match *state {
            State::Window(window) => (window.window_start, window.count),
            State::Bucket(bucket) => (bucket.level, bucket.last_ms),
            State::Counter(_) | State::Log(_) => {
                unreachable!("only window and bucket states are kept in compact slots")
            }
        };
    }
}

impl CompactSlot {
    /// The store's hot path: a single-quota check that records the request if it is allowed,
    /// decided on this slot's integers in one pass ([`CompactPolicy::check_live`]). `None`,
    /// with the slot untouched, when the state is no longer live or the slot could not hold
    /// it: the general path of the table decides those.
    #[inline]
    pub(super) fn check_live(
        &mut self,
        policy: &CompactPolicy,
        now_ms: u64,
        cost: u64,
        epoch: Epoch,
    ) -> Option<Verdict> {
        let (verdict, admitted) = policy.check_live([self.first, self.second], now_ms, cost)?;
        if let Some(Admitted { words, expires_at }) = admitted {
            [self.first, self.second] = words;
            // `Pressure::Low` is 0: a state far from its limit, the common case, costs one
            // comparison with a prepared threshold.
            let mut word = epoch.ticks_until(expires_at);
            if verdict.remaining <= policy.half_limit() {
                word |= pressure_and_ticks(Pressure::of(verdict.remaining, verdict.limit), 0);
            }
            self.pressure_and_ticks = word;
        }
        Some(verdict)
    }
}

impl Slot for CompactSlot {
    fn new(key: u64, written: Written, epoch: Epoch) -> Self {
        let mut slot = Self {
            key,
            first: 0,
            second: 0,
            pressure_and_ticks: 0,
        };
        slot.store(written, epoch);
        slot
    }

    fn key(&self) -> u64 {
        self.key
    }

    /// Not a bucket whose refill clock is ahead of `now_ms` (only after an injected clock
    /// stepped back; the process clock never does): such a bucket is forgotten at an instant
    /// that its state alone does not give (`Policy::is_forgotten` assumes the bucket was
    /// written at its own `last_ms`), so it goes where its exact expiry is kept.
    fn holds(state: &State, now_ms: u64) -> bool {
        match state {
            State::Bucket(bucket) => bucket.last_ms <= now_ms,
            _ => true,
        }
    }

    fn sweepable_at(&self, epoch: Epoch) -> u64 {
        // At most `MAX_TICKS`, below the pressure bits.
        epoch.millis_at(self.pressure_and_ticks & MAX_TICKS as u32)
    }

    fn pressure(&self) -> Pressure {
        Pressure::from_bits(self.pressure_and_ticks >> TICK_BITS)
    }

    fn take_live(&mut self, policy: &Policy, now_ms: u64) -> Option<State> {
        let state = self.state(policy);
        (!policy.is_forgotten(&state, now_ms)).then_some(state)
    }

    fn store(&mut self, written: Written, epoch: Epoch) {
        self.write(&written.state);
        self.pressure_and_ticks =
            pressure_and_ticks(written.pressure, epoch.ticks_until(written.expires_at));
    }

    fn restore(&mut self, _state: State) {
        // `take_live` copied the integers out; the slot still holds them.
    }
}

/// A sliding log or counter with its exact expiry.
#[derive(Debug)]
pub(super) struct GeneralSlot {
    key: u64,
    expires_at: u64,
    state: State,
    pressure: Pressure,
}

/// Stands in for a state for the instant it is moved out to be updated.
const PLACEHOLDER: State = State::Window(WindowState {
    window_start: 0,
    count: 0,
});

impl GeneralSlot {
    /// [`CompactSlot::check_live`] for a sliding log or counter: a single-quota check that
    /// records the request if it is allowed, decided on the state in place (a rejection moves
    /// nothing). `None`, with the slot untouched, when the state is no longer live.
    #[inline]
    pub(super) fn check_live(
        &mut self,
        policy: &Policy,
        now_ms: u64,
        cost: u64,
    ) -> Option<Verdict> {
        if self.expires_at <= now_ms {
            return None;
        }
        let verdict = policy.evaluate(Some(&self.state), now_ms, cost);
        if verdict.allowed {
            policy.admit_in_place(&mut self.state, now_ms, cost);
            self.expires_at = policy.expires_after_admitting(&verdict, &self.state, now_ms);
            self.pressure = Pressure::of(verdict.remaining, verdict.limit);
        }
        Some(verdict)
    }
}

impl Slot for GeneralSlot {
    fn new(key: u64, written: Written, _epoch: Epoch) -> Self {
        Self {
            key,
            expires_at: written.expires_at,
            state: written.state,
            pressure: written.pressure,
        }
    }

    fn key(&self) -> u64 {
        self.key
    }

    fn holds(_state: &State, _now_ms: u64) -> bool {
        true
    }

    fn sweepable_at(&self, _epoch: Epoch) -> u64 {
        self.expires_at
    }

    fn pressure(&self) -> Pressure {
        self.pressure
    }

    fn take_live(&mut self, _policy: &Policy, now_ms: u64) -> Option<State> {
        (self.expires_at > now_ms).then(|| std::mem::replace(&mut self.state, PLACEHOLDER))
    }

    fn store(&mut self, written: Written, _epoch: Epoch) {
        self.state = written.state;
        self.expires_at = written.expires_at;
        self.pressure = written.pressure;
    }

    fn restore(&mut self, state: State) {
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_slot_is_28_bytes() {
        assert_eq!(size_of::<CompactSlot>(), 28);
    }

    #[test]
    fn the_pressure_shares_the_expiry_word_and_ranks_first() {
        let epoch = Epoch { millis: 1_000_000 };
        let slot = |pressure, expires_at| {
            let state = State::Window(WindowState {
                window_start: 0,
                count: 1,
            });
            CompactSlot::new(
                7,
                Written {
                    state,
                    expires_at,
                    pressure,
                },
                epoch,
            )
        };
        let soon_at_limit = slot(Pressure::AtLimit, 1_010_000);
        let late_fresh = slot(Pressure::Low, 900_000_000_000);
        assert_eq!(soon_at_limit.pressure(), Pressure::AtLimit);
        assert_eq!(soon_at_limit.sweepable_at(epoch), 1_010_240);
        assert_eq!(late_fresh.pressure(), Pressure::Low);
        assert!(late_fresh.eviction_rank(epoch) < soon_at_limit.eviction_rank(epoch));
        // Past 34 years the expiry saturates below the pressure bits.
        let far = slot(Pressure::Half, u64::MAX);
        assert_eq!(far.pressure(), Pressure::Half);
        assert_eq!(far.sweepable_at(epoch), epoch.millis_at(MAX_TICKS as u32));
    }

    #[test]
    fn coarse_expiry_never_comes_before_the_exact_one_nor_more_than_a_tick_after() {
        let epoch = Epoch { millis: 1_000_500 };
        for expires_at in [0, 1_000_500, 1_000_501, 1_001_499, 1_001_500, 1_001_501] {
            let ticks = epoch.ticks_until(expires_at);
            assert!(epoch.millis_at(ticks) > expires_at, "{expires_at}");
            assert!(epoch.millis_at(ticks) <= expires_at.max(epoch.millis) + TICK_MS);
        }
    }
}
