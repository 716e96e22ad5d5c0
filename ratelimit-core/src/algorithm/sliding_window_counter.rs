//! Sliding window counter: two epoch-aligned buckets of length `P`;
//! `used = previous * (P - elapsed_in_current) / P + current`. Approximate, O(1) state.
//!
//! All comparisons are done exactly in integers scaled by `P` (no floating point), so every
//! backend reaches identical decisions.

use super::Verdict;
use super::fixed_window::window_start;

/// The two buckets around `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterState {
    /// Start of the current bucket (ms, a multiple of the period).
    pub current_start: u64,
    /// Cost admitted in the current bucket.
    pub current: u64,
    /// Cost admitted in the bucket before it.
    pub previous: u64,
}

/// `(previous, current)` as seen from the bucket that contains `now_ms`.
fn buckets_at(window_ms: u64, state: Option<&CounterState>, now_ms: u64) -> (u64, u64) {
    let start = window_start(window_ms, now_ms);
    match state {
        Some(state) if state.current_start == start => (state.previous, state.current),
        Some(state) if state.current_start.checked_add(window_ms) == Some(start) => {
            (state.current, 0)
        }
        _ => (0, 0),
    }
}

/// `used * P`, exactly.
fn scaled_used(window_ms: u64, previous: u64, current: u64, elapsed_ms: u64) -> u128 {
    u128::from(previous) * u128::from(window_ms - elapsed_ms)
        + u128::from(current) * u128::from(window_ms)
}

/// The smallest elapsed time in a bucket at which `previous * (P - e) <= room * P`.
fn first_fitting_elapsed(window_ms: u64, previous: u64, room: u64) -> u64 {
    if previous == 0 {
        return 0;
    }
    let allowed_overlap = u128::from(room) * u128::from(window_ms) / u128::from(previous);
    let allowed_overlap = u64::try_from(allowed_overlap).unwrap_or(u64::MAX);
    window_ms.saturating_sub(allowed_overlap)
}

pub(super) fn evaluate(
    limit: u64,
    window_ms: u64,
    state: Option<&CounterState>,
    now_ms: u64,
    cost: u64,
) -> Verdict {
    let start = window_start(window_ms, now_ms);
    let elapsed_ms = now_ms - start;
    let (previous, current) = buckets_at(window_ms, state, now_ms);
    let scaled_limit = u128::from(limit) * u128::from(window_ms);
    let scaled_cost = u128::from(cost) * u128::from(window_ms);
    let scaled_before = scaled_used(window_ms, previous, current, elapsed_ms);
    let allowed = scaled_before + scaled_cost <= scaled_limit;
    let scaled_after = if allowed {
        scaled_before + scaled_cost
    } else {
        scaled_before
    };
    let remaining = scaled_limit.saturating_sub(scaled_after) / u128::from(window_ms);
    let reset_after_ms = start + window_ms - now_ms;
    let retry_after_ms = (!allowed && cost <= limit).then(|| {
        match limit
            .checked_sub(current)
            .and_then(|room| room.checked_sub(cost))
        {
            // Fits later in this bucket, once enough of the previous bucket has slid out.
            Some(room) => first_fitting_elapsed(window_ms, previous, room) - elapsed_ms,
            // Only fits in the next bucket, where today's count becomes the weighted one.
            None => reset_after_ms + first_fitting_elapsed(window_ms, current, limit - cost),
        }
    });
    Verdict {
        allowed,
        limit,
        remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
        reset_after_ms,
        retry_after_ms,
        window_ms,
    }
}

pub(super) fn admit(
    window_ms: u64,
    state: Option<CounterState>,
    now_ms: u64,
    cost: u64,
) -> CounterState {
    let (previous, current) = buckets_at(window_ms, state.as_ref(), now_ms);
    CounterState {
        current_start: window_start(window_ms, now_ms),
        current: current.saturating_add(cost),
        previous,
    }
}
