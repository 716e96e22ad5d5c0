//! Leaky bucket as a meter: the level drains at `leak_rate` per second,
//! `level = max(0, level - elapsed * leak)`; a request of cost `c` is allowed when
//! `level + c <= capacity`. `reset` is when the level is back to 0. Levels are exact integers
//! in the scaled units of [`Flow`].

use super::Verdict;
use super::flow::{Flow, Pace};
use super::token_bucket::BucketState;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Params {
    capacity: u64,
    capacity_scaled: u64,
    leak: Pace,
    window_ms: u64,
}

impl Params {
    pub(super) fn new(capacity: u64, leak: Flow, window_ms: u64) -> Self {
        Self {
            capacity,
            // `Limit::validate` bounds capacity × unit by 2^53.
            capacity_scaled: capacity.saturating_mul(leak.unit()),
            leak: leak.pace(),
            window_ms,
        }
    }

    /// The level (scaled) at `now_ms`; a clock that steps back drains nothing.
    fn level_at(&self, state: Option<&BucketState>, now_ms: u64) -> u64 {
        state.map_or(0, |bucket| {
            let level = bucket.level;
            level - self.leak.over(now_ms.saturating_sub(bucket.last_ms), level)
        })
    }
}

/// What a request of `cost` at `now_ms` gets, and the state admitting it writes, in one pass
/// (see `token_bucket::step`).
#[inline(always)]
pub(super) fn step(
    params: &Params,
    state: Option<&BucketState>,
    now_ms: u64,
    cost: u64,
) -> (Verdict, BucketState) {
    let unit = params.leak.unit();
    let level = params.level_at(state, now_ms);
    let added = cost.saturating_mul(unit);
    let allowed = level.saturating_add(added) <= params.capacity_scaled;
    let level_after = if allowed { level + added } else { level };
    let retry_after_ms = (!allowed && cost <= params.capacity)
        .then(|| {
            params
                .leak
                .millis_for(level + added - params.capacity_scaled)
        })
        .flatten();
    let verdict = Verdict {
        allowed,
        limit: params.capacity,
        remaining: params
            .leak
            .tokens_in(params.capacity_scaled.saturating_sub(level_after)),
        reset_after_ms: params.leak.millis_for(level_after).unwrap_or(0),
        retry_after_ms,
        window_ms: params.window_ms,
    };
    let admitted = BucketState {
        level: level.saturating_add(added),
        last_ms: state.map_or(now_ms, |bucket| bucket.last_ms.max(now_ms)),
    };
    (verdict, admitted)
}

/// Milliseconds from `now_ms` until `state` is empty: its `reset_after` for a request of cost
/// 0, without the rest of [`step`].
pub(super) fn empty_after(params: &Params, state: &BucketState, now_ms: u64) -> u64 {
    let level = params.level_at(Some(state), now_ms);
    params.leak.millis_for(level).unwrap_or(0)
}
