//! The SQL engines against the memory backend (the Rust algorithms) on random limits, costs and
//! clock steps, backwards steps included: every decision must be identical, field by field.
//! The conformance table checks chosen cases; this looks for the ones nobody thought of.

use std::time::Duration;

use ratelimit_core::{
    Algorithm, Backend, Decision, Limit, ManualClock, MemoryBackend, Rate, SqlBackend,
};
use ratelimit_tests::services::{self, unique_sql_prefix};

/// Random limits tried per engine (`RATELIMIT_DIFF_LIMITS` to search longer), and steps on
/// each.
const LIMITS: u64 = 60;
const STEPS: usize = 40;

fn limits() -> u64 {
    std::env::var("RATELIMIT_DIFF_LIMITS")
        .ok()
        .and_then(|limits| limits.parse().ok())
        .unwrap_or(LIMITS)
}

/// xorshift64*: deterministic, so a failure names a seed that reproduces it.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        let index = usize::try_from(self.below(choices.len() as u64)).unwrap_or_default();
        choices[index]
    }
}

fn random_limit(random: &mut Random) -> Limit {
    let algorithm = random.pick(&Algorithm::ALL);
    let count = random.pick(&[0, 1, 2, 3, 5, 10, 100]);
    let period = random.pick(&["s", "10s", "m", "5m", "h"]);
    let mut text = format!("{count}/{period}");
    let configurable = matches!(algorithm, Algorithm::TokenBucket | Algorithm::LeakyBucket);
    if random.below(4) == 0 {
        let second = random.pick(&[1, 4, 20]);
        let second_period = random.pick(&["s", "m", "h"]);
        text = format!("{text};{second}/{second_period}");
    }
    let rate = Rate::parse(&text).unwrap_or_else(|error| panic!("{text}: {error}"));
    let mut limit = Limit::new(rate.clone(), algorithm);
    if configurable && !rate.is_compound() && random.below(2) == 0 {
        let size = random.pick(&[1, 3, 7]);
        let per_second = random.pick(&[0.5, 2.0, 0.125, 3.0]);
        limit = match algorithm {
            Algorithm::TokenBucket => limit
                .bucket_size(size)
                .refill_rate(per_second)
                .initial_tokens(random.below(size + 1)),
            _ => limit.capacity(size).leak_rate(per_second),
        };
    }
    limit
}

/// How far the clock moves before a step: mostly forward, sometimes a little back.
fn random_step(random: &mut Random, period_ms: u64) -> i64 {
    let forward = match random.below(8) {
        0 | 1 => 0,
        2 => 1,
        3 => random.below(1_000),
        4 => period_ms / 3,
        5 => period_ms,
        6 => 2 * period_ms + 1,
        _ => random.below(period_ms),
    };
    let forward = i64::try_from(forward).unwrap_or(i64::MAX);
    if random.below(25) == 0 {
        -i64::try_from(random.below(2_000)).unwrap_or_default()
    } else {
        forward
    }
}

/// The first step of a seed where the engines disagreed (read through `Debug` in the failure).
#[derive(Debug)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug in the failure message"
)]
struct Mismatch {
    seed: u64,
    step: usize,
    limit: String,
    op: String,
    memory: Result<Decision, String>,
    sql: Result<Decision, String>,
}

async fn compare(url: &str, test: &str) -> Vec<Mismatch> {
    let prefix = unique_sql_prefix(test);
    let clock = ManualClock::new(19_675 * 86_400_000 + 12_345);
    let sql = SqlBackend::builder(url)
        .table_prefix(&prefix)
        .clock(clock.clone())
        .timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap_or_else(|error| panic!("connecting to {url}: {error}"));
    let memory = MemoryBackend::with_clock(clock.clone());
    let mut mismatches = Vec::new();
    let mut allowed = 0_usize;
    let mut rejected = 0_usize;
    for seed in 1..=limits() {
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let limit = random_limit(&mut random);
        let period_ms = u64::try_from(limit.longest_period().as_millis()).unwrap_or(u64::MAX);
        let key = format!("seed:{seed}");
        let largest = limit
            .rate()
            .quotas()
            .iter()
            .map(|q| q.count())
            .max()
            .unwrap_or(1);
        for step in 0..STEPS {
            let moved = random_step(&mut random, period_ms);
            let now = clock.now_millis().saturating_add_signed(moved);
            clock.set_millis(now);
            let cost = if random.below(3) == 0 {
                1 + random.below(largest + 2)
            } else {
                1
            };
            let (op, memory_decision, sql_decision) = match random.below(10) {
                0 => {
                    let memory_reset = memory.reset(&key).await.map(|()| None);
                    let sql_reset = sql.reset(&key).await.map(|()| None);
                    ("reset".to_owned(), memory_reset, sql_reset)
                }
                1 | 2 => (
                    format!("peek cost {cost} at {now}"),
                    memory.peek_n(&key, &limit, cost).await.map(Some),
                    sql.peek_n(&key, &limit, cost).await.map(Some),
                ),
                _ => (
                    format!("check cost {cost} at {now}"),
                    memory.check_n(&key, &limit, cost).await.map(Some),
                    sql.check_n(&key, &limit, cost).await.map(Some),
                ),
            };
            match &memory_decision {
                Ok(Some(decision)) if decision.allowed => allowed += 1,
                Ok(Some(_)) => rejected += 1,
                _ => {}
            }
            let memory_decision = memory_decision.map_err(|error| error.to_string());
            let sql_decision = sql_decision.map_err(|error| error.to_string());
            if memory_decision != sql_decision {
                mismatches.push(Mismatch {
                    seed,
                    step,
                    limit: format!("{limit:?}"),
                    op,
                    memory: memory_decision.map(|d| d.unwrap_or_else(|| unreachable!())),
                    sql: sql_decision.map(|d| d.unwrap_or_else(|| unreachable!())),
                });
                break;
            }
        }
    }
    if let Err(error) = sql.drop_tables().await {
        panic!("dropping {prefix}*: {error}");
    }
    // The random steps must reach both outcomes, or the comparison proves little.
    assert!(
        allowed > 100 && rejected > 100,
        "{allowed} allowed, {rejected} rejected"
    );
    mismatches
}

#[tokio::test]
async fn postgres_decides_like_memory_on_random_steps() {
    let Some(postgres) = services::postgres().await else {
        return;
    };
    let mismatches = compare(postgres.url(), "diff_pg").await;
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn mysql_decides_like_memory_on_random_steps() {
    let Some(mysql) = services::mysql().await else {
        return;
    };
    let mismatches = compare(mysql.url(), "diff_my").await;
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn sqlite_decides_like_memory_on_random_steps() {
    let file = std::env::temp_dir().join(format!("{}.sqlite3", unique_sql_prefix("diff")));
    let url = format!("sqlite://{}", file.display());
    let mismatches = compare(&url, "diff_lite").await;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
