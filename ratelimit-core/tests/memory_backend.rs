//! Memory-backend specifics: bounds, expiry, reset, odd keys and invalid limits.

use std::time::Duration;

use ratelimit_core::{Backend, BackendError, Limit, LimitError, ManualClock, MemoryBackend, Rate};

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn expired_state_is_swept_by_cleanup_and_reads_as_fresh() {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::with_clock(clock.clone());
    let limit = Limit::fixed_window(rate("1/m"));
    for user in 0..100 {
        assert!(
            backend
                .check(&format!("user:{user}"), &limit)
                .await
                .is_ok_and(|d| d.allowed)
        );
    }
    assert_eq!(backend.len(), 100);
    clock.advance(Duration::from_secs(61));
    assert!(
        backend
            .check("user:0", &limit)
            .await
            .is_ok_and(|d| d.allowed),
        "new window"
    );
    assert_eq!(
        backend.cleanup().await.ok(),
        Some(99),
        "the 99 untouched keys expired"
    );
    assert_eq!(backend.len(), 1);
}

#[tokio::test]
async fn writes_sweep_expired_state_without_a_cleanup_call() {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::builder()
        .clock(clock.clone())
        .shards(1)
        .build();
    let limit = Limit::fixed_window(rate("1/s"));
    for user in 0..5_000 {
        let _ = backend.check(&format!("old:{user}"), &limit).await;
    }
    clock.advance(Duration::from_secs(2));
    for user in 0..5_000 {
        let _ = backend.check(&format!("new:{user}"), &limit).await;
    }
    assert!(
        backend.len() < 10_000,
        "old keys were swept by later writes: {}",
        backend.len()
    );
}

#[tokio::test]
async fn max_keys_bounds_the_store_and_evicts_soonest_to_expire_first() {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::builder()
        .clock(clock.clone())
        .max_keys(64)
        .shards(1)
        .build();
    let long = Limit::fixed_window(rate("1/d"));
    let short = Limit::fixed_window(rate("1/s"));
    for user in 0..32 {
        let _ = backend.check(&format!("long:{user}"), &long).await;
    }
    for user in 0..1_000 {
        let _ = backend.check(&format!("short:{user}"), &short).await;
        assert!(
            backend.len() <= 64,
            "never above max_keys: {}",
            backend.len()
        );
    }
    for user in 0..32 {
        let decision = backend.peek(&format!("long:{user}"), &long).await;
        assert!(
            decision.is_ok_and(|d| !d.allowed),
            "long-lived key {user} was kept"
        );
    }
}

#[tokio::test]
async fn reset_forgets_every_quota_of_a_compound_rate() {
    let backend = MemoryBackend::new();
    let limit = Limit::sliding_window(rate("1/s;2/m;3/h"));
    assert!(backend.check("k", &limit).await.is_ok_and(|d| d.allowed));
    assert!(backend.check("k", &limit).await.is_ok_and(|d| !d.allowed));
    assert!(backend.reset("k").await.is_ok());
    assert_eq!(backend.len(), 0);
    assert!(backend.check("k", &limit).await.is_ok_and(|d| d.allowed));
}

#[tokio::test]
async fn huge_and_unicode_keys_are_distinct_buckets() {
    let backend = MemoryBackend::new();
    let limit = Limit::fixed_window(rate("1/m"));
    let huge = "x".repeat(1 << 20);
    let keys = [huge.as_str(), "ключ", "キー", "🔑", "", "\0", "a{b}c"];
    for key in keys {
        assert!(
            backend.check(key, &limit).await.is_ok_and(|d| d.allowed),
            "{key:.8}"
        );
    }
    for key in keys {
        assert!(
            backend.check(key, &limit).await.is_ok_and(|d| !d.allowed),
            "{key:.8}"
        );
    }
    assert_eq!(
        backend.len(),
        keys.len(),
        "a 1 MiB key costs a fixed-size entry"
    );
}

#[tokio::test]
async fn invalid_limits_and_zero_cost_are_errors_not_panics() {
    let backend = MemoryBackend::new();
    let cases = [
        (
            Limit::fixed_window(rate("1/m")).bucket_size(3),
            "bucket_size",
        ),
        (
            Limit::token_bucket(rate("1/m")).refill_rate(f64::NAN),
            "refill_rate",
        ),
        (
            Limit::token_bucket(rate("1/m")).refill_rate(-1.0),
            "refill_rate",
        ),
        (Limit::leaky_bucket(rate("1/m")).leak_rate(0.0), "leak_rate"),
        (
            Limit::token_bucket(rate("1/m")).bucket_size(0),
            "bucket_size",
        ),
        (
            Limit::token_bucket(rate("5/m")).initial_tokens(6),
            "initial_tokens",
        ),
        (
            Limit::token_bucket(rate("5/m;10/h")).bucket_size(6),
            "compound",
        ),
        (Limit::leaky_bucket(rate("1/m")).capacity(u64::MAX), "exact"),
    ];
    for (limit, fragment) in cases {
        let error = limit
            .validate()
            .err()
            .unwrap_or_else(|| panic!("{limit:?} validated"));
        assert!(error.to_string().contains(fragment), "{error}");
        let from_backend = backend.check("k", &limit).await;
        assert!(
            matches!(&from_backend, Err(BackendError::InvalidLimit(e)) if e.to_string() == error.to_string()),
            "{from_backend:?}"
        );
    }
    let valid = Limit::fixed_window(rate("1/m"));
    assert!(matches!(
        backend.check_n("k", &valid, 0).await,
        Err(BackendError::InvalidLimit(LimitError::ZeroCost))
    ));
}

#[tokio::test]
async fn health_is_reported_without_io() {
    let backend = MemoryBackend::new();
    let status = backend.health().await;
    assert!(status.healthy);
    assert_eq!(status.backend, "memory");
    assert_eq!(backend.health_status(), status);
}

#[test]
fn limits_that_stores_cannot_keep_exact_are_refused() {
    let huge_count = Limit::fixed_window(rate("18446744073709551615/s"));
    assert_eq!(
        huge_count.validate(),
        Err(LimitError::TooLargeForExactArithmetic)
    );
    let counter = Limit::sliding_window_counter(rate("1000000000000/d"));
    assert_eq!(
        counter.validate(),
        Err(LimitError::TooLargeForExactArithmetic)
    );
    assert!(
        Limit::sliding_window_counter(rate("100000000/d"))
            .validate()
            .is_ok()
    );
    assert!(
        Limit::fixed_window(rate("9007199254740992/s"))
            .validate()
            .is_ok()
    );
}

/// A quota named twice has one state, as identical limits do: it counts each request once.
#[tokio::test]
async fn a_quota_named_twice_counts_each_request_once() {
    let backend = MemoryBackend::new();
    for algorithm in ratelimit_core::Algorithm::ALL {
        let limit = Limit::new(rate("3/m;3/m"), algorithm);
        let key = format!("twice:{algorithm}");
        let mut admitted = 0;
        for _ in 0..6 {
            admitted += u32::from(backend.check(&key, &limit).await.is_ok_and(|d| d.allowed));
        }
        assert_eq!(admitted, 3, "{algorithm}");
    }
}

/// A bucket on a rate of 0 would be spent once and never refill: a "banned" tier must never
/// get a full bucket back because its state was forgotten, so such a limit is refused.
#[tokio::test]
async fn buckets_that_never_refill_are_refused_not_forgotten() {
    let backend = MemoryBackend::new();
    for (limit, field) in [
        (
            Limit::token_bucket(rate("0/m")).bucket_size(10),
            "bucket_size",
        ),
        (Limit::leaky_bucket(rate("0/m")).capacity(10), "capacity"),
    ] {
        let refused = limit.validate();
        assert_eq!(refused, Err(LimitError::NeverRefills { field }));
        let message = refused
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("\"0/m\"") && message.contains("fixed-window"),
            "{message}"
        );
        assert!(matches!(
            backend.check("banned", &limit).await,
            Err(BackendError::InvalidLimit(LimitError::NeverRefills { .. }))
        ));
    }
    // With an explicit flow the bucket refills, and a rate of 0 alone blocks everything.
    assert!(
        Limit::token_bucket(rate("0/m"))
            .bucket_size(10)
            .refill_rate(1.0)
            .validate()
            .is_ok()
    );
    assert!(
        Limit::leaky_bucket(rate("0/m"))
            .capacity(10)
            .leak_rate(1.0)
            .validate()
            .is_ok()
    );
    for limit in [
        Limit::token_bucket(rate("0/m")),
        Limit::leaky_bucket(rate("0/m")),
    ] {
        assert!(
            backend
                .check("banned", &limit)
                .await
                .is_ok_and(|d| !d.allowed)
        );
    }
}

#[tokio::test]
async fn max_keys_is_a_store_wide_bound_not_a_per_shard_one() {
    let backend = MemoryBackend::builder().max_keys(1_000).shards(64).build();
    let limit = Limit::fixed_window(rate("1/d"));
    for user in 0..1_000 {
        let _ = backend.check(&format!("user:{user}"), &limit).await;
    }
    assert_eq!(
        backend.len(),
        1_000,
        "uneven shards must not evict below max_keys"
    );
    for user in 0..1_000 {
        let decision = backend.peek(&format!("user:{user}"), &limit).await;
        assert!(decision.is_ok_and(|d| !d.allowed), "user {user} was kept");
    }
    for user in 1_000..3_000 {
        let _ = backend.check(&format!("user:{user}"), &limit).await;
        assert!(
            backend.len() <= 1_000,
            "never above max_keys: {}",
            backend.len()
        );
    }
}

#[tokio::test]
async fn one_key_under_two_algorithms_keeps_two_states_and_reset_forgets_both() {
    let backend = MemoryBackend::new();
    let window = Limit::fixed_window(rate("1/m"));
    let log = Limit::sliding_window(rate("1/m"));
    for limit in [&window, &log] {
        assert!(backend.check("k", limit).await.is_ok_and(|d| d.allowed));
        assert!(backend.check("k", limit).await.is_ok_and(|d| !d.allowed));
    }
    assert_eq!(backend.len(), 2, "one compact and one general slot");
    assert!(backend.reset("k").await.is_ok());
    assert!(backend.is_empty());
    for limit in [&window, &log] {
        assert!(backend.check("k", limit).await.is_ok_and(|d| d.allowed));
    }
}

#[tokio::test]
async fn reset_forgets_every_limit_of_a_key_and_nothing_of_other_keys() {
    let backend = MemoryBackend::new();
    let limits = [
        Limit::fixed_window(rate("1/m")),
        Limit::fixed_window(rate("1/h")),
        Limit::token_bucket(rate("1/m")),
        Limit::sliding_window(rate("1/s;1/m")),
    ];
    for key in ["k", "k2", "other"] {
        for limit in &limits {
            assert!(backend.check(key, limit).await.is_ok_and(|d| d.allowed));
            assert!(backend.check(key, limit).await.is_ok_and(|d| !d.allowed));
        }
    }
    assert_eq!(
        backend.len(),
        3 * 5,
        "one state per quota of each limit, per key"
    );
    assert!(backend.reset("k").await.is_ok());
    assert_eq!(backend.len(), 2 * 5);
    for limit in &limits {
        assert!(backend.check("k", limit).await.is_ok_and(|d| d.allowed));
        for key in ["k2", "other"] {
            assert!(backend.check(key, limit).await.is_ok_and(|d| !d.allowed));
        }
    }
}

/// The store keeps a coarse expiry per slot but forgets on the exact millisecond: a bucket
/// that starts empty is remembered (full) until a period after it filled, then starts empty
/// again.
#[tokio::test]
async fn a_bucket_that_starts_empty_is_forgotten_on_the_millisecond() {
    let clock = ManualClock::new(1_700_000_000_123);
    let backend = MemoryBackend::with_clock(clock.clone());
    // 1 token per second into a bucket of 2 that starts empty; the period is 2 s.
    let limit = Limit::token_bucket(rate("2/2s")).initial_tokens(0);
    let first = backend.check("k", &limit).await;
    assert!(first.is_ok_and(|d| !d.allowed), "starts empty");
    // Full 2 s after the first (rejected) request, forgotten a period (2 s) later.
    clock.advance(Duration::from_millis(3_999));
    let remembered = backend.peek("k", &limit).await;
    assert!(
        remembered.is_ok_and(|d| d.allowed && d.remaining == 1),
        "still the full bucket"
    );
    clock.advance(Duration::from_millis(1));
    let forgotten = backend.peek("k", &limit).await;
    assert!(
        forgotten.is_ok_and(|d| !d.allowed && d.remaining == 0),
        "forgotten: a new, empty bucket"
    );
}
