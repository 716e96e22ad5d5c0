//! Fixed window: epoch-aligned windows `[k*P, (k+1)*P)`; a request at exactly `(k+1)*P` is in
//! the next window.

use super::Verdict;

/// The count of the window that starts at `window_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// Start of the window the count belongs to (ms, a multiple of the period).
    pub window_start: u64,
    /// Cost admitted in that window.
    pub count: u64,
}

/// Whether the window of `state` has ended by `now_ms`: its count then means nothing.
#[inline(always)]
pub(super) fn is_over(window_ms: u64, state: &WindowState, now_ms: u64) -> bool {
    state.window_start.saturating_add(window_ms) <= now_ms
}

pub(super) fn window_start(window_ms: u64, now_ms: u64) -> u64 {
    now_ms - now_ms % window_ms
}

/// The start of the window holding `now_ms`. While `now_ms` is still inside the stored
/// state's window (the common case), that window's start is the answer without a 64-bit
/// division, which costs tens of cycles on the memory store's hot path; window starts are
/// multiples of the period, as [`step`] writes them.
fn window_start_at(window_ms: u64, state: Option<&WindowState>, now_ms: u64) -> u64 {
    match state {
        // `wrapping_sub`: a `now_ms` before the state's start wraps to a huge difference.
        Some(state) if now_ms.wrapping_sub(state.window_start) < window_ms => state.window_start,
        _ => window_start(window_ms, now_ms),
    }
}

/// The count in the window that starts at `start`: a count from an older window is gone.
fn count_in(start: u64, state: Option<&WindowState>) -> u64 {
    match state {
        Some(state) if state.window_start == start => state.count,
        _ => 0,
    }
}

/// What a request of `cost` at `now_ms` gets, and the state admitting it writes, in one pass
/// (see `token_bucket::step`).
#[inline(always)]
pub(super) fn step(
    limit: u64,
    window_ms: u64,
    state: Option<&WindowState>,
    now_ms: u64,
    cost: u64,
) -> (Verdict, WindowState) {
    let start = window_start_at(window_ms, state, now_ms);
    let used = count_in(start, state);
    let reset_after_ms = start + window_ms - now_ms;
    let allowed = used.saturating_add(cost) <= limit;
    let used_after = if allowed { used + cost } else { used };
    let verdict = Verdict {
        allowed,
        limit,
        remaining: limit.saturating_sub(used_after),
        reset_after_ms,
        // The next window starts empty, so a cost within the limit fits there.
        retry_after_ms: (!allowed && cost <= limit).then_some(reset_after_ms),
        window_ms,
    };
    let admitted = WindowState {
        window_start: start,
        count: used.saturating_add(cost),
    };
    (verdict, admitted)
}
