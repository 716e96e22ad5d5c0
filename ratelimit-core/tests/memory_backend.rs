//! Memory-backend specifics: bounds, expiry, reset, odd keys and invalid limits.

use std::time::Duration;

use proptest::prelude::*;
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

/// A flood of fresh keys against a full store evicts the keys furthest from their limits, not
/// the soonest to expire: a short login window at its limit stays, and so does one near it.
#[test]
fn a_key_flood_cannot_evict_a_key_at_its_limit() {
    // 22:13:20 UTC: the login window ends at 22:15, long before the flood's day does.
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::builder()
        .clock(clock)
        .max_keys(1_000)
        .build();
    let login = Limit::fixed_window(rate("5/5m"));
    let check = |key: &str, limit: &Limit| {
        backend
            .check_now(key, limit, 1)
            .unwrap_or_else(|error| panic!("{error}"))
    };
    for attempt in 1..=5 {
        assert!(check("login:alice", &login).allowed, "attempt {attempt}");
    }
    assert!(!check("login:alice", &login).allowed, "the 6th is rejected");
    for attempt in 1..=4 {
        assert!(check("login:bob", &login).allowed, "attempt {attempt}");
    }
    let flood = Limit::fixed_window(rate("1000/d"));
    for key in 0..5_000 {
        assert!(check(&format!("flood:{key}"), &flood).allowed);
        assert!(backend.len() <= 1_000, "within max_keys: {}", backend.len());
    }
    assert!(!check("login:alice", &login).allowed, "still at its limit");
    let bob = check("login:bob", &login);
    assert!(bob.allowed && bob.remaining == 0, "bob's 4 of 5 were kept");
    assert!(!check("login:bob", &login).allowed);
}

/// Eviction takes a whole eighth of the shard at once; the fresh key goes within it, however
/// the table happens to order the keys at their limits that share one expiry.
#[test]
fn eviction_takes_every_lower_ranked_key_before_any_tie() {
    for round in 0..20 {
        let backend = MemoryBackend::builder()
            .clock(ManualClock::new(1_700_000_000_000))
            .max_keys(16)
            .shards(1)
            .build();
        let at_limit = Limit::fixed_window(rate("1/h"));
        let fresh = Limit::fixed_window(rate("1000/h"));
        for key in 0..15 {
            let _ = backend.check_now(&format!("{round}:at-limit:{key}"), &at_limit, 1);
        }
        let _ = backend.check_now(&format!("{round}:fresh"), &fresh, 1);
        let _ = backend.check_now(&format!("{round}:new"), &fresh, 1);
        // An eighth of 16 is 2: the fresh key and one of the 15 ties.
        assert_eq!(backend.len(), 15);
        let forgotten = backend.peek_now(&format!("{round}:fresh"), &fresh, 1);
        assert!(
            forgotten.is_ok_and(|d| d.remaining == 999),
            "round {round}: the fresh key goes first"
        );
        let at_limit_kept = (0..15)
            .filter(|key| {
                let key = format!("{round}:at-limit:{key}");
                backend
                    .peek_now(&key, &at_limit, 1)
                    .is_ok_and(|d| !d.allowed)
            })
            .count();
        assert_eq!(at_limit_kept, 14, "round {round}");
    }
}

/// Which of the prefilled keys a property case stores, and how close to its limit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    /// Expired by the time the flood comes.
    Expiring,
    /// One request of a large hourly limit.
    Fresh,
    /// 4 of 5 (`false`) or 5 of 5 (`true`) requests of an hourly limit.
    Near(bool),
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        Just(Fate::Expiring),
        Just(Fate::Fresh),
        any::<bool>().prop_map(Fate::Near),
    ]
}

impl Fate {
    /// The limit of the key (a sliding log, kept in the store's other table, or a fixed
    /// window), and how many requests it gets.
    fn limit(self, sliding: bool) -> (Limit, u64) {
        let (text, requests) = match self {
            Self::Expiring => ("3/s", 1),
            Self::Fresh => ("1000/h", 1),
            Self::Near(at_limit) => ("5/h", if at_limit { 5 } else { 4 }),
        };
        let algorithm = if sliding {
            ratelimit_core::Algorithm::SlidingWindow
        } else {
            ratelimit_core::Algorithm::FixedWindow
        };
        (Limit::new(rate(text), algorithm), requests)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A store filled to `max_keys` with keys of every kind, some of them expired, then flooded
    /// with fresh keys: no live key goes while an expired one is stored, the store never
    /// exceeds `max_keys`, and keys near their limits outlast the flood. One shard, so that
    /// "stored" means the shard that makes room (the guarantee is per shard).
    #[test]
    fn eviction_drops_expired_state_first_and_keeps_keys_near_their_limits(
        keys in prop::collection::vec((fate(), any::<bool>()), 8..80),
        flood in 1_usize..240,
    ) {
        let near = keys.iter().filter(|(fate, _)| matches!(fate, Fate::Near(_))).count();
        prop_assume!(near <= keys.len() / 2);
        let clock = ManualClock::new(1_700_000_000_000);
        let backend = MemoryBackend::builder()
            .clock(clock.clone())
            .max_keys(keys.len())
            .shards(1)
            .build();
        for (index, (fate, sliding)) in keys.iter().enumerate() {
            let (limit, requests) = fate.limit(*sliding);
            for _ in 0..requests {
                let decision = backend.check_now(&format!("key:{index}"), &limit, 1);
                prop_assert!(decision.is_ok_and(|d| d.allowed));
            }
        }
        prop_assert_eq!(backend.len(), keys.len(), "full, nothing evicted yet");
        // Past every expiring key's expiry, even rounded up to the store's ~1 s tick.
        clock.advance(Duration::from_secs(3));
        // How many requests the key at `index` has on record (0 once forgotten).
        let recorded = |index: usize| -> Result<u64, TestCaseError> {
            let (fate, sliding) = keys[index];
            let (limit, _) = fate.limit(sliding);
            let peek = backend
                .peek_now(&format!("key:{index}"), &limit, 1)
                .map_err(|error| TestCaseError::fail(error.to_string()))?;
            Ok(if peek.allowed { peek.limit - 1 - peek.remaining } else { peek.limit })
        };
        let expiring = keys.iter().filter(|(fate, _)| *fate == Fate::Expiring).count();
        let flood_limit = Limit::fixed_window(rate("1000/d"));
        for key in 0..flood {
            let decision = backend.check_now(&format!("flood:{key}"), &flood_limit, 1);
            prop_assert!(decision.is_ok_and(|d| d.allowed));
            prop_assert!(backend.len() <= keys.len(), "within max_keys: {}", backend.len());
            if key < expiring {
                // The expired keys made room: every live key is still stored.
                for (index, (fate, sliding)) in keys.iter().enumerate() {
                    if *fate != Fate::Expiring {
                        let (_, requests) = fate.limit(*sliding);
                        prop_assert_eq!(recorded(index)?, requests, "key {} ({:?})", index, fate);
                    }
                }
            }
        }
        for (index, (fate, _)) in keys.iter().enumerate() {
            if let Fate::Near(at_limit) = fate {
                let requests = if *at_limit { 5 } else { 4 };
                prop_assert_eq!(recorded(index)?, requests, "near key {} was kept", index);
            }
        }
    }
}

/// Every live state dropped for room is counted, and expired ones swept are not.
#[cfg(feature = "metrics")]
#[test]
fn evictions_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = MemoryBackend::builder()
        .clock(clock.clone())
        .max_keys(100)
        .shards(1)
        .build();
    let short = Limit::fixed_window(rate("1/s"));
    let long = Limit::fixed_window(rate("1/d"));
    metrics::with_local_recorder(&recorder, || {
        for key in 0..100 {
            let _ = backend.check_now(&format!("short:{key}"), &short, 1);
        }
        // Expired: swept to make room, not evicted.
        clock.advance(Duration::from_secs(3));
        for key in 0..300 {
            let _ = backend.check_now(&format!("long:{key}"), &long, 1);
        }
    });
    let evictions: Vec<u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(count)
                if key.key().name() == "ratelimit_memory_evictions_total" =>
            {
                Some(count)
            }
            _ => None,
        })
        .collect();
    // 300 inserts into a store of 100: 100 fit where the expired keys were swept, and every
    // further one needed a live key's room.
    assert_eq!(evictions, [300 - backend.len() as u64]);
    assert!(backend.len() <= 100);
}
