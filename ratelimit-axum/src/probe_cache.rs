//! A result that is costly to get (a probe of every backend), got at most once per interval
//! however many requests ask for it, and never by two of them at once.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// The last probe's result and when it finished.
pub(crate) struct ProbeCache<T> {
    // An async lock held across the probe is the single flight: callers that arrive while it
    // runs queue behind it and then find its result fresh.
    last: Mutex<Option<(Instant, T)>>,
}

impl<T> fmt::Debug for ProbeCache<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeCache").finish_non_exhaustive()
    }
}

impl<T: Clone> ProbeCache<T> {
    pub(crate) const fn new() -> Self {
        Self {
            last: Mutex::const_new(None),
        }
    }

    /// The result of a probe that finished less than `max_age` ago, or else of a new one run
    /// now. A caller dropped during its probe (a client that hung up) releases the lock, and
    /// the next caller probes instead.
    pub(crate) async fn get<F>(&self, max_age: Duration, probe: impl FnOnce() -> F) -> T
    where
        F: Future<Output = T>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, value)) = last.as_ref()
            && at.elapsed() < max_age
        {
            return value.clone();
        }
        let value = probe().await;
        *last = Some((Instant::now(), value.clone()));
        value
    }
}
