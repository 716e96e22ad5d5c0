//! The circuit breaker's state machine on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ManualClock};

fn breaker(config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    (
        CircuitBreaker::with_clock("primary", config, Arc::new(clock.clone())),
        clock,
    )
}

fn fail(breaker: &CircuitBreaker, times: u32) {
    for _ in 0..times {
        if let Some(permit) = breaker.try_acquire() {
            permit.failed();
        }
    }
}

/// A permit for a trial call, or a panic naming what it got instead.
fn trial(breaker: &CircuitBreaker) -> ratelimit_core::circuit::Permit<'_> {
    match breaker.try_acquire() {
        Some(permit) if permit.is_trial() => permit,
        Some(_) => panic!("a plain call, expected a trial: {:?}", breaker.state()),
        None => panic!("skipped, expected a trial: {:?}", breaker.state()),
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let config = CircuitBreakerConfig::default();
    assert_eq!(config.failure_threshold, 5);
    assert_eq!(config.recovery_timeout, Duration::from_secs(60));
    assert_eq!(config.reset_timeout, Duration::from_secs(300));
    assert_eq!(config.half_open_max_calls, 1);
    assert!((config.backoff_multiplier - 2.0).abs() < f64::EPSILON);
    assert_eq!(config.backoff_max, Duration::from_secs(300));
}

#[test]
fn opens_after_the_threshold_and_skips_until_recovery() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 4);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.failure_count(), 4);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(breaker.try_acquire().is_none());
    assert_eq!(breaker.retry_after(), Some(Duration::from_secs(60)));
    assert_eq!(breaker.next_attempt_ms(), Some(clock.now_millis() + 60_000));
    clock.advance(Duration::from_millis(59_999));
    assert!(breaker.try_acquire().is_none());
    clock.advance(Duration::from_millis(1));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
}

#[test]
fn half_open_lets_limited_trials_through_and_a_success_closes() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 5);
    clock.advance(Duration::from_secs(60));
    let first = trial(&breaker);
    assert!(breaker.try_acquire().is_none(), "only one trial at a time");
    first.succeeded();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.failure_count(), 0);
    assert!(
        breaker
            .try_acquire()
            .is_some_and(|permit| !permit.is_trial())
    );
}

#[test]
fn a_failed_trial_reopens_with_exponential_backoff_capped() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 5);
    let mut expected_open = [120, 240, 300, 300].into_iter();
    clock.advance(Duration::from_secs(60));
    for _ in 0..4 {
        trial(&breaker).failed();
        let open_for = expected_open.next().unwrap_or(300);
        assert_eq!(breaker.retry_after(), Some(Duration::from_secs(open_for)));
        clock.advance(Duration::from_secs(open_for));
    }
}

#[test]
fn staying_closed_for_reset_timeout_forgets_the_backoff() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 5);
    clock.advance(Duration::from_secs(60));
    trial(&breaker).failed();
    clock.advance(Duration::from_secs(120));
    trial(&breaker).succeeded();
    clock.advance(Duration::from_secs(301));
    fail(&breaker, 5);
    assert_eq!(breaker.retry_after(), Some(Duration::from_secs(60)));
}

#[test]
fn failures_further_apart_than_reset_timeout_are_not_consecutive() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    for _ in 0..10 {
        fail(&breaker, 1);
        clock.advance(Duration::from_secs(301));
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.failure_count(), 1);
}

#[test]
fn a_success_resets_the_failure_count() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 4);
    if let Some(permit) = breaker.try_acquire() {
        permit.succeeded();
    }
    fail(&breaker, 4);
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn a_dropped_trial_is_no_result_and_frees_its_slot() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::default());
    fail(&breaker, 5);
    clock.advance(Duration::from_secs(60));
    drop(trial(&breaker));
    assert_eq!(
        breaker.state(),
        CircuitState::HalfOpen,
        "neither failed nor closed"
    );
    assert_eq!(breaker.failure_count(), 5);
    trial(&breaker).succeeded();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn a_trial_dropped_after_its_half_open_period_frees_no_later_slot() {
    let (breaker, clock) = breaker(CircuitBreakerConfig {
        half_open_max_calls: 2,
        ..CircuitBreakerConfig::default()
    });
    fail(&breaker, 5);
    clock.advance(Duration::from_secs(60));
    let late = trial(&breaker);
    trial(&breaker).failed();
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(120));
    let first = trial(&breaker);
    let second = trial(&breaker);
    drop(late);
    assert!(
        breaker.try_acquire().is_none(),
        "both slots of this half-open period are still taken"
    );
    drop((first, second));
    assert!(
        breaker
            .try_acquire()
            .is_some_and(|permit| permit.is_trial())
    );
}
