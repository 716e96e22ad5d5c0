//! A stand-in for a SQL backend whose database did not answer when the registry was built
//! with failures allowed (a failover member, or a CLI probe): every call fails with the connection error,
//! and health reports it. Unlike Redis it cannot retry from a call: the SQL connection future
//! is not `Send`.

use async_trait::async_trait;

use crate::backend::{Backend, BackendError};
use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::Limit;

/// A backend whose server could not be reached: every call fails with the connection error,
/// and health reports it. Used for SQL, whose connection cannot be retried from a call.
#[derive(Debug)]
pub(crate) struct Unreachable {
    kind: &'static str,
    detail: String,
}

impl Unreachable {
    pub(crate) fn new(kind: &'static str, error: &BackendError) -> Self {
        Self {
            kind,
            detail: format!("not connected: {error}"),
        }
    }

    fn error(&self) -> BackendError {
        BackendError::AllBackendsFailed {
            failures: vec![(self.kind.to_owned(), self.detail.clone())],
            retry_after: None,
        }
    }
}

#[async_trait]
impl Backend for Unreachable {
    async fn check_n(&self, _: &str, _: &Limit, _: u64) -> Result<Decision, BackendError> {
        Err(self.error())
    }

    async fn peek_n(&self, _: &str, _: &Limit, _: u64) -> Result<Decision, BackendError> {
        Err(self.error())
    }

    async fn reset(&self, _: &str) -> Result<(), BackendError> {
        Err(self.error())
    }

    async fn health(&self) -> HealthStatus {
        self.health_status()
    }

    fn health_status(&self) -> HealthStatus {
        let mut status = HealthStatus::healthy(self.kind, None);
        status.healthy = false;
        status.failure_count = 1;
        status.detail = Some(self.detail.clone());
        status
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        Err(self.error())
    }
}
