//! Token bucket: `tokens = min(size, tokens + elapsed * refill)`; a request of cost `c` is
//! allowed when `tokens >= c`. `remaining = floor(tokens)`; `reset` is when the bucket is full.
//! Levels are exact integers in the scaled units of [`Flow`].

use super::Verdict;
use super::flow::{Flow, Pace};

/// A bucket's level (scaled units, see [`Flow`]) and when it was last brought up to date. The
/// token bucket stores its tokens here; the leaky bucket its level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketState {
    /// Tokens (token bucket) or level (leaky bucket) in scaled units.
    pub level: u64,
    /// When `level` was computed (ms).
    pub last_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Params {
    size: u64,
    capacity: u64,
    refill: Pace,
    initial: u64,
    window_ms: u64,
    /// A bucket that starts below full is remembered for a period after it filled up (a
    /// client idle that long is forgotten like any other); one that starts full means the same
    /// as no state once full, so it is never forgotten (the store drops it at its expiry).
    starts_below_full: bool,
}

impl Params {
    pub(super) fn new(size: u64, refill: Flow, initial: u64, window_ms: u64) -> Self {
        // `Limit::validate` bounds size × unit by 2^53; saturate rather than wrap regardless.
        let unit = refill.unit();
        Self {
            size,
            capacity: size.saturating_mul(unit),
            refill: refill.pace(),
            initial: initial.min(size).saturating_mul(unit),
            window_ms,
            starts_below_full: initial < size,
        }
    }

    /// How long after filling up the bucket is still remembered: a period, or nothing for a
    /// bucket that starts full (see `starts_below_full`).
    #[inline(always)]
    fn idle_grace_ms(&self) -> u64 {
        if self.starts_below_full {
            self.window_ms
        } else {
            0
        }
    }

    /// Tokens (scaled) at `now_ms`: the stored bucket refilled, or a new one holding the initial
    /// tokens. A clock that steps back refills nothing.
    fn tokens_at(&self, state: Option<&BucketState>, now_ms: u64) -> u64 {
        state.map_or(self.initial, |bucket| {
            let refill = self.refill.flowed_in(now_ms.saturating_sub(bucket.last_ms));
            // Saturating, then capped: the same as capping each part first, in fewer steps.
            bucket.level.saturating_add(refill).min(self.capacity)
        })
    }
}

/// What a request of `cost` at `now_ms` gets, and the state admitting it writes, in one pass:
/// `Policy::evaluate` takes the first, `Policy::admit` the second, and a store that decides
/// and records at once (`CompactPolicy::check_live`) computes the refill once.
#[inline(always)]
pub(super) fn step(
    params: &Params,
    state: Option<&BucketState>,
    now_ms: u64,
    cost: u64,
) -> (Verdict, BucketState) {
    let unit = params.refill.unit();
    let tokens = params.tokens_at(state, now_ms);
    let needed = cost.saturating_mul(unit);
    let allowed = tokens >= needed;
    let tokens_after = if allowed { tokens - needed } else { tokens };
    let retry_after_ms = (!allowed && cost <= params.size)
        .then(|| params.refill.millis_for(needed - tokens))
        .flatten();
    let verdict = Verdict {
        allowed,
        limit: params.size,
        remaining: params.refill.tokens_in(tokens_after),
        reset_after_ms: params
            .refill
            .millis_for(params.capacity - tokens_after)
            .unwrap_or(0),
        retry_after_ms,
        window_ms: params.window_ms,
    };
    let admitted = BucketState {
        level: tokens.saturating_sub(needed),
        last_ms: state.map_or(now_ms, |bucket| bucket.last_ms.max(now_ms)),
    };
    (verdict, admitted)
}

/// Milliseconds from `now_ms` until `state` is full again: its `reset_after` for a request of
/// cost 0, without the rest of [`step`].
pub(super) fn full_after(params: &Params, state: &BucketState, now_ms: u64) -> u64 {
    let tokens = params.tokens_at(Some(state), now_ms);
    params
        .refill
        .millis_for(params.capacity - tokens)
        .unwrap_or(0)
}

/// When `state` is full again, from the state alone: [`full_after`] counted from the instant
/// the state was written (its `last_ms`).
pub(super) fn full_at(params: &Params, state: &BucketState) -> u64 {
    state
        .last_ms
        .saturating_add(full_after(params, state, state.last_ms))
}

/// Whether `state`, written at its own `last_ms`, has been full for longer than the idle grace
/// by `now_ms`, so that it now means the same as no state (see `Params::starts_below_full`).
#[inline(always)]
pub(super) fn is_forgotten(params: &Params, state: &BucketState, now_ms: u64) -> bool {
    params.starts_below_full
        && full_at(params, state).saturating_add(params.idle_grace_ms()) <= now_ms
}

/// How long after admitting `verdict`'s request the state it wrote is remembered: until full
/// again (the verdict's own `reset_after`) plus the idle grace.
#[inline(always)]
pub(super) fn remembered_after_admitting(params: &Params, verdict: &Verdict) -> u64 {
    verdict
        .reset_after_ms
        .saturating_add(params.idle_grace_ms())
}

/// When `state`, as of `now_ms`, may be forgotten: full again plus the idle grace.
pub(super) fn expires_at(params: &Params, state: &BucketState, now_ms: u64) -> u64 {
    now_ms
        .saturating_add(full_after(params, state, now_ms))
        .saturating_add(params.idle_grace_ms())
}

/// The state of a bucket first seen at `now_ms` that stores its initial tokens.
pub(super) fn initial_state(params: &Params, now_ms: u64) -> BucketState {
    BucketState {
        level: params.initial,
        last_ms: now_ms,
    }
}
