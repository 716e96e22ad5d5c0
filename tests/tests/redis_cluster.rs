//! The Redis backend in cluster mode, against a three-master Redis Cluster each test starts for
//! itself: the conformance table, compound rates whose quotas share one slot, keys spread over
//! every master, exactness under contention.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ratelimit_core::{Algorithm, Backend, Limit, ManualClock, Rate, RedisBackend};
use ratelimit_tests::conformance::{self, T0_MS};
use ratelimit_tests::contention::admitted_per_algorithm;
use ratelimit_tests::expiry_audit;
use ratelimit_tests::redis_cluster::LocalCluster;
use ratelimit_tests::separate_limits;
use ratelimit_tests::services::{self, unique_prefix};

/// A cluster of this test's own, or `None` (after a warning) when `redis-server` is missing.
async fn start_cluster() -> Option<LocalCluster> {
    match LocalCluster::start().await {
        Ok(cluster) => Some(cluster),
        Err(error) if error.is_not_installed() => {
            services::skip_or_fail(format!("no local Redis Cluster: {error}"))
        }
        Err(error) => panic!("starting a local Redis Cluster: {error}"),
    }
}

async fn backend(urls: &[String], prefix: &str, clock: Option<ManualClock>) -> RedisBackend {
    let mut builder = RedisBackend::cluster_builder(urls).key_prefix(prefix);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    builder
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to the cluster at {urls:?}: {error}"))
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

/// A plain connection to one node, for looking at what the backend stored there.
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
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

async fn key_slot(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> u16 {
    query(connection, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await
}

#[tokio::test]
async fn cluster_matches_the_conformance_table() {
    let Some(cluster) = start_cluster().await else {
        return;
    };
    let urls = cluster.urls();
    let prefix = unique_prefix("cluster-conformance");
    let failures = conformance::run(
        |clock| {
            let urls = urls.clone();
            let prefix = prefix.clone();
            async move { Arc::new(backend(&urls, &prefix, Some(clock)).await) as Arc<dyn Backend> }
        },
        "",
    )
    .await;
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn compound_quotas_share_a_slot_and_keys_spread_over_every_master() {
    let Some(cluster) = start_cluster().await else {
        return;
    };
    let urls = cluster.urls();
    let prefix = unique_prefix("cluster-slots");

    // "1/s;5/m", a check every 2 s (the sliding window counter still weighs in the previous
    // second right after it): the second request within a second is over the first quota, the
    // sixth within a minute over the second, for every algorithm. Each check is one script call
    // over both quotas' keys, which Redis Cluster only runs when they hash to one slot.
    let clock = ManualClock::new(T0_MS);
    let frozen = backend(&urls, &prefix, Some(clock.clone())).await;
    let compound = rate("1/s;5/m");
    for algorithm in Algorithm::ALL {
        let key = format!("compound:{algorithm}");
        let limit = Limit::new(compound.clone(), algorithm);
        clock.set_millis(T0_MS);
        let mut allowed = Vec::new();
        for step in 0..6 {
            let first = frozen.check(&key, &limit).await;
            let again = frozen.check(&key, &limit).await;
            let first = first.unwrap_or_else(|e| panic!("{algorithm}, step {step}: {e}"));
            let again = again.unwrap_or_else(|e| panic!("{algorithm}, step {step}: {e}"));
            assert!(!again.allowed, "{algorithm}: 2 within 1 s at step {step}");
            allowed.push(first.allowed);
            clock.advance(Duration::from_secs(2));
        }
        assert_eq!(
            allowed,
            [true, true, true, true, true, false],
            "{algorithm}: one every 2 s, five per minute"
        );
    }

    // Many keys on server time, through a backend that knows a single node only.
    let spread = backend(&urls[1..2], &prefix, None).await;
    let limit = Limit::fixed_window(rate("10/h"));
    let spread_keys = 300;
    for index in 0..spread_keys {
        let decision = spread
            .check(&format!("spread:{index}"), &limit)
            .await
            .unwrap_or_else(|e| panic!("spread:{index}: {e}"));
        assert!(decision.allowed, "spread:{index}");
    }

    // Which node holds which key (every key of this cluster is this test's), leaving out the
    // script calls' markers (`<prefix>{<tag>}#<id>`, in the slot of the key they checked).
    let mut keys_per_node = Vec::new();
    let mut node_of_key = BTreeMap::new();
    for url in &urls {
        let mut connection = node(url).await;
        let all: Vec<String> = query(&mut connection, redis::cmd("KEYS").arg("*")).await;
        let size: u64 = query(&mut connection, &redis::cmd("DBSIZE")).await;
        let keys: Vec<String> = all
            .iter()
            .filter(|key| !key.contains("}#"))
            .cloned()
            .collect();
        // Markers may expire between the two commands; nothing else does.
        assert!(
            (keys.len() as u64..=all.len() as u64).contains(&size),
            "{url}: {size} keys, listed {}",
            all.len()
        );
        for key in &keys {
            assert!(key.starts_with(&prefix), "{url} holds a stranger: {key}");
            node_of_key.insert(key.clone(), url.clone());
        }
        keys_per_node.push(keys.len());
    }
    tracing::info!(?keys_per_node, "keys per master");

    // Compound keys: one slot per user key, the slot of its hash tag, on one node.
    let mut any = node(&urls[0]).await;
    for algorithm in Algorithm::ALL {
        let key = format!("compound:{algorithm}");
        let names = frozen
            .state_keys(&key, &Limit::new(compound.clone(), algorithm))
            .unwrap_or_else(|e| panic!("{e}"));
        let tag = names[0][prefix.len()..]
            .split_inclusive('}')
            .next()
            .unwrap_or_default()
            .to_owned();
        let stored: Vec<&String> = node_of_key.keys().filter(|k| k.contains(&tag)).collect();
        // One key per quota; the sliding log keeps a sequence key beside each log. The last
        // check (rejected by 5/m) found the 1/s log's only entry expired and dropped that log
        // with its sequence key, so only the 5/m pair is left.
        let mut names: Vec<&String> = names.iter().collect();
        names.sort();
        if algorithm == Algorithm::SlidingWindow {
            assert_eq!(stored.len(), 2, "{algorithm}: {stored:?}");
            assert!(stored.iter().all(|key| names.contains(key)), "{algorithm}");
        } else {
            assert_eq!(stored, names, "{algorithm}");
        }
        let tag_slot = key_slot(&mut any, &tag).await;
        let mut slots = BTreeSet::new();
        let mut nodes = BTreeSet::new();
        for key in stored {
            slots.insert(key_slot(&mut any, key).await);
            nodes.insert(node_of_key[key].clone());
        }
        assert_eq!(slots, BTreeSet::from([tag_slot]), "{algorithm}");
        assert_eq!(nodes.len(), 1, "{algorithm}: {nodes:?}");
    }

    // 300 keys hash to random slots: ~100 per master; fewer than 50 on one would be a bug
    // (a chance below 1e-9 otherwise). Beside them, the hash-tag secret both backends share.
    // Four algorithms with two keys each, the sliding log's 5/m log and its sequence key.
    let compound_keys = 10;
    let secret_keys = 1;
    assert_eq!(
        keys_per_node.iter().sum::<usize>(),
        spread_keys + compound_keys + secret_keys,
        "{keys_per_node:?}"
    );
    for (url, count) in urls.iter().zip(&keys_per_node) {
        assert!(*count >= 50, "{url} holds {count} keys: {keys_per_node:?}");
    }
    expiry_audit::assert_redis_cluster_keys_expire(&urls, &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_cluster_connections_admit_exactly_the_limit() {
    let Some(cluster) = start_cluster().await else {
        return;
    };
    let urls = cluster.urls();
    let prefix = unique_prefix("cluster-contention");
    // A frozen clock: nothing refills, leaks or slides out while the tasks run.
    let clock = ManualClock::new(1_700_000_000_000);
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for first in 0..4 {
        // Each connection enters the cluster through a different node.
        let entry = &urls[first % urls.len()..];
        backends.push(Arc::new(backend(entry, &prefix, Some(clock.clone())).await));
    }
    for (algorithm, admitted) in admitted_per_algorithm(&backends).await {
        assert_eq!(
            admitted, 50,
            "{algorithm}: 320 attempts on a limit of 50 over 4 cluster connections"
        );
    }
    expiry_audit::assert_redis_cluster_keys_expire(&urls, &prefix).await;
}

#[tokio::test]
async fn each_limit_of_a_key_keeps_its_own_state_in_the_keys_slot() {
    let Some(cluster) = start_cluster().await else {
        return;
    };
    let urls = cluster.urls();
    let prefix = unique_prefix("cluster-policies");
    let clock = ManualClock::new(T0_MS);
    // No secret configured: the first backend stores one, the others (entering through
    // other nodes) read it back.
    let first = backend(&urls, &prefix, Some(clock.clone())).await;
    let through_second_node = backend(&urls[1..], &prefix, Some(clock.clone())).await;
    let through_third_node = backend(&urls[2..], &prefix, Some(clock.clone())).await;

    separate_limits::limits_on_one_key_count_apart(&first, &clock, "user:1", "user:2").await;
    clock.set_millis(T0_MS);
    separate_limits::reset_forgets_every_limit_of_one_key_only(
        &through_second_node,
        "user:10",
        &["user:1", "user:2"],
    )
    .await;

    let limit = Limit::fixed_window(rate("1/h"));
    let keys = ["shared", "{victim}", "{victim}:1", "{victim}:2", "}{", ""];
    for key in keys {
        let names = first
            .state_keys(key, &limit)
            .unwrap_or_else(|e| panic!("{e}"));
        for other in [&through_second_node, &through_third_node] {
            let same = other
                .state_keys(key, &limit)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(names, same, "{key:?}: one secret, one name");
        }
    }
    assert!(first.check("shared", &limit).await.is_ok_and(|d| d.allowed));
    assert!(
        through_third_node
            .check("shared", &limit)
            .await
            .is_ok_and(|d| !d.allowed)
    );

    // Under a fixed secret (so that no run meets a chance collision of slots), a key's braces
    // choose nothing: keys that all hold `{victim}` spread over slots.
    let pinned = RedisBackend::cluster_builder(&urls)
        .key_prefix(&prefix)
        .hash_tag_secret("a fixed secret for the slot assertions")
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut any = node(&urls[0]).await;
    let mut slots = BTreeSet::new();
    for key in keys {
        let names = pinned
            .state_keys(key, &limit)
            .unwrap_or_else(|e| panic!("{e}"));
        let slot = key_slot(&mut any, &names[0]).await;
        assert_ne!(
            slot,
            key_slot(&mut any, key).await,
            "{key:?}: the key's own braces chose the slot"
        );
        slots.insert(slot);
    }
    assert_eq!(slots.len(), keys.len(), "{slots:?}");
}
