//! Time sources. Every decision is a function of a millisecond unix timestamp taken from a
//! [`Clock`]; tests inject a [`ManualClock`] to make every backend deterministic.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of millisecond unix timestamps.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the unix epoch.
    fn now_millis(&self) -> u64;
}

/// The process clock: wall time read once, then advanced by the monotonic clock, so a
/// wall-clock jump on the host (NTP step, manual change) changes no decision.
///
/// The monotonic clock is `quanta`'s: the CPU's time-stamp counter where it is invariant
/// (falling back to the OS clock where it is not), about a third of the cost of
/// `std::time::Instant` per read, which matters on the memory store's hot path.
#[derive(Clone, Debug)]
pub struct SystemClock {
    source: quanta::Clock,
    anchor_raw: u64,
    anchor_millis: u64,
    /// Milliseconds per raw count, as a 0.64 fixed-point fraction: one multiply turns a raw
    /// delta into milliseconds, where quanta's nanoseconds and a division by a million take
    /// two (a few percent of a memory check).
    millis_per_raw: u64,
}

/// A raw delta long enough (minutes of counts at any plausible counter rate) that quanta's
/// nanoseconds for it fix the scale to better than a part in 10^11.
const CALIBRATION_RAW: u64 = 1 << 40;

impl SystemClock {
    /// Anchors a new clock to the current wall time.
    #[must_use]
    pub fn new() -> Self {
        let anchor_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, duration_millis);
        let source = quanta::Clock::new();
        // quanta scales raw counts linearly (a multiply and a shift), so one long delta gives
        // its scale exactly enough: millis_per_raw = nanos / (CALIBRATION_RAW × 10^6) × 2^64.
        let nanos = u128::from(source.delta_as_nanos(0, CALIBRATION_RAW));
        let millis_per_raw = (nanos << 24) / 1_000_000;
        Self {
            anchor_raw: source.raw(),
            source,
            anchor_millis,
            millis_per_raw: u64::try_from(millis_per_raw).unwrap_or(u64::MAX),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_millis(&self) -> u64 {
        // Never negative: a counter that reads below the anchor counts as no time at all.
        let elapsed_raw = self.source.raw().saturating_sub(self.anchor_raw);
        let elapsed_ms = (u128::from(elapsed_raw) * u128::from(self.millis_per_raw)) >> 64;
        self.anchor_millis.saturating_add(elapsed_ms as u64)
    }
}

/// A clock that only moves when told to. Clones share one time, so a test can hold one clone
/// and give another to a backend.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start_millis` milliseconds after the unix epoch.
    #[must_use]
    pub fn new(start_millis: u64) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(start_millis)),
        }
    }

    /// Moves every clone of this clock forward.
    pub fn advance(&self, by: Duration) {
        self.millis.fetch_add(duration_millis(by), Ordering::SeqCst);
    }

    /// Sets every clone of this clock to `millis`.
    pub fn set_millis(&self, millis: u64) {
        self.millis.store(millis, Ordering::SeqCst);
    }

    /// The current time of this clock.
    #[must_use]
    pub fn now_millis(&self) -> u64 {
        self.millis.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        ManualClock::now_millis(self)
    }
}

/// Whole milliseconds in `duration`, saturating rather than wrapping for absurd values.
pub(crate) fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_clones_share_time() {
        let clock = ManualClock::new(1_000);
        let other = clock.clone();
        clock.advance(Duration::from_millis(250));
        assert_eq!(other.now_millis(), 1_250);
        other.set_millis(5);
        assert_eq!(clock.now_millis(), 5);
    }

    #[test]
    fn system_clock_is_near_wall_time_and_never_goes_back() {
        let clock = SystemClock::new();
        let wall = duration_millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let first = clock.now_millis();
        assert!(first.abs_diff(wall) < 1_000, "{first} vs {wall}");
        assert!(clock.now_millis() >= first);
    }

    #[test]
    fn one_multiply_gives_quanta_s_milliseconds() {
        let clock = SystemClock::new();
        // Deltas from a millisecond to a year of counts, read as quanta's nanoseconds.
        for elapsed_raw in [0, 1 << 20, 1 << 30, 1 << 40, 1 << 50, 1 << 56] {
            let quanta_ms = clock.source.delta_as_nanos(0, elapsed_raw) / 1_000_000;
            let ours = (u128::from(elapsed_raw) * u128::from(clock.millis_per_raw)) >> 64;
            assert!(
                (ours as u64).abs_diff(quanta_ms) <= 1,
                "{elapsed_raw}: {ours} vs {quanta_ms}"
            );
        }
    }
}
