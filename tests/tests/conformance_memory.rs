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
