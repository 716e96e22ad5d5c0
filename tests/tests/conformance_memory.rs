//! The conformance suite on the memory backend, and the limits that share a key.

use std::sync::Arc;

use ratelimit_core::{Backend, ManualClock, MemoryBackend};
use ratelimit_tests::conformance::{self, T0_MS};
use ratelimit_tests::separate_limits;

#[tokio::test]
async fn memory_backend_matches_the_conformance_table() {
    let failures = conformance::run(
        |clock| async move { Arc::new(MemoryBackend::with_clock(clock)) as Arc<dyn Backend> },
        "memory:",
    )
    .await;
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The pairings prove something only if each limit, checked alone, both admits and rejects
/// along its steps: then a backend that let the two limits share (or reset) one state would
/// decide differently somewhere.
#[tokio::test]
async fn pairings_exercise_both_outcomes_of_each_limit() {
    for (index, pairing) in conformance::pairings().into_iter().enumerate() {
        let clock = ManualClock::new(T0_MS);
        let backend = MemoryBackend::with_clock(clock.clone());
        let key = format!("exercise:{index}");
        let (mismatches, alone) = conformance::run_pairing(&backend, &clock, &pairing, &key).await;
        assert!(mismatches.is_empty(), "{mismatches:#?}");
        for which in 0..2 {
            let outcomes: Vec<bool> = pairing
                .steps
                .iter()
                .zip(&alone)
                .filter(|(step, _)| step.which == which)
                .map(|(_, decision)| decision.as_ref().is_ok_and(|decision| decision.allowed))
                .collect();
            assert!(
                outcomes.contains(&true) && outcomes.contains(&false),
                "{}: limit {which} alone: {outcomes:?}",
                pairing.name
            );
        }
    }
}

#[tokio::test]
async fn memory_keeps_each_limit_of_a_key_apart_and_resets_them_all() {
    let clock = ManualClock::new(T0_MS);
    let backend = MemoryBackend::with_clock(clock.clone());
    separate_limits::limits_on_one_key_count_apart(&backend, &clock, "user:1", "user:2").await;
    clock.set_millis(T0_MS);
    separate_limits::reset_forgets_every_limit_of_one_key_only(&backend, "user:10", &["user:1"])
        .await;
}
