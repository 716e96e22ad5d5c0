//! State, Path and Json extractors keep their patterns; the body extractor stays last.

use axum::Router;
use axum::extract::{Json, Path, State};
use axum::routing::post;
use ratelimit_axum::rate_limit;
use serde::Deserialize;

#[derive(Clone)]
struct Db {
    name: &'static str,
}

#[derive(Deserialize)]
struct Query {
    term: String,
}

#[rate_limit(key = "path:user_id", rate = "10/s")]
async fn search(
    State(db): State<Db>,
    Path(user_id): Path<u64>,
    Json(query): Json<Query>,
) -> String {
    format!("{} {user_id} {}", db.name, query.term)
}

#[rate_limit(key = "query:api_key", rate = "10/30s")]
async fn mutable_pattern(mut body: String) -> String {
    body.push('!');
    body
}

fn main() {
    let _app: Router = Router::new()
        .route("/users/{user_id}/search", post(search))
        .route("/shout", post(mutable_pattern))
        .with_state(Db { name: "db" });
}
