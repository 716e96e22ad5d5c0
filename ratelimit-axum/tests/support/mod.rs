//! What the guard's integration tests share: a registry of their own per test (so tests run in
//! parallel without sharing counts), and requests that arrive from a client address through
//! real axum routing.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension};
use axum::http::Request;
use axum::response::Response;
use ratelimit_axum::Scope;
use ratelimit_axum::core::{MemoryBackend, Registry};
use tower::ServiceExt;

/// A registry holding one memory backend, for one test.
pub fn registry() -> Registry {
    Registry::builder()
        .backend("memory", MemoryBackend::new())
        .build()
        .unwrap_or_else(|error| panic!("{error}"))
}

/// `router` answering from `registry` instead of the global one.
pub fn scoped(router: Router, registry: Registry) -> Router {
    router.layer(Extension(Scope::new(registry)))
}

/// `request` as the server sees it from the client at `peer` (e.g. `"192.0.2.1:4000"`).
pub fn from_peer(mut request: Request<Body>, peer: &str) -> Request<Body> {
    let peer: SocketAddr = peer.parse().unwrap_or_else(|error| panic!("{error}"));
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A bodiless GET of `uri` from `peer`.
pub fn get_request(uri: &str, peer: &str) -> Request<Body> {
    let request = Request::builder()
        .uri(uri)
        .body(Body::empty())
        .unwrap_or_else(|error| panic!("{error}"));
    from_peer(request, peer)
}

/// `app`'s response to `request`.
pub async fn send(app: &Router, request: Request<Body>) -> Response {
    app.clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {})
}
