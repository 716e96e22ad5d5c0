//! The Lua scripts, built once per process, and the translation between a limit's policies and
//! a script's keys, arguments and reply.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::algorithm::{Algorithm, Policy, Verdict};

const HEAD: &str = include_str!("head.lua");
const TAIL: &str = include_str!("tail.lua");

/// One script per algorithm: `local PARAMS = n`, the shared head, the algorithm, the shared
/// tail. Scripts are sent by SHA (EVALSHA) and loaded again on NOSCRIPT by the `redis` crate.
static SCRIPTS: LazyLock<[Script; 5]> = LazyLock::new(|| {
    Algorithm::ALL.map(|algorithm| {
        let body = match algorithm {
            Algorithm::FixedWindow => include_str!("fixed_window.lua"),
            Algorithm::SlidingWindow => include_str!("sliding_window.lua"),
            Algorithm::SlidingWindowCounter => include_str!("sliding_window_counter.lua"),
            Algorithm::TokenBucket => include_str!("token_bucket.lua"),
            Algorithm::LeakyBucket => include_str!("leaky_bucket.lua"),
        };
        let params = params_per_quota(algorithm);
        Script::new(&format!("local PARAMS = {params}\n{HEAD}\n{body}\n{TAIL}"))
    })
});

/// Integers the reply carries per quota.
pub(super) const REPLY_PER_QUOTA: usize = 4;

fn params_per_quota(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::FixedWindow | Algorithm::SlidingWindow | Algorithm::SlidingWindowCounter => 2,
        Algorithm::TokenBucket => 5,
        Algorithm::LeakyBucket => 4,
    }
}

/// Short names keep keys small; each algorithm has its own keys, so switching a limit's
/// algorithm never meets a state of the wrong shape.
pub(super) fn key_tag(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "fw",
        Algorithm::SlidingWindow => "sw",
        Algorithm::SlidingWindowCounter => "swc",
        Algorithm::TokenBucket => "tb",
        Algorithm::LeakyBucket => "lb",
    }
}

/// Whether the algorithm keeps a second key (the sliding log's sequence counter) per quota.
pub(super) fn has_sequence_key(algorithm: Algorithm) -> bool {
    algorithm == Algorithm::SlidingWindow
}

pub(super) fn script(algorithm: Algorithm) -> &'static Script {
    let index = Algorithm::ALL
        .iter()
        .position(|candidate| *candidate == algorithm)
        .unwrap_or_default();
    &SCRIPTS[index]
}

/// Appends one quota's arguments, in the order the algorithm's `params(i)` reads them.
pub(super) fn push_policy_args(invocation: &mut ScriptInvocation<'_>, policy: &Policy) {
    match *policy {
        Policy::FixedWindow { limit, window_ms }
        | Policy::SlidingWindow { limit, window_ms }
        | Policy::SlidingWindowCounter { limit, window_ms } => {
            invocation.arg(limit).arg(window_ms);
        }
        Policy::TokenBucket {
            bucket_size,
            refill,
            initial_tokens,
            window_ms,
        } => {
            invocation
                .arg(bucket_size)
                .arg(refill.amount)
                .arg(refill.per_ms)
                .arg(initial_tokens)
                .arg(window_ms);
        }
        Policy::LeakyBucket {
            capacity,
            leak,
            window_ms,
        } => {
            invocation
                .arg(capacity)
                .arg(leak.amount)
                .arg(leak.per_ms)
                .arg(window_ms);
        }
    }
}

/// One quota's verdict from its four reply integers.
pub(super) fn verdict(policy: &Policy, reply: &[i64]) -> Option<Verdict> {
    let [allowed, remaining, reset_after_ms, retry_after_ms] = *reply else {
        return None;
    };
    Some(Verdict {
        allowed: allowed == 1,
        limit: policy.limit(),
        remaining: u64::try_from(remaining).ok()?,
        reset_after_ms: u64::try_from(reset_after_ms).ok()?,
        retry_after_ms: u64::try_from(retry_after_ms).ok(),
        window_ms: policy.window_ms(),
    })
}
