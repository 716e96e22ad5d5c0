//! Many tasks on one key: the check every backend must pass under concurrency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ratelimit_core::{Algorithm, Backend, Decision, Limit, Rate};

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

/// [`admitted_under_contention`] for every algorithm: 64 tasks × 5 attempts on key
/// `hot:<algorithm>` with [`limit_for`] (50), spread over `backends`. Returns each algorithm
/// with how many checks were admitted (each should be exactly 50).
pub async fn admitted_per_algorithm(backends: &[Arc<dyn Backend>]) -> Vec<(Algorithm, u64)> {
    let mut results = Vec::with_capacity(Algorithm::ALL.len());
    for algorithm in Algorithm::ALL {
        let key = format!("hot:{algorithm}");
        let admitted =
            admitted_under_contention(backends, &key, &limit_for(algorithm), 64, 5).await;
        results.push((algorithm, admitted));
    }
    results
}

/// The `remaining` of every admitted decision, sorted. When each admitted check of one key saw
/// all the ones admitted before it, this is `0..limit`, each value exactly once.
#[must_use]
pub fn remaining_of_admitted(decisions: &[Decision]) -> Vec<u64> {
    let mut remaining: Vec<u64> = decisions
        .iter()
        .filter(|decision| decision.allowed)
        .map(|decision| decision.remaining)
        .collect();
    remaining.sort_unstable();
    remaining
}
