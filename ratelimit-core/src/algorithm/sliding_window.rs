//! Sliding window log: an exact log of admitted requests; a request admitted at `t` counts while
//! `now - t < P`.
//!
//! A check costs O(log n) for a log of n entries, never O(limit): each entry carries the running
//! total of the costs admitted up to it, so the cost of any run of entries is one subtraction,
//! and the entries still counted (a suffix, the log being sorted by time) are found by binary
//! search. Admission drops the expired entries from the front, each once. The SQL stores keep the
//! same running totals in an index and read only what [`LogCheck`] needs of them.

use super::Verdict;

/// Admitted requests, oldest first.
///
/// A vector rather than a ring buffer, so every search runs on one slice: expired entries are
/// first only skipped (`start` moves past them) and dropped together once they are half the
/// vector, which keeps admission amortised O(1) and the vector at most twice the live log.
#[derive(Clone, Debug, Default)]
pub struct LogState {
    marks: Vec<Mark>,
    /// The first entry not yet dropped; the ones before it have expired.
    start: usize,
    /// The running total just before `marks[0]`.
    before: u64,
}

/// One admitted request as stored: its time and the running total of costs through it. The
/// total wraps; only differences between totals of one log are used, and those are bounded by
/// the costs the log holds (at most the limit after each admission).
#[derive(Clone, Copy, Debug)]
struct Mark {
    at_ms: u64,
    through: u64,
}

/// One admitted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// When it was admitted (ms).
    pub at_ms: u64,
    /// Its cost.
    pub cost: u64,
}

impl LogState {
    /// A log holding `entries`, which are sorted by time here.
    #[must_use]
    pub fn from_entries(entries: impl IntoIterator<Item = LogEntry>) -> Self {
        let mut entries: Vec<_> = entries.into_iter().collect();
        entries.sort_by_key(|entry| entry.at_ms);
        let mut through = 0_u64;
        let marks = entries
            .into_iter()
            .map(|entry| {
                through = through.wrapping_add(entry.cost);
                Mark {
                    at_ms: entry.at_ms,
                    through,
                }
            })
            .collect();
        Self {
            marks,
            start: 0,
            before: 0,
        }
    }

    /// The admitted requests, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = LogEntry> + '_ {
        let mut previous = self.total_before(0);
        self.kept().iter().map(move |mark| {
            let cost = mark.through.wrapping_sub(previous);
            previous = mark.through;
            LogEntry {
                at_ms: mark.at_ms,
                cost,
            }
        })
    }

    /// When the newest request was admitted.
    #[must_use]
    pub fn newest(&self) -> Option<u64> {
        self.kept().last().map(|mark| mark.at_ms)
    }

    /// The entries not yet dropped, oldest first; indexes below are into this slice.
    fn kept(&self) -> &[Mark] {
        self.marks.get(self.start..).unwrap_or_default()
    }

    /// The running total just before kept entry `index`.
    fn total_before(&self, index: usize) -> u64 {
        (self.start + index)
            .checked_sub(1)
            .and_then(|previous| self.marks.get(previous))
            .map_or(self.before, |mark| mark.through)
    }

    /// The running total through the newest entry.
    fn total(&self) -> u64 {
        self.marks.last().map_or(self.before, |mark| mark.through)
    }

    /// Drops the entries before kept entry `index` (expired ones): skipped now, removed from
    /// the vector once they are half of it.
    fn drop_before(&mut self, index: usize) {
        self.start += index;
        if self.start > 0 && self.start * 2 >= self.marks.len() {
            self.before = self.total_before(0);
            self.marks.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The index of the oldest entry of `marks` still counted at `now_ms` (the length when none is).
#[inline]
fn first_counted(marks: &[Mark], window_ms: u64, now_ms: u64) -> usize {
    gallop(marks, 0, |mark| !is_counted(window_ms, mark.at_ms, now_ms))
}

/// The first index from `from` on whose entry is not `before` (the length when all are), for a
/// `before` that holds for a prefix of `marks` only. A galloping search: O(log d) for an answer
/// d entries on, and the answers sought lie near the front (admission drops the expired
/// entries; a retry needs only the oldest entries worth its cost).
#[inline]
fn gallop(marks: &[Mark], from: usize, before: impl Fn(&Mark) -> bool) -> usize {
    let is_before = |index: usize| marks.get(index).is_some_and(&before);
    if !is_before(from) {
        return from;
    }
    // `low` is before; double the step until `high` is not (or lies past the end).
    let (mut low, mut step) = (from, 1_usize);
    let mut high = from.saturating_add(step);
    while is_before(high) {
        low = high;
        step = step.saturating_mul(2);
        high = high.saturating_add(step);
    }
    let high = high.min(marks.len());
    low + 1 + marks[low + 1..high].partition_point(before)
}

/// Two logs are equal when they hold the same requests, however their totals are based.
impl PartialEq for LogState {
    fn eq(&self, other: &Self) -> bool {
        self.kept().len() == other.kept().len() && self.entries().eq(other.entries())
    }
}

impl Eq for LogState {}

fn is_counted(window_ms: u64, at_ms: u64, now_ms: u64) -> bool {
    at_ms.saturating_add(window_ms) > now_ms
}

/// One check of a sliding log, for a store that reads only what the decision needs (SQL, whose
/// log keeps each entry's running total in an index): first the counted entries (the total
/// through the newest minus the total before the oldest counted one), then, for a rejection
/// that can wait, when the first entry whose running total reaches [`Self::must_free`] was
/// admitted. The memory store decides through the same arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogCheck {
    pub(crate) limit: u64,
    pub(crate) window_ms: u64,
    pub(crate) now_ms: u64,
    pub(crate) cost: u64,
}

/// The entries of a log still counted at a check (a suffix of the log: it is in time order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counted {
    /// When the oldest of them was admitted.
    pub(crate) oldest_at_ms: u64,
    /// Their costs, added up.
    pub(crate) used: u64,
}

impl LogCheck {
    /// How much of the counted cost must slide out before this request fits, when it is
    /// rejected and can ever fit; `None` otherwise.
    pub(crate) fn must_free(&self, counted: Option<Counted>) -> Option<u64> {
        let used = counted.map_or(0, |counted| counted.used);
        let fits = used.saturating_add(self.cost) <= self.limit;
        (!fits && self.cost <= self.limit).then(|| used.saturating_add(self.cost) - self.limit)
    }

    /// The verdict, given the counted entries and, when [`Self::must_free`] is `Some`, when the
    /// oldest counted entry was admitted whose running total, counted from the oldest counted
    /// entry, reaches it (`None` when none does, which a consistent log never gives).
    pub(crate) fn verdict(&self, counted: Option<Counted>, freed_at_ms: Option<u64>) -> Verdict {
        let Self {
            limit,
            window_ms,
            now_ms,
            cost,
        } = *self;
        let used = counted.map_or(0, |counted| counted.used);
        let oldest = counted.map(|counted| counted.oldest_at_ms);
        let allowed = used.saturating_add(cost) <= limit;
        let (used_after, oldest_after) = if allowed {
            (
                used + cost,
                Some(oldest.map_or(now_ms, |oldest| oldest.min(now_ms))),
            )
        } else {
            (used, oldest)
        };
        // Enough of the oldest counted requests must slide out to make room for this one.
        let retry_after_ms = self
            .must_free(counted)
            .map(|_| freed_at_ms.map_or(1, |freed_at| (freed_at + window_ms - now_ms).max(1)));
        Verdict {
            allowed,
            limit,
            remaining: limit.saturating_sub(used_after),
            reset_after_ms: oldest_after.map_or(0, |oldest| oldest + window_ms - now_ms),
            retry_after_ms,
            window_ms,
        }
    }
}

pub(super) fn evaluate(
    limit: u64,
    window_ms: u64,
    state: Option<&LogState>,
    now_ms: u64,
    cost: u64,
) -> Verdict {
    let check = LogCheck {
        limit,
        window_ms,
        now_ms,
        cost,
    };
    let empty = LogState::default();
    let log = state.unwrap_or(&empty);
    let marks = log.kept();
    let first = first_counted(marks, window_ms, now_ms);
    let before_first = log.total_before(first);
    let counted = marks.get(first).map(|oldest| Counted {
        oldest_at_ms: oldest.at_ms,
        used: log.total().wrapping_sub(before_first),
    });
    // The first entry whose running total from `first` on reaches `must_free`.
    let freed_at_ms = check.must_free(counted).and_then(|must_free| {
        let freeing = gallop(marks, first, |mark| {
            mark.through.wrapping_sub(before_first) < must_free
        });
        marks.get(freeing).map(|mark| mark.at_ms)
    });
    check.verdict(counted, freed_at_ms)
}

pub(super) fn admit(window_ms: u64, state: Option<LogState>, now_ms: u64, cost: u64) -> LogState {
    let mut log = state.unwrap_or_default();
    admit_into(window_ms, &mut log, now_ms, cost);
    log
}

/// [`admit`] on a log in place.
pub(super) fn admit_into(window_ms: u64, log: &mut LogState, now_ms: u64, cost: u64) {
    log.drop_before(first_counted(log.kept(), window_ms, now_ms));
    if log.newest().is_none_or(|newest| newest <= now_ms) {
        let through = log.total().wrapping_add(cost);
        log.marks.push(Mark {
            at_ms: now_ms,
            through,
        });
        return;
    }
    // Clocks that step back (an injected test clock) must not unsort the log: the request goes
    // before any later one, whose running totals then include it (O(n), only on such clocks).
    let position = log.kept().partition_point(|mark| mark.at_ms <= now_ms);
    let through = log.total_before(position).wrapping_add(cost);
    let at = log.start + position;
    for later in &mut log.marks[at..] {
        later.through = later.through.wrapping_add(cost);
    }
    log.marks.insert(
        at,
        Mark {
            at_ms: now_ms,
            through,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain walk over every entry that the running totals replace.
    fn reference(
        limit: u64,
        window_ms: u64,
        entries: &[LogEntry],
        now_ms: u64,
        cost: u64,
    ) -> Verdict {
        let counted: Vec<_> = entries
            .iter()
            .filter(|entry| is_counted(window_ms, entry.at_ms, now_ms))
            .collect();
        let used = counted
            .iter()
            .fold(0_u64, |sum, entry| sum.saturating_add(entry.cost));
        let allowed = used.saturating_add(cost) <= limit;
        let oldest = counted.first().map(|entry| entry.at_ms);
        let (used_after, oldest_after) = if allowed {
            (used + cost, Some(oldest.map_or(now_ms, |o| o.min(now_ms))))
        } else {
            (used, oldest)
        };
        let retry_after_ms = (!allowed && cost <= limit).then(|| {
            let must_free = used + cost - limit;
            let mut freed = 0_u64;
            counted
                .iter()
                .find(|entry| {
                    freed = freed.saturating_add(entry.cost);
                    freed >= must_free
                })
                .map_or(1, |entry| (entry.at_ms + window_ms - now_ms).max(1))
        });
        Verdict {
            allowed,
            limit,
            remaining: limit.saturating_sub(used_after),
            reset_after_ms: oldest_after.map_or(0, |oldest| oldest + window_ms - now_ms),
            retry_after_ms,
            window_ms,
        }
    }

    fn reference_admit(window_ms: u64, entries: &mut Vec<LogEntry>, now_ms: u64, cost: u64) {
        entries.retain(|entry| is_counted(window_ms, entry.at_ms, now_ms));
        let position = entries.partition_point(|entry| entry.at_ms <= now_ms);
        entries.insert(
            position,
            LogEntry {
                at_ms: now_ms,
                cost,
            },
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random sequences of checks (costs, times that mostly advance and sometimes step
        /// back) get the same verdicts as the plain walk, and leave the same log.
        #[test]
        fn running_totals_decide_like_the_plain_walk(
            limit in 0_u64..12,
            window_ms in 1_u64..200,
            steps in prop::collection::vec((0_u64..80, 0_u64..6, any::<bool>()), 1..120),
        ) {
            let mut log: Option<LogState> = None;
            let mut plain = Vec::new();
            let mut now_ms = 1_000_u64;
            for (delta, cost, back) in steps {
                now_ms = if back { now_ms.saturating_sub(delta / 4) } else { now_ms + delta };
                let verdict = evaluate(limit, window_ms, log.as_ref(), now_ms, cost);
                prop_assert_eq!(verdict, reference(limit, window_ms, &plain, now_ms, cost));
                if verdict.allowed {
                    log = Some(admit(window_ms, log, now_ms, cost));
                    reference_admit(window_ms, &mut plain, now_ms, cost);
                    let kept: Vec<_> = log.iter().flat_map(LogState::entries).collect();
                    prop_assert_eq!(&kept, &plain);
                }
            }
        }
    }

    #[test]
    fn a_log_rebuilt_from_its_entries_is_equal() {
        let mut log = None;
        for (at_ms, cost) in [(10, 2), (20, 1), (30, 3), (500, 1)] {
            log = Some(admit(100, log, at_ms, cost));
        }
        let log = log.unwrap_or_default();
        assert_eq!(log.entries().count(), 1);
        assert_eq!(LogState::from_entries(log.entries()), log);
    }
}
