//! Token bucket: `tokens = min(size, tokens + elapsed * refill)`; a request of cost `c` is
//! allowed when `tokens >= c`. `remaining = floor(tokens)`; `reset` is when the bucket is full.

use super::{Verdict, exact_wait};

/// A bucket's level and when it was last brought up to date. The token bucket stores tokens
/// here; the leaky bucket stores its level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketState {
    /// Tokens (token bucket) or level (leaky bucket), fractional.
    pub value: f64,
    /// When `value` was computed (ms).
    pub last_ms: u64,
}

pub(super) struct Params {
    size: f64,
    size_whole: u64,
    refill_per_ms: f64,
    initial: f64,
    window_ms: u64,
}

impl Params {
    pub(super) fn new(size: u64, refill_per_second: f64, initial: u64, window_ms: u64) -> Self {
        Self {
            size: size as f64,
            size_whole: size,
            refill_per_ms: refill_per_second / 1_000.0,
            initial: initial.min(size) as f64,
            window_ms,
        }
    }

    /// The stored bucket, or a fresh one holding `initial` tokens whose refill starts now.
    fn stored(&self, state: Option<&BucketState>, now_ms: u64) -> BucketState {
        state.copied().unwrap_or(BucketState {
            value: self.initial,
            last_ms: now_ms,
        })
    }

    /// Tokens at `at_ms` (never earlier than the bucket's last update: a clock that steps back
    /// refills nothing).
    fn tokens_at(&self, bucket: &BucketState, at_ms: u64) -> f64 {
        let elapsed = at_ms.saturating_sub(bucket.last_ms) as f64;
        self.size.min(bucket.value + elapsed * self.refill_per_ms)
    }

    fn millis_until_full(&self, tokens: f64) -> u64 {
        let missing = self.size - tokens;
        if missing <= 0.0 || self.refill_per_ms <= 0.0 {
            0
        } else {
            (missing / self.refill_per_ms).ceil() as u64
        }
    }
}

pub(super) fn evaluate(
    params: &Params,
    state: Option<&BucketState>,
    now_ms: u64,
    cost: u64,
) -> Verdict {
    let bucket = params.stored(state, now_ms);
    let tokens = params.tokens_at(&bucket, now_ms);
    let cost_tokens = cost as f64;
    let allowed = tokens >= cost_tokens;
    let tokens_after = if allowed {
        tokens - cost_tokens
    } else {
        tokens
    };
    let can_ever_fit = cost <= params.size_whole && params.refill_per_ms > 0.0;
    let retry_after_ms = (!allowed && can_ever_fit).then(|| {
        let estimate = ((cost_tokens - tokens) / params.refill_per_ms).ceil() as u64;
        exact_wait(estimate, now_ms, |at_ms| {
            params.tokens_at(&bucket, at_ms) >= cost_tokens
        })
    });
    Verdict {
        allowed,
        limit: params.size_whole,
        remaining: (tokens_after.max(0.0).floor() as u64).min(params.size_whole),
        reset_after_ms: params.millis_until_full(tokens_after),
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
    let bucket = params.stored(state, now_ms);
    BucketState {
        value: params.tokens_at(&bucket, now_ms) - cost as f64,
        last_ms: bucket.last_ms.max(now_ms),
    }
}
