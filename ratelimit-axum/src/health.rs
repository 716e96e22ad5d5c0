//! `GET /health`-style endpoint: the health of every configured backend and circuit.

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::enforce::Context;
use crate::settings::Scope;

/// Probes every backend of the request's registry (its [`Scope`], or the global one) and
/// answers `{"healthy": bool, "backends": [{"name": .., "healthy": .., "circuit": .., ..}]}`
/// with 200 when every backend is healthy and 503 otherwise. A failover backend counts as
/// healthy while any member can serve; its members are listed with their circuits.
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
    for (name, backend) in context.registry().backends() {
        let status = backend.health().await;
        all_healthy &= status.healthy;
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
    (
        status,
        Json(json!({ "healthy": all_healthy, "backends": backends })),
    )
        .into_response()
}
