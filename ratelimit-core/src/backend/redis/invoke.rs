//! Sending a script call, and what happens when the server has forgotten the script or the
//! connection breaks on the way.
//!
//! A call goes out as `EVALSHA`. A server that answers `NOSCRIPT` (restarted, failed over,
//! `SCRIPT FLUSH`ed) gets the same call again as `EVAL` with the source, which also loads the
//! script: one extra round trip, where `SCRIPT LOAD` and a second `EVALSHA` would take two. A
//! script the backend has not seen the server run yet (at start, and after any broken
//! connection, as a server that restarted has forgotten them all) goes out as `EVAL` at once,
//! so a restart costs a connection at most one `NOSCRIPT` per script, not one per call.
//!
//! A call whose connection breaks (reset, closed, refused) is sent once more, on the fresh
//! connection the connection manager opens, within what is left of the timeout; never twice, and
//! never after a timeout, which has used up the time. A broken connection does not tell whether
//! the server ran the script before it went away (the reply may be what was lost), so every
//! call carries a marker unique to it, `<prefix>{<tag>}#<id>`, which the script stores with its
//! reply (`checks.lua`): a call sent again that finds its marker returns the first run's reply
//! and counts nothing twice. The marker lasts [`marker_ttl`] — longer than a call may be
//! retried — then expires like every other key. A server that lost the marker (a restart
//! without persistence) lost the counts with it, so the call counts once on what is left.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::scripts::{Invocation, ScriptCall};
use crate::algorithm::Algorithm;
use crate::backend::BackendError;
use crate::clock::duration_millis;

/// The shortest a marker lasts, whatever the timeout.
const MIN_MARKER_TTL: Duration = Duration::from_secs(1);

/// How long a call's marker lasts: twice the timeout (a call is sent again only within its
/// timeout, and a copy held up on the way arrives soon after), at least [`MIN_MARKER_TTL`].
fn marker_ttl(timeout: Duration) -> Duration {
    timeout.saturating_mul(2).max(MIN_MARKER_TTL)
}

/// Names each call of one backend apart from every other call on the server: a random number
/// drawn at start and a counter.
#[derive(Debug)]
struct CallIds {
    random: u64,
    next: AtomicU64,
}

impl CallIds {
    fn new() -> Result<Self, BackendError> {
        let mut random = [0_u8; 8];
        getrandom::fill(&mut random).map_err(|error| BackendError::NoRandomness {
            reason: error.to_string(),
        })?;
        Ok(Self {
            random: u64::from_le_bytes(random),
            next: AtomicU64::new(0),
        })
    }

    /// The marker key of the next call, in the slot `<prefix>{<tag>}` (a state key's start up
    /// to its tag; `#` where a state key has `:`, so no reset ever takes it for a state).
    fn marker(&self, slot: &str) -> String {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{slot}#{:016x}{id:x}", self.random)
    }
}

/// Which scripts the server is known to hold: those this backend has seen it run since the
/// last broken connection.
#[derive(Debug, Default)]
struct LoadedScripts {
    loaded: [AtomicBool; Algorithm::ALL.len()],
}

impl LoadedScripts {
    fn is_loaded(&self, algorithm: Algorithm) -> bool {
        self.loaded[algorithm as usize].load(Ordering::Relaxed)
    }

    fn set(&self, algorithm: Algorithm, loaded: bool) {
        self.loaded[algorithm as usize].store(loaded, Ordering::Relaxed);
    }

    fn forget_all(&self) {
        for loaded in &self.loaded {
            loaded.store(false, Ordering::Relaxed);
        }
    }
}

/// Builds and sends the script calls of one backend.
#[derive(Debug)]
pub(super) struct ScriptCaller {
    ids: CallIds,
    scripts: LoadedScripts,
    timeout: Duration,
    marker_ttl_ms: u64,
}

impl ScriptCaller {
    /// Calls that each take at most `timeout`, retry included.
    ///
    /// # Errors
    /// When the system has no randomness to give (for the calls' markers).
    pub(super) fn new(timeout: Duration) -> Result<Self, BackendError> {
        Ok(Self {
            ids: CallIds::new()?,
            scripts: LoadedScripts::default(),
            timeout,
            marker_ttl_ms: duration_millis(marker_ttl(timeout)),
        })
    }

    /// One call of `algorithm`'s script for `calls` (all of that algorithm, at least one), at
    /// `now_ms` (`None`: the server's `TIME`), its marker in the first call's slot.
    pub(super) fn invocation<'a>(
        &self,
        algorithm: Algorithm,
        now_ms: Option<u64>,
        calls: impl IntoIterator<Item = &'a ScriptCall> + Clone,
    ) -> Invocation {
        let slot = calls
            .clone()
            .into_iter()
            .next()
            .map_or("", |call| call.slot.as_str());
        let marker = self.ids.marker(slot);
        Invocation::new(algorithm, now_ms, &marker, self.marker_ttl_ms, calls)
    }

    /// Sends `invocation` within the timeout, and once more within what is left of it when the
    /// connection broke (see the module docs). `connection` gives a clone of the backend's
    /// connection for each attempt; after a break, the connection manager's next one.
    pub(super) async fn run<C, F>(
        &self,
        connection: F,
        invocation: &Invocation,
    ) -> Result<Vec<i64>, BackendError>
    where
        C: ConnectionLike + Send,
        F: Fn() -> C,
    {
        let started = Instant::now();
        let first = send(connection(), invocation, &self.scripts);
        let error = match super::bounded(self.timeout, first).await {
            Err(BackendError::Redis(error)) if is_broken_connection(&error) => error,
            done => return done,
        };
        self.scripts.forget_all();
        let Some(left) = self
            .timeout
            .checked_sub(started.elapsed())
            .filter(|left| !left.is_zero())
        else {
            return Err(BackendError::Redis(error));
        };
        tracing::debug!(
            backend = "redis",
            %error,
            left_ms = duration_millis(left),
            "connection broke under a script call; sending it once more"
        );
        super::bounded(left, send(connection(), invocation, &self.scripts)).await
    }
}

/// One attempt: `EVALSHA`, or `EVAL` when the server may not hold the script or answers
/// `NOSCRIPT`.
async fn send<C: ConnectionLike>(
    mut connection: C,
    invocation: &Invocation,
    scripts: &LoadedScripts,
) -> RedisResult<Vec<i64>> {
    let algorithm = invocation.algorithm;
    let reply = if scripts.is_loaded(algorithm) {
        match invocation.evalsha().query_async(&mut connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                scripts.set(algorithm, false);
                invocation.eval().query_async(&mut connection).await
            }
            reply => reply,
        }
    } else {
        invocation.eval().query_async(&mut connection).await
    };
    if reply.is_ok() {
        scripts.set(algorithm, true);
    }
    reply
}

/// Whether `error` says the connection is gone (closed, reset, refused), so that a fresh one
/// may succeed. Timeouts are not: they have used the time a second attempt would need.
fn is_broken_connection(error: &RedisError) -> bool {
    !error.is_timeout() && (error.is_connection_dropped() || error.is_connection_refusal())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_one_backend_never_repeat_and_never_look_like_state() {
        let ids = CallIds::new().unwrap_or_else(|error| panic!("{error}"));
        let first = ids.marker("rl:{0123456789abcdef}");
        let second = ids.marker("rl:{0123456789abcdef}");
        assert_ne!(first, second);
        assert!(first.starts_with("rl:{0123456789abcdef}#"), "{first}");
        // A state key has `}:` after its tag; a marker never does.
        assert!(!first.contains("}:"), "{first}");
    }

    #[test]
    fn a_marker_outlives_every_retry() {
        assert_eq!(marker_ttl(Duration::from_millis(200)), MIN_MARKER_TTL);
        assert_eq!(marker_ttl(Duration::from_secs(2)), Duration::from_secs(4));
        assert_eq!(marker_ttl(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn only_a_gone_connection_is_worth_a_second_attempt() {
        let io = |kind| RedisError::from(std::io::Error::from(kind));
        for kind in [
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            assert!(is_broken_connection(&io(kind)), "{kind:?}");
        }
        assert!(!is_broken_connection(&io(std::io::ErrorKind::TimedOut)));
        let script_error =
            RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR"));
        assert!(!is_broken_connection(&script_error));
    }
}
