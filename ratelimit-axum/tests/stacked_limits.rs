//! Several `#[rate_limit]` attributes on one handler with the same key: a burst limit and a
//! sustained limit keep separate counts, so neither resets the other.

mod support;

use std::time::Duration;

use axum::Router;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::routing::get;
use ratelimit_axum::core::{ManualClock, MemoryBackend, Registry};
use ratelimit_axum::{Scope, rate_limit};

/// A day boundary, so minute and hour windows start together.
const DAY_START_MS: u64 = 19_675 * 86_400_000;

#[rate_limit(rate = "5/m")]
#[rate_limit(rate = "10/h")]
async fn burst_and_sustained() -> &'static str {
    "ok"
}

async fn status_of(app: &Router) -> (StatusCode, Option<String>) {
    let response = support::send(app, support::get_request("/", "192.0.2.10:4000")).await;
    let limit = response
        .headers()
        .get("x-ratelimit-limit")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (response.status(), limit)
}

#[tokio::test]
async fn a_burst_limit_never_resets_the_sustained_limit() {
    let clock = ManualClock::new(DAY_START_MS);
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::with_clock(clock.clone()))
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = Router::new()
        .route("/", get(burst_and_sustained))
        .layer(Extension(Scope::new(registry)));

    // Minute 0: five pass, the sixth meets the burst limit.
    for _ in 0..5 {
        assert_eq!(status_of(&app).await.0, StatusCode::OK);
    }
    assert_eq!(
        status_of(&app).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("5".to_owned()))
    );
    // Minute 1: five more pass; the hour has now admitted ten.
    clock.advance(Duration::from_secs(60));
    for _ in 0..5 {
        assert_eq!(status_of(&app).await.0, StatusCode::OK);
    }
    // Minutes 2 to 59: the burst limit has room again, the hourly limit has none.
    for minute in 2..60 {
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            status_of(&app).await,
            (StatusCode::TOO_MANY_REQUESTS, Some("10".to_owned())),
            "minute {minute}"
        );
    }
    // The next hour starts afresh.
    clock.advance(Duration::from_secs(60));
    assert_eq!(status_of(&app).await.0, StatusCode::OK);
}
