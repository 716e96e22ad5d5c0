//! `RateLimitLayer`: prefix rules on axum and on a bare tower service.

mod support;

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use ratelimit_axum::core::{MemoryBackend, Registry};
use ratelimit_axum::{LayerError, RateLimitLayer, Scope, rate_limit};
use tower::{Layer, Service, ServiceExt};

fn scope() -> Scope {
    Scope::new(
        Registry::builder()
            .backend("memory", MemoryBackend::new())
            .build()
            .unwrap_or_else(|error| panic!("{error}")),
    )
}

fn request(path: &str, peer: &str) -> Request<Body> {
    support::get_request(path, peer)
}

fn header(response: &axum::response::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn layer() -> RateLimitLayer {
    RateLimitLayer::builder()
        .default_rate("5/m")
        .and_then(|b| b.route("/api/auth/", "1/m"))
        .and_then(|b| b.route("/api/", "3/m"))
        .map(|b| b.skip_paths(["/health"]).scope(scope()))
        .and_then(|b| b.build())
        .unwrap_or_else(|error| panic!("{error}"))
}

#[rate_limit(rate = "2/m", key = "global")]
async fn tight() -> &'static str {
    "tight"
}

fn app() -> Router {
    Router::new()
        .route("/api/auth/login", get(|| async { "login" }))
        .route("/api/items", get(|| async { "items" }))
        .route("/api/tight", get(tight))
        .route("/other", get(|| async { "other" }))
        .route("/health", get(|| async { "up" }))
        .layer(layer())
}

async fn statuses(app: &Router, path: &str, peer: &str, times: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..times {
        let response = app
            .clone()
            .oneshot(request(path, peer))
            .await
            .unwrap_or_else(|never| match never {});
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn the_longest_prefix_wins_and_each_rule_has_its_own_buckets() {
    let app = app();
    let peer = "192.0.2.1:1";
    assert_eq!(statuses(&app, "/api/auth/login", peer, 2).await, [200, 429]);
    assert_eq!(
        statuses(&app, "/api/items", peer, 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(
        statuses(&app, "/other", peer, 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(statuses(&app, "/api/items", "192.0.2.2:1", 1).await, [200]);
}

#[tokio::test]
async fn skip_paths_are_never_counted_and_get_no_headers() {
    let app = app();
    for _ in 0..10 {
        let response = app
            .clone()
            .oneshot(request("/health", "192.0.2.3:1"))
            .await
            .unwrap_or_else(|never| match never {});
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-limit"), None);
    }
}

#[tokio::test]
async fn layer_and_handler_each_count_once_and_the_stricter_headers_win() {
    let app = app();
    let response = app
        .clone()
        .oneshot(request("/api/tight", "192.0.2.4:1"))
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.status(), StatusCode::OK);
    // Layer 3/m leaves 2, handler 2/m (global) leaves 1: the handler's is stricter.
    assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        header(&response, "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
    let response = app
        .clone()
        .oneshot(request("/api/items", "192.0.2.4:1"))
        .await
        .unwrap_or_else(|never| match never {});
    // The layer counted /api/tight once: 3 - 2 = 1 left on the /api/ rule.
    assert_eq!(
        header(&response, "x-ratelimit-remaining").as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_rejection_from_the_layer_has_retry_after_and_the_json_body() {
    let app = app();
    let _ = statuses(&app, "/api/auth/login", "192.0.2.5:1", 1).await;
    let response = app
        .clone()
        .oneshot(request("/api/auth/login", "192.0.2.5:1"))
        .await
        .unwrap_or_else(|never| match never {});
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header(&response, "retry-after").is_some());
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn invalid_rates_are_errors_at_build_time_not_panics() {
    let error = RateLimitLayer::builder().route("/api/", "5/M").err();
    assert!(
        matches!(&error, Some(LayerError::InvalidRate { path, .. }) if path == "/api/"),
        "{error:?}"
    );
    assert!(error.is_some_and(|e| e.to_string().contains("must be lower case")));
    assert!(RateLimitLayer::builder().default_rate("").is_err());
    assert!(matches!(
        RateLimitLayer::builder().build(),
        Err(LayerError::NoRules)
    ));
    let too_large = RateLimitLayer::builder()
        .route("/x", "18446744073709551615/s")
        .and_then(|b| b.build());
    assert!(matches!(too_large, Err(LayerError::InvalidLimit { .. })));
}

#[tokio::test]
async fn works_around_a_bare_tower_service_and_clones_share_counts() {
    let echo = tower::service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::from("hi")))
    });
    let layer = RateLimitLayer::builder()
        .default_rate("2/m")
        .map(|b| b.scope(scope()))
        .and_then(|b| b.build())
        .unwrap_or_else(|error| panic!("{error}"));
    let first = layer.layer(echo);
    let second = first.clone();
    let mut codes = Vec::new();
    for service in [&first, &second, &first] {
        let response = service
            .clone()
            .ready()
            .await
            .unwrap_or_else(|never| match never {})
            .call(request("/anything", "192.0.2.6:1"))
            .await
            .unwrap_or_else(|never| match never {});
        codes.push(response.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 429], "one budget across clones");
}
