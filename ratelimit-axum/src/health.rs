//! `GET /health`-style endpoint: the health of every configured backend and circuit.

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::enforce::Context;
use crate::settings::Scope;

/// Probes every backend of the request's registry (its [`Scope`], or the global one) and
/// answers `{"healthy": bool, "serving": bool, "backends": [{"name": .., "healthy": ..,
/// "circuit": .., ..}]}`: 200 when every backend and every failover member is healthy with a
/// closed circuit, 503 otherwise. `serving` tells a degraded service (a failover backend is
/// running on a fallback) from one that cannot decide at all.
///
/// ```no_run
/// # use axum::{Router, routing::get};
/// let app: Router = Router::new().route("/health", get(ratelimit_axum::health_handler));
/// ```
pub async fn health_handler(request: Request) -> Response {
    let scope = request.extensions().get::<Scope>().cloned();
    let context = Context::of(scope.as_ref());
    let mut backends = Vec::new();
    let mut all_healthy = true;
    let mut serving = true;
    for (name, backend) in context.registry().backends() {
        let status = backend.health().await;
        serving &= status.healthy;
        all_healthy &= status.healthy && status.members.iter().all(|member| member.status.healthy);
        let mut entry = serde_json::to_value(&status).unwrap_or_else(|_| json!({}));
        if let Some(object) = entry.as_object_mut() {
            object.insert("name".to_owned(), json!(name));
        }
        backends.push(entry);
    }
    let status = if all_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "healthy": all_healthy, "serving": serving, "backends": backends });
    (status, Json(body)).into_response()
}
