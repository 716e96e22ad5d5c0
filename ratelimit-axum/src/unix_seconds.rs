//! The current unix second, for `X-RateLimit-Reset` on every counted response.
//!
//! Reading the wall clock and subtracting the epoch costs more than reading the CPU's counter,
//! so each thread reads it at most once a second: until that second is over, which quanta's
//! counter (the CPU's time-stamp counter where it is invariant, as the memory store's clock
//! uses) tells for a fraction of that, the second read last is still the current one. The wall
//! clock is read again every second, so a step of the host's clock shows within a second.

use std::cell::Cell;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A memo ends this long before its second does, so that a counter a little slower than the
/// wall clock (quanta's calibration is good to a few parts per million) never makes it late;
/// calls in that last millisecond read the wall clock.
const MARGIN_NANOS: u64 = 1_000_000;

/// One process-wide counter: quanta calibrates it once (shared with every other quanta clock).
static COUNTER: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

thread_local! {
    static LAST_READ: Cell<Option<SecondRead>> = const { Cell::new(None) };
}

/// A unix second as the wall clock gave it, and until when on the counter it lasts.
#[derive(Clone, Copy)]
struct SecondRead {
    unix_secs: u64,
    /// The counter, read right after the wall clock.
    counter_at: u64,
    /// Nanoseconds from `counter_at` until shortly before `unix_secs` ends (the counter was read
    /// a little after the wall clock, which also ends it early, never late).
    lasts_nanos: u64,
}

/// The current unix second (0 for a wall clock before 1970).
#[inline]
pub(crate) fn now() -> u64 {
    let counter = &*COUNTER;
    let now = counter.raw();
    // `try_with`: while the thread is torn down the memo is gone; the wall clock then answers.
    let last = LAST_READ.try_with(Cell::get).ok().flatten();
    if let Some(last) = last
        // A counter that reads below the memo's (another core, a migrated VM) proves nothing.
        && now >= last.counter_at
        && counter.delta_as_nanos(last.counter_at, now) < last.lasts_nanos
    {
        return last.unix_secs;
    }
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let read = SecondRead {
        unix_secs: since_epoch.as_secs(),
        counter_at: counter.raw(),
        lasts_nanos: (NANOS_PER_SEC - u64::from(since_epoch.subsec_nanos()))
            .saturating_sub(MARGIN_NANOS),
    };
    let _ = LAST_READ.try_with(|last| last.set(Some(read)));
    read.unix_secs
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wall_secs() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since_epoch| since_epoch.as_secs())
    }

    #[test]
    fn always_the_second_the_wall_clock_shows() {
        // Long enough to cross at least one second boundary on every thread that runs it.
        let started = Instant::now();
        let mut calls = 0_u64;
        while started.elapsed() < Duration::from_millis(1_200) {
            let before = wall_secs();
            let second = now();
            let after = wall_secs();
            assert!(
                (before..=after).contains(&second),
                "{second} outside {before}..={after}"
            );
            calls += 1;
        }
        assert!(calls > 1_000, "only {calls} calls");
    }
}
