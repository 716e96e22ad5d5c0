//! The Lua scripts, built once per process, and the translation between a check and a
//! script's keys, arguments and reply.
//!
//! One script per algorithm: the shared prelude, that algorithm's function, then the loop that
//! evaluates a batch of its checks in order (see `prelude.lua` for the calling convention), so
//! concurrent checks of one algorithm share one `EVALSHA`.

use std::sync::LazyLock;

use redis::{Arg, Cmd};

use crate::algorithm::{Algorithm, Policy, Verdict};

/// A script's source, and its SHA-1 for `EVALSHA`.
struct Lua {
    source: String,
    sha: String,
}

/// The scripts in [`Algorithm::ALL`] order.
static SCRIPTS: LazyLock<[Lua; 5]> = LazyLock::new(|| {
    Algorithm::ALL.map(|algorithm| {
        let source = source(algorithm);
        let sha = redis::Script::new(&source).get_hash().to_owned();
        Lua { source, sha }
    })
});

/// The prelude, the algorithm's function bound to `evaluate`, then the loop over the batch.
fn source(algorithm: Algorithm) -> String {
    let (function, body) = match algorithm {
        Algorithm::FixedWindow => ("fixed_window", include_str!("fixed_window.lua")),
        Algorithm::SlidingWindow => ("sliding_window", include_str!("sliding_window.lua")),
        Algorithm::SlidingWindowCounter => (
            "sliding_window_counter",
            include_str!("sliding_window_counter.lua"),
        ),
        Algorithm::TokenBucket => ("token_bucket", include_str!("token_bucket.lua")),
        Algorithm::LeakyBucket => ("leaky_bucket", include_str!("leaky_bucket.lua")),
    };
    format!(
        "{}\n{body}\nlocal evaluate = {function}\n{}",
        include_str!("prelude.lua"),
        include_str!("checks.lua")
    )
}

fn script(algorithm: Algorithm) -> &'static Lua {
    // `code` numbers the algorithms from 1 in `Algorithm::ALL` order.
    &SCRIPTS[code(algorithm) as usize - 1]
}

/// Integers the reply carries per quota.
pub(super) const REPLY_PER_QUOTA: usize = 4;

/// The script's number for each algorithm (the index of `param_bytes` and `keys_per_quota`
/// in `checks.lua`).
fn code(algorithm: Algorithm) -> u64 {
    match algorithm {
        Algorithm::FixedWindow => 1,
        Algorithm::SlidingWindow => 2,
        Algorithm::SlidingWindowCounter => 3,
        Algorithm::TokenBucket => 4,
        Algorithm::LeakyBucket => 5,
    }
}

/// One check as the script reads it: its keys, and one argument packing its numbers as
/// little-endian doubles (algorithm code, cost, record, number of quotas, then each quota's
/// parameters).
#[derive(Debug)]
pub(super) struct ScriptCall {
    /// Which script evaluates it.
    pub(super) algorithm: Algorithm,
    /// `<prefix>{<tag>}` of the checked key: a call that carries this check first keeps its
    /// marker there, in the key's Cluster slot.
    pub(super) slot: String,
    pub(super) keys: Vec<String>,
    args: Vec<u8>,
    /// How many quotas, hence `quotas * REPLY_PER_QUOTA` reply integers.
    pub(super) quotas: usize,
}

impl ScriptCall {
    pub(super) fn new(
        algorithm: Algorithm,
        slot: String,
        cost: u64,
        record: bool,
        quotas: usize,
    ) -> Self {
        let mut call = Self {
            algorithm,
            slot,
            keys: Vec::with_capacity(quotas * 2),
            args: Vec::with_capacity(8 * (4 + 5 * quotas)),
            quotas,
        };
        call.push(&[code(algorithm), cost, u64::from(record), quotas as u64]);
        call
    }

    /// Limits keep their counts, levels and periods below 2^53, where a double is exact, as
    /// the script's numbers have always been.
    #[allow(clippy::cast_precision_loss)]
    fn push(&mut self, values: &[u64]) {
        for value in values {
            self.args.extend_from_slice(&(*value as f64).to_le_bytes());
        }
    }

    /// Appends one quota's parameters, in the order the algorithm's Lua function reads them.
    pub(super) fn push_policy(&mut self, policy: &Policy) {
        match *policy {
            Policy::FixedWindow { limit, window_ms }
            | Policy::SlidingWindow { limit, window_ms }
            | Policy::SlidingWindowCounter { limit, window_ms } => {
                self.push(&[limit, window_ms]);
            }
            Policy::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => {
                self.push(&[
                    bucket_size,
                    refill.amount,
                    refill.per_ms,
                    initial_tokens,
                    window_ms,
                ]);
            }
            Policy::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => {
                self.push(&[capacity, leak.amount, leak.per_ms, window_ms]);
            }
        }
    }
}

/// One call of a script: `EVALSHA`, or the same as `EVAL` with the source.
pub(super) struct Invocation {
    pub(super) algorithm: Algorithm,
    evalsha: Cmd,
}

/// Arguments of `EVALSHA` before the call's own: the command and the SHA-1.
const EVALSHA_HEAD: usize = 2;

impl Invocation {
    /// One call of `algorithm`'s script for `calls` (all of that algorithm), evaluated in order
    /// at `now_ms` (`None`: the server's `TIME`), under the call's `marker` (see
    /// `checks.lua`), which lasts `marker_ttl_ms`.
    pub(super) fn new<'a>(
        algorithm: Algorithm,
        now_ms: Option<u64>,
        marker: &str,
        marker_ttl_ms: u64,
        calls: impl IntoIterator<Item = &'a ScriptCall> + Clone,
    ) -> Self {
        let keys: usize = calls.clone().into_iter().map(|call| call.keys.len()).sum();
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(&script(algorithm).sha)
            .arg(keys + 1)
            .arg(marker);
        for call in calls.clone() {
            for key in &call.keys {
                evalsha.arg(key);
            }
        }
        match now_ms {
            Some(now_ms) => evalsha.arg(now_ms),
            None => evalsha.arg(""),
        };
        evalsha.arg(marker_ttl_ms);
        for call in calls {
            evalsha.arg(call.args.as_slice());
        }
        Self { algorithm, evalsha }
    }

    /// The call by SHA-1: the server must hold the script.
    pub(super) fn evalsha(&self) -> &Cmd {
        &self.evalsha
    }

    /// The same call with the script's source, which also loads it into the server.
    pub(super) fn eval(&self) -> Cmd {
        let mut eval = redis::cmd("EVAL");
        eval.arg(&script(self.algorithm).source);
        for arg in self.evalsha.args_iter().skip(EVALSHA_HEAD) {
            if let Arg::Simple(bytes) = arg {
                eval.arg(bytes);
            }
        }
        eval
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
