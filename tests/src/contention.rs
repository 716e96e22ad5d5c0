//! Many tasks on one key: the check every backend must pass under concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ratelimit_core::{Algorithm, Backend, Limit, Rate};

/// The limit every algorithm gets in the contention test: 50 per hour, so that with a frozen
/// clock nothing refills, leaks or slides out while the tasks run.
#[must_use]
pub fn limit_for(algorithm: Algorithm) -> Limit {
    let rate = Rate::parse("50/h").unwrap_or_else(|error| panic!("{error}"));
    Limit::new(rate, algorithm)
}

/// Spawns `tasks` tasks on the current (multi-thread) runtime, spread round-robin over
/// `backends` (e.g. several connections to one server), each checking `key` `attempts` times.
/// Returns how many checks were admitted; errors fail the calling test.
pub async fn admitted_under_contention(
    backends: &[Arc<dyn Backend>],
    key: &str,
    limit: &Limit,
    tasks: usize,
    attempts: usize,
) -> u64 {
    let admitted = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let backend = Arc::clone(&backends[task % backends.len()]);
        let admitted = Arc::clone(&admitted);
        let key = key.to_owned();
        let limit = limit.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..attempts {
                match backend.check(&key, &limit).await {
                    Ok(decision) if decision.allowed => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(error) => panic!("check failed under contention: {error}"),
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for handle in handles {
        if let Err(error) = handle.await {
            std::panic::resume_unwind(error.into_panic());
        }
    }
    admitted.load(Ordering::SeqCst)
}
