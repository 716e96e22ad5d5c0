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

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use tokio::sync::oneshot;

use super::scripts::{self, REPLY_PER_QUOTA, ScriptCall};
use crate::backend::BackendError;
use crate::clock::Clock;
use crate::health::HealthTracker;

/// The most checks one call carries. Bounds the script's run time, during which the server
/// serves nobody else, and the size of one request.
const MAX_BATCH: usize = 128;

/// The most calls in flight at once. Two let the client gather and prepare one batch while
/// the server runs the other, instead of each side idling while the other works.
const MAX_IN_FLIGHT: usize = 2;

/// What each caller gets back: its own slice of the reply, or the batch's error.
type Answer = Result<Vec<i64>, BackendError>;

/// Queues checks and sends them in batches over one multiplexed connection.
pub(super) struct Batcher {
    connection: ConnectionManager,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    health: Arc<HealthTracker>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// How many sender tasks run; each sends until `waiting` is empty.
    senders: usize,
}

struct Waiting {
    call: ScriptCall,
    answer: oneshot::Sender<Answer>,
}

impl Batcher {
    pub(super) fn new(
        connection: ConnectionManager,
        clock: Option<Arc<dyn Clock>>,
        timeout: Duration,
        health: Arc<HealthTracker>,
    ) -> Self {
        Self {
            connection,
            clock,
            timeout,
            health,
            queue: Mutex::default(),
        }
    }

    /// Evaluates `call` in the next batch and returns its reply integers.
    ///
    /// Bounded by the backend's timeout from the moment it is queued. Dropping the future
    /// before its batch is sent withdraws the check; after, the check still counts (as with a
    /// request already on the wire).
    pub(super) async fn run(self: &Arc<Self>, call: ScriptCall) -> Answer {
        let (answer, answered) = oneshot::channel();
        let start_sender = {
            let mut queue = self.lock();
            queue.waiting.push(Waiting { call, answer });
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
            let batch: Vec<Waiting> = {
                let mut queue = self.lock();
                // Callers that gave up (timed out or dropped) are not sent.
                queue.waiting.retain(|waiting| !waiting.answer.is_closed());
                if queue.waiting.is_empty() {
                    queue.senders -= 1;
                    stop.armed = false;
                    return;
                }
                // One script per algorithm, so a call carries checks of one algorithm: the
                // oldest waiting check's, in their order. A key's checks all share an
                // algorithm (it is part of the key), so no key's checks are reordered.
                let algorithm = queue.waiting[0].call.algorithm;
                let mut taken = 0;
                queue
                    .waiting
                    .extract_if(.., |waiting| {
                        let take = taken < MAX_BATCH && waiting.call.algorithm == algorithm;
                        taken += usize::from(take);
                        take
                    })
                    .collect()
            };
            self.send(batch).await;
        }
    }

    /// One script call for `batch`; every caller gets its part of the reply or the error.
    async fn send(&self, batch: Vec<Waiting>) {
        let now_ms = self.clock.as_ref().map(|clock| clock.now_millis());
        let Some(first) = batch.first() else {
            return;
        };
        let invocation = scripts::invocation(
            first.call.algorithm,
            now_ms,
            batch.iter().map(|waiting| &waiting.call),
        );
        let mut connection = self.connection.clone();
        let started = Instant::now();
        let reply: Result<Vec<i64>, BackendError> =
            super::bounded(self.timeout, invocation.invoke_async(&mut connection)).await;
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
                queue.waiting.clear();
            }
        }
    }
}
