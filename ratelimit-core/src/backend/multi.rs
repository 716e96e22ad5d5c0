//! Failover across backends, strategy `first_healthy`: backends are tried in order, a backend
//! whose circuit is open is skipped without any network wait, a failing one falls through to
//! the next, and traffic returns to the first once its circuit closes again.
//!
//! Counts are per backend: while the primary is down its counts are not updated, and the
//! fallback starts from its own (usually empty) state, so a client may get up to one extra
//! limit's worth of requests across a failover. That is the price of staying up.
//!
//! Each member has a [`CircuitBreaker`]. A call cancelled while it waits on a member (the
//! client went away, a timeout layer dropped the future) counts as no result: a half-open
//! member's trial slot is given back and its next call is the trial (see [`crate::circuit`]).
//!
//! A member that is down costs a call at most the member's own timeout, and nothing once its
//! circuit is open. Members built from the config that could not connect at startup connect
//! later with one attempt at a time, shared by every call waiting on it, each waiting at most
//! the backend's timeout (see `config::ConnectPolicy`), so concurrent checks do not
//! queue behind one connection attempt each.
//!
//! Health: a member is `healthy` when its own health says so **and** its circuit is closed.
//! An open circuit is skipped, and a half-open one is on trial (reported as `half_open`, not
//! healthy) until a trial call succeeds. The failover backend itself is healthy while any
//! member is; each member is listed with its circuit state, failure count and next attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Backend, BackendError};
use crate::circuit::{CircuitBreaker, CircuitBreakerConfig};
use crate::clock::{Clock, SystemClock};
use crate::decision::Decision;
use crate::health::{HealthStatus, MemberHealth};
use crate::limit::Limit;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};

/// Failover lines come with every request while a member is down: one per member (and error
/// kind) every few seconds, with the count of those held back.
static SERVED_BY_FALLBACK: LogThrottle = LogThrottle::new(LOG_INTERVAL);
static MEMBER_FAILED: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// Ordered backends with a circuit breaker each.
pub struct MultiBackend {
    members: Vec<Member>,
}

/// One member call, as `async_trait` methods return it.
type MemberCall<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

struct Member {
    name: String,
    backend: Arc<dyn Backend>,
    breaker: CircuitBreaker,
}

impl fmt::Debug for MultiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiBackend")
            .field(
                "members",
                &self
                    .members
                    .iter()
                    .map(|member| &member.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl MultiBackend {
    /// Starts an empty configuration.
    #[must_use]
    pub fn builder() -> MultiBackendBuilder {
        MultiBackendBuilder::default()
    }

    /// The members' names, in order.
    pub fn member_names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|member| member.name.as_str())
    }

    /// The breaker of the member named `name`.
    #[must_use]
    pub fn breaker(&self, name: &str) -> Option<&CircuitBreaker> {
        self.members
            .iter()
            .find(|member| member.name == name)
            .map(|member| &member.breaker)
    }

    /// Runs `call` on the first member whose circuit lets it through and that succeeds.
    async fn first_healthy<'a, T, F>(&'a self, call: F) -> Result<T, BackendError>
    where
        F: Fn(&'a dyn Backend) -> MemberCall<'a, T>,
    {
        let mut failures = Vec::new();
        for (position, member) in self.members.iter().enumerate() {
            // Held across the call: if this future is dropped mid-call, the permit's drop gives
            // a half-open trial slot back (no result) rather than keeping it forever.
            let Some(permit) = member.breaker.try_acquire() else {
                failures.push((member.name.clone(), "circuit open".to_owned()));
                continue;
            };
            match call(member.backend.as_ref()).await {
                Ok(value) => {
                    permit.succeeded();
                    if position > 0
                        && let Some(suppressed) = SERVED_BY_FALLBACK.admit(&member.name)
                    {
                        tracing::warn!(backend = member.name, skipped = ?failures, suppressed, "served by a fallback backend");
                    }
                    return Ok(value);
                }
                // The caller's mistake, not the store's: every member would say the same, and
                // it says nothing of this one's health, so its permit goes back with no result
                // (a half-open circuit never closes on it).
                Err(error @ BackendError::InvalidLimit(_)) => {
                    drop(permit);
                    return Err(error);
                }
                Err(error) => {
                    permit.failed();
                    let cause = (&member.name, std::mem::discriminant(&error));
                    if let Some(suppressed) = MEMBER_FAILED.admit(&cause) {
                        tracing::warn!(backend = member.name, %error, suppressed, "backend failed; trying the next");
                    }
                    failures.push((member.name.clone(), error.to_string()));
                }
            }
        }
        Err(BackendError::AllBackendsFailed {
            failures,
            retry_after: self.soonest_retry(),
        })
    }

    /// The soonest moment an open circuit will let a trial through.
    fn soonest_retry(&self) -> Option<Duration> {
        self.members
            .iter()
            .filter_map(|member| member.breaker.retry_after())
            .min()
    }
}

#[async_trait]
impl Backend for MultiBackend {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.first_healthy(|backend| backend.check_n(key, limit, cost))
            .await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.first_healthy(|backend| backend.peek_n(key, limit, cost))
            .await
    }

    /// Resets the key on every member that answers, so a later failover finds no stale count.
    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        let mut failures = Vec::new();
        for member in &self.members {
            if let Err(error) = member.backend.reset(key).await {
                failures.push((member.name.clone(), error.to_string()));
            }
        }
        if failures.len() == self.members.len() && !failures.is_empty() {
            return Err(BackendError::AllBackendsFailed {
                failures,
                retry_after: self.soonest_retry(),
            });
        }
        Ok(())
    }

    async fn health(&self) -> HealthStatus {
        let mut members = Vec::with_capacity(self.members.len());
        for member in &self.members {
            let status = member.backend.health().await;
            members.push(self.member_health(member, status));
        }
        Self::combined(members)
    }

    fn health_status(&self) -> HealthStatus {
        let members = self
            .members
            .iter()
            .map(|member| self.member_health(member, member.backend.health_status()))
            .collect();
        Self::combined(members)
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        let mut removed = 0;
        for member in &self.members {
            removed += member.backend.cleanup().await?;
        }
        Ok(removed)
    }
}

impl MultiBackend {
    /// A member's own health with its circuit's state: healthy only with a closed circuit.
    fn member_health(&self, member: &Member, mut status: HealthStatus) -> MemberHealth {
        status.circuit = member.breaker.state();
        status.failure_count = member.breaker.failure_count();
        status.next_attempt_unix_ms = member.breaker.next_attempt_ms();
        status.healthy = status.healthy && status.circuit == crate::CircuitState::Closed;
        MemberHealth {
            name: member.name.clone(),
            status,
        }
    }

    /// Healthy while any member can serve; the members are listed one by one.
    fn combined(members: Vec<MemberHealth>) -> HealthStatus {
        let mut status = HealthStatus::healthy("multi", None);
        status.healthy = members.iter().any(|member| member.status.healthy);
        status.detail = (!status.healthy).then(|| "every backend is failing".to_owned());
        status.members = members;
        status
    }
}

/// Configures a [`MultiBackend`].
#[derive(Default)]
pub struct MultiBackendBuilder {
    members: Vec<(String, Arc<dyn Backend>)>,
    config: CircuitBreakerConfig,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for MultiBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiBackendBuilder")
            .field(
                "members",
                &self
                    .members
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("circuit_breaker", &self.config)
            .finish_non_exhaustive()
    }
}

impl MultiBackendBuilder {
    /// Appends a backend; the first one added is the primary.
    #[must_use]
    pub fn backend(self, name: impl Into<String>, backend: impl Backend + 'static) -> Self {
        self.shared_backend(name, Arc::new(backend))
    }

    /// Appends a backend that is also used elsewhere (e.g. registered on its own too).
    #[must_use]
    pub fn shared_backend(mut self, name: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        self.members.push((name.into(), backend));
        self
    }

    /// The breaker settings of every member (default: [`CircuitBreakerConfig::default`]).
    #[must_use]
    pub fn circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// The breakers' clock (tests inject a `ManualClock`).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Builds the failover backend.
    #[must_use]
    pub fn build(self) -> MultiBackend {
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let members = self
            .members
            .into_iter()
            .map(|(name, backend)| Member {
                breaker: CircuitBreaker::with_clock(
                    name.clone(),
                    self.config.clone(),
                    Arc::clone(&clock),
                ),
                name,
                backend,
            })
            .collect();
        MultiBackend { members }
    }
}
