//! TCP plumbing shared by the protocol probes: every step is bounded, every failure a message.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long a probe may wait for a connection or for the whole exchange.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connects to `address` (`host:port`).
pub(super) async fn connect(address: &str) -> Result<TcpStream, String> {
    within_deadline(TcpStream::connect(address))
        .await
        .map_err(|error| format!("cannot connect to {address}: {error}"))
}

/// Runs one exchange with a server, turning a timeout or an I/O error into a message.
pub(super) async fn within_deadline<T>(
    exchange: impl Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match timeout(PROBE_TIMEOUT, exchange).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
    }
}
