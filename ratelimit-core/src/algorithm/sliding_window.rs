//! Sliding window log: an exact log of admitted requests; a request admitted at `t` counts while
//! `now - t < P`.

use super::Verdict;

/// Admitted requests, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    // A Vec rather than a VecDeque keeps `State` at 32 bytes; logs are at most `limit` long and
    // pruning is a `retain`, so front removal costs nothing extra.
    entries: Vec<LogEntry>,
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
        Self { entries }
    }

    /// The admitted requests, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &LogEntry> {
        self.entries.iter()
    }

    /// When the newest request was admitted.
    #[must_use]
    pub fn newest(&self) -> Option<u64> {
        self.entries.last().map(|entry| entry.at_ms)
    }

    /// The entries still inside the window at `now_ms`, oldest first.
    fn counted(&self, window_ms: u64, now_ms: u64) -> impl Iterator<Item = &LogEntry> {
        self.entries
            .iter()
            .filter(move |entry| is_counted(window_ms, entry.at_ms, now_ms))
    }
}

fn is_counted(window_ms: u64, at_ms: u64, now_ms: u64) -> bool {
    at_ms.saturating_add(window_ms) > now_ms
}

pub(super) fn evaluate(
    limit: u64,
    window_ms: u64,
    state: Option<&LogState>,
    now_ms: u64,
    cost: u64,
) -> Verdict {
    let counted = || {
        state
            .into_iter()
            .flat_map(|log| log.counted(window_ms, now_ms))
    };
    let used = counted().fold(0_u64, |sum, entry| sum.saturating_add(entry.cost));
    let allowed = used.saturating_add(cost) <= limit;
    let oldest = counted().next().map(|entry| entry.at_ms);
    let (used_after, oldest_after) = if allowed {
        (
            used + cost,
            Some(oldest.map_or(now_ms, |oldest| oldest.min(now_ms))),
        )
    } else {
        (used, oldest)
    };
    let retry_after_ms = (!allowed && cost <= limit).then(|| {
        // Enough earlier requests must slide out to make room for this one.
        let must_free = used + cost - limit;
        let mut freed = 0_u64;
        counted()
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

pub(super) fn admit(window_ms: u64, state: Option<LogState>, now_ms: u64, cost: u64) -> LogState {
    let mut log = state.unwrap_or_default();
    log.entries
        .retain(|entry| is_counted(window_ms, entry.at_ms, now_ms));
    // Clocks that step back (an injected test clock) must not unsort the log.
    let position = log.entries.partition_point(|entry| entry.at_ms <= now_ms);
    log.entries.insert(
        position,
        LogEntry {
            at_ms: now_ms,
            cost,
        },
    );
    log
}
