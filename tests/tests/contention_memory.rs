//! 64 tasks on a multi-thread runtime hammering one key on the memory backend: exactly `limit`
//! requests are admitted, for every algorithm.

use std::sync::Arc;

use ratelimit_core::{Algorithm, Backend, ManualClock, MemoryBackend};
use ratelimit_tests::contention::{admitted_under_contention, limit_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_limit_admitted_for_every_algorithm() {
    for algorithm in Algorithm::ALL {
        let clock = ManualClock::new(1_700_000_000_000);
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::with_clock(clock));
        let limit = limit_for(algorithm);
        let admitted = admitted_under_contention(&[backend], "hot", &limit, 64, 10).await;
        assert_eq!(admitted, 50, "{algorithm}: 640 attempts on a limit of 50");
    }
}
