//! Small statistics the load benches share: latencies in nanoseconds, percentiles, medians.
//! Included by path, like `machine.rs`.

// Each bench reads only part of this.
#![allow(dead_code)]

use std::time::Duration;

pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The nearest-rank percentile of sorted nanoseconds, in ms.
pub fn percentile_ms(sorted: &[u64], quantile: f64) -> f64 {
    assert!(!sorted.is_empty(), "a run made no checks");
    let rank = ((sorted.len() as f64 * quantile).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// The median; the mean of the middle two for an even count.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        f64::midpoint(values[middle - 1], values[middle])
    }
}
