//! Health reports for backends, the CLI and the health endpoint.

use std::time::Duration;

use serde::Serialize;

/// The state of a backend's circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls fail fast until the next attempt time.
    Open,
    /// A few trial calls decide whether to close again (reported as `half_open`; not healthy
    /// until a trial succeeds).
    HalfOpen,
}

/// What a backend reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthStatus {
    /// The backend's kind, e.g. `"memory"`.
    pub backend: &'static str,
    /// Whether calls are expected to succeed: the last probe or call succeeded and, behind a
    /// circuit breaker (a failover member), the circuit is closed. An open circuit is skipped
    /// and a half-open one is still on trial, so neither is healthy.
    pub healthy: bool,
    /// Round-trip time of the last probe.
    #[serde(rename = "latency_ms", serialize_with = "serialize_millis")]
    pub latency: Option<Duration>,
    /// Circuit breaker state.
    pub circuit: CircuitState,
    /// Consecutive failures seen by the breaker.
    pub failure_count: u32,
    /// When an open circuit will next let a call through (unix ms).
    pub next_attempt_unix_ms: Option<u64>,
    /// What went wrong, when unhealthy; free-form for people.
    pub detail: Option<String>,
    /// For a failover backend: each member with its own circuit.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberHealth>,
}

/// One member of a failover backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberHealth {
    /// The member's name in the failover configuration.
    pub name: String,
    /// Its health and circuit.
    #[serde(flatten)]
    pub status: HealthStatus,
}

impl HealthStatus {
    /// A healthy backend with a closed circuit.
    #[must_use]
    pub fn healthy(backend: &'static str, latency: Option<Duration>) -> Self {
        Self {
            backend,
            healthy: true,
            latency,
            circuit: CircuitState::Closed,
            failure_count: 0,
            next_attempt_unix_ms: None,
            detail: None,
            members: Vec::new(),
        }
    }
}

fn serialize_millis<S: serde::Serializer>(
    latency: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match latency {
        Some(latency) => serializer.serialize_some(&(latency.as_secs_f64() * 1_000.0)),
        None => serializer.serialize_none(),
    }
}

/// The last known health of a networked backend, updated by every call it makes.
#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
#[derive(Debug)]
pub(crate) struct HealthTracker {
    status: std::sync::Mutex<HealthStatus>,
}

#[cfg(any(
    feature = "redis",
    feature = "postgres",
    feature = "sqlite",
    feature = "mysql"
))]
impl HealthTracker {
    pub(crate) fn new(backend: &'static str) -> Self {
        Self {
            status: std::sync::Mutex::new(HealthStatus::healthy(backend, None)),
        }
    }

    /// Records one call: a success clears the failures, a failure counts one more.
    pub(crate) fn record(&self, error: Option<&crate::backend::BackendError>, latency: Duration) {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            // A limit the caller got wrong says nothing about the store, nor does a check
            // refused at a full queue: the calls already at the store report its health.
            Some(
                crate::backend::BackendError::InvalidLimit(_)
                | crate::backend::BackendError::Overloaded { .. },
            ) => {}
            None => {
                status.healthy = true;
                status.latency = Some(latency);
                status.failure_count = 0;
                status.detail = None;
            }
            Some(error) => {
                status.healthy = false;
                status.failure_count = status.failure_count.saturating_add(1);
                status.detail = Some(error.to_string());
            }
        }
    }

    /// The last known status.
    pub(crate) fn snapshot(&self) -> HealthStatus {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
