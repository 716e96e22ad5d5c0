//! Bytes per stored key at 1,000,000 `String` keys: the memory backend (fixed window, token
//! bucket) against governor's keyed limiter. Results and how to read them: `BENCHMARKS.md`.
//!
//! What is counted: the growth of the process's resident memory (`/proc/self/statm`) from just
//! before the limiter is built to just after every key has been checked once, divided by the
//! number of keys. The caller's key `String`s are built and touched before the first reading,
//! so they are not counted for anyone; what a limiter keeps of its own (governor stores a clone
//! of every key) is. Each limiter is measured in a fresh child process, so nothing freed by one
//! is reused by the next, with glibc's mmap threshold pinned so that every table a limiter
//! outgrew is unmapped on free whatever the allocation history (on this machine the result is
//! the same without it).
//!
//! (A counting `#[global_allocator]` would be more exact but needs `unsafe`, which the workspace
//! forbids.)

// Benches are not library code: a setup that cannot run should abort loudly, and the report
// goes to stdout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::num::NonZeroU32;
use std::process::Command;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ratelimit_core::{Limit, MemoryBackend};

const KEY_COUNT: usize = 1_000_000;

/// Set in a child process: which limiter to measure.
const VARIANT_ENV: &str = "BYTES_PER_KEY_VARIANT";

/// Allocations at least this large are mmapped and unmapped on free. Setting it by hand also
/// stops glibc from raising it after a free, which could leave an outgrown hash table resident
/// as a hole in the heap.
const MMAP_THRESHOLD_BYTES: &str = "131072";

const PAGE_BYTES: u64 = 4_096;

#[derive(Clone, Copy)]
enum Variant {
    FixedWindow,
    TokenBucket,
    Governor,
    /// The fixed window with `MemoryBackend::new()`'s default `max_keys` (1,000,000): shows how
    /// many keys a full default store keeps.
    FixedWindowDefaultMaxKeys,
}

impl Variant {
    const ALL: [Self; 4] = [
        Self::FixedWindow,
        Self::TokenBucket,
        Self::Governor,
        Self::FixedWindowDefaultMaxKeys,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::FixedWindow => "fixed_window",
            Self::TokenBucket => "token_bucket",
            Self::Governor => "governor",
            Self::FixedWindowDefaultMaxKeys => "fixed_window_default_max_keys",
        }
    }
}

struct Measurement {
    variant: Variant,
    stored_keys: usize,
    resident_bytes: u64,
    /// What the limiter's own copies of the key text occupy in the heap (governor only).
    key_copy_bytes: u64,
}

fn main() {
    match std::env::var(VARIANT_ENV) {
        Ok(name) => {
            let variant = Variant::ALL
                .into_iter()
                .find(|variant| variant.name() == name)
                .expect("unknown variant");
            print_json(&measure(variant));
        }
        Err(_) => report(),
    }
}

fn report() {
    let executable = std::env::current_exe().expect("own path");
    let mut lines = Vec::new();
    println!(
        "{KEY_COUNT} keys; resident bytes per key (key text the caller owns is not counted)\n"
    );
    println!(
        "| limiter | stored keys | bytes/key | of which: limiter's copy of the key text |\n|---|---|---|---|"
    );
    for variant in Variant::ALL {
        let output = Command::new(&executable)
            .env(VARIANT_ENV, variant.name())
            .env("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD_BYTES)
            .output()
            .expect("run the measuring child");
        assert!(output.status.success(), "{} failed", variant.name());
        let line = String::from_utf8(output.stdout).expect("utf-8 report");
        let line = line.trim().to_owned();
        println!("| {} | {} |", variant.name(), table_cells(&line));
        lines.push(line);
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bytes_per_key.json");
    std::fs::write(&path, format!("[\n  {}\n]\n", lines.join(",\n  "))).expect("write report");
    println!("\nwritten to {}", path.display());
}

/// The table cells of one child's JSON line, without a JSON parser.
fn table_cells(line: &str) -> String {
    let field = |name: &str| {
        let start = line.find(&format!("\"{name}\": ")).expect("field") + name.len() + 4;
        let rest = &line[start..];
        rest[..rest.find([',', '}']).expect("end")].to_owned()
    };
    format!(
        "{} | {} | {}",
        field("stored_keys"),
        field("bytes_per_key"),
        field("key_copy_bytes_per_key")
    )
}

fn print_json(measurement: &Measurement) {
    let per_key = |bytes: u64| bytes as f64 / KEY_COUNT as f64;
    println!(
        "{{\"variant\": \"{}\", \"keys\": {KEY_COUNT}, \"stored_keys\": {}, \"bytes_per_key\": {:.1}, \"key_copy_bytes_per_key\": {:.1}}}",
        measurement.variant.name(),
        measurement.stored_keys,
        per_key(measurement.resident_bytes),
        per_key(measurement.key_copy_bytes),
    );
}

fn measure(variant: Variant) -> Measurement {
    let keys: Vec<String> = (0..KEY_COUNT).map(|i| format!("user:{i}")).collect();
    let before = resident_bytes();
    let (stored_keys, key_copy_bytes, after) = match variant {
        Variant::Governor => {
            // The same quota as the timing bench; no key is rejected.
            let quota = Quota::per_second(NonZeroU32::new(1).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000_000).unwrap());
            let limiter: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(quota);
            for key in &keys {
                assert!(limiter.check_key(key).is_ok());
            }
            let key_copies = keys.iter().map(|key| malloc_chunk_bytes(key.len())).sum();
            (limiter.len(), key_copies, resident_bytes())
        }
        Variant::FixedWindow | Variant::TokenBucket | Variant::FixedWindowDefaultMaxKeys => {
            let (backend, limit) = match variant {
                Variant::FixedWindow => (
                    MemoryBackend::builder().max_keys(2 * KEY_COUNT).build(),
                    Limit::fixed_window("1000000000/d".parse().unwrap()),
                ),
                Variant::TokenBucket => (
                    MemoryBackend::builder().max_keys(2 * KEY_COUNT).build(),
                    // The timing bench's quota: a slow refill keeps every touched bucket
                    // below full, so no state is dropped as "full again" during the fill.
                    Limit::token_bucket("1/h".parse().unwrap()).bucket_size(1_000_000_000),
                ),
                _ => (
                    MemoryBackend::new(),
                    Limit::fixed_window("1000000000/d".parse().unwrap()),
                ),
            };
            for key in &keys {
                assert!(backend.check_now(key, &limit, 1).unwrap().allowed);
            }
            (backend.len(), 0, resident_bytes())
        }
    };
    Measurement {
        variant,
        stored_keys,
        resident_bytes: after.saturating_sub(before),
        key_copy_bytes,
    }
}

/// The resident set size, from the second field of `/proc/self/statm` (pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("statm has a resident field")
        .parse()
        .expect("statm fields are numbers");
    pages * PAGE_BYTES
}

/// The heap bytes glibc's malloc uses for a request of `len` bytes on x86-64: the request plus
/// an 8-byte header, rounded up to 16, at least 32.
fn malloc_chunk_bytes(len: usize) -> u64 {
    ((len as u64 + 8).div_ceil(16) * 16).max(32)
}
