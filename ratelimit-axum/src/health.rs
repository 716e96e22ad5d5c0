//! `GET /health`-style endpoint: the health of every configured backend and circuit, from a
//! cached probe, with nothing in it an anonymous client should not read.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use ratelimit_core::log_throttle::{LOG_INTERVAL, LogThrottle};
use ratelimit_core::{CircuitState, HealthStatus, Registry, redact};
use serde::Serialize;

use crate::probe_cache::ProbeCache;
use crate::settings::{GuardSettings, Scope};

/// The last answer for the global registry.
static GLOBAL_PROBES: ProbeCache<(StatusCode, Bytes)> = ProbeCache::new();

/// One unhealthy backend (or member) per log line per cause and interval.
static UNHEALTHY: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// The health of every backend of the request's registry (its [`Scope`], or the global one):
///
/// ```json
/// {"healthy": false, "serving": true, "backends": [
///   {"name": "multi", "healthy": false, "circuit": "closed", "serving": true, "members": [
///     {"name": "redis", "healthy": false, "circuit": "open", "serving": false},
///     {"name": "memory", "healthy": true, "circuit": "closed", "serving": true}]}]}
/// ```
///
/// - `serving`: the backend can decide requests (a failover backend: some member can);
///   on a member, the failover sends its calls there now (the first healthy member, in
///   order). `healthy`: serving, and so is every failover member, each with a closed or
///   half-open circuit.
/// - Status 200 when every backend and every failover member is healthy, 503 otherwise, so a
///   degraded service (running on a fallback) fails a readiness check while `serving` tells
///   it from one that cannot decide at all.
/// - No error text, URL, host or user name: what went wrong is logged (`warn`, credentials
///   masked) and shown by `ratelimit health --verbose`, for operators.
/// - Probed at most once per [`crate::GuardSettingsBuilder::health_interval`]
///   ([`crate::DEFAULT_HEALTH_INTERVAL`], 5 s): requests within it get the cached answer, and
///   requests that arrive during a probe wait for it and share it, so a flood of health
///   checks costs the backends one probe per interval.
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// let app: Router = Router::new().route("/health", get(ratelimit_axum::health_handler));
/// ```
pub async fn health_handler(request: Request) -> Response {
    // Cloned (two `Arc`s) so the request, which is not `Sync`, is not held across the probe.
    let scope = request.extensions().get::<Scope>().cloned();
    drop(request);
    let (status, body) = match &scope {
        Some(scope) => {
            scope
                .health
                .get(scope.settings.health_interval, || probe(&scope.registry))
                .await
        }
        None => {
            GLOBAL_PROBES
                .get(GuardSettings::global().health_interval, || {
                    probe(Registry::global())
                })
                .await
        }
    };
    let content_type = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    (status, content_type, body).into_response()
}

#[derive(Serialize)]
struct Report {
    healthy: bool,
    serving: bool,
    backends: Vec<BackendReport>,
}

#[derive(Serialize)]
struct BackendReport {
    name: String,
    healthy: bool,
    circuit: CircuitState,
    serving: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberReport>,
}

#[derive(Serialize)]
struct MemberReport {
    name: String,
    healthy: bool,
    circuit: CircuitState,
    serving: bool,
}

/// Probes every backend of `registry` in order, logs what is wrong, and renders the answer
/// (shared, as `Bytes`, by every request until the next probe).
async fn probe(registry: &Registry) -> (StatusCode, Bytes) {
    let mut backends = Vec::new();
    for (name, backend) in registry.backends() {
        let status = backend.health().await;
        log_unhealthy(name, None, &status);
        let mut serving_member = false;
        let members: Vec<MemberReport> = status
            .members
            .iter()
            .map(|member| {
                log_unhealthy(name, Some(&member.name), &member.status);
                let serving = member.status.healthy && !serving_member;
                serving_member |= serving;
                MemberReport {
                    name: member.name.clone(),
                    healthy: member.status.healthy,
                    circuit: member.status.circuit,
                    serving,
                }
            })
            .collect();
        backends.push(BackendReport {
            name: name.to_owned(),
            healthy: status.healthy && members.iter().all(|member| member.healthy),
            circuit: status.circuit,
            serving: status.healthy,
            members,
        });
    }
    let report = Report {
        healthy: backends.iter().all(|backend| backend.healthy),
        serving: backends.iter().all(|backend| backend.serving),
        backends,
    };
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // Strings, booleans and a unit enum: serializing cannot fail.
    let body = serde_json::to_vec(&report).unwrap_or_default();
    (status, Bytes::from(body))
}

/// The error text the response leaves out goes to the log, for operators.
fn log_unhealthy(backend: &str, member: Option<&str>, status: &HealthStatus) {
    if status.healthy {
        return;
    }
    if let Some(suppressed) = UNHEALTHY.admit(&(backend, member)) {
        tracing::warn!(
            backend,
            member,
            circuit = ?status.circuit,
            detail = status.detail.as_deref().map(redact::text).unwrap_or_default(),
            suppressed,
            "health probe: backend unhealthy"
        );
    }
}
