//! The expansion is clean under the strictest lints a user may set.
#![forbid(unsafe_code)]
#![deny(warnings, unused_qualifications, missing_docs, clippy::pedantic)]

use axum::Router;
use axum::extract::{Json, Path, State};
use axum::http::request::Parts;
use axum::routing::post;
use ratelimit_axum::rate_limit;
use serde::Deserialize;

/// Shared state.
#[derive(Clone)]
pub struct Db;

/// A request body.
#[derive(Deserialize)]
pub struct Query {
    /// What to look for.
    pub term: String,
}

fn is_staff(parts: &Parts) -> bool {
    parts.headers.contains_key("x-staff")
}

/// Searches.
#[rate_limit(key = "ip", rate = "100/h", algorithm = "token_bucket", skip_if = is_staff)]
#[rate_limit(
    rate = "10/s;1000/h",
    key = "header:X-Api-Key",
    cost = 2,
    methods = ["POST"],
    on_error = "allow",
    algorithm = "sliding_window"
)]
pub async fn search(
    State(_db): State<Db>,
    Path(id): Path<u64>,
    Json(query): Json<Query>,
) -> String {
    format!("{id}: {}", query.term)
}

/// Uploads.
#[rate_limit(
    rate = "1000000/d",
    algorithm = "leaky_bucket",
    algorithm_config = { capacity = 1_000, leak_rate = 12.5 },
    key = |parts| parts.headers.get("x-tenant")?.to_str().ok().map(str::to_owned),
    cost = |_| 3,
    block = false,
    shadow = true,
    group = "uploads",
    backend = "memory"
)]
pub async fn upload<T: Clone + Send + Sync + 'static>(
    State(_state): State<T>,
    body: String,
) -> String {
    body
}

fn main() {
    let _app: Router = Router::new()
        .route("/search/{id}", post(search))
        .route("/upload", post(upload::<Db>))
        .with_state(Db);
}
