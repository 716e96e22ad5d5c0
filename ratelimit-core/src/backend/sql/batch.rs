//! Group commit for checks: the checks that concurrent tasks make through one backend while
//! earlier ones are at the database are gathered and sent as one statement, so they share one
//! round trip, one transaction and one WAL flush, and the client's per-call cost (pool, encoding,
//! wakeups) is paid once per batch.
//!
//! How a check travels: the caller queues it with a one-shot reply channel. If fewer than
//! `eager` batches are at the database (default 1) and no batch task is about to take the
//! queue, the caller starts a batch task at once with everything queued (so an idle backend adds
//! no wait); otherwise the check waits for the next batch, which the task of a finishing batch
//! takes from the queue before it ends. A batch holds at most `batch_size` checks.
//!
//! How many batches are out adapts to how fast they come back. While batches return within
//! [`SLOW_ROUND_TRIP`] (on average), `eager` batches go out: with one, every waiting check
//! rides the next batch, and batches are as large as they can be, which costs the database
//! the least time per check (one statement start and one commit for all of them). While they
//! return slower (commits waiting for a slow disk), twice as many go out, so checks made while
//! a batch waits for its flush are already at the database when the flush ends. More batches
//! start, up to the pool size, only when a full batch is waiting that no batch task will take,
//! or when a check has waited [`EXTRA_BATCH_AFTER`] (a batch held up far longer than a commit
//! takes: a lock held by another process, a stalled disk).
//!
//! Inside a batch the checks are sorted by key, so two concurrent batches take their keys' locks
//! in the same order and never deadlock on each other; checks of one key keep their callers'
//! order, and each sees the writes of the one before it (one transaction). Replies go back in the callers' order. A failed batch (after the usual retries of
//! a rolled-back transaction, within the timeout) fails every caller in it with a copy of the
//! same error. A caller that stops waiting (timeout, dropped future) is taken out of its batch if
//! the batch has not started yet; the batch task runs on its own, so no caller can wedge it.
//!
//! The queue is bounded: at most `max_queued` checks
//! ([`SqlBackendBuilder::max_queued`](super::SqlBackendBuilder::max_queued), default
//! [`DEFAULT_MAX_QUEUED`](super::DEFAULT_MAX_QUEUED)) wait at once, queued or in a batch at the
//! database. One more fails at once with [`BackendError::Overloaded`] and follows the failure
//! policy like any backend failure, so a stalled database (a lock held elsewhere, a full disk)
//! costs bounded memory and sheds load instead of making every request wait out the timeout.
//! Taking a batch pops its checks from the front of the queue (and the callers that gave up in
//! front of them, each once): never a pass over every waiting check.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::args;
use super::copy_error::copy;
use super::{Engine, with_retries};
use crate::algorithm::{Algorithm, Policy, PolicyId, Verdict};
use crate::backend::BackendError;
use crate::log_throttle::{LOG_INTERVAL, LogThrottle};

/// An engine that can decide many checks in one statement.
#[async_trait]
pub(super) trait BatchEngine: Engine {
    /// One attempt at `checks`, in this order, in one transaction: the verdicts of each check
    /// (one per quota), in the same order.
    async fn decide_batch(&self, checks: &[&Check]) -> Result<Vec<Vec<Verdict>>, BackendError>;
}

/// One check (never a peek) as it waits in a batch, its values already in SQL form, so a value
/// out of range fails its own caller, not the batch.
pub(super) struct Check {
    pub(super) key: String,
    pub(super) algorithm: Algorithm,
    /// The limit's distinct policies, in id order (see `Quotas` in sql.rs).
    pub(super) policies: Vec<Policy>,
    /// Each policy's id, as [`args::policy_ids`] gives them.
    pub(super) ids: Vec<i64>,
    /// Each quota's parameters, as [`args::policy_args`] lays them out.
    pub(super) params: Vec<i64>,
    /// The injected clock's time, read when the check was made; `None` for the database's.
    pub(super) now_ms: Option<i64>,
    pub(super) cost: i64,
}

impl Check {
    /// # Errors
    /// [`BackendError::SqlValueOutOfRange`] for a value no `BIGINT` holds.
    pub(super) fn new(
        key: &str,
        algorithm: Algorithm,
        policies: Vec<Policy>,
        ids: &[PolicyId],
        now_ms: Option<u64>,
        cost: u64,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            key: key.to_owned(),
            algorithm,
            ids: args::policy_ids(ids),
            params: args::policy_args(&policies)?,
            policies,
            now_ms: now_ms.map(|now| args::to_sql_int("now", now)).transpose()?,
            cost: args::cost_arg(cost),
        })
    }
}

type Reply = Result<Vec<Verdict>, BackendError>;

/// How long a check waits for a batch before it may start one beyond the eager ones: longer
/// than a slow commit takes (a few ms on a busy disk), for which more batches would only split
/// the checks between more flushes, but short enough that a batch held up on a lock or a
/// stalled disk does not hold every other check back for long.
const EXTRA_BATCH_AFTER: Duration = Duration::from_millis(5);

/// Batches that take longer than this to come back, on average, are waiting for the disk, not
/// for the database's CPU (a batch of 64 checks takes it about 2 ms): more of them out then
/// cost little and keep checks from waiting a whole commit for a batch to leave.
const SLOW_ROUND_TRIP: Duration = Duration::from_millis(2);

/// A full queue is met by every check while the database stalls: one line every few seconds.
static QUEUE_FULL: LogThrottle = LogThrottle::new(LOG_INTERVAL);

/// A queued check and where its reply goes.
struct Pending {
    check: Check,
    reply: oneshot::Sender<Reply>,
}

/// Gathers the checks of one backend into batches.
pub(super) struct Batcher {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Arc<dyn BatchEngine>,
    timeout: Duration,
    batch_size: usize,
    /// Batches a check starts at once when fewer are out.
    eager: usize,
    /// Batches out at most, counting those started for checks that waited long.
    most: usize,
    /// Checks waiting at most, queued or in batches out.
    max_queued: usize,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Pending>,
    /// Checks in batches out, not answered yet.
    sent: usize,
    /// Batch tasks running; each takes the next batch from `waiting` before it ends.
    in_flight: usize,
    /// Batch tasks about to take their next batch from `waiting` (started, or just back from
    /// the database): the checks they will take need no batch of their own.
    forming: usize,
    /// Recent batch round trips, averaged (each new one weighs 1/8).
    round_trip: Duration,
}

impl Batcher {
    /// `eager` batches start as soon as checks come; up to `most` when a full batch waits
    /// unclaimed or a check waits longer than [`EXTRA_BATCH_AFTER`]. At most `max_queued`
    /// checks (at least 1) wait at once, queued or in batches out.
    pub(super) fn new(
        engine: Arc<dyn BatchEngine>,
        timeout: Duration,
        batch_size: usize,
        eager: usize,
        most: usize,
        max_queued: usize,
    ) -> Self {
        let eager = eager.max(1);
        Self {
            shared: Arc::new(Shared {
                engine,
                timeout,
                batch_size: batch_size.max(1),
                eager,
                most: most.max(eager),
                max_queued: max_queued.max(1),
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// Decides `check` in the next batch; waits at most the backend's timeout. Refused at once
    /// with [`BackendError::Overloaded`] when `max_queued` checks wait already.
    pub(super) async fn decide(&self, check: Check) -> Reply {
        let (reply, mut receiver) = oneshot::channel();
        let backend = self.shared.engine.name();
        let queued =
            self.shared
                .lock()
                .push(Pending { check, reply }, self.shared.max_queued, backend);
        if let Err(error) = queued {
            if let Some(suppressed) = QUEUE_FULL.admit(&backend) {
                tracing::warn!(
                    backend,
                    max_queued = self.shared.max_queued,
                    suppressed,
                    "check refused: the batch queue is full"
                );
            }
            return Err(error);
        }
        self.shared.start_batch(false);
        let waiting = async {
            loop {
                match tokio::time::timeout(EXTRA_BATCH_AFTER, &mut receiver).await {
                    Ok(reply) => return reply,
                    Err(_) => self.shared.start_batch(true),
                }
            }
        };
        match tokio::time::timeout(self.shared.timeout, waiting).await {
            Ok(Ok(reply)) => reply,
            // The batch task ended without replying: only a panic in the driver does that.
            Ok(Err(_)) => Err(BackendError::UnexpectedReply {
                backend: self.shared.engine.name(),
            }),
            Err(_) => Err(BackendError::Timeout {
                backend: self.shared.engine.name(),
                after: self.shared.timeout,
            }),
        }
    }
}

impl Queue {
    /// Checks queued or in batches out, not answered yet.
    fn unanswered(&self) -> usize {
        self.waiting.len() + self.sent
    }

    /// Queues `pending`, unless `max_queued` checks wait already (after dropping the callers
    /// that gave up at the front of the queue: they wait for nothing); `backend` names the
    /// engine in the error.
    fn push(
        &mut self,
        pending: Pending,
        max_queued: usize,
        backend: &'static str,
    ) -> Result<(), BackendError> {
        if self.unanswered() >= max_queued {
            while self
                .waiting
                .front()
                .is_some_and(|pending| pending.reply.is_closed())
            {
                self.waiting.pop_front();
            }
            if self.unanswered() >= max_queued {
                return Err(BackendError::Overloaded {
                    backend,
                    queued: self.unanswered(),
                });
            }
        }
        self.waiting.push_back(pending);
        Ok(())
    }
}

impl Shared {
    /// Starts a batch task if checks wait that no forming batch will take, and fewer than
    /// `eager` batches are out (twice as many while batches come back slowly), or fewer than
    /// `most` when a full batch waits unclaimed or the caller `waited_long`.
    fn start_batch(self: &Arc<Self>, waited_long: bool) {
        let start = {
            let mut queue = self.lock();
            let unclaimed = queue
                .waiting
                .len()
                .saturating_sub(queue.forming.saturating_mul(self.batch_size));
            let limit = if waited_long || unclaimed >= self.batch_size {
                self.most
            } else if queue.round_trip > SLOW_ROUND_TRIP {
                self.eager.saturating_mul(2).min(self.most)
            } else {
                self.eager
            };
            let start = unclaimed > 0 && queue.in_flight < limit;
            if start {
                queue.in_flight += 1;
                queue.forming += 1;
            }
            start
        };
        if start {
            tokio::spawn(run(Arc::clone(self)));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic elsewhere could break half-way.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, counted as sent: up to `batch_size` queued checks whose callers still
    /// wait, popped from the front; looks at no check it does not take.
    fn take(&self, queue: &mut Queue) -> Vec<Pending> {
        let mut batch = Vec::with_capacity(queue.waiting.len().min(self.batch_size));
        while batch.len() < self.batch_size {
            let Some(pending) = queue.waiting.pop_front() else {
                break;
            };
            if !pending.reply.is_closed() {
                batch.push(pending);
            }
        }
        queue.sent += batch.len();
        batch
    }

    /// Runs `batch` (in key order) with retries under the timeout.
    async fn execute(&self, batch: &[Pending]) -> Result<Vec<Vec<Verdict>>, BackendError> {
        let mut order: Vec<usize> = (0..batch.len()).collect();
        // Stable: checks of one key keep their callers' order.
        order.sort_by(|&a, &b| batch[a].check.key.cmp(&batch[b].check.key));
        let sorted: Vec<&Check> = order.iter().map(|&index| &batch[index].check).collect();
        let engine: &dyn Engine = &*self.engine;
        let verdicts =
            with_retries(engine, self.timeout, || self.engine.decide_batch(&sorted)).await?;
        if verdicts.len() != batch.len() {
            return Err(BackendError::UnexpectedReply {
                backend: self.engine.name(),
            });
        }
        let mut in_callers_order: Vec<Vec<Verdict>> = vec![Vec::new(); batch.len()];
        for (index, verdicts) in order.into_iter().zip(verdicts) {
            in_callers_order[index] = verdicts;
        }
        Ok(in_callers_order)
    }
}

/// Gives the batch slot, the forming mark and the count of checks sent back if a batch task
/// ends without doing so (a panic, or the runtime shutting down), so later checks can still
/// start batches and find room in the queue.
struct Slot<'a> {
    shared: &'a Shared,
    held: bool,
    forming: bool,
    sent: usize,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.held || self.forming || self.sent > 0 {
            let mut queue = self.shared.lock();
            queue.in_flight -= usize::from(self.held);
            queue.forming -= usize::from(self.forming);
            queue.sent -= self.sent;
        }
    }
}

/// A batch task: takes what is queued, runs it, replies, and goes on while checks queue.
async fn run(shared: Arc<Shared>) {
    let mut slot = Slot {
        shared: &shared,
        held: true,
        forming: true,
        sent: 0,
    };
    loop {
        // Checks made at the same moment (often the callers this task just answered, checking
        // again) are ready to run: let them queue and go in this batch, rather than each start
        // a batch of one. Costs nothing when nothing else is ready to run.
        tokio::task::yield_now().await;
        let batch = {
            let mut queue = shared.lock();
            let batch = shared.take(&mut queue);
            slot.sent = batch.len();
            queue.forming -= 1;
            slot.forming = false;
            if batch.is_empty() {
                queue.in_flight -= 1;
                slot.held = false;
                return;
            }
            batch
        };
        let sent = Instant::now();
        let outcome = shared.execute(&batch).await;
        let round_trip = sent.elapsed();
        tracing::trace!(
            checks = batch.len(),
            ok = outcome.is_ok(),
            ?round_trip,
            "sql batch"
        );
        {
            let mut queue = shared.lock();
            queue.round_trip = (queue.round_trip * 7 + round_trip) / 8;
            // Room for new checks before the callers hear back: one that checks again at once
            // must not find its own answered check still counted.
            queue.sent -= batch.len();
            slot.sent = 0;
            // Forming again before the callers hear back: those that check again at once find
            // this task about to take them, and start no batch of their own.
            queue.forming += 1;
            slot.forming = true;
        }
        reply(batch, outcome);
    }
}

fn reply(batch: Vec<Pending>, outcome: Result<Vec<Vec<Verdict>>, BackendError>) {
    // A caller that has gone meanwhile just misses its reply.
    match outcome {
        Ok(verdicts) => {
            for (pending, verdicts) in batch.into_iter().zip(verdicts) {
                let _ = pending.reply.send(Ok(verdicts));
            }
        }
        Err(error) => {
            tracing::debug!(%error, checks = batch.len(), "sql batch failed");
            for pending in batch {
                let _ = pending.reply.send(Err(copy(&error)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
