//! A circuit breaker per backend: after `failure_threshold` consecutive failures the backend is
//! skipped (no network wait at all) until its recovery time; then `half_open_max_calls` trial
//! calls decide whether it closes again or stays open for longer (exponential backoff).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::{Clock, SystemClock, duration_millis};
use crate::health::CircuitState;

/// When a circuit opens, how long it stays open, and how it comes back.
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit (default 5).
    pub failure_threshold: u32,
    /// How long a circuit stays open the first time before a trial call (default 60 s).
    pub recovery_timeout: Duration,
    /// A circuit that stays closed this long forgets its earlier openings, so the next opening
    /// starts again from `recovery_timeout`; failures further apart than this are not
    /// consecutive (default 300 s).
    pub reset_timeout: Duration,
    /// Trial calls let through while half-open (default 1).
    pub half_open_max_calls: u32,
    /// Each re-opening multiplies the open time by this (default 2.0).
    pub backoff_multiplier: f64,
    /// The longest a circuit stays open (default 300 s).
    pub backoff_max: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(60),
            reset_timeout: Duration::from_secs(300),
            half_open_max_calls: 1,
            backoff_multiplier: 2.0,
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// The breaker of one backend. Cheap to query; never held across an `.await`.
#[derive(Debug)]
pub struct CircuitBreaker {
    name: String,
    config: CircuitBreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: CircuitState,
    consecutive_failures: u32,
    last_failure_ms: Option<u64>,
    /// Openings since the circuit last stayed closed for `reset_timeout`.
    openings: u32,
    open_until_ms: u64,
    closed_since_ms: u64,
    trials_in_flight: u32,
}

/// Permission to call the backend, from [`CircuitBreaker::try_acquire`].
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Permit {
    /// Call it, then report the outcome.
    Call,
    /// A trial call while half-open; report the outcome.
    Trial,
    /// Skip it: the circuit is open (or its trial slots are taken).
    Skip,
}

impl CircuitBreaker {
    /// A closed breaker on the process clock.
    #[must_use]
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> Self {
        Self::with_clock(name, config, Arc::new(SystemClock::new()))
    }

    /// A closed breaker on `clock` (tests inject a `ManualClock`).
    #[must_use]
    pub fn with_clock(
        name: impl Into<String>,
        config: CircuitBreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let closed_since_ms = clock.now_millis();
        Self {
            name: name.into(),
            config,
            clock,
            inner: Mutex::new(Inner {
                closed_since_ms,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the backend now. An open circuit whose time is up turns
    /// half-open and hands out trial permits.
    pub fn try_acquire(&self) -> Permit {
        let now = self.clock.now_millis();
        let mut inner = self.inner();
        if inner.state == CircuitState::Open && now >= inner.open_until_ms {
            self.transition(&mut inner, CircuitState::HalfOpen, now);
        }
        match inner.state {
            CircuitState::Closed => Permit::Call,
            CircuitState::Open => Permit::Skip,
            CircuitState::HalfOpen => {
                if inner.trials_in_flight < self.config.half_open_max_calls.max(1) {
                    inner.trials_in_flight += 1;
                    Permit::Trial
                } else {
                    Permit::Skip
                }
            }
        }
    }

    /// Reports a successful call made under `permit`.
    pub fn on_success(&self, permit: &Permit) {
        let now = self.clock.now_millis();
        let mut inner = self.inner();
        inner.consecutive_failures = 0;
        if *permit == Permit::Trial {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
            if inner.state == CircuitState::HalfOpen {
                self.transition(&mut inner, CircuitState::Closed, now);
            }
        }
    }

    /// Reports a failed call made under `permit`.
    pub fn on_failure(&self, permit: &Permit) {
        let now = self.clock.now_millis();
        let mut inner = self.inner();
        let reset_ms = duration_millis(self.config.reset_timeout);
        if inner
            .last_failure_ms
            .is_some_and(|last| now.saturating_sub(last) >= reset_ms)
        {
            inner.consecutive_failures = 0;
        }
        inner.last_failure_ms = Some(now);
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if *permit == Permit::Trial {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
        let trips = match inner.state {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => {
                inner.consecutive_failures >= self.config.failure_threshold.max(1)
            }
            CircuitState::Open => false,
        };
        if trips {
            self.transition(&mut inner, CircuitState::Open, now);
        }
    }

    fn transition(&self, inner: &mut Inner, to: CircuitState, now: u64) {
        let from = inner.state;
        inner.state = to;
        match to {
            CircuitState::Open => {
                // A circuit that stayed closed for `reset_timeout` starts its backoff again.
                let closed_for = now.saturating_sub(inner.closed_since_ms);
                if from == CircuitState::Closed
                    && closed_for >= duration_millis(self.config.reset_timeout)
                {
                    inner.openings = 0;
                }
                let open_for = self.open_duration(inner.openings);
                inner.openings = inner.openings.saturating_add(1);
                inner.open_until_ms = now.saturating_add(duration_millis(open_for));
                inner.trials_in_flight = 0;
                tracing::info!(
                    backend = self.name,
                    ?from,
                    failures = inner.consecutive_failures,
                    open_for_ms = duration_millis(open_for),
                    "circuit opened"
                );
            }
            CircuitState::HalfOpen => {
                inner.trials_in_flight = 0;
                tracing::info!(
                    backend = self.name,
                    "circuit half-open: trying the backend again"
                );
            }
            CircuitState::Closed => {
                inner.closed_since_ms = now;
                inner.consecutive_failures = 0;
                tracing::info!(backend = self.name, "circuit closed: backend recovered");
            }
        }
    }

    /// `recovery_timeout × multiplier^openings`, capped at `backoff_max`.
    fn open_duration(&self, openings: u32) -> Duration {
        let factor = self
            .config
            .backoff_multiplier
            .max(1.0)
            .powi(i32::try_from(openings).unwrap_or(i32::MAX));
        let seconds = self.config.recovery_timeout.as_secs_f64() * factor;
        let capped = seconds.min(self.config.backoff_max.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.config.backoff_max)
    }

    /// The state now (an open circuit whose time is up reads as half-open).
    #[must_use]
    pub fn state(&self) -> CircuitState {
        let now = self.clock.now_millis();
        let inner = self.inner();
        if inner.state == CircuitState::Open && now >= inner.open_until_ms {
            CircuitState::HalfOpen
        } else {
            inner.state
        }
    }

    /// Consecutive failures seen.
    #[must_use]
    pub fn failure_count(&self) -> u32 {
        self.inner().consecutive_failures
    }

    /// When an open circuit lets the next trial call through (on the breaker's clock, ms).
    #[must_use]
    pub fn next_attempt_ms(&self) -> Option<u64> {
        let inner = self.inner();
        (inner.state == CircuitState::Open).then_some(inner.open_until_ms)
    }

    /// How long until the next trial call, if the circuit is open.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        let now = self.clock.now_millis();
        self.next_attempt_ms()
            .map(|at| Duration::from_millis(at.saturating_sub(now)))
    }
}
