//! Login protection: 5 attempts per 5 minutes per client IP, checked before the JSON body is
//! even read, and 20 per hour per user name. Only the body holds the user name, so that limit
//! is checked in the handler, through the installed registry and under the same key format
//! as `#[rate_limit]`, before the password is: changing IP address or headers does not give
//! an attacker more than 20 guesses an hour at one account. Both limits answer the same 429,
//! here with a custom body.
//!
//! Run: `cargo run --example login_protection` (address from `LOGIN_ADDR`, default
//! 127.0.0.1:3000), then
//! `curl -i -X POST -H 'content-type: application/json' -d '{"username":"ann","password":"x"}' http://127.0.0.1:3000/login`.

use std::num::NonZeroU64;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ratelimit_axum::core::{Limit, Quota, Rate, Registry};
use ratelimit_axum::{
    BackendUnavailable, GuardRejection, GuardSettings, KeyKind, RateLimited, bucket_key, rate_limit,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

const HOUR_MS: NonZeroU64 = NonZeroU64::MIN.saturating_add(3_599_999);

/// 20 attempts per hour per user name, whoever sends them.
static PER_USERNAME: Limit = Limit::fixed_window(Rate::from_static(&[Quota::new(20, HOUR_MS)]));

/// Only POSTs are counted, per client IP, before the body is read.
#[rate_limit(key = "ip", rate = "5/5m", methods = ["POST"], group = "login")]
async fn login(Json(credentials): Json<Credentials>) -> Response {
    if let Err(rejection) = count_attempt_on(&credentials.username).await {
        return rejection;
    }
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

/// Counts one attempt on `username` in the installed registry's default backend, keyed like a
/// `#[rate_limit(key = username, group = "login-username")]` would be. `Err` is the response
/// the guard would send: its 429 (with the installed blocked response and the rate-limit
/// headers), or its 503 when the store cannot answer (a login limit fails closed).
async fn count_attempt_on(username: &str) -> Result<(), Response> {
    let key = bucket_key(
        "login-username",
        KeyKind::Custom("username"),
        username.as_bytes(),
    );
    match Registry::global()
        .default_backend()
        .check(&key, &PER_USERNAME)
        .await
    {
        Ok(decision) if decision.allowed => Ok(()),
        Ok(decision) => {
            let limited = RateLimited {
                decision,
                handler: "login_protection::login".to_owned(),
                rate: PER_USERNAME.rate().to_string(),
            };
            Err(limited.to_response(GuardSettings::global()))
        }
        Err(_) => Err(GuardRejection::BackendUnavailable(BackendUnavailable {
            retry_after_secs: 5,
        })
        .into_response()),
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

fn app() -> Router {
    Router::new().route("/login", post(login))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ratelimit_examples::init_logging();
    GuardSettings::builder()
        .blocked_response(too_many_attempts)
        .install()?;
    let addr = ratelimit_examples::listen_addr("LOGIN_ADDR")?;
    ratelimit_examples::serve(
        app(),
        addr,
        &["for i in $(seq 6); do curl -si -X POST -H 'content-type: application/json' -d '{\"username\":\"ann\",\"password\":\"guess\"}' http://{addr}/login | head -n1; done"],
    )
    .await?;
    Ok(())
}

/// The router as served, with the global registry (memory, as nothing is installed) and the
/// default settings: every test uses user names and addresses of its own.
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::body::Body;
    use axum::extract::ConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn attempt(username: &str, peer: &str, header: &str) -> Response {
        let body = format!(r#"{{"username":"{username}","password":"guess"}}"#);
        let mut request = Request::post("/login")
            .header("content-type", "application/json")
            .header("x-login-user", header)
            .body(Body::from(body))
            .unwrap_or_else(|error| panic!("{error}"));
        let peer: SocketAddr = peer.parse().unwrap_or_else(|error| panic!("{error}"));
        request.extensions_mut().insert(ConnectInfo(peer));
        app()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {})
    }

    #[tokio::test]
    async fn rotating_addresses_and_headers_does_not_reset_a_user_names_count() {
        for attempt_number in 0..20 {
            // A fresh address (4 attempts each, under the per-IP limit) and header every time.
            let peer = format!("198.51.100.{}:1", attempt_number / 4);
            let header = format!("decoy-{attempt_number}");
            let response = attempt("ann", &peer, &header).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let response = attempt("ann", "198.51.100.200:1", "decoy-20").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        // The guard's 429: its headers and body.
        let headers = response.headers();
        assert_eq!(
            headers
                .get("x-ratelimit-limit")
                .map(|value| value.as_bytes()),
            Some(&b"20"[..])
        );
        assert_eq!(
            headers
                .get("x-ratelimit-remaining")
                .map(|value| value.as_bytes()),
            Some(&b"0"[..])
        );
        assert!(headers.get("retry-after").is_some());
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap_or_default();
        let body: serde_json::Value =
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        assert_eq!(body["error"], "rate_limited");
        assert!(body["retry_after"].as_u64().is_some_and(|after| after > 0));

        // Another user name has a count of its own.
        let response = attempt("bob", "198.51.100.201:1", "decoy-20").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn the_per_ip_limit_still_stops_one_address_trying_many_user_names() {
        for number in 0..5 {
            let response = attempt(&format!("user-{number}"), "203.0.113.9:1", "x").await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let response = attempt("user-5", "203.0.113.9:1", "x").await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
