//! A circuit breaker per backend: after `failure_threshold` consecutive failures the backend is
//! skipped (no network wait at all) until its recovery time; then `half_open_max_calls` trial
//! calls decide whether it closes again or stays open for longer (exponential backoff).
//!
//! Every call goes through a [`Permit`] from [`CircuitBreaker::try_acquire`], reported with
//! [`Permit::succeeded`] or [`Permit::failed`]. A permit dropped without either (its call's
//! future was cancelled: the client went away, a timeout layer gave up) counts as **no
//! result**: a trial gives its half-open slot back, the circuit stays half-open, and the next
//! call is the trial. A cancellation says nothing about the backend: counting it as a failure
//! would reopen a healthy backend (and lengthen its backoff) whenever clients disconnect, and
//! counting it as a success would close the circuit on a backend that never answered. A backend
//! that really does not answer is caught by the next trial, which fails on the backend's own
//! timeout. Without the release, a cancelled trial would hold its slot forever and, with
//! `half_open_max_calls = 1`, the backend would never be tried again.

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
    /// Counts the half-open periods, so a trial permit from an earlier one gives back no slot
    /// of the current one.
    half_open_period: u64,
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`]. Report the call's outcome
/// with [`Permit::succeeded`] or [`Permit::failed`]; dropped without either (the call was
/// cancelled), it counts as no result and a trial gives its half-open slot back (see the
/// [module docs](self)).
#[derive(Debug)]
#[must_use = "report the call's outcome with `succeeded` or `failed`"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    /// The half-open period of a trial call; `None` for a call through a closed circuit, and
    /// once the outcome is reported.
    trial: Option<u64>,
}

impl Permit<'_> {
    /// Whether this is a trial call of a half-open circuit.
    #[must_use]
    pub fn is_trial(&self) -> bool {
        self.trial.is_some()
    }

    /// The call succeeded: a trial closes the circuit, and the failure count starts again.
    pub fn succeeded(mut self) {
        let trial = self.trial.take();
        self.breaker.on_success(trial);
    }

    /// The call failed: it counts towards `failure_threshold`, and a failed trial reopens the
    /// circuit for longer.
    pub fn failed(mut self) {
        let trial = self.trial.take();
        self.breaker.on_failure(trial);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(period) = self.trial.take() {
            self.breaker.release_trial(period);
        }
    }
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

    /// Whether a call may go to the backend now: `None` to skip it (the circuit is open, or
    /// every half-open trial slot is taken). An open circuit whose time is up turns half-open
    /// and hands out up to `half_open_max_calls` trial permits at a time.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let now = self.clock.now_millis();
        let mut inner = self.inner();
        if inner.state == CircuitState::Open && now >= inner.open_until_ms {
            self.transition(&mut inner, CircuitState::HalfOpen, now);
        }
        let trial = match inner.state {
            CircuitState::Closed => None,
            CircuitState::Open => return None,
            CircuitState::HalfOpen => {
                if inner.trials_in_flight >= self.config.half_open_max_calls.max(1) {
                    return None;
                }
                inner.trials_in_flight += 1;
                Some(inner.half_open_period)
            }
        };
        Some(Permit {
            breaker: self,
            trial,
        })
    }

    /// Gives back the slot of a trial of `period` if that half-open period is still on.
    fn end_trial(inner: &mut Inner, period: u64) {
        if inner.state == CircuitState::HalfOpen && inner.half_open_period == period {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
    }

    /// A trial dropped without an outcome: no result, so only its slot is given back.
    fn release_trial(&self, period: u64) {
        let mut inner = self.inner();
        Self::end_trial(&mut inner, period);
        tracing::debug!(
            backend = self.name,
            "trial call dropped without an outcome; its half-open slot is free again"
        );
    }

    fn on_success(&self, trial: Option<u64>) {
        let now = self.clock.now_millis();
        let mut inner = self.inner();
        inner.consecutive_failures = 0;
        if let Some(period) = trial {
            Self::end_trial(&mut inner, period);
            if inner.state == CircuitState::HalfOpen {
                self.transition(&mut inner, CircuitState::Closed, now);
            }
        }
    }

    fn on_failure(&self, trial: Option<u64>) {
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
        if let Some(period) = trial {
            Self::end_trial(&mut inner, period);
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
                inner.half_open_period = inner.half_open_period.wrapping_add(1);
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
