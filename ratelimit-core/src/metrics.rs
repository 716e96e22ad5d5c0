//! Metrics through the `metrics` facade (feature `metrics`; without it these are no-ops, so
//! callers never need a `cfg`). Install any recorder, e.g. a Prometheus exporter, to see them:
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `ratelimit_requests_total` | counter | `outcome` = `allowed`, `limited`, `shadow_limited`, `error_allowed`, `error_denied` |
//! | `ratelimit_backend_latency_seconds` | histogram | `backend` = the backend's registry name |
//! | `ratelimit_memory_evictions_total` | counter | none (live states dropped to stay within `max_keys`) |

use std::time::Duration;

/// What happened to one checked request. Ordered from least to most notable, so a request
/// with several limits reports the most notable outcome among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every limit allowed it.
    Allowed,
    /// A shadow limit would have rejected it.
    ShadowLimited,
    /// No backend could decide; the failure policy let it through.
    ErrorAllowed,
    /// A limit rejected it (with `block = false` it still ran).
    Limited,
    /// No backend could decide; the failure policy denied it (503).
    ErrorDenied,
}

impl Outcome {
    /// The `outcome` label value.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::ShadowLimited => "shadow_limited",
            Self::ErrorAllowed => "error_allowed",
            Self::ErrorDenied => "error_denied",
        }
    }
}

/// Counts one request under `outcome`.
pub fn record_outcome(outcome: Outcome) {
    #[cfg(feature = "metrics")]
    metrics::counter!("ratelimit_requests_total", "outcome" => outcome.label()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = outcome;
}

/// Times one backend call. Without the `metrics` feature it reads no clock at all, so the
/// hot path pays nothing for metrics nobody collects.
#[derive(Debug)]
#[must_use = "call `record` when the backend call is done"]
pub struct BackendTimer {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl BackendTimer {
    /// Starts timing.
    pub fn start() -> Self {
        Self {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    /// Records the call's latency under the backend's registry name.
    pub fn record(self, backend: &str) {
        #[cfg(feature = "metrics")]
        record_backend_latency(backend, self.started.elapsed());
        #[cfg(not(feature = "metrics"))]
        let _ = backend;
    }
}

/// Records how long one backend call took.
pub fn record_backend_latency(backend: &str, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("ratelimit_backend_latency_seconds", "backend" => backend.to_owned())
        .record(elapsed.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, elapsed);
}

/// Counts live states the memory store dropped to stay within `max_keys` (expired ones swept
/// are not counted).
pub fn record_memory_evictions(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("ratelimit_memory_evictions_total").increment(count as u64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}
