//! Several limits on one key, for any backend: each keeps its own count, identical ones share
//! one, and a reset forgets every one of them but nothing of any other key.
//!
//! Each function panics, naming the step, on the first decision that differs.
//!
//! ```ignore
//! let clock = ManualClock::new(conformance::T0_MS);
//! let backend = MemoryBackend::with_clock(clock.clone());
//! separate_limits::limits_on_one_key_count_apart(&backend, &clock, "k").await;
//! ```

use std::time::Duration;

use ratelimit_core::{Backend, Decision, Limit, ManualClock, Rate};

use crate::conformance::T0_MS;

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap_or_else(|error| panic!("{error}"))
}

async fn check(backend: &dyn Backend, key: &str, limit: &Limit, what: &str) -> Decision {
    backend
        .check(key, limit)
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

/// `5/m` and `10/h` fixed windows on `key`, as two `#[rate_limit]`s on one handler check them
/// (top first; a rejection by the first charges nothing to the second): each admits exactly its
/// own count, and the hourly one rejects the 11th request although the minute has rolled over
/// twice. Then a token bucket and a fixed window of one rate on `key2` are independent, and two
/// equal limits built apart share one count. `clock` drives `backend`; it is set to
/// [`T0_MS`] (an hour boundary) first.
pub async fn limits_on_one_key_count_apart(
    backend: &dyn Backend,
    clock: &ManualClock,
    key: &str,
    key2: &str,
) {
    clock.set_millis(T0_MS);
    let per_minute = Limit::fixed_window(rate("5/m"));
    let per_hour = Limit::fixed_window(rate("10/h"));
    // (minute, requests, admitted by 5/m, admitted by 10/h), cumulative for the hour.
    let minutes = [(0, 6, 5, 5), (1, 6, 5, 10), (2, 3, 3, 10)];
    let mut hourly_admitted = 0;
    for (minute, requests, minute_allows, hour_total) in minutes {
        clock.set_millis(T0_MS + minute * 60_000 + 1_000);
        let mut minute_admitted = 0;
        for request in 0..requests {
            let what = format!("minute {minute}, request {request}");
            let first = check(backend, key, &per_minute, &format!("{what}, 5/m")).await;
            assert_eq!(first.limit, 5, "{what}");
            if !first.allowed {
                continue;
            }
            minute_admitted += 1;
            let second = check(backend, key, &per_hour, &format!("{what}, 10/h")).await;
            assert_eq!(second.limit, 10, "{what}");
            if second.allowed {
                hourly_admitted += 1;
                assert_eq!(second.remaining, 10 - hourly_admitted, "{what}");
            } else {
                assert_eq!(second.remaining, 0, "{what}");
                assert!(
                    second.reset_after > Duration::from_secs(50 * 60),
                    "{what}: the hour's window, not the minute's: {second:?}"
                );
            }
        }
        assert_eq!(minute_admitted, minute_allows, "minute {minute}: 5/m");
        assert_eq!(hourly_admitted, hour_total, "minute {minute}: 10/h");
    }

    // One rate, two algorithms: two states.
    clock.set_millis(T0_MS);
    let fixed = Limit::fixed_window(rate("5/m"));
    let tokens = Limit::token_bucket(rate("5/m"));
    for request in 0..5 {
        let what = format!("fixed window, request {request}");
        assert!(check(backend, key2, &fixed, &what).await.allowed, "{what}");
    }
    assert!(
        !check(backend, key2, &fixed, "fixed window, 6th")
            .await
            .allowed
    );
    for request in 0..5 {
        let what = format!("token bucket after the fixed window, request {request}");
        assert!(check(backend, key2, &tokens, &what).await.allowed, "{what}");
    }
    assert!(
        !check(backend, key2, &tokens, "token bucket, 6th")
            .await
            .allowed
    );

    // Equal limits built apart (as a shared `group` does): one count.
    let shared_key = format!("{key2}:shared");
    let one = Limit::sliding_window(rate("3/m"));
    let other = Limit::sliding_window(rate("3/m"));
    assert!(check(backend, &shared_key, &one, "shared 1").await.allowed);
    assert!(
        check(backend, &shared_key, &other, "shared 2")
            .await
            .allowed
    );
    let third = check(backend, &shared_key, &one, "shared 3").await;
    assert!(third.allowed && third.remaining == 0, "{third:?}");
    assert!(
        !check(backend, &shared_key, &other, "shared 4")
            .await
            .allowed
    );
}

/// Keys a reset of `victim` must spare: keys `victim` starts with, keys that start with
/// `victim`, and keys holding Redis's glob characters.
pub fn bystanders(victim: &str) -> Vec<String> {
    let mut shorter = victim.to_owned();
    shorter.pop();
    let mut keys = vec![
        shorter,
        format!("{victim}0"),
        format!("{victim}:f"),
        format!("{victim}:x:0123456789abcdef"),
        format!("{victim}*"),
        format!("{victim}?"),
        format!("{victim}[0]"),
        format!("{victim}\\"),
        "*".to_owned(),
        "?".to_owned(),
        "[".to_owned(),
    ];
    keys.retain(|key| key != victim);
    keys
}

/// The limits a reset must forget together: two fixed windows, a token bucket, a sliding log
/// (two keys per quota in Redis) and a compound rate.
pub fn several_limits() -> Vec<Limit> {
    vec![
        Limit::fixed_window(rate("1/m")),
        Limit::fixed_window(rate("1/h")),
        Limit::token_bucket(rate("1/h")),
        Limit::sliding_window(rate("1/h")),
        Limit::sliding_window_counter(rate("1/s;1/h")),
    ]
}

/// Uses up every one of [`several_limits`] on `victim` and on each of [`bystanders`] and
/// `more_keys`, resets `victim`, then checks that `victim` is admitted by every limit again
/// and every other key by none. Works on any clock that stands still for a second.
pub async fn reset_forgets_every_limit_of_one_key_only(
    backend: &dyn Backend,
    victim: &str,
    more_keys: &[&str],
) {
    let limits = several_limits();
    let mut others = bystanders(victim);
    others.extend(more_keys.iter().map(|key| (*key).to_owned()));
    others.retain(|key| key != victim);
    others.sort();
    others.dedup();
    for key in std::iter::once(victim).chain(others.iter().map(String::as_str)) {
        for (index, limit) in limits.iter().enumerate() {
            let what = format!("{key:?}, limit {index}");
            assert!(check(backend, key, limit, &what).await.allowed, "{what}");
            assert!(!check(backend, key, limit, &what).await.allowed, "{what}");
        }
    }
    backend
        .reset(victim)
        .await
        .unwrap_or_else(|error| panic!("reset({victim:?}): {error}"));
    for (index, limit) in limits.iter().enumerate() {
        let what = format!("{victim:?} after its reset, limit {index}");
        assert!(check(backend, victim, limit, &what).await.allowed, "{what}");
    }
    for key in &others {
        for (index, limit) in limits.iter().enumerate() {
            let what = format!("{key:?} after a reset of {victim:?}, limit {index}");
            assert!(!check(backend, key, limit, &what).await.allowed, "{what}");
        }
    }
    // Every bystander can be reset too, glob characters and all.
    for key in &others {
        backend
            .reset(key)
            .await
            .unwrap_or_else(|error| panic!("reset({key:?}): {error}"));
        for (index, limit) in limits.iter().enumerate() {
            let what = format!("{key:?} after its reset, limit {index}");
            assert!(check(backend, key, limit, &what).await.allowed, "{what}");
        }
    }
}
