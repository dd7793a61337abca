//! The run loop: receive with back-pressure, route, batch events, run volume operations, settle after durability.
//!
//! Back-pressure: every received message holds one permit of a semaphore sized by the live `max_in_flight` knob
//! until it is settled, and a receive call asks for no more messages than there are free permits. When the
//! writer slows down, permits stay taken and receiving slows down with it, instead of piling up locked messages.
//!
//! Shutdown: when the token is cancelled, receiving stops (within one receive wait), the batcher writes what it
//! holds, every write and volume job settles its messages, and `run` returns, or gives up after the grace period
//! (unsettled messages are then redelivered by Service Bus when their locks expire: nothing is lost).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::message::VolumeRequest;
use crate::servicebus::lag::Settlement as Settled;
use crate::servicebus::{MessageReceiver, OutgoingMessage, ReceivedMessage, ServiceBusError};

use super::hold::IngestHold;
use super::knobs::LiveKnobs;
use super::router::{self, Route};
use super::sink::{EventRecord, EventSink, Replier, VolumeHandler};
use super::stages::{Breakdown, Path as StagePath, Stamps};
use super::stats::{PipelineStats, StatsSnapshot};
use super::PipelineConfig;

/// Hooks the pipeline calls around each message's life, for lag accounting and lock renewal.
pub trait MessageObserver: Send + Sync {
    /// A message was received; the returned guard lives until the message is settled (dropping it ends renewal).
    fn on_receive(
        &self,
        message: &ReceivedMessage,
        receiver: &Arc<dyn MessageReceiver>,
    ) -> Box<dyn Send + Sync>;
    /// A message was settled; `LockLost` when the settlement failed and Service Bus will redeliver.
    fn on_settle(&self, message: &ReceivedMessage, outcome: Settled);
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
enum Settlement {
    Complete,
    Abandon,
    DeadLetter { reason: String, description: String },
}

/// A received message that is not settled yet.
struct InFlight {
    message: ReceivedMessage,
    receiver: Arc<dyn MessageReceiver>,
    _permit: Option<OwnedSemaphorePermit>,
    _guard: Option<Box<dyn Send + Sync>>,
    stamps: Stamps,
    path: StagePath,
}

/// The pipeline, ready to run.
pub struct Pipeline {
    receivers: Vec<Arc<dyn MessageReceiver>>,
    events: Arc<dyn EventSink>,
    volumes: Arc<dyn VolumeHandler>,
    replier: Arc<dyn Replier>,
    observer: Option<Arc<dyn MessageObserver>>,
    hold: Option<Arc<dyn IngestHold>>,
    knobs: LiveKnobs,
    config: PipelineConfig,
    stats: Arc<PipelineStats>,
}

/// State shared by the pipeline's tasks.
struct Shared {
    events: Arc<dyn EventSink>,
    volumes: Arc<dyn VolumeHandler>,
    replier: Arc<dyn Replier>,
    observer: Option<Arc<dyn MessageObserver>>,
    hold: Option<Arc<dyn IngestHold>>,
    knobs: LiveKnobs,
    config: PipelineConfig,
    stats: Arc<PipelineStats>,
    tasks: TaskTracker,
    token: CancellationToken,
}

impl Pipeline {
    /// Assembles a pipeline from its parts: one receiver per entity, the two downstream handlers and the replier.
    pub fn new(
        receivers: Vec<Arc<dyn MessageReceiver>>,
        events: Arc<dyn EventSink>,
        volumes: Arc<dyn VolumeHandler>,
        replier: Arc<dyn Replier>,
        knobs: LiveKnobs,
        config: PipelineConfig,
    ) -> Self {
        Pipeline {
            receivers,
            events,
            volumes,
            replier,
            observer: None,
            hold: None,
            knobs,
            config,
            stats: Arc::new(PipelineStats::default()),
        }
    }

    /// Adds the lag and lock-renewal hooks.
    pub fn with_observer(mut self, observer: Arc<dyn MessageObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Adds an ingest hold (maintenance windows) consulted before every receive.
    pub fn with_ingest_hold(mut self, hold: Arc<dyn IngestHold>) -> Self {
        self.hold = Some(hold);
        self
    }

    /// The counters, live.
    pub fn stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled, then drains within the grace period and returns the final counters.
    pub async fn run(self, shutdown: CancellationToken) -> StatsSnapshot {
        let limit = Arc::new(Semaphore::new(self.knobs.get().max_in_flight as usize));
        let shared = Arc::new(Shared {
            events: self.events,
            volumes: self.volumes,
            replier: self.replier,
            observer: self.observer,
            hold: self.hold,
            knobs: self.knobs,
            config: self.config,
            stats: self.stats,
            tasks: TaskTracker::new(),
            token: shutdown.clone(),
        });
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let loops = TaskTracker::new();
        loops.spawn(resize_limit(shared.clone(), limit.clone()));
        for (index, receiver) in self.receivers.into_iter().enumerate() {
            loops.spawn(receive_loop(
                shared.clone(),
                index,
                receiver,
                limit.clone(),
                event_tx.clone(),
            ));
        }
        drop(event_tx);
        loops.spawn(batch_loop(shared.clone(), event_rx));
        let drift_stats = shared.stats.clone();
        let drift_stop = shutdown.clone();
        loops.spawn(async move { drift_stats.drift().run(drift_stop).await });
        loops.close();

        shutdown.cancelled().await;
        let grace = Duration::from_millis(shared.config.grace_ms);
        let drained = tokio::time::timeout(grace, async {
            loops.wait().await;
            shared.tasks.close();
            shared.tasks.wait().await;
        })
        .await;
        let snapshot = shared.stats.snapshot();
        match drained {
            Ok(()) => tracing::info!(?snapshot, "pipeline drained"),
            Err(_) => tracing::warn!(
                in_flight = snapshot.in_flight,
                jobs = shared.tasks.len(),
                "grace period over before every message was settled; their locks will expire and Service Bus redelivers them"
            ),
        }
        snapshot
    }
}

/// Follows the `max_in_flight` knob by adding or retiring permits.
async fn resize_limit(shared: Arc<Shared>, limit: Arc<Semaphore>) {
    let mut knobs = shared.knobs.subscribe();
    let mut current = knobs.borrow_and_update().max_in_flight as usize;
    loop {
        tokio::select! {
            _ = shared.token.cancelled() => return,
            changed = knobs.changed() => if changed.is_err() { return },
        }
        let wanted = knobs.borrow_and_update().max_in_flight as usize;
        if wanted > current {
            limit.add_permits(wanted - current);
        } else if wanted < current {
            // Retire permits as they come back; in-flight messages keep theirs until settled.
            let retire = (current - wanted) as u32;
            let limit = limit.clone();
            tokio::spawn(async move {
                if let Ok(permits) = limit.acquire_many_owned(retire).await {
                    permits.forget();
                }
            });
        }
        current = wanted;
    }
}

async fn receive_loop(
    shared: Arc<Shared>,
    index: usize,
    receiver: Arc<dyn MessageReceiver>,
    limit: Arc<Semaphore>,
    events: mpsc::UnboundedSender<(InFlight, EventRecord)>,
) {
    let wait = Duration::from_millis(shared.config.receive_wait_ms);
    while !shared.token.is_cancelled() {
        // A maintenance window holds receiving back before any permit is taken, so a paused entity does not
        // keep permits other entities need.
        let admitted = match (&shared.hold, shared.config.entities.get(index)) {
            (Some(hold), Some(entity)) => {
                let wanted = shared.knobs.get().prefetch.max(1);
                match hold.admit(entity, wanted, &shared.token).await as usize {
                    0 => continue,
                    n => n,
                }
            }
            _ => usize::MAX,
        };
        let first = tokio::select! {
            _ = shared.token.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let prefetch = shared.knobs.get().prefetch.max(1);
        if receiver.prefetch() != prefetch {
            receiver.set_prefetch(prefetch);
        }
        let prefetch = (prefetch as usize).min(admitted);
        let mut permits = vec![first];
        while permits.len() < prefetch {
            match limit.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // The receive itself is never cancelled half-way: a message taken off the link would sit locked
        // and unprocessed until its lock expired. The wait bounds how long shutdown takes to stop receiving.
        match receiver.receive(permits.len() as u32, wait).await {
            Ok(messages) => {
                shared.stats.received(messages.len() as u64);
                shared.stats.in_flight(messages.len() as i64);
                for message in messages {
                    let guard = shared
                        .observer
                        .as_ref()
                        .map(|o| o.on_receive(&message, &receiver));
                    shared
                        .stats
                        .drift()
                        .offer(router::row_id(&message), message.body.clone());
                    let inflight = InFlight {
                        stamps: Stamps::received(message.enqueued_at),
                        path: StagePath::Event,
                        message,
                        receiver: receiver.clone(),
                        _permit: permits.pop(),
                        _guard: guard,
                    };
                    dispatch(&shared, inflight, &events);
                }
            }
            Err(error) => {
                let pause = error.backoff_hint().unwrap_or(Duration::from_secs(1));
                tracing::warn!(%error, retriable = error.is_retriable(), pause_ms = pause.as_millis() as u64, "receive failed");
                tokio::select! {
                    _ = shared.token.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    mut inflight: InFlight,
    events: &mpsc::UnboundedSender<(InFlight, EventRecord)>,
) {
    match router::route(&inflight.message, shared.config.max_message_bytes) {
        Route::Event(row) => {
            if let Err(mpsc::error::SendError((inflight, _))) = events.send((inflight, row)) {
                // The batcher is gone (shutdown): release the message for redelivery.
                let shared = shared.clone();
                shared.tasks.clone().spawn(async move {
                    settle(&shared, inflight, Settlement::Abandon).await;
                });
            }
        }
        Route::Volume(request) => {
            inflight.path = StagePath::Volume;
            let shared = shared.clone();
            shared
                .tasks
                .clone()
                .spawn(async move { volume_job(shared, inflight, request).await });
        }
        Route::DeadLetter {
            reason,
            description,
        } => {
            tracing::info!(%reason, %description, "dead-lettering unparseable message");
            inflight.path = StagePath::Rejected;
            let now = std::time::Instant::now();
            inflight.stamps.work_started(now);
            inflight.stamps.work_ended(now);
            let shared = shared.clone();
            shared.tasks.clone().spawn(async move {
                let settlement = Settlement::DeadLetter {
                    reason,
                    description,
                };
                settle(&shared, inflight, settlement).await;
            });
        }
    }
}

/// Collects events into chunks of up to `batch_rows × write_concurrency` rows and hands each chunk to a write job.
///
/// Natural batching: a chunk is cut when the linger has passed and the write jobs already running send fewer
/// than `write_concurrency` batch requests (the writer's own limit). While they send that many, a new chunk could
/// only queue behind them, so it keeps filling (up to its cap) until some finish. Under load batches grow by
/// themselves and the per-request cost is spread over more rows; when the writer keeps up nothing waits beyond
/// the linger. A chunk's requests are counted when it is cut, the way the writer will group it
/// ([`crate::cassandra::batch_groups`]: per partition, within the row and byte caps), so a job just spawned
/// counts at once, and a chunk over several partitions counts as the several requests it becomes.
async fn batch_loop(
    shared: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<(InFlight, EventRecord)>,
) {
    let linger = Duration::from_millis(shared.config.linger_ms);
    let requests = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Notify::new());
    while let Some(first) = events.recv().await {
        let knobs = shared.knobs.get();
        let cap = (knobs.batch_rows as usize)
            .saturating_mul(knobs.write_concurrency as usize)
            .max(1);
        let mut chunk = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        let mut open = true;
        while open && chunk.len() < cap {
            tokio::select! {
                biased;
                item = events.recv() => match item {
                    Some(item) => chunk.push(item),
                    None => open = false,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        while open && chunk.len() < cap {
            let job_finished = finished.notified();
            tokio::pin!(job_finished);
            // Registered before the count is read, so writes finishing in between still wake this loop.
            job_finished.as_mut().enable();
            let limit = shared.knobs.get().write_concurrency.max(1) as usize;
            if requests.load(Ordering::Acquire) < limit {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut job_finished => {}
                item = events.recv() => match item {
                    Some(item) => chunk.push(item),
                    None => open = false,
                },
            }
        }
        let knobs = shared.knobs.get();
        let count = crate::cassandra::batch_groups(
            chunk.iter().map(|(_, row)| row).enumerate(),
            knobs.batch_rows as usize,
            knobs.batch_bytes as usize,
        )
        .len();
        requests.fetch_add(count, Ordering::AcqRel);
        let slots = WriteSlots {
            requests: requests.clone(),
            count,
            finished: finished.clone(),
        };
        let job_shared = shared.clone();
        shared
            .tasks
            .spawn(async move { write_job(job_shared, chunk, slots).await });
    }
}

/// The batch requests a write job counts against `write_concurrency` while it writes; released when dropped
/// (after the writes, before settlement, or if the job ends early).
struct WriteSlots {
    requests: Arc<AtomicUsize>,
    count: usize,
    finished: Arc<Notify>,
}

impl Drop for WriteSlots {
    fn drop(&mut self) {
        self.requests.fetch_sub(self.count, Ordering::AcqRel);
        self.finished.notify_waiters();
    }
}

/// Writes a chunk, retrying retriable row failures with backoff, and settles every message of it.
async fn write_job(shared: Arc<Shared>, chunk: Vec<(InFlight, EventRecord)>, slots: WriteSlots) {
    let mut pending = chunk;
    let started = std::time::Instant::now();
    for (inflight, _) in &mut pending {
        inflight.stamps.work_started(started);
    }
    let mut attempt = 0u32;
    let mut settlements = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        attempt += 1;
        let rows: Vec<EventRecord> = pending.iter().map(|(_, row)| row.clone()).collect();
        let outcomes = shared.events.write(rows).await;
        shared.stats.write_batches(1);
        let mut retry = Vec::new();
        let mut outcomes = outcomes.into_iter();
        for (inflight, row) in pending {
            match outcomes.next() {
                Some(Ok(())) => {
                    shared.stats.events_written(1);
                    settlements.push((inflight, Settlement::Complete));
                }
                Some(Err(error)) if error.is_retriable() => retry.push((inflight, row, error)),
                Some(Err(error)) => settlements.push((
                    inflight,
                    Settlement::DeadLetter {
                        reason: error.reason.to_string(),
                        description: error.message,
                    },
                )),
                None => {
                    // A sink that returns fewer outcomes than rows broke its contract: never complete blindly.
                    tracing::error!(message_id = %row.message_id, "event sink returned no outcome for a row; abandoning it");
                    settlements.push((inflight, Settlement::Abandon));
                }
            }
        }
        if retry.is_empty() {
            break;
        }
        if attempt >= shared.config.write_attempts || shared.token.is_cancelled() {
            if let Some((_, _, error)) = retry.first() {
                tracing::warn!(rows = retry.len(), attempt, %error, "write still failing; abandoning for redelivery");
            }
            settlements.extend(retry.into_iter().map(|(i, _, _)| (i, Settlement::Abandon)));
            break;
        }
        shared.stats.write_retries(retry.len() as u64);
        let pause = shared.config.backoff(attempt);
        tracing::debug!(
            rows = retry.len(),
            attempt,
            pause_ms = pause.as_millis() as u64,
            "retrying write"
        );
        tokio::select! {
            _ = shared.token.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
        pending = retry.into_iter().map(|(i, row, _)| (i, row)).collect();
    }
    drop(slots);
    let ended = std::time::Instant::now();
    for (inflight, _) in &mut settlements {
        inflight.stamps.work_ended(ended);
    }
    futures::stream::iter(settlements)
        .for_each_concurrent(64, |(inflight, settlement)| {
            let shared = &shared;
            async move { settle(shared, inflight, settlement).await }
        })
        .await;
}

/// Runs one volume request, replies when asked to, and settles.
async fn volume_job(shared: Arc<Shared>, mut inflight: InFlight, request: VolumeRequest) {
    inflight.stamps.work_started(std::time::Instant::now());
    let outcome = shared.volumes.handle(&request).await;
    let (reply, settlement) = match outcome {
        Ok(done) => {
            shared.stats.volume_ops_done(1);
            (Some(done.reply), Settlement::Complete)
        }
        Err((error, _)) if error.is_retriable() => {
            inflight.stamps.work_ended(std::time::Instant::now());
            let pause = shared
                .config
                .backoff(inflight.message.delivery_count.max(1));
            tracing::warn!(op = request.op(), resource = request.resource(), %error, pause_ms = pause.as_millis() as u64, "volume operation failed; abandoning after backoff");
            tokio::select! {
                _ = shared.token.cancelled() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            (None, Settlement::Abandon)
        }
        Err((error, reply)) => (
            Some(reply),
            Settlement::DeadLetter {
                reason: error.reason.to_string(),
                description: error.message,
            },
        ),
    };
    if let (Some(body), Some(to)) = (reply, inflight.message.reply_to.clone()) {
        let message = OutgoingMessage {
            message_id: Some(uuid::Uuid::new_v4().to_string()),
            body: bytes::Bytes::from(body.to_string()),
            correlation_id: inflight.message.message_id.clone(),
            content_type: Some("application/json".into()),
            subject: Some(format!("volume.{}", request.op())),
            ..OutgoingMessage::default()
        };
        if let Err(error) = shared.replier.reply(&to, message).await {
            // The operation is idempotent: abandoning makes the request run again and the reply be sent again.
            tracing::warn!(%error, reply_to = %to, "reply failed; abandoning the request for redelivery");
            inflight.stamps.work_ended(std::time::Instant::now());
            settle(&shared, inflight, Settlement::Abandon).await;
            return;
        }
    }
    inflight.stamps.work_ended(std::time::Instant::now());
    settle(&shared, inflight, settlement).await;
}

async fn settle(shared: &Shared, inflight: InFlight, settlement: Settlement) {
    let message = &inflight.message;
    let result = match &settlement {
        Settlement::Complete => inflight.receiver.complete(message).await,
        Settlement::Abandon => inflight.receiver.abandon(message).await,
        Settlement::DeadLetter {
            reason,
            description,
        } => {
            inflight
                .receiver
                .dead_letter(message, reason, description)
                .await
        }
    };
    let observed = match (&settlement, &result) {
        (Settlement::Complete, Ok(())) => {
            shared.stats.completed(1);
            Settled::Completed
        }
        (Settlement::Abandon, Ok(())) => {
            shared.stats.abandoned(1);
            Settled::Abandoned
        }
        (Settlement::DeadLetter { .. }, Ok(())) => {
            shared.stats.dead_lettered(1);
            Settled::DeadLettered
        }
        (_, Err(ServiceBusError::LockLost { .. })) => {
            // Someone else may have the message now; our write was idempotent, so a redelivery is harmless.
            shared.stats.lock_lost(1);
            Settled::LockLost
        }
        (_, Err(error)) => {
            shared.stats.settle_errors(1);
            tracing::warn!(%error, sequence_number = message.sequence_number, "settlement failed; Service Bus will redeliver");
            Settled::LockLost
        }
    };
    if let Some(observer) = &shared.observer {
        observer.on_settle(message, observed);
    }
    let breakdown = Breakdown::of(&inflight.stamps, std::time::Instant::now());
    shared.stats.stages().record(inflight.path, breakdown);
    shared.stats.in_flight(-1);
}
