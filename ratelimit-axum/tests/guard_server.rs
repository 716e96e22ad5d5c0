//! The guard behind a real server on loopback: `axum::serve` with connect info, real TCP
//! connections from distinct source ports, HTTP/1.1 on the wire.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Extension;
use axum::routing::get;
use ratelimit_axum::core::{MemoryBackend, Registry};
use ratelimit_axum::{Scope, rate_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[rate_limit(rate = "3/m")]
async fn hello() -> &'static str {
    "hello"
}

/// Sends one `GET path` on a new connection and returns the raw response head and body.
async fn fetch(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    response.to_ascii_lowercase()
}

#[tokio::test]
async fn a_real_server_counts_every_connection_of_one_client() {
    let registry = Registry::builder()
        .backend("memory", MemoryBackend::new())
        .build()
        .unwrap_or_else(|error| panic!("{error}"));
    let app = Router::new()
        .route("/", get(hello))
        .layer(Extension(Scope::new(registry)));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("{error}"));
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = fetch(addr, "/").await;
        statuses.push(response.lines().next().unwrap_or_default().to_owned());
        if statuses.len() <= 3 {
            assert!(response.contains("x-ratelimit-limit: 3"), "{response}");
        } else {
            assert!(response.contains("retry-after: "), "{response}");
            assert!(
                response.contains("\"error\":\"rate_limited\""),
                "{response}"
            );
        }
    }
    assert_eq!(
        statuses,
        [
            "http/1.1 200 ok",
            "http/1.1 200 ok",
            "http/1.1 200 ok",
            "http/1.1 429 too many requests"
        ]
    );
    server.abort();
}
