//! What the guard's integration tests share: a registry of their own per test (so tests run in
//! parallel without sharing counts), and requests that arrive from a client address through
//! real axum routing.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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

/// Log output captured from a `tracing` subscriber, as text.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut captured) = self.0.lock() {
            captured.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|captured| String::from_utf8_lossy(&captured).into_owned())
            .unwrap_or_default()
    }
}

/// Captures the events at `level` and above on this thread (a `#[tokio::test]` runs on one)
/// until the returned guard is dropped.
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// The response's body as text.
pub async fn body_text(response: Response) -> String {
    use http_body_util::BodyExt;
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
