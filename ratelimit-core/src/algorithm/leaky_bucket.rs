//! Leaky bucket as a meter: the level drains at `leak_rate` per second,
//! `level = max(0, level - elapsed * leak)`; a request of cost `c` is allowed when
//! `level + c <= capacity`. `reset` is when the level is back to 0.

use super::token_bucket::BucketState;
use super::{Verdict, exact_wait};

pub(super) struct Params {
    capacity: f64,
    capacity_whole: u64,
    leak_per_ms: f64,
    window_ms: u64,
}

impl Params {
    pub(super) fn new(capacity: u64, leak_per_second: f64, window_ms: u64) -> Self {
        Self {
            capacity: capacity as f64,
            capacity_whole: capacity,
            leak_per_ms: leak_per_second / 1_000.0,
            window_ms,
        }
    }

    /// The level at `at_ms` (a clock that steps back drains nothing).
    fn level_at(&self, bucket: Option<&BucketState>, at_ms: u64) -> f64 {
        bucket.map_or(0.0, |bucket| {
            let elapsed = at_ms.saturating_sub(bucket.last_ms) as f64;
            (bucket.value - elapsed * self.leak_per_ms).max(0.0)
        })
    }

    fn millis_until_empty(&self, level: f64) -> u64 {
        if level <= 0.0 || self.leak_per_ms <= 0.0 {
            0
        } else {
            (level / self.leak_per_ms).ceil() as u64
        }
    }
}

pub(super) fn evaluate(
    params: &Params,
    state: Option<&BucketState>,
    now_ms: u64,
    cost: u64,
) -> Verdict {
    let level = params.level_at(state, now_ms);
    let cost_level = cost as f64;
    let allowed = level + cost_level <= params.capacity;
    let level_after = if allowed { level + cost_level } else { level };
    let can_ever_fit = cost <= params.capacity_whole && params.leak_per_ms > 0.0;
    let retry_after_ms = (!allowed && can_ever_fit).then(|| {
        let estimate = ((level + cost_level - params.capacity) / params.leak_per_ms).ceil() as u64;
        exact_wait(estimate, now_ms, |at_ms| {
            params.level_at(state, at_ms) + cost_level <= params.capacity
        })
    });
    let room = (params.capacity - level_after).max(0.0).floor() as u64;
    Verdict {
        allowed,
        limit: params.capacity_whole,
        remaining: room.min(params.capacity_whole),
        reset_after_ms: params.millis_until_empty(level_after),
        retry_after_ms,
        window_ms: params.window_ms,
    }
}

pub(super) fn admit(
    params: &Params,
    state: Option<&BucketState>,
    now_ms: u64,
    cost: u64,
) -> BucketState {
    BucketState {
        value: params.level_at(state, now_ms) + cost as f64,
        last_ms: state.map_or(now_ms, |bucket| bucket.last_ms.max(now_ms)),
    }
}
