//! The five algorithms as pure arithmetic over a small [`State`] and a millisecond timestamp.
//!
//! Nothing here does I/O, locks or allocates (except the sliding log, whose state is the log).
//! A store reads the state for a key, asks [`Policy::evaluate`] for a [`Verdict`], and when every
//! quota of a limit allows, applies [`Policy::admit`] and writes the state back. The Lua and SQL
//! versions of the backends are checked against these functions by the conformance suite.

mod compact;
mod divisor;
mod fixed_window;
mod flow;
mod leaky_bucket;
mod policy_id;
mod sliding_window;
mod sliding_window_counter;
mod token_bucket;

use std::fmt;
use std::str::FromStr;

#[cfg(feature = "memory")]
pub(crate) use compact::Admitted;
pub(crate) use compact::CompactPolicy;
pub use fixed_window::WindowState;
pub use flow::{Flow, MAX_EXACT_UNITS};
pub use policy_id::PolicyId;
#[cfg(feature = "sqlite")]
pub(crate) use sliding_window::{Counted, LogCheck};
pub use sliding_window::{LogEntry, LogState};
pub use sliding_window_counter::CounterState;
pub use token_bucket::BucketState;

/// Which algorithm a limit uses. The default is [`Algorithm::FixedWindow`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Epoch-aligned windows `[k*P, (k+1)*P)`.
    #[default]
    FixedWindow,
    /// An exact log of admitted requests; a request counts while `now - t < P`.
    SlidingWindow,
    /// Two fixed buckets, the previous one weighted by how much of it still overlaps the window.
    SlidingWindowCounter,
    /// Continuous refill up to `bucket_size`; bursts up to the bucket size.
    TokenBucket,
    /// A meter that drains at `leak_rate`; smooths bursts.
    LeakyBucket,
}

impl Algorithm {
    /// Every algorithm, in documentation order.
    pub const ALL: [Self; 5] = [
        Self::FixedWindow,
        Self::SlidingWindow,
        Self::SlidingWindowCounter,
        Self::TokenBucket,
        Self::LeakyBucket,
    ];

    /// The configuration name, e.g. `"token_bucket"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::FixedWindow => "fixed_window",
            Self::SlidingWindow => "sliding_window",
            Self::SlidingWindowCounter => "sliding_window_counter",
            Self::TokenBucket => "token_bucket",
            Self::LeakyBucket => "leaky_bucket",
        }
    }

    /// Looks an algorithm up by its configuration name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|algorithm| algorithm.name() == name)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name that is not one of the five.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown algorithm `{0}`; expected one of fixed_window, sliding_window, sliding_window_counter, token_bucket, leaky_bucket"
)]
pub struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::from_name(name).ok_or_else(|| UnknownAlgorithm(name.to_owned()))
    }
}

/// One quota of a limit with every parameter resolved: what a store needs to decide.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// See [`Algorithm::FixedWindow`].
    FixedWindow { limit: u64, window_ms: u64 },
    /// See [`Algorithm::SlidingWindow`].
    SlidingWindow { limit: u64, window_ms: u64 },
    /// See [`Algorithm::SlidingWindowCounter`].
    SlidingWindowCounter { limit: u64, window_ms: u64 },
    /// See [`Algorithm::TokenBucket`]. The refill is zero only for a rate of zero.
    TokenBucket {
        bucket_size: u64,
        refill: Flow,
        initial_tokens: u64,
        window_ms: u64,
    },
    /// See [`Algorithm::LeakyBucket`]. The leak is zero only for a rate of zero.
    LeakyBucket {
        capacity: u64,
        leak: Flow,
        window_ms: u64,
    },
}

/// The stored state of one quota for one key.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Fixed window.
    Window(WindowState),
    /// Sliding log.
    Log(LogState),
    /// Sliding window counter.
    Counter(CounterState),
    /// Token bucket (tokens) or leaky bucket (level).
    Bucket(BucketState),
}

/// What one quota says about one request at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request fits entirely.
    pub allowed: bool,
    /// The count (window algorithms), bucket size or capacity.
    pub limit: u64,
    /// What is left after this request (if allowed) or now (if rejected).
    pub remaining: u64,
    /// Milliseconds until the window ends / the oldest request leaves / the bucket is full or empty.
    pub reset_after_ms: u64,
    /// When rejected: milliseconds until this same request would be allowed; `None` when it
    /// never can be (rate 0 or a cost above the limit). Always `None` when allowed.
    pub retry_after_ms: Option<u64>,
    /// The rate's period, for the `w=` of the `RateLimit-Policy` header.
    pub window_ms: u64,
}

impl Policy {
    /// The limit reported in headers; `remaining` never exceeds it.
    #[must_use]
    pub fn limit(&self) -> u64 {
        match *self {
            Self::FixedWindow { limit, .. }
            | Self::SlidingWindow { limit, .. }
            | Self::SlidingWindowCounter { limit, .. } => limit,
            Self::TokenBucket { bucket_size, .. } => bucket_size,
            Self::LeakyBucket { capacity, .. } => capacity,
        }
    }

    /// The rate's period in ms.
    #[must_use]
    pub fn window_ms(&self) -> u64 {
        match *self {
            Self::FixedWindow { window_ms, .. }
            | Self::SlidingWindow { window_ms, .. }
            | Self::SlidingWindowCounter { window_ms, .. }
            | Self::TokenBucket { window_ms, .. }
            | Self::LeakyBucket { window_ms, .. } => window_ms,
        }
    }

    /// The algorithm this policy belongs to.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::FixedWindow { .. } => Algorithm::FixedWindow,
            Self::SlidingWindow { .. } => Algorithm::SlidingWindow,
            Self::SlidingWindowCounter { .. } => Algorithm::SlidingWindowCounter,
            Self::TokenBucket { .. } => Algorithm::TokenBucket,
            Self::LeakyBucket { .. } => Algorithm::LeakyBucket,
        }
    }

    /// What a request of `cost` at `now_ms` would get, given the stored `state` (`None` for a
    /// key never seen or expired; a state of another algorithm counts as none). Pure.
    #[inline(always)]
    #[must_use]
    pub fn evaluate(&self, state: Option<&State>, now_ms: u64, cost: u64) -> Verdict {
        match *self {
            Self::FixedWindow { limit, window_ms } => {
                fixed_window::step(limit, window_ms, window_state(state), now_ms, cost).0
            }
            Self::SlidingWindow { limit, window_ms } => {
                sliding_window::evaluate(limit, window_ms, log_state(state), now_ms, cost)
            }
            Self::SlidingWindowCounter { limit, window_ms } => sliding_window_counter::evaluate(
                limit,
                window_ms,
                counter_state(state),
                now_ms,
                cost,
            ),
            Self::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => {
                token_bucket::step(
                    &token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms),
                    bucket_state(state),
                    now_ms,
                    cost,
                )
                .0
            }
            Self::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => {
                leaky_bucket::step(
                    &leaky_bucket::Params::new(capacity, leak, window_ms),
                    bucket_state(state),
                    now_ms,
                    cost,
                )
                .0
            }
        }
    }

    /// [`Policy::admit`] on a stored state in place: a sliding log is extended where it is
    /// rather than moved out and back.
    #[cfg(feature = "memory")]
    #[inline]
    pub(crate) fn admit_in_place(&self, state: &mut State, now_ms: u64, cost: u64) {
        if let (Self::SlidingWindow { window_ms, .. }, State::Log(log)) = (*self, &mut *state) {
            sliding_window::admit_into(window_ms, log, now_ms, cost);
            return;
        }
        // Every other state is a few integers, replaced whole.
        let placeholder = State::Window(WindowState {
            window_start: 0,
            count: 0,
        });
        let current = std::mem::replace(state, placeholder);
        *state = self.admit(Some(current), now_ms, cost);
    }

    /// Records an admitted request of `cost` at `now_ms`. Call it only after every quota of the
    /// limit evaluated to allowed. Returns the new state.
    #[inline(always)]
    #[must_use]
    pub fn admit(&self, state: Option<State>, now_ms: u64, cost: u64) -> State {
        match *self {
            Self::FixedWindow { limit, window_ms } => State::Window(
                fixed_window::step(limit, window_ms, into_window(state).as_ref(), now_ms, cost).1,
            ),
            Self::SlidingWindow { window_ms, .. } => State::Log(sliding_window::admit(
                window_ms,
                into_log(state),
                now_ms,
                cost,
            )),
            Self::SlidingWindowCounter { window_ms, .. } => State::Counter(
                sliding_window_counter::admit(window_ms, into_counter(state), now_ms, cost),
            ),
            Self::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => State::Bucket(
                token_bucket::step(
                    &token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms),
                    into_bucket(state).as_ref(),
                    now_ms,
                    cost,
                )
                .1,
            ),
            Self::LeakyBucket {
                capacity,
                leak,
                window_ms,
            } => State::Bucket(
                leaky_bucket::step(
                    &leaky_bucket::Params::new(capacity, leak, window_ms),
                    into_bucket(state).as_ref(),
                    now_ms,
                    cost,
                )
                .1,
            ),
        }
    }

    /// The state to store when a request for a key with no state is rejected: a token bucket's
    /// refill clock starts at the first request even when that request does not fit. Every
    /// other algorithm stores nothing for a rejection.
    #[must_use]
    pub fn state_after_first_rejection(&self, now_ms: u64) -> Option<State> {
        match *self {
            Self::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } if initial_tokens < bucket_size => Some(State::Bucket(token_bucket::initial_state(
                &token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms),
                now_ms,
            ))),
            _ => None,
        }
    }

    /// [`Policy::expires_at`] of the `state` that [`Policy::admit`] just wrote at `now_ms` for
    /// a request `verdict` allowed. For the fixed window and the buckets that instant is `now_ms`
    /// plus the verdict's own `reset_after` (the window's end, the bucket full or empty again),
    /// so the arithmetic is not done twice on a store's hot path.
    #[inline(always)]
    #[must_use]
    pub fn expires_after_admitting(&self, verdict: &Verdict, state: &State, now_ms: u64) -> u64 {
        let expires_at = match *self {
            Self::FixedWindow { .. } | Self::LeakyBucket { .. } => {
                now_ms.saturating_add(verdict.reset_after_ms)
            }
            Self::TokenBucket {
                bucket_size,
                refill,
                initial_tokens,
                window_ms,
            } => now_ms.saturating_add(token_bucket::remembered_after_admitting(
                &token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms),
                verdict,
            )),
            Self::SlidingWindow { .. } | Self::SlidingWindowCounter { .. } => {
                return self.expires_at(state, now_ms);
            }
        };
        later_than(now_ms, expires_at)
    }

    /// The instant (ms) after which `state` means the same as no state at all, so a store may
    /// drop it. Always later than `now_ms`.
    #[inline(always)]
    #[must_use]
    pub fn expires_at(&self, state: &State, now_ms: u64) -> u64 {
        let expires_at = match (*self, state) {
            (Self::FixedWindow { window_ms, .. }, State::Window(window)) => {
                window.window_start.saturating_add(window_ms)
            }
            (Self::SlidingWindow { window_ms, .. }, State::Log(log)) => log
                .newest()
                .map_or(now_ms, |newest| newest.saturating_add(window_ms)),
            (Self::SlidingWindowCounter { window_ms, .. }, State::Counter(counter)) => counter
                .current_start
                .saturating_add(window_ms.saturating_mul(2)),
            // A full bucket means the same as a new one only when new buckets start full; one
            // that starts lower is kept a period longer, then forgotten like any idle client.
            (
                Self::TokenBucket {
                    bucket_size,
                    refill,
                    initial_tokens,
                    window_ms,
                },
                State::Bucket(bucket),
            ) => {
                let params =
                    token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms);
                token_bucket::expires_at(&params, bucket, now_ms)
            }
            (
                Self::LeakyBucket {
                    capacity,
                    leak,
                    window_ms,
                },
                State::Bucket(bucket),
            ) => {
                let params = leaky_bucket::Params::new(capacity, leak, window_ms);
                now_ms.saturating_add(leaky_bucket::empty_after(&params, bucket, now_ms))
            }
            _ => now_ms,
        };
        later_than(now_ms, expires_at)
    }
}

impl Policy {
    /// Whether `state`, as `admit` or `state_after_first_rejection` wrote it, has outlived the
    /// [`Policy::expires_at`] it was written with, so that it now means the same as no state.
    /// A store that keeps only a coarse expiry asks this for the exact answer.
    ///
    /// A full token bucket that starts full, and an empty leaky bucket, evaluate and admit
    /// exactly like no state at all (the property tests check it), so they never need
    /// forgetting; only a token bucket that starts below full is forgotten a period after it
    /// filled up, as `expires_at` says.
    #[inline(always)]
    #[must_use]
    pub fn is_forgotten(&self, state: &State, now_ms: u64) -> bool {
        match (*self, state) {
            (Self::FixedWindow { window_ms, .. }, State::Window(window)) => {
                fixed_window::is_over(window_ms, window, now_ms)
            }
            (Self::SlidingWindow { window_ms, .. }, State::Log(log)) => log
                .newest()
                .is_none_or(|newest| newest.saturating_add(window_ms) <= now_ms),
            (Self::SlidingWindowCounter { window_ms, .. }, State::Counter(counter)) => {
                counter
                    .current_start
                    .saturating_add(window_ms.saturating_mul(2))
                    <= now_ms
            }
            (
                Self::TokenBucket {
                    bucket_size,
                    refill,
                    initial_tokens,
                    window_ms,
                },
                State::Bucket(bucket),
            ) => token_bucket::is_forgotten(
                &token_bucket::Params::new(bucket_size, refill, initial_tokens, window_ms),
                bucket,
                now_ms,
            ),
            (Self::LeakyBucket { .. }, State::Bucket(_)) => false,
            // A state of another algorithm counts as none.
            _ => true,
        }
    }
}

/// `at`, or the millisecond after `now_ms` if that is later: an expiry always lies ahead.
#[inline(always)]
fn later_than(now_ms: u64, at: u64) -> u64 {
    at.max(now_ms.saturating_add(1))
}

fn window_state(state: Option<&State>) -> Option<&WindowState> {
    match state {
        Some(State::Window(window)) => Some(window),
        _ => None,
    }
}

fn log_state(state: Option<&State>) -> Option<&LogState> {
    match state {
        Some(State::Log(log)) => Some(log),
        _ => None,
    }
}

fn counter_state(state: Option<&State>) -> Option<&CounterState> {
    match state {
        Some(State::Counter(counter)) => Some(counter),
        _ => None,
    }
}

fn bucket_state(state: Option<&State>) -> Option<&BucketState> {
    match state {
        Some(State::Bucket(bucket)) => Some(bucket),
        _ => None,
    }
}

fn into_window(state: Option<State>) -> Option<WindowState> {
    match state {
        Some(State::Window(window)) => Some(window),
        _ => None,
    }
}

fn into_log(state: Option<State>) -> Option<LogState> {
    match state {
        Some(State::Log(log)) => Some(log),
        _ => None,
    }
}

fn into_counter(state: Option<State>) -> Option<CounterState> {
    match state {
        Some(State::Counter(counter)) => Some(counter),
        _ => None,
    }
}

fn into_bucket(state: Option<State>) -> Option<BucketState> {
    match state {
        Some(State::Bucket(bucket)) => Some(bucket),
        _ => None,
    }
}
