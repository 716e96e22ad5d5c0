//! Concurrent checks of one algorithm on one server share one script call.
//!
//! redis-server spends a fixed cost on every `EVALSHA` (reading and parsing the command,
//! finding and entering the script, `TIME`, writing the reply) on top of the work per check.
//! While calls are in flight (at most [`MAX_IN_FLIGHT`]), the checks that arrive queue up here
//! and go out together as the next call, which evaluates them in order, each against the state
//! the ones before it left: the same decisions as one call each, for a fraction of the fixed
//! cost. A check that finds fewer calls in flight is sent at once (after one yield to the
//! scheduler), so an idle backend adds no waiting.
//!
//! Only a single server batches: on a Cluster the keys of different checks live in different
//! slots, and one script call may only touch one slot.
//!
//! The queue is bounded: at most `max_queued` checks
//! ([`RedisBackendBuilder::max_queued`](super::RedisBackendBuilder::max_queued), default
//! [`DEFAULT_MAX_QUEUED`](super::DEFAULT_MAX_QUEUED)) wait at once, queued for a call or in one
//! at the server. One more fails at once with [`BackendError::Overloaded`] and follows the
//! failure policy like any backend failure, so a stalled server costs bounded memory and
//! sheds load instead of making every request wait out the timeout. Waiting checks are kept in
//! one queue per algorithm, each in arrival order, so taking a batch pops that batch's checks
//! from the front of one queue (and the callers that gave up in front of them, each once):
//! never a pass over every waiting check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::oneshot;

use super::invoke::ScriptCaller;
use super::scripts::{REPLY_PER_QUOTA, ScriptCall};
use crate::algorithm::Algorithm;
use crate::backend::BackendError;
use crate::clock::Clock;
use crate::health::HealthTracker;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};

/// The most checks one call carries. Bounds the script's run time, during which the server
/// serves nobody else, and the size of one request.
const MAX_BATCH: usize = 128;

/// The most calls in flight at once. Two let the client gather and prepare one batch while
/// the server runs the other, instead of each side idling while the other works.
const MAX_IN_FLIGHT: usize = 2;

/// What each caller gets back: its own slice of the reply, or the batch's error.
type Answer = Result<Vec<i64>, BackendError>;

/// A full queue is met by every check while the server stalls: one line every few seconds.
static QUEUE_FULL: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// Queues checks and sends them in batches over one multiplexed connection.
pub(super) struct Batcher {
    connection: ConnectionManager,
    scripts: Arc<ScriptCaller>,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    health: Arc<HealthTracker>,
    max_queued: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    /// Checks waiting for a call, one lane per algorithm (a call runs one algorithm's
    /// script), each in arrival order.
    lanes: [VecDeque<Waiting>; Algorithm::ALL.len()],
    /// Checks in the lanes.
    queued: usize,
    /// Checks in calls at the server, not answered yet.
    sent: usize,
    /// The arrival number of the next check: the lane whose front came first goes next.
    arrivals: u64,
    /// How many sender tasks run; each sends until the lanes are empty.
    senders: usize,
}

struct Waiting {
    arrival: u64,
    call: ScriptCall,
    answer: oneshot::Sender<Answer>,
}

/// The lane of an algorithm's checks.
fn lane(algorithm: Algorithm) -> usize {
    algorithm as usize
}

impl Queue {
    /// Checks queued or at the server, not answered yet.
    fn waiting(&self) -> usize {
        self.queued + self.sent
    }

    /// Queues `call`, unless `max_queued` checks wait already (after dropping the callers
    /// that gave up at the front of each lane: they wait for nothing).
    fn push(
        &mut self,
        call: ScriptCall,
        answer: oneshot::Sender<Answer>,
        max_queued: usize,
    ) -> Result<(), BackendError> {
        if self.waiting() >= max_queued {
            self.drop_withdrawn();
            if self.waiting() >= max_queued {
                return Err(BackendError::Overloaded {
                    backend: "redis",
                    queued: self.waiting(),
                });
            }
        }
        let arrival = self.arrivals;
        // 2^64 checks take centuries at any rate a server can answer.
        self.arrivals = self.arrivals.wrapping_add(1);
        self.lanes[lane(call.algorithm)].push_back(Waiting {
            arrival,
            call,
            answer,
        });
        self.queued += 1;
        Ok(())
    }

    /// Drops the checks at the front of each lane whose callers gave up (timed out or
    /// dropped): each is looked at once, here or in [`Queue::take`].
    fn drop_withdrawn(&mut self) {
        for lane in &mut self.lanes {
            while lane
                .front()
                .is_some_and(|waiting| waiting.answer.is_closed())
            {
                lane.pop_front();
                self.queued -= 1;
            }
        }
    }

    /// The next batch, counted as sent: up to `max_batch` checks of the algorithm whose
    /// oldest waiting check came first, in their order, without the callers that gave up.
    /// Looks at no check it does not take. A key's checks all share an algorithm (it is part
    /// of the key), so no key's checks are reordered.
    fn take(&mut self, max_batch: usize) -> Vec<Waiting> {
        self.drop_withdrawn();
        let Some(lane) = self
            .lanes
            .iter_mut()
            .filter_map(|lane| Some((lane.front()?.arrival, lane)))
            .min_by_key(|(arrival, _)| *arrival)
            .map(|(_, lane)| lane)
        else {
            return Vec::new();
        };
        let mut batch = Vec::with_capacity(lane.len().min(max_batch));
        while batch.len() < max_batch
            && let Some(waiting) = lane.pop_front()
        {
            self.queued -= 1;
            if !waiting.answer.is_closed() {
                batch.push(waiting);
            }
        }
        self.sent += batch.len();
        batch
    }
}

impl Batcher {
    /// At most `max_queued` checks (at least 1) wait at once, queued or sent.
    pub(super) fn new(
        connection: ConnectionManager,
        scripts: Arc<ScriptCaller>,
        clock: Option<Arc<dyn Clock>>,
        timeout: Duration,
        health: Arc<HealthTracker>,
        max_queued: usize,
    ) -> Self {
        Self {
            connection,
            scripts,
            clock,
            timeout,
            health,
            max_queued: max_queued.max(1),
            queue: Mutex::default(),
        }
    }

    /// Evaluates `call` in the next batch and returns its reply integers.
    ///
    /// Bounded by the backend's timeout from the moment it is queued; refused at once with
    /// [`BackendError::Overloaded`] when `max_queued` checks wait already. Dropping the future
    /// before its batch is sent withdraws the check; after, the check still counts (as with a
    /// request already on the wire).
    pub(super) async fn run(self: &Arc<Self>, call: ScriptCall) -> Answer {
        let (answer, answered) = oneshot::channel();
        let start_sender = {
            let mut queue = self.lock();
            if let Err(error) = queue.push(call, answer, self.max_queued) {
                drop(queue);
                if let Some(suppressed) = QUEUE_FULL.admit(&"redis") {
                    tracing::warn!(
                        backend = "redis",
                        max_queued = self.max_queued,
                        suppressed,
                        "check refused: the batch queue is full"
                    );
                }
                return Err(error);
            }
            let start = queue.senders < MAX_IN_FLIGHT;
            queue.senders += usize::from(start);
            start
        };
        if start_sender {
            // A task of its own, so that no caller's cancellation can strand the others.
            tokio::spawn(Arc::clone(self).send_while_waiting());
        }
        match tokio::time::timeout(self.timeout, answered).await {
            Ok(Ok(answer)) => answer,
            // The sender task was dropped before answering: its runtime is shutting down.
            Ok(Err(_)) => Err(BackendError::Redis(
                std::io::Error::other("the task sending this check was stopped").into(),
            )),
            Err(_) => Err(BackendError::Timeout {
                backend: "redis",
                after: self.timeout,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends batches until nobody waits. At most [`MAX_IN_FLIGHT`] such tasks run per backend.
    async fn send_while_waiting(self: Arc<Self>) {
        let mut stop = StopSending {
            batcher: &self,
            armed: true,
        };
        loop {
            // Lets the tasks already woken (by the caller that started this sender, or by the
            // answers of the last batch) queue their checks first, so that they go out
            // together rather than one alone and the rest behind it. With nothing else to run,
            // this returns at once.
            tokio::task::yield_now().await;
            let batch = {
                let mut queue = self.lock();
                let batch = queue.take(MAX_BATCH);
                if batch.is_empty() {
                    queue.senders -= 1;
                    stop.armed = false;
                    return;
                }
                batch
            };
            let sent = Sent {
                batcher: &self,
                checks: batch.len(),
            };
            self.send(batch, sent).await;
        }
    }

    /// One script call for `batch`; every caller gets its part of the reply or the error.
    async fn send(&self, batch: Vec<Waiting>, sent: Sent<'_>) {
        let now_ms = self.clock.as_ref().map(|clock| clock.now_millis());
        let Some(first) = batch.first() else {
            return;
        };
        let invocation = self.scripts.invocation(
            first.call.algorithm,
            now_ms,
            batch.iter().map(|waiting| &waiting.call),
        );
        let started = Instant::now();
        let reply = self
            .scripts
            .run(|| self.connection.clone(), &invocation)
            .await;
        let expected: usize = batch
            .iter()
            .map(|waiting| waiting.call.quotas * REPLY_PER_QUOTA)
            .sum();
        let reply = reply.and_then(|reply| {
            if reply.len() == expected {
                Ok(reply)
            } else {
                Err(BackendError::UnexpectedReply { backend: "redis" })
            }
        });
        self.health.record(reply.as_ref().err(), started.elapsed());
        // Room for new checks before the callers hear back: one that checks again at once
        // must not find its own answered check still counted.
        drop(sent);
        match reply {
            Ok(reply) => {
                let mut rest = reply.as_slice();
                for waiting in batch {
                    let (own, after) = rest.split_at(waiting.call.quotas * REPLY_PER_QUOTA);
                    rest = after;
                    // A caller that has gone away needs no answer.
                    let _ = waiting.answer.send(Ok(own.to_vec()));
                }
            }
            Err(error) => {
                for waiting in batch {
                    let _ = waiting.answer.send(Err(same_error(&error)));
                }
            }
        }
    }
}

/// A batch's checks, counted against `max_queued` until the batch is answered, or dropped (its
/// task stopped mid-call).
struct Sent<'a> {
    batcher: &'a Batcher,
    checks: usize,
}

impl Drop for Sent<'_> {
    fn drop(&mut self) {
        self.batcher.lock().sent -= self.checks;
    }
}

/// A copy of a batch's error for each of its callers (`BackendError` is not `Clone`; a batch
/// fails only in these three ways).
fn same_error(error: &BackendError) -> BackendError {
    match error {
        BackendError::Redis(error) => BackendError::Redis(error.clone()),
        BackendError::Timeout { backend, after } => BackendError::Timeout {
            backend,
            after: *after,
        },
        _ => BackendError::UnexpectedReply { backend: "redis" },
    }
}

/// Lets callers start a sender again if the task stops without emptying the queue (its
/// runtime shut down mid-call). The callers still queued get an error at once instead of
/// waiting for their timeout.
struct StopSending<'a> {
    batcher: &'a Batcher,
    armed: bool,
}

impl Drop for StopSending<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = self.batcher.lock();
            queue.senders -= 1;
            if queue.senders == 0 {
                queue.lanes.iter_mut().for_each(VecDeque::clear);
                queue.queued = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(algorithm: Algorithm) -> ScriptCall {
        ScriptCall::new(algorithm, "rl:{0123456789abcdef}".to_owned(), 1, true, 1)
    }

    /// Queues a check; its receiver stands for the caller (dropping it gives up).
    fn push(
        queue: &mut Queue,
        algorithm: Algorithm,
        max_queued: usize,
    ) -> Result<oneshot::Receiver<Answer>, BackendError> {
        let (answer, answered) = oneshot::channel();
        queue.push(call(algorithm), answer, max_queued)?;
        Ok(answered)
    }

    fn arrivals(batch: &[Waiting]) -> Vec<u64> {
        batch.iter().map(|waiting| waiting.arrival).collect()
    }

    #[test]
    fn every_algorithm_has_its_own_lane() {
        for (index, algorithm) in Algorithm::ALL.into_iter().enumerate() {
            assert_eq!(lane(algorithm), index, "{algorithm}");
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_counting_checks_at_the_server() {
        let mut queue = Queue::default();
        let callers: Vec<_> = (0..8)
            .map(|_| push(&mut queue, Algorithm::FixedWindow, 8))
            .collect();
        assert!(callers.iter().all(Result::is_ok));
        let refused = push(&mut queue, Algorithm::TokenBucket, 8);
        assert!(
            matches!(
                refused,
                Err(BackendError::Overloaded {
                    backend: "redis",
                    queued: 8
                })
            ),
            "{refused:?}"
        );
        // Sent but not answered still counts: the server has not got through them.
        let batch = queue.take(5);
        assert_eq!(batch.len(), 5);
        assert!(push(&mut queue, Algorithm::FixedWindow, 8).is_err());
        // Answered (what `Sent` does on drop): room again.
        queue.sent -= batch.len();
        assert!(push(&mut queue, Algorithm::FixedWindow, 8).is_ok());
        let message = refused.err().map(|error| error.to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|text| text.contains("max_queued")),
            "{message:?}"
        );
    }

    #[test]
    fn callers_that_gave_up_make_room_in_a_full_queue() {
        let mut queue = Queue::default();
        let mut callers: Vec<_> = (0..8)
            .map(|_| push(&mut queue, Algorithm::SlidingWindow, 8))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        // The two oldest time out.
        callers.drain(..2);
        assert!(push(&mut queue, Algorithm::SlidingWindow, 8).is_ok());
        assert!(push(&mut queue, Algorithm::SlidingWindow, 8).is_ok());
        assert!(push(&mut queue, Algorithm::SlidingWindow, 8).is_err());
        assert_eq!(queue.waiting(), 8);
    }

    #[test]
    fn a_batch_is_the_oldest_algorithms_checks_in_order() {
        let mut queue = Queue::default();
        let order = [
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::TokenBucket,
            Algorithm::FixedWindow,
            Algorithm::TokenBucket,
        ];
        let mut callers: Vec<_> = order
            .into_iter()
            .map(|algorithm| push(&mut queue, algorithm, 100))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        // The caller of the third check gives up: it is left out.
        callers[2].close();
        assert_eq!(arrivals(&queue.take(128)), [0, 4]);
        assert_eq!(arrivals(&queue.take(128)), [1, 3]);
        assert!(queue.take(128).is_empty());
        assert_eq!((queue.queued, queue.sent), (0, 4));
    }

    #[test]
    fn taking_a_batch_pops_its_checks_and_leaves_the_rest_in_place() {
        let mut queue = Queue::default();
        let callers: Vec<_> = (0..10_000)
            .map(|index| {
                let algorithm = if index < 9_000 {
                    Algorithm::LeakyBucket
                } else {
                    Algorithm::FixedWindow
                };
                push(&mut queue, algorithm, 10_000)
            })
            .collect::<Result<_, _>>()
            .unwrap_or_else(|error| panic!("{error}"));
        let batch = queue.take(128);
        assert_eq!(arrivals(&batch), (0..128).collect::<Vec<u64>>());
        // Only the batch's own checks left the queue; the others wait in their order.
        let leaky = &queue.lanes[lane(Algorithm::LeakyBucket)];
        assert_eq!(leaky.len(), 9_000 - 128);
        assert_eq!(leaky.front().map(|waiting| waiting.arrival), Some(128));
        assert_eq!(queue.lanes[lane(Algorithm::FixedWindow)].len(), 1_000);
        assert_eq!((queue.queued, queue.sent), (10_000 - 128, 128));
        drop(callers);
    }
}
