//! A [`Limit`]: a [`Rate`], the [`Algorithm`] that enforces it and the algorithm's settings.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use crate::algorithm::{Algorithm, CompactPolicy, Flow, MAX_EXACT_UNITS, Policy, PolicyId};
use crate::rate::{MAX_QUOTAS, Quota, Rate};

/// What to enforce on a key.
///
/// ```
/// use ratelimit_core::{Algorithm, Limit, Rate};
/// let login = Limit::new("5/m".parse::<Rate>()?, Algorithm::FixedWindow);
/// let api = Limit::token_bucket("100/h".parse()?).bucket_size(200).refill_rate(2.0);
/// assert!(api.validate().is_ok());
/// # Ok::<(), ratelimit_core::RateParseError>(())
/// ```
///
/// The setters never fail; a combination that makes no sense (a NaN rate, bucket settings on
/// a fixed window) is reported by [`Limit::validate`] and by every backend call.
///
/// A limit validates and resolves its policies once, on first use, and keeps them: a backend
/// call on a limit that lives as long as its route (the `#[rate_limit]` statics, a layer's
/// rules) costs no validation after the first.
#[derive(Clone)]
pub struct Limit {
    rate: Rate,
    algorithm: Algorithm,
    bucket_size: Option<u64>,
    refill_rate: Option<f64>,
    initial_tokens: Option<u64>,
    capacity: Option<u64>,
    leak_rate: Option<f64>,
    /// Filled on first use; the setters clear it.
    resolved: OnceLock<Result<Resolved, LimitError>>,
}

/// A validated limit's policy per quota.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    policies: [Policy; MAX_QUOTAS],
    /// Each policy's identity, which keys its state in a store.
    ids: [PolicyId; MAX_QUOTAS],
    len: usize,
    /// The only quota's policy prepared for a store's hot path, when the limit has one quota
    /// of a two-integer algorithm.
    single_compact: Option<CompactPolicy>,
}

impl Resolved {
    pub(crate) fn policies(&self) -> &[Policy] {
        &self.policies[..self.len]
    }

    /// The identity of each of [`Resolved::policies`], in the same order.
    pub(crate) fn ids(&self) -> &[PolicyId] {
        &self.ids[..self.len]
    }

    #[cfg(feature = "memory")]
    pub(crate) fn single_compact(&self) -> Option<&CompactPolicy> {
        self.single_compact.as_ref()
    }
}

impl PartialEq for Limit {
    /// The settings, not whether they have been resolved yet.
    fn eq(&self, other: &Self) -> bool {
        self.rate == other.rate
            && self.algorithm == other.algorithm
            && self.bucket_size == other.bucket_size
            && self.refill_rate == other.refill_rate
            && self.initial_tokens == other.initial_tokens
            && self.capacity == other.capacity
            && self.leak_rate == other.leak_rate
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limit")
            .field("rate", &self.rate)
            .field("algorithm", &self.algorithm)
            .field("bucket_size", &self.bucket_size)
            .field("refill_rate", &self.refill_rate)
            .field("initial_tokens", &self.initial_tokens)
            .field("capacity", &self.capacity)
            .field("leak_rate", &self.leak_rate)
            .finish()
    }
}

impl Limit {
    /// `rate` enforced by `algorithm`, with the algorithm's defaults.
    #[must_use]
    pub const fn new(rate: Rate, algorithm: Algorithm) -> Self {
        Self {
            rate,
            algorithm,
            bucket_size: None,
            refill_rate: None,
            initial_tokens: None,
            capacity: None,
            leak_rate: None,
            resolved: OnceLock::new(),
        }
    }

    /// A fixed-window limit (the default algorithm).
    #[must_use]
    pub const fn fixed_window(rate: Rate) -> Self {
        Self::new(rate, Algorithm::FixedWindow)
    }

    /// A sliding-log limit.
    #[must_use]
    pub const fn sliding_window(rate: Rate) -> Self {
        Self::new(rate, Algorithm::SlidingWindow)
    }

    /// A sliding-window-counter limit.
    #[must_use]
    pub const fn sliding_window_counter(rate: Rate) -> Self {
        Self::new(rate, Algorithm::SlidingWindowCounter)
    }

    /// A token bucket: size = count, refill = count / period, starting full, unless set.
    #[must_use]
    pub const fn token_bucket(rate: Rate) -> Self {
        Self::new(rate, Algorithm::TokenBucket)
    }

    /// A leaky bucket: capacity = count, leak = count / period, starting empty, unless set.
    #[must_use]
    pub const fn leaky_bucket(rate: Rate) -> Self {
        Self::new(rate, Algorithm::LeakyBucket)
    }

    /// Token bucket: how many tokens the bucket holds (the burst).
    #[must_use]
    pub const fn bucket_size(mut self, tokens: u64) -> Self {
        self.bucket_size = Some(tokens);
        self.unresolved()
    }

    /// Token bucket: tokens added per second.
    #[must_use]
    pub const fn refill_rate(mut self, tokens_per_second: f64) -> Self {
        self.refill_rate = Some(tokens_per_second);
        self.unresolved()
    }

    /// Token bucket: tokens in a new bucket (default: full).
    #[must_use]
    pub const fn initial_tokens(mut self, tokens: u64) -> Self {
        self.initial_tokens = Some(tokens);
        self.unresolved()
    }

    /// Leaky bucket: the level at which requests are rejected.
    #[must_use]
    pub const fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self.unresolved()
    }

    /// Leaky bucket: how much the level drains per second.
    #[must_use]
    pub const fn leak_rate(mut self, per_second: f64) -> Self {
        self.leak_rate = Some(per_second);
        self.unresolved()
    }

    /// The rate.
    #[must_use]
    pub fn rate(&self) -> &Rate {
        &self.rate
    }

    /// The algorithm.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Checks that the settings fit the algorithm and each other.
    ///
    /// # Errors
    /// The first [`LimitError`] found.
    pub fn validate(&self) -> Result<(), LimitError> {
        self.resolved_policies().map(|_| ())
    }

    /// The resolved policy of every quota, in the order the rate lists them; a quota the rate
    /// names twice comes once.
    ///
    /// # Errors
    /// When [`Limit::validate`] fails.
    pub fn policies(&self) -> Result<impl Iterator<Item = Policy> + Clone + '_, LimitError> {
        Ok(self.resolved_policies()?.iter().copied())
    }

    /// Each quota's policy with its identity, in the order the rate lists them (a quota named
    /// twice comes once): a store keeps one state per (key, [`PolicyId`]).
    ///
    /// # Errors
    /// When [`Limit::validate`] fails.
    pub fn policies_with_ids(
        &self,
    ) -> Result<impl Iterator<Item = (Policy, PolicyId)> + Clone + '_, LimitError> {
        let resolved = self.resolved()?;
        Ok(resolved
            .policies()
            .iter()
            .copied()
            .zip(resolved.ids().iter().copied()))
    }

    /// [`Limit::policies`] as a slice, resolved on first use.
    pub(crate) fn resolved_policies(&self) -> Result<&[Policy], LimitError> {
        self.resolved().map(Resolved::policies)
    }

    /// The policies and their prepared forms, resolved on first use.
    pub(crate) fn resolved(&self) -> Result<&Resolved, LimitError> {
        match self.resolved.get_or_init(|| self.resolve()) {
            Ok(resolved) => Ok(resolved),
            Err(error) => Err(error.clone()),
        }
    }

    /// Forgets the resolved policies after a setter changed the settings. Forgetting (rather
    /// than dropping, which a `const fn` cannot do) frees nothing: the cache is plain data.
    const fn unresolved(mut self) -> Self {
        std::mem::forget(std::mem::replace(&mut self.resolved, OnceLock::new()));
        self
    }

    fn resolve(&self) -> Result<Resolved, LimitError> {
        self.check()?;
        let quotas = self.rate.quotas();
        let unused = Policy::FixedWindow {
            limit: 0,
            window_ms: 0,
        };
        let mut resolved = Resolved {
            policies: [unused; MAX_QUOTAS],
            ids: [unused.id(); MAX_QUOTAS],
            len: 0,
            single_compact: None,
        };
        // A rate that names one quota twice (`5/m;5/m`) has one state for both, as identical
        // limits share one: it is kept once, or a store would count each request twice.
        let mut len = 0;
        for quota in quotas {
            let policy = self.policy(*quota);
            let id = policy.id();
            if !resolved.ids[..len].contains(&id) {
                resolved.policies[len] = policy;
                resolved.ids[len] = id;
                len += 1;
            }
        }
        resolved.len = len;
        if let [policy] = resolved.policies() {
            resolved.single_compact = CompactPolicy::of(policy);
        }
        Ok(resolved)
    }

    fn check(&self) -> Result<(), LimitError> {
        if self.longest_period() > MAX_PERIOD {
            return Err(LimitError::PeriodTooLong {
                period_days: self.longest_period().as_secs() / 86_400,
            });
        }
        let fields = [
            (
                "bucket_size",
                Algorithm::TokenBucket,
                self.bucket_size.is_some(),
            ),
            (
                "refill_rate",
                Algorithm::TokenBucket,
                self.refill_rate.is_some(),
            ),
            (
                "initial_tokens",
                Algorithm::TokenBucket,
                self.initial_tokens.is_some(),
            ),
            ("capacity", Algorithm::LeakyBucket, self.capacity.is_some()),
            (
                "leak_rate",
                Algorithm::LeakyBucket,
                self.leak_rate.is_some(),
            ),
        ];
        for (field, owner, set) in fields {
            if !set {
                continue;
            }
            if owner != self.algorithm {
                return Err(LimitError::SettingForOtherAlgorithm {
                    field,
                    algorithm: self.algorithm,
                });
            }
            if self.rate.is_compound() {
                return Err(LimitError::SettingOnCompoundRate { field });
            }
        }
        check_per_second("refill_rate", self.refill_rate)?;
        check_per_second("leak_rate", self.leak_rate)?;
        self.check_exact_levels()?;
        check_at_least_one("bucket_size", self.bucket_size)?;
        check_at_least_one("capacity", self.capacity)?;
        self.check_flows()?;
        let bucket_size = self.bucket_size.unwrap_or(self.rate.count());
        if let Some(initial_tokens) = self.initial_tokens
            && initial_tokens > bucket_size
        {
            return Err(LimitError::InitialTokensAboveBucketSize {
                initial_tokens,
                bucket_size,
            });
        }
        Ok(())
    }

    /// A bucket must refill (or drain): with a rate of 0 and no explicit flow, a bucket of
    /// `bucket_size` tokens would be spent once and never refill, and its state could never
    /// expire, so no store could both keep it and bound its memory.
    fn check_flows(&self) -> Result<(), LimitError> {
        let flowless = self.rate.quotas().iter().any(|quota| quota.count() == 0);
        if !flowless {
            return Ok(());
        }
        match self.algorithm {
            Algorithm::TokenBucket if self.bucket_size.is_some() && self.refill_rate.is_none() => {
                Err(LimitError::NeverRefills {
                    field: "bucket_size",
                })
            }
            Algorithm::LeakyBucket if self.capacity.is_some() && self.leak_rate.is_none() => {
                Err(LimitError::NeverRefills { field: "capacity" })
            }
            _ => Ok(()),
        }
    }

    fn policy(&self, quota: Quota) -> Policy {
        let limit = quota.count();
        let window_ms = quota.period_millis();
        // Only the buckets flow; `validate` has refused rates that are not exact decimals.
        let flow = |per_second: Option<f64>| {
            per_second
                .and_then(Flow::per_second)
                .unwrap_or_else(|| Flow::per_period(limit, window_ms))
        };
        match self.algorithm {
            Algorithm::FixedWindow => Policy::FixedWindow { limit, window_ms },
            Algorithm::SlidingWindow => Policy::SlidingWindow { limit, window_ms },
            Algorithm::SlidingWindowCounter => Policy::SlidingWindowCounter { limit, window_ms },
            Algorithm::TokenBucket => {
                let bucket_size = self.bucket_size.unwrap_or(limit);
                Policy::TokenBucket {
                    bucket_size,
                    refill: flow(self.refill_rate),
                    initial_tokens: self.initial_tokens.unwrap_or(bucket_size),
                    window_ms,
                }
            }
            Algorithm::LeakyBucket => Policy::LeakyBucket {
                capacity: self.capacity.unwrap_or(limit),
                leak: flow(self.leak_rate),
                window_ms,
            },
        }
    }

    /// The longest time any state of this limit can matter (for store TTLs).
    #[must_use]
    pub fn longest_period(&self) -> Duration {
        self.rate
            .quotas()
            .iter()
            .map(Quota::period)
            .max()
            .unwrap_or_default()
    }
}

impl Limit {
    /// Counts and bucket levels must stay exact in every store (Lua numbers are doubles):
    /// counts, count × window for the sliding counter, and size × flow period for buckets stay
    /// at most 2^53.
    fn check_exact_levels(&self) -> Result<(), LimitError> {
        let too_large = self.rate.quotas().iter().any(|quota| {
            let count = u128::from(quota.count());
            let units = match self.algorithm {
                Algorithm::FixedWindow | Algorithm::SlidingWindow => count,
                // Compared scaled by the window.
                Algorithm::SlidingWindowCounter => count * u128::from(quota.period_millis()),
                Algorithm::TokenBucket | Algorithm::LeakyBucket => {
                    let (size, per_second) = if self.algorithm == Algorithm::TokenBucket {
                        (self.bucket_size, self.refill_rate)
                    } else {
                        (self.capacity, self.leak_rate)
                    };
                    let flow = per_second
                        .and_then(Flow::per_second)
                        .unwrap_or_else(|| Flow::per_period(quota.count(), quota.period_millis()));
                    u128::from(size.unwrap_or(quota.count())) * u128::from(flow.unit())
                }
            };
            units > MAX_EXACT_UNITS
        });
        if too_large {
            return Err(LimitError::TooLargeForExactArithmetic);
        }
        Ok(())
    }
}

/// The longest period a limit may have: 100 years of 365.25 days. Every store keeps times as
/// milliseconds with room to add a few periods to today's time: exact in a Lua number
/// (2^53 ms is some 285,000 years), within Redis's `PX` and a SQL `BIGINT`, and never
/// overflowing a `u64`. A longer period is refused rather than wrapped.
pub const MAX_PERIOD: Duration = Duration::from_millis(36_525 * 86_400_000);

fn check_per_second(field: &'static str, value: Option<f64>) -> Result<(), LimitError> {
    match value {
        Some(value) if Flow::per_second(value).is_none() => {
            Err(LimitError::InvalidPerSecond { field, value })
        }
        _ => Ok(()),
    }
}

fn check_at_least_one(field: &'static str, value: Option<u64>) -> Result<(), LimitError> {
    match value {
        Some(0) => Err(LimitError::Zero { field }),
        _ => Ok(()),
    }
}

/// A [`Limit`] whose settings do not fit together.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// E.g. `bucket_size` on a fixed window.
    #[error(
        "`{field}` is not a setting of {algorithm}; remove it or choose the algorithm it belongs to"
    )]
    SettingForOtherAlgorithm {
        field: &'static str,
        algorithm: Algorithm,
    },
    /// Bucket settings are per quota, so a compound rate cannot share one.
    #[error(
        "`{field}` cannot be set on a compound rate (several limits joined by `;`); use one limit per rate"
    )]
    SettingOnCompoundRate { field: &'static str },
    /// A rate per second that is NaN, infinite, zero, negative or has more than six decimals.
    #[error(
        "`{field}` must be a number above 0 with at most six decimals (e.g. 2.0 or 0.125), got {value}"
    )]
    InvalidPerSecond { field: &'static str, value: f64 },
    /// A size of zero.
    #[error("`{field}` must be at least 1")]
    Zero { field: &'static str },
    /// More initial tokens than the bucket holds.
    #[error("`initial_tokens` ({initial_tokens}) is above `bucket_size` ({bucket_size})")]
    InitialTokensAboveBucketSize {
        initial_tokens: u64,
        bucket_size: u64,
    },
    /// Bucket settings on a rate of 0 without a refill or leak rate: a bucket that never
    /// refills (or never drains), whose state could never expire.
    #[error(
        "`{field}` on a rate of 0 makes a bucket that never refills, whose state could never expire; to block every request use the rate alone (e.g. \"0/m\"), to allow a fixed budget use a fixed-window rate (e.g. \"1000/d\"), or set a refill/leak rate"
    )]
    NeverRefills { field: &'static str },
    /// A period longer than [`MAX_PERIOD`] (100 years), which stores could not keep exact.
    #[error(
        "a period of {period_days} days is longer than the longest a store can keep exactly (100 years, e.g. \"1/36525d\"); use a shorter period"
    )]
    PeriodTooLong { period_days: u64 },
    /// A count, bucket or flow so large or fine that stores could not keep it exact.
    #[error(
        "the limit needs more than 2^53 units of precision (count, count × window for sliding_window_counter, or bucket size × refill period), so stores cannot keep it exact; use a smaller count or bucket, or a coarser refill/leak rate"
    )]
    TooLargeForExactArithmetic,
    /// A request of cost 0 is meaningless; use `peek` to look without consuming.
    #[error("a request's cost must be at least 1 (use `peek` to look without consuming)")]
    ZeroCost,
}
