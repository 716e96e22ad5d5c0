//! A Redis or SQL backend that connects on first use and keeps trying on every call until it has
//! connected, so a failover member (or a CLI probe) does not need its server up when the
//! registry is built.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::backend::{Backend, BackendError};
use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::Limit;

/// Connecting, as a boxed future.
pub(crate) type Connecting =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send>>;

/// Starts one connection attempt.
pub(crate) type Connector = Box<dyn Fn() -> Connecting + Send + Sync>;

/// Forwards every call to the backend once connected; until then each call tries to connect
/// (one attempt at a time) and fails with the attempt's error.
pub(crate) struct LazyBackend {
    /// The kind reported by health while not connected (`redis`, `postgres`, ..).
    kind: &'static str,
    connect: Connector,
    connected: OnceCell<Arc<dyn Backend>>,
    last_error: Mutex<LastError>,
}

#[derive(Default)]
struct LastError {
    detail: Option<String>,
    failures: u32,
}

impl fmt::Debug for LazyBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyBackend")
            .field("kind", &self.kind)
            .field("connected", &self.connected.get())
            .finish_non_exhaustive()
    }
}

impl LazyBackend {
    pub(crate) fn new(kind: &'static str, connect: Connector) -> Self {
        Self {
            kind,
            connect,
            connected: OnceCell::new(),
            last_error: Mutex::new(LastError::default()),
        }
    }

    /// The connected backend, connecting now if needed.
    pub(crate) async fn get(&self) -> Result<&Arc<dyn Backend>, BackendError> {
        self.connected
            .get_or_try_init(|| async {
                let attempt = (self.connect)().await;
                let mut last = self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match &attempt {
                    Ok(_) => *last = LastError::default(),
                    Err(error) => {
                        last.detail = Some(format!("not connected: {error}"));
                        last.failures = last.failures.saturating_add(1);
                    }
                }
                attempt
            })
            .await
    }

    fn not_connected(&self) -> HealthStatus {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut status = HealthStatus::healthy(self.kind, None);
        status.healthy = false;
        status.failure_count = last.failures;
        status.detail = Some(
            last.detail
                .clone()
                .unwrap_or_else(|| "not connected yet".to_owned()),
        );
        status
    }
}

#[async_trait]
impl Backend for LazyBackend {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.get().await?.check_n(key, limit, cost).await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.get().await?.peek_n(key, limit, cost).await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.get().await?.reset(key).await
    }

    async fn health(&self) -> HealthStatus {
        match self.get().await {
            Ok(backend) => backend.health().await,
            Err(_) => self.not_connected(),
        }
    }

    fn health_status(&self) -> HealthStatus {
        match self.connected.get() {
            Some(backend) => backend.health_status(),
            None => self.not_connected(),
        }
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        self.get().await?.cleanup().await
    }
}
