//! Shared bits of the runnable examples (`cargo run --example <name>`): logging and serving
//! with the peer address, which IP-keyed limits need.

use std::net::SocketAddr;

use axum::Router;

/// Logs to stderr at `info` (override with `RUST_LOG`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ratelimit_axum=debug".into()),
        )
        .init();
}

/// The address from `env_var` (default `127.0.0.1:3000`).
///
/// # Errors
/// When the variable holds something that is not a socket address.
pub fn listen_addr(env_var: &str) -> Result<SocketAddr, std::net::AddrParseError> {
    std::env::var(env_var)
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()
}

/// Serves `app` on `addr` with `ConnectInfo<SocketAddr>`, after logging what to try.
///
/// # Errors
/// When the address cannot be bound or the server fails.
pub async fn serve(app: Router, addr: SocketAddr, try_these: &[&str]) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr}");
    for command in try_these {
        tracing::info!("try: {}", command.replace("{addr}", &addr.to_string()));
    }
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
