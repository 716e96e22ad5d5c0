//! A Redis or SQL backend that connects on first use and keeps trying until it has connected,
//! so a failover member (or a CLI probe) does not need its server up when the registry is
//! built.
//!
//! A server that is down costs each call at most the backend's timeout. Connection attempts
//! are single flight: one attempt at a time runs, in a task of its own, and every call that
//! comes while it runs waits for that attempt (for at most the timeout) instead of making its
//! own, so 50 concurrent checks behind a server that never answers wait one timeout each, not
//! one after another (the last one 50 timeouts). A failed attempt is shared too: every call
//! that waited on it gets its error ([`BackendError::NotConnected`]), and the next call after
//! it starts a new attempt. The attempt belongs to no caller, so a caller that gives up or is
//! cancelled does not cancel it for the others; the backends' builders bound the attempt
//! itself by their timeout. While not connected, connecting and the call together take at
//! most the timeout; once connected, calls go straight to the backend, under its own timeout.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::backend::{Backend, BackendError};
use crate::decision::Decision;
use crate::health::HealthStatus;
use crate::limit::Limit;

/// Connecting, as a boxed future.
pub(crate) type Connecting =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send>>;

/// Starts one connection attempt.
pub(crate) type Connector = Box<dyn Fn() -> Connecting + Send + Sync>;

/// One call on the connected backend, as `async_trait` methods return it.
type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// How an attempt ended: connected, or the error every waiter gets.
type Outcome = Result<(), Arc<BackendError>>;

/// An attempt's outcome as its waiters watch it: `None` while it runs.
type Attempt = watch::Receiver<Option<Outcome>>;

/// Forwards every call to the backend once connected; until then each call waits for the
/// connection attempt in flight, or starts one (see the module docs).
pub(crate) struct LazyBackend {
    /// The kind reported by health while not connected (`redis`, `postgres`, ..).
    kind: &'static str,
    /// The most a call waits while not connected: the backend's own timeout.
    timeout: Duration,
    state: Arc<State>,
}

/// What the attempt's task shares with the calls.
struct State {
    connect: Connector,
    connected: OnceLock<Arc<dyn Backend>>,
    /// The latest attempt, running or ended.
    latest: Mutex<Option<Attempt>>,
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
            .field("timeout", &self.timeout)
            .field("connected", &self.state.connected.get())
            .finish_non_exhaustive()
    }
}

impl LazyBackend {
    pub(crate) fn new(kind: &'static str, timeout: Duration, connect: Connector) -> Self {
        Self {
            kind,
            timeout,
            state: Arc::new(State {
                connect,
                connected: OnceLock::new(),
                latest: Mutex::new(None),
                last_error: Mutex::new(LastError::default()),
            }),
        }
    }

    /// The connected backend: at once when connected, otherwise the outcome of the attempt in
    /// flight (or of a new one), waited for at most the timeout.
    pub(crate) async fn get(&self) -> Result<&Arc<dyn Backend>, BackendError> {
        match self.state.connected.get() {
            Some(backend) => Ok(backend),
            None => self.within_timeout(self.connect()).await,
        }
    }

    /// Runs `call` on the connected backend; while not connected, connecting and the call
    /// together take at most the timeout.
    async fn forward<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn Backend) -> Call<'a, T> + Send + 'a,
    ) -> Result<T, BackendError> {
        if let Some(backend) = self.state.connected.get() {
            return call(backend.as_ref()).await;
        }
        self.within_timeout(async move { call(self.connect().await?.as_ref()).await })
            .await
    }

    async fn within_timeout<T>(
        &self,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(BackendError::Timeout {
                    backend: self.kind,
                    after: self.timeout,
                })
            })
    }

    /// Waits for the attempt in flight, or starts one.
    async fn connect(&self) -> Result<&Arc<dyn Backend>, BackendError> {
        let mut attempt = self.state.join_or_start(self.kind);
        let outcome = attempt
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|outcome| outcome.clone());
        match (outcome, self.state.connected.get()) {
            (Some(Ok(())), Some(backend)) => Ok(backend),
            (Some(Err(cause)), _) => Err(BackendError::NotConnected {
                backend: self.kind,
                cause,
            }),
            // The attempt publishes an outcome even when its task is dropped (see `Publish`),
            // and sets `connected` before it publishes a success: not reached.
            (Some(Ok(())) | None, _) => Err(BackendError::UnexpectedReply { backend: self.kind }),
        }
    }

    /// Unhealthy, with the reason: `error` when a call just failed to connect (its wait may
    /// end before the attempt does), else the last attempt's error.
    fn not_connected(&self, error: Option<&BackendError>) -> HealthStatus {
        let last = self.state.last_error();
        let mut status = HealthStatus::healthy(self.kind, None);
        status.healthy = false;
        status.failure_count = last.failures;
        status.detail = Some(match error {
            Some(BackendError::NotConnected { cause, .. }) => format!("not connected: {cause}"),
            Some(error) => format!("not connected: {error}"),
            None => last
                .detail
                .clone()
                .unwrap_or_else(|| "not connected yet".to_owned()),
        });
        status
    }
}

impl State {
    /// The attempt in flight (or the one that connected) to wait for; after a failed attempt,
    /// or with none yet, a new one in a task of its own.
    fn join_or_start(self: &Arc<Self>, kind: &'static str) -> Attempt {
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(attempt) = latest.as_ref()
            && !matches!(*attempt.borrow(), Some(Err(_)))
        {
            return attempt.clone();
        }
        let (sender, attempt) = watch::channel(None);
        let mut publish = Publish {
            state: Arc::clone(self),
            sender,
            kind,
        };
        let connecting = (self.connect)();
        tokio::spawn(async move {
            let outcome = connecting.await;
            publish.publish(outcome.map(|backend| {
                // Only one attempt runs at a time, so nothing else sets it.
                let _ = publish.state.connected.set(backend);
            }));
        });
        *latest = Some(attempt.clone());
        attempt
    }

    fn last_error(&self) -> MutexGuard<'_, LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands an attempt's outcome to its waiters. Dropped before it did (the connector panicked,
/// or the task's runtime shut down), it hands them a failure, so no waiter is left without an
/// outcome and the next call starts a new attempt.
struct Publish {
    state: Arc<State>,
    sender: watch::Sender<Option<Outcome>>,
    kind: &'static str,
}

impl Publish {
    fn publish(&mut self, outcome: Result<(), BackendError>) {
        let outcome = outcome.map_err(Arc::new);
        {
            let mut last = self.state.last_error();
            match &outcome {
                Ok(()) => *last = LastError::default(),
                Err(error) => {
                    last.detail = Some(format!("not connected: {error}"));
                    last.failures = last.failures.saturating_add(1);
                }
            }
        }
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        if self.sender.borrow().is_none() {
            let ended = BackendError::UnexpectedReply { backend: self.kind };
            self.publish(Err(ended));
        }
    }
}

#[async_trait]
impl Backend for LazyBackend {
    async fn check_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.forward(|backend| backend.check_n(key, limit, cost))
            .await
    }

    async fn peek_n(&self, key: &str, limit: &Limit, cost: u64) -> Result<Decision, BackendError> {
        self.forward(|backend| backend.peek_n(key, limit, cost))
            .await
    }

    async fn reset(&self, key: &str) -> Result<(), BackendError> {
        self.forward(|backend| backend.reset(key)).await
    }

    async fn health(&self) -> HealthStatus {
        match self.get().await {
            Ok(backend) => backend.health().await,
            Err(error) => self.not_connected(Some(&error)),
        }
    }

    fn health_status(&self) -> HealthStatus {
        match self.state.connected.get() {
            Some(backend) => backend.health_status(),
            None => self.not_connected(None),
        }
    }

    async fn cleanup(&self) -> Result<u64, BackendError> {
        self.forward(|backend| backend.cleanup()).await
    }
}

#[cfg(test)]
mod tests;
