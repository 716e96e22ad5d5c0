//! Log lines that clients cannot flood: at most one line per cause and interval.
//!
//! A store outage or a shadow limit is met by every request, so a `warn!` per request would
//! write as fast as clients send. Each such log site owns a `static` [`LogThrottle`]; a line
//! goes out only when [`LogThrottle::admit`] says so, and carries the number of lines held
//! back for the same cause since the previous one.
//!
//! A cause is whatever the site hashes: a handler, a group, a backend name, an error kind. It
//! must come from the program (never from a request), and the table is fixed in size anyway:
//! once every slot is taken, further causes share one last slot, so memory stays bounded and
//! they still log at most once per interval between them.
//!
//! ```
//! use ratelimit_core::LogThrottle;
//! use ratelimit_core::log_throttle::LOG_INTERVAL;
//!
//! static BACKEND_FAILED: LogThrottle = LogThrottle::new(LOG_INTERVAL);
//!
//! fn on_failure(backend: &str, log: &mut Vec<String>) {
//!     if let Some(suppressed) = BACKEND_FAILED.admit(&backend) {
//!         log.push(format!("backend {backend} failed (suppressed={suppressed})"));
//!     }
//! }
//!
//! let mut log = Vec::new();
//! for _ in 0..1_000 {
//!     on_failure("redis", &mut log);
//! }
//! assert_eq!(log, ["backend redis failed (suppressed=0)"]);
//! ```

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often one cause may log: a line every few seconds shows that a problem lasts without
/// repeating it per request.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Causes one throttle tells apart; further ones share the last slot.
const SLOTS: usize = 32;

/// Allows one line per cause every `interval`, counting the lines it holds back. Lock-free:
/// a few atomic operations per call, on a fixed table.
#[derive(Debug)]
pub struct LogThrottle {
    interval_ms: u64,
    slots: [Slot; SLOTS],
}

#[derive(Debug)]
struct Slot {
    /// The cause's hash; 0 while the slot is free.
    cause: AtomicU64,
    /// Milliseconds since [`epoch`] before which the cause logs nothing.
    next_at: AtomicU64,
    /// Lines held back since the cause's last line.
    suppressed: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            cause: AtomicU64::new(0),
            next_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogThrottle {
    /// A throttle that lets one line per cause through every `interval`.
    #[must_use]
    pub const fn new(interval: Duration) -> Self {
        let millis = interval.as_millis();
        Self {
            interval_ms: if millis > u64::MAX as u128 {
                u64::MAX
            } else {
                millis as u64
            },
            slots: [const { Slot::new() }; SLOTS],
        }
    }

    /// Whether to log a line for `cause` now: `Some(n)` with the number of lines held back
    /// for it since its last one, or `None` to stay silent (the line is counted).
    pub fn admit(&self, cause: &impl Hash) -> Option<u64> {
        self.admit_at(cause, monotonic_millis())
    }

    /// [`Self::admit`] at `now_ms`, milliseconds on a clock that never goes back.
    fn admit_at(&self, cause: &impl Hash, now_ms: u64) -> Option<u64> {
        let slot = self.slot(hash(cause));
        let next_at = slot.next_at.load(Ordering::Relaxed);
        if now_ms >= next_at
            && slot
                .next_at
                .compare_exchange(
                    next_at,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(slot.suppressed.swap(0, Ordering::Relaxed));
        }
        slot.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// The cause's slot, taking a free one on its first line; the last slot once all are
    /// taken.
    fn slot(&self, cause: u64) -> &Slot {
        let start = usize::try_from(cause % (SLOTS as u64 - 1)).unwrap_or(0);
        for offset in 0..SLOTS - 1 {
            let slot = &self.slots[(start + offset) % (SLOTS - 1)];
            match slot
                .cause
                .compare_exchange(0, cause, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return slot,
                Err(owner) if owner == cause => return slot,
                Err(_) => {}
            }
        }
        &self.slots[SLOTS - 1]
    }
}

/// A fixed hash (FNV-1a), so a cause lands in the same slot on every call; never 0, which
/// marks a free slot.
fn hash(cause: &impl Hash) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    cause.hash(&mut hasher);
    hasher.finish().max(1)
}

/// Milliseconds since the first call in this process, on the monotonic clock.
fn monotonic_millis() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    u64::try_from(elapsed).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_SECONDS: Duration = Duration::from_secs(5);

    #[test]
    fn one_line_per_interval_and_the_next_one_counts_the_held_back_ones() {
        let throttle = LogThrottle::new(FIVE_SECONDS);
        assert_eq!(throttle.admit_at(&"a", 0), Some(0));
        for now in [1, 1_000, 4_999] {
            assert_eq!(throttle.admit_at(&"a", now), None);
        }
        assert_eq!(throttle.admit_at(&"a", 5_000), Some(3));
        assert_eq!(throttle.admit_at(&"a", 9_999), None);
        assert_eq!(throttle.admit_at(&"a", 60_000), Some(1));
        assert_eq!(throttle.admit_at(&"a", 60_001), None);
    }

    #[test]
    fn causes_are_throttled_apart() {
        let throttle = LogThrottle::new(FIVE_SECONDS);
        assert_eq!(throttle.admit_at(&("login", "timeout"), 0), Some(0));
        assert_eq!(throttle.admit_at(&("login", "refused"), 1), Some(0));
        assert_eq!(throttle.admit_at(&("search", "timeout"), 2), Some(0));
        assert_eq!(throttle.admit_at(&("login", "timeout"), 3), None);
        assert_eq!(throttle.admit_at(&("login", "refused"), 4), None);
        assert_eq!(throttle.admit_at(&("login", "timeout"), 5_000), Some(1));
    }

    #[test]
    fn causes_beyond_the_table_share_its_last_slot() {
        let throttle = LogThrottle::new(FIVE_SECONDS);
        let admitted = (0..1_000)
            .filter(|cause: &i32| throttle.admit_at(cause, 0).is_some())
            .count();
        // Every slot but the last has its own cause; all the others share the last one.
        assert_eq!(admitted, SLOTS);
        let held_back = (0..1_000)
            .filter(|cause: &i32| throttle.admit_at(cause, 5_000).is_some_and(|n| n > 0))
            .count();
        assert_eq!(held_back, 1);
    }

    #[test]
    fn concurrent_callers_let_one_line_through() {
        let throttle = LogThrottle::new(FIVE_SECONDS);
        let admitted = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..1_000)
                            .filter(|_| throttle.admit_at(&"hot", 7).is_some())
                            .count()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().unwrap_or(usize::MAX))
                .sum::<usize>()
        });
        assert_eq!(admitted, 1);
        assert_eq!(throttle.admit_at(&"hot", 5_007), Some(3_999));
    }

    #[test]
    fn the_clock_starts_at_zero_and_never_goes_back() {
        let first = monotonic_millis();
        assert!(monotonic_millis() >= first);
        let throttle = LogThrottle::new(FIVE_SECONDS);
        assert_eq!(throttle.admit(&"first line"), Some(0));
        assert_eq!(throttle.admit(&"first line"), None);
    }
}
