//! Login protection: 5 attempts per 5 minutes per IP and 20 per hour per user name, checked
//! before the JSON body is even read, with a custom 429 body.
//!
//! Run: `cargo run --example login_protection` (address from `LOGIN_ADDR`, default
//! 127.0.0.1:3000), then
//! `curl -i -X POST -H 'content-type: application/json' -d '{"username":"ann","password":"x"}' http://127.0.0.1:3000/login`.

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ratelimit_axum::{GuardSettings, RateLimited, rate_limit};
use serde::Deserialize;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// Only POSTs are counted; the user name comes from a header the login form sets, so a
/// distributed attack on one account is slowed too.
fn username(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get("x-login-user")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[rate_limit(key = "ip", rate = "5/5m", methods = ["POST"], group = "login")]
#[rate_limit(key = username, rate = "20/h", methods = ["POST"], group = "login-user")]
async fn login(Json(credentials): Json<Credentials>) -> Response {
    if credentials.password == "correct horse battery staple" {
        (
            StatusCode::OK,
            format!("welcome, {}\n", credentials.username),
        )
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "wrong user name or password\n").into_response()
    }
}

fn too_many_attempts(limited: &RateLimited) -> Response {
    let wait = limited.decision.retry_after_secs().unwrap_or(60);
    (
        StatusCode::TOO_MANY_REQUESTS,
        format!("Too many login attempts. Wait {wait} seconds before trying again.\n"),
    )
        .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    GuardSettings::builder()
        .blocked_response(too_many_attempts)
        .install()?;
    let app = Router::new().route("/login", post(login));
    let addr = ratelimit_examples::listen_addr("LOGIN_ADDR")?;
    ratelimit_examples::serve(
        app,
        addr,
        &["for i in $(seq 6); do curl -si -X POST -H 'content-type: application/json' -H 'x-login-user: ann' -d '{\"username\":\"ann\",\"password\":\"guess\"}' http://{addr}/login | head -n1; done"],
    )
    .await?;
    Ok(())
}
