//! The conformance suite on the memory backend.

use std::sync::Arc;

use ratelimit_core::{Backend, MemoryBackend};
use ratelimit_tests::conformance;

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
    use ratelimit_core::ManualClock;
    for (index, pairing) in conformance::pairings().into_iter().enumerate() {
        let clock = ManualClock::new(conformance::T0_MS);
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
