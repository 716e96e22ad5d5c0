//! The Redis backend against the real Redis on loopback (or a private one the test support
//! starts): the conformance table, exactness under contention, TTLs, odd keys.

use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Algorithm, Backend, BackendError, Limit, ManualClock, Rate, RedisBackend};
use ratelimit_tests::conformance::{self, T0_MS};
use ratelimit_tests::contention::{admitted_per_algorithm, admitted_under_contention};
use ratelimit_tests::expiry_audit;
use ratelimit_tests::separate_limits;
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
    expiry_audit::assert_redis_keys_expire(redis.url(), &prefix).await;
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
    expiry_audit::assert_redis_keys_expire(redis.url(), &prefix).await;
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
        // Periods of a minute or more: a key of a 1 s window may expire before a loaded test reads it.
        ("compound", Limit::fixed_window(rate("1/m;5/h")), 3_600_000),
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
    for (key, limit, longest_ttl_ms) in &cases {
        let stored = backend
            .state_keys(key, limit)
            .unwrap_or_else(|e| panic!("{e}"));
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
    // Nothing else under the prefix but the shared hash-tag secret, which is configuration and
    // has no TTL (the prefix holds no glob characters), and the script calls' markers
    // (`<prefix>{<tag>}#<id>`), which last a second.
    let (markers, mut everything): (Vec<String>, Vec<String>) = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async::<Vec<String>>(&mut connection)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .partition(|name| name.contains("}#"));
    for marker in markers {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&marker)
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // -2: expired since it was listed.
        assert!(ttl == -2 || (1..=1_000).contains(&ttl), "{marker}: {ttl}");
    }
    everything.sort();
    let mut expected = vec![format!("{prefix}hash-tag-secret")];
    for (key, limit, _) in &cases {
        expected.extend(
            backend
                .state_keys(key, limit)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    expected.sort();
    assert_eq!(everything, expected);
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

/// A plain connection, for looking at (and writing beside) what the backend stored.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn query<T: redis::FromRedisValue>(
    connection: &mut redis::aio::MultiplexedConnection,
    command: &redis::Cmd,
) -> T {
    command
        .query_async(connection)
        .await
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// The hash tag in a state key: what lies between its first `{` and the next `}`.
fn tag_of(state_key: &str) -> &str {
    let open = state_key.find('{').map_or(0, |at| at + 1);
    let close = state_key[open..].find('}').map_or(open, |at| open + at);
    &state_key[open..close]
}

const SECRET: &[u8] = b"a test secret of more than sixteen bytes";

#[tokio::test]
async fn two_limits_on_one_key_keep_their_own_counts() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(T0_MS);
    let backend = backend(
        redis.url(),
        &unique_prefix("redis-separate-limits"),
        Some(clock.clone()),
    )
    .await;
    separate_limits::limits_on_one_key_count_apart(&backend, &clock, "user:1", "user:2").await;

    let minute = Limit::fixed_window(rate("5/m"));
    let hour = Limit::fixed_window(rate("10/h"));
    let tokens = Limit::token_bucket(rate("5/m"));
    let names = |limit: &Limit| {
        backend
            .state_keys("user:1", limit)
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (minute, hour, tokens) = (names(&minute), names(&hour), names(&tokens));
    assert_ne!(minute, hour);
    assert_ne!(minute, tokens);
    assert_eq!(tag_of(&minute[0]), tag_of(&hour[0]), "one key, one slot");
    assert_eq!(
        names(&Limit::fixed_window(rate("5/m"))),
        minute,
        "equal limits, one state"
    );
}

#[tokio::test]
async fn a_quota_named_twice_in_one_rate_counts_once() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(T0_MS);
    let backend = backend(redis.url(), &unique_prefix("redis-twice"), Some(clock)).await;
    for algorithm in Algorithm::ALL {
        // Both quotas are one policy, hence one state, recorded once per request.
        let limit = Limit::new(rate("3/m;3/m"), algorithm);
        let mut admitted = 0;
        for _ in 0..6 {
            let decision = backend
                .check("twice", &limit)
                .await
                .unwrap_or_else(|e| panic!("{algorithm}: {e}"));
            admitted += u32::from(decision.allowed);
        }
        assert_eq!(admitted, 3, "{algorithm}");
        let names = |limit: &Limit| {
            backend
                .state_keys("twice", limit)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let once = Limit::new(rate("3/m"), algorithm);
        assert_eq!(names(&limit), names(&once), "{algorithm}");
    }
}

#[tokio::test]
async fn reset_forgets_every_limit_of_a_key_and_no_other_key() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(T0_MS);
    // Glob characters in the prefix too: a reset under `…?:` must not reach `…a:`, whose keys
    // have the same tags (the same secret).
    let base = unique_prefix("redis-reset");
    let build = |prefix: String| {
        RedisBackend::builder(redis.url())
            .key_prefix(prefix)
            .hash_tag_secret(SECRET)
            .clock(clock.clone())
            .build()
    };
    let globbed = build(format!("{base}?*[x]:"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sibling = build(format!("{base}a*[x]:"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let victim = "user:10";
    let limit = Limit::fixed_window(rate("1/h"));
    assert!(sibling.check(victim, &limit).await.is_ok_and(|d| d.allowed));

    // A key of another program beside the victim's states, under the same stem.
    let mut connection = raw(redis.url()).await;
    let victims_keys = globbed
        .state_keys(victim, &limit)
        .unwrap_or_else(|e| panic!("{e}"));
    let foreign = format!("{}:notes", victims_keys[0]);
    let _: () = query(
        &mut connection,
        redis::cmd("SET")
            .arg(&foreign)
            .arg("x")
            .arg("PX")
            .arg(60_000),
    )
    .await;

    separate_limits::reset_forgets_every_limit_of_one_key_only(&globbed, victim, &["user:1"]).await;

    assert!(
        sibling
            .check(victim, &limit)
            .await
            .is_ok_and(|d| !d.allowed),
        "a reset under another prefix spared this one"
    );
    let exists: u64 = query(&mut connection, redis::cmd("EXISTS").arg(&foreign)).await;
    assert_eq!(exists, 1, "a key of another program under the stem stays");
    globbed
        .reset(victim)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut states = Vec::new();
    for limit in separate_limits::several_limits() {
        states.extend(
            globbed
                .state_keys(victim, &limit)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let left: u64 = query(&mut connection, redis::cmd("EXISTS").arg(&states)).await;
    assert_eq!(left, 0, "{states:?}");
    // Resetting a key that was never checked finds nothing and succeeds.
    assert!(globbed.reset("never-seen").await.is_ok());
}

#[tokio::test]
async fn hash_tags_are_keyed_digests_that_every_instance_shares() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-hash-tags");
    let limit = Limit::fixed_window(rate("1/h"));
    let with_secret = |secret: &'static [u8]| {
        RedisBackend::builder(redis.url())
            .key_prefix(&prefix)
            .hash_tag_secret(secret)
            .build()
    };
    let one = with_secret(SECRET).await.unwrap_or_else(|e| panic!("{e}"));
    let same = with_secret(SECRET).await.unwrap_or_else(|e| panic!("{e}"));
    let other = with_secret(b"another secret, also long enough")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let tag = |backend: &RedisBackend, key: &str| {
        let names = backend
            .state_keys(key, &limit)
            .unwrap_or_else(|e| panic!("{e}"));
        tag_of(&names[0]).to_owned()
    };
    let keys = ["user:1", "user:2", "{user:1}", "{}", "}{", ""];
    let mut tags: Vec<String> = keys.iter().map(|key| tag(&one, key)).collect();
    for (key, key_tag) in keys.iter().zip(&tags) {
        assert_eq!(key_tag.len(), 16, "{key:?}: {key_tag}");
        assert!(key_tag.bytes().all(|b| b.is_ascii_hexdigit()), "{key_tag}");
        assert_eq!(*key_tag, tag(&same, key), "{key:?}: the same secret");
        assert_ne!(*key_tag, tag(&other, key), "{key:?}: another secret");
        // A key's braces never become the hash tag: the tag comes first.
        let names = one
            .state_keys(key, &limit)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            names[0].starts_with(&format!("{prefix}{{{key_tag}}}:{key}:")),
            "{}",
            names[0]
        );
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), keys.len(), "every key its own tag");

    // Without a configured secret, the first instance stores one and the next reuse it.
    let shared_prefix = unique_prefix("redis-shared-secret");
    let unset = || {
        RedisBackend::builder(redis.url())
            .key_prefix(&shared_prefix)
            .build()
    };
    let first = unset().await.unwrap_or_else(|e| panic!("{e}"));
    let second = unset().await.unwrap_or_else(|e| panic!("{e}"));
    let mut connection = raw(redis.url()).await;
    let secret_key = format!("{shared_prefix}hash-tag-secret");
    let stored: String = query(&mut connection, redis::cmd("GET").arg(&secret_key)).await;
    assert_eq!(stored.len(), 64, "32 random bytes in hex");
    let ttl: i64 = query(&mut connection, redis::cmd("PTTL").arg(&secret_key)).await;
    assert_eq!(ttl, -1, "configuration, kept");
    let configured = RedisBackend::builder(redis.url())
        .key_prefix(&shared_prefix)
        .hash_tag_secret(stored.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for key in keys {
        assert_eq!(tag(&first, key), tag(&second, key), "{key:?}");
        assert_eq!(tag(&first, key), tag(&configured, key), "{key:?}");
    }
    assert!(first.check("shared", &limit).await.is_ok_and(|d| d.allowed));
    assert!(
        second
            .check("shared", &limit)
            .await
            .is_ok_and(|d| !d.allowed)
    );
    for shown in [
        format!("{first:?}"),
        format!("{configured:?}"),
        format!(
            "{:?}",
            RedisBackend::builder(redis.url()).hash_tag_secret(stored.clone())
        ),
    ] {
        assert!(!shown.contains(&stored), "{shown}");
    }

    // Too short a secret, set or found stored, is refused (and not shown).
    let refused = RedisBackend::builder(redis.url())
        .key_prefix(&prefix)
        .hash_tag_secret("hunter2")
        .build()
        .await;
    match refused {
        Err(error @ BackendError::WeakHashTagSecret { len: 7, .. }) => {
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        other => panic!("a 7-byte secret: {other:?}"),
    }
    let weak_prefix = unique_prefix("redis-weak-secret");
    let _: () = query(
        &mut connection,
        redis::cmd("SET")
            .arg(format!("{weak_prefix}hash-tag-secret"))
            .arg("short")
            .arg("PX")
            .arg(60_000),
    )
    .await;
    let refused = RedisBackend::builder(redis.url())
        .key_prefix(&weak_prefix)
        .build()
        .await;
    assert!(
        matches!(refused, Err(BackendError::WeakHashTagSecret { len: 5, .. })),
        "{refused:?}"
    );
}

/// A full `20000/h` log costs a check O(log n), not a walk over 20,000 entries: filling it at
/// 50 concurrent checks never times out, and 256 over-limit checks on it leave 64 checks on
/// other keys, running at the same time, each answered within 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_sliding_log_is_checked_without_walking_it() {
    const LIMIT: u64 = 20_000;
    const FILLERS: u64 = 50;
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-long-log");
    // Server time: the log is an hour long, nothing slides out while the test runs.
    let backend = Arc::new(backend(redis.url(), &prefix, None).await);
    let limit = Limit::sliding_window(rate("20000/h"));

    let fillers: Vec<_> = (0..FILLERS)
        .map(|filler| {
            let backend = Arc::clone(&backend);
            let limit = limit.clone();
            tokio::spawn(async move {
                for step in 0..LIMIT / FILLERS {
                    let decision = backend
                        .check("full", &limit)
                        .await
                        .unwrap_or_else(|e| panic!("filler {filler}, step {step}: {e}"));
                    assert!(decision.allowed, "filler {filler}, step {step}");
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.unwrap_or_else(|e| panic!("{e}"));
    }

    let timed = |key: String, backend: Arc<RedisBackend>, limit: Limit| async move {
        let started = std::time::Instant::now();
        let decision = backend
            .check(&key, &limit)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        (key, decision, started.elapsed())
    };
    let mut calls = Vec::new();
    for index in 0..256 {
        let call = timed("full".to_owned(), Arc::clone(&backend), limit.clone());
        calls.push((false, tokio::spawn(call)));
        if index % 4 == 0 {
            let call = timed(
                format!("other:{index}"),
                Arc::clone(&backend),
                limit.clone(),
            );
            calls.push((true, tokio::spawn(call)));
        }
    }
    let mut slowest = Duration::ZERO;
    for (expect_allowed, call) in calls {
        let (key, decision, elapsed) = call.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decision.allowed, expect_allowed, "{key}: {decision:?}");
        if !expect_allowed {
            assert_eq!(decision.remaining, 0, "{key}");
            assert!(decision.retry_after.is_some(), "{key}: {decision:?}");
        }
        assert!(
            elapsed <= Duration::from_millis(250),
            "{key} took {elapsed:?}"
        );
        slowest = slowest.max(elapsed);
    }
    tracing::info!(?slowest, "slowest check beside a full 20000/h log");
    expiry_audit::assert_redis_keys_expire(redis.url(), &prefix).await;
}

/// A log written before running totals were kept (its sequence key a bare counter), or one
/// whose sequence key is gone, is counted in full: the total is rebuilt once from the log, and
/// new members continue after the highest sequence number, so none overwrites an old one.
#[tokio::test]
async fn a_log_without_a_running_total_is_rebuilt_once() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let prefix = unique_prefix("redis-old-log");
    let clock = ManualClock::new(T0_MS);
    let backend = backend(redis.url(), &prefix, Some(clock.clone())).await;
    let limit = Limit::sliding_window(rate("6/h"));
    let mut connection = raw(redis.url()).await;
    for (key, old_sequence) in [("bare", Some("2")), ("missing", None)] {
        let names = backend
            .state_keys(key, &limit)
            .unwrap_or_else(|e| panic!("{e}"));
        let [log, sequence] = names.as_slice() else {
            panic!("{key}: a log and its sequence key, not {names:?}");
        };
        let _: u64 = query(
            &mut connection,
            redis::cmd("ZADD")
                .arg(log)
                .arg(T0_MS - 2_000)
                .arg("1:1")
                .arg(T0_MS - 1_000)
                .arg("2:3"),
        )
        .await;
        let _: bool = query(&mut connection, redis::cmd("PEXPIRE").arg(log).arg(60_000)).await;
        if let Some(old) = old_sequence {
            let _: () = query(
                &mut connection,
                redis::cmd("SET")
                    .arg(sequence)
                    .arg(old)
                    .arg("PX")
                    .arg(60_000),
            )
            .await;
        }
        // 4 of 6 used: a cost of 2 fits, then nothing does until the oldest slides out.
        let fits = backend.check_n(key, &limit, 2).await;
        assert!(
            fits.as_ref().is_ok_and(|d| d.allowed && d.remaining == 0),
            "{key}: {fits:?}"
        );
        let over = backend.check(key, &limit).await;
        assert!(
            over.as_ref()
                .is_ok_and(|d| !d.allowed
                    && d.retry_after == Some(Duration::from_millis(3_600_000 - 2_000))),
            "{key}: {over:?}"
        );
        let members: u64 = query(&mut connection, redis::cmd("ZCARD").arg(log)).await;
        assert_eq!(members, 3, "{key}");
        let stored: String = query(&mut connection, redis::cmd("GET").arg(sequence)).await;
        assert_eq!(stored, "3:6", "{key}");
        let ttl: i64 = query(&mut connection, redis::cmd("PTTL").arg(sequence)).await;
        assert!(ttl > 0, "{key}: {ttl}");
        // A total whose log was deleted by hand counts nothing.
        let _: u64 = query(&mut connection, redis::cmd("DEL").arg(log)).await;
        let fresh = backend.check_n(key, &limit, 6).await;
        assert!(
            fresh.as_ref().is_ok_and(|d| d.allowed && d.remaining == 0),
            "{key}: {fresh:?}"
        );
        let stored: String = query(&mut connection, redis::cmd("GET").arg(sequence)).await;
        assert_eq!(stored, "1:6", "{key}");
    }
}

#[tokio::test]
async fn extreme_periods_counts_and_costs_are_decided_without_errors() {
    let Some(redis) = services::redis().await else {
        return;
    };
    let clock = ManualClock::new(T0_MS);
    let backend = backend(
        redis.url(),
        &unique_prefix("redis-extreme"),
        Some(clock.clone()),
    )
    .await;
    let (broken, calls) = ratelimit_tests::extreme_values::run(&backend, &clock, "", 60).await;
    assert!(calls >= 240, "too few valid cases: {calls} calls");
    assert!(broken.is_empty(), "{broken:#?}");
}
