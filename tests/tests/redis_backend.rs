//! The Redis backend against the real Redis on loopback (or a private one the test support
//! starts): the conformance table, exactness under contention, TTLs, odd keys.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Backend, Limit, ManualClock, Rate, RedisBackend};
use ratelimit_tests::conformance;
use ratelimit_tests::contention::{admitted_per_algorithm, admitted_under_contention};
use ratelimit_tests::services::{self, unique_prefix};

async fn backend(url: &str, prefix: &str, clock: Option<ManualClock>) -> RedisBackend {
    let mut builder = RedisBackend::builder(url).key_prefix(prefix);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    builder
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"))
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

#[tokio::test]
async fn redis_matches_the_conformance_table() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-conformance");
    let url = redis.url().to_owned();
    let failures = conformance::run(
        |clock| {
            let url = url.clone();
            let prefix = prefix.clone();
            async move { Arc::new(backend(&url, &prefix, Some(clock)).await) as Arc<dyn Backend> }
        },
        "",
    )
    .await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_connections_and_many_tasks_admit_exactly_the_limit() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-contention");
    // A frozen clock: nothing refills, leaks or slides out while the tasks run.
    let clock = ManualClock::new(1_700_000_000_000);
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for _ in 0..4 {
        backends.push(Arc::new(
            backend(redis.url(), &prefix, Some(clock.clone())).await,
        ));
    }
    for (algorithm, admitted) in admitted_per_algorithm(&backends).await {
        assert_eq!(
            admitted, 50,
            "{algorithm}: 320 attempts on a limit of 50 over 4 connections"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_time_is_used_without_an_injected_clock() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-server-time");
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(backend(redis.url(), &prefix, None).await),
        Arc::new(backend(redis.url(), &prefix, None).await),
    ];
    let limit = Limit::fixed_window(rate("50/d"));
    let admitted = admitted_under_contention(&backends, "server-clock", &limit, 32, 4).await;
    // 128 attempts within one day-aligned window (a run across midnight UTC could see two).
    assert!(admitted == 50 || admitted == 100, "{admitted}");
    let decision = backends[0]
        .peek("server-clock", &limit)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(decision.reset_after <= Duration::from_secs(86_400));
}

#[tokio::test]
async fn every_key_written_has_a_ttl_no_longer_than_needed() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-ttl");
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = backend(redis.url(), &prefix, Some(clock)).await;
    // (key, limit, the longest TTL its state may need in ms)
    let cases = [
        ("fixed", Limit::fixed_window(rate("5/m")), 60_000),
        ("log", Limit::sliding_window(rate("5/m")), 60_000),
        (
            "counter",
            Limit::sliding_window_counter(rate("5/m")),
            120_000,
        ),
        // One token back takes 12 s; that is when the bucket is full again.
        ("tokens", Limit::token_bucket(rate("5/m")), 12_000),
        ("leaky", Limit::leaky_bucket(rate("5/m")), 12_000),
        ("compound", Limit::fixed_window(rate("1/s;5/h")), 3_600_000),
    ];
    for (key, limit, _) in &cases {
        assert!(backend.check(key, limit).await.is_ok_and(|d| d.allowed));
    }
    let client = redis::Client::open(redis.url()).unwrap_or_else(|e| panic!("{e}"));
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut seen = 0;
    for (key, _, longest_ttl_ms) in &cases {
        let stored: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{{{key}}}*"))
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!stored.is_empty(), "{key}: nothing stored");
        for stored_key in stored {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&stored_key)
                .query_async(&mut connection)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(ttl > 0, "{stored_key} has no TTL ({ttl})");
            assert!(
                ttl <= *longest_ttl_ms,
                "{stored_key} lives {ttl} ms > {longest_ttl_ms}"
            );
            seen += 1;
        }
    }
    // The sliding log keeps a sequence key beside its log; the compound rate one key per quota.
    assert_eq!(seen, cases.len() + 2);
}

#[tokio::test]
async fn long_unicode_and_brace_keys_are_separate_buckets() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-keys");
    let backend = backend(redis.url(), &prefix, None).await;
    let limit = Limit::fixed_window(rate("1/h"));
    let huge = "x".repeat(100_000);
    let keys = [
        huge.as_str(),
        "ключ",
        "🔑",
        "a{b}c",
        "}{",
        "with space",
        "new\nline",
    ];
    for key in keys {
        assert!(
            backend.check(key, &limit).await.is_ok_and(|d| d.allowed),
            "{key:.10}"
        );
    }
    for key in keys {
        assert!(
            backend.check(key, &limit).await.is_ok_and(|d| !d.allowed),
            "{key:.10}"
        );
        assert!(backend.reset(key).await.is_ok());
        assert!(
            backend.check(key, &limit).await.is_ok_and(|d| d.allowed),
            "{key:.10} after reset"
        );
    }
}

#[tokio::test]
async fn health_pings_and_cleanup_has_nothing_to_do() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let backend = backend(redis.url(), &unique_prefix("redis-health"), None).await;
    let status = backend.health().await;
    assert!(status.healthy, "{status:?}");
    assert!(status.latency.is_some());
    assert_eq!(backend.cleanup().await.ok(), Some(0));
}
