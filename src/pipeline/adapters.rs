//! Adapters from the pipeline's boundaries to the real components: the LINSTOR volume executor, the lag tracker
//! with lock renewal, and Service Bus senders for replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::cassandra::{CassandraError, EventWriter, WriterKnobs};
use crate::linstor::ops::{VolumeExecutor, VolumeReply};
use crate::message::VolumeRequest;
use crate::servicebus::lag::{LagTracker, Settlement as LagSettlement};
use crate::servicebus::renewal::{LockRenewer, RenewalConfig};
use crate::servicebus::{
    MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

use super::knobs::LiveKnobs;
use super::run::MessageObserver;
use super::sink::{EventRecord, EventSink, Replier, SinkError, VolumeHandler, VolumeOutcome};

/// An error with its causes, `outer: inner: innermost`, for dead-letter descriptions and log lines.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Writes events with the `scylla` writer.
pub struct CassandraEvents {
    writer: Arc<EventWriter>,
}

impl CassandraEvents {
    /// Wraps a connected writer.
    pub fn new(writer: Arc<EventWriter>) -> Self {
        CassandraEvents { writer }
    }
}

fn sink_error(error: CassandraError) -> SinkError {
    SinkError {
        retriable: error.is_retriable(),
        reason: if error.is_retriable() {
            "WriteFailed"
        } else {
            "WriteRejected"
        },
        message: error_chain(&error),
    }
}

#[async_trait]
impl EventSink for CassandraEvents {
    async fn write(&self, rows: Vec<EventRecord>) -> Vec<Result<(), SinkError>> {
        self.writer
            .write(rows)
            .await
            .into_iter()
            .map(|outcome| outcome.map_err(sink_error))
            .collect()
    }
}

/// Keeps the writer's batch size, byte cap and requests in flight equal to the live knobs, until `stop`.
pub fn follow_knobs(
    knobs: &LiveKnobs,
    writer: WriterKnobs,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut rx = knobs.subscribe();
    tokio::spawn(async move {
        loop {
            let current = *rx.borrow_and_update();
            writer.set_rows_per_batch(current.batch_rows as usize);
            writer.set_max_batch_bytes(current.batch_bytes as usize);
            writer.set_max_in_flight(current.write_concurrency as usize);
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// Runs volume requests through the LINSTOR executor (write credential).
pub struct LinstorVolumes {
    executor: VolumeExecutor,
}

impl LinstorVolumes {
    /// Wraps an executor.
    pub fn new(executor: VolumeExecutor) -> Self {
        LinstorVolumes { executor }
    }
}

fn reply_json(reply: &VolumeReply) -> serde_json::Value {
    serde_json::to_value(reply)
        .unwrap_or_else(|e| serde_json::json!({ "ok": reply.ok, "error": e.to_string() }))
}

#[async_trait]
impl VolumeHandler for LinstorVolumes {
    async fn handle(
        &self,
        request: &VolumeRequest,
    ) -> Result<VolumeOutcome, (SinkError, serde_json::Value)> {
        match self.executor.execute(request).await {
            Ok(reply) => Ok(VolumeOutcome {
                reply: reply_json(&reply),
            }),
            Err(error) => {
                let reply = reply_json(&VolumeReply::failed(request, &error));
                let sink_error = SinkError {
                    retriable: error.is_retriable(),
                    reason: "LinstorRejected",
                    message: error.to_string(),
                };
                Err((sink_error, reply))
            }
        }
    }
}

/// Lag accounting and lock renewal for every in-flight message.
pub struct LagAndLocks {
    lag: Arc<LagTracker>,
    renewal: RenewalConfig,
}

impl LagAndLocks {
    /// Accounts lag into `lag` and renews locks per `renewal`.
    pub fn new(lag: Arc<LagTracker>, renewal: RenewalConfig) -> Self {
        LagAndLocks { lag, renewal }
    }
}

impl MessageObserver for LagAndLocks {
    fn on_receive(
        &self,
        message: &ReceivedMessage,
        receiver: &Arc<dyn MessageReceiver>,
    ) -> Box<dyn Send + Sync> {
        self.lag.received(message);
        Box::new(LockRenewer::new(receiver.clone(), self.renewal.clone()).track(message))
    }

    fn on_settle(&self, message: &ReceivedMessage, outcome: LagSettlement) {
        self.lag.settled(message, outcome);
    }
}

/// Opens a sender for an entity path; implemented by the Service Bus connection.
#[async_trait]
pub trait SenderFactory: Send + Sync {
    /// A sender to `entity` (a queue or topic name).
    async fn open_sender(&self, entity: &str) -> Result<Arc<dyn MessageSender>, ServiceBusError>;
}

/// Sends replies, keeping one sender per reply entity.
pub struct ReplySenders {
    factory: Arc<dyn SenderFactory>,
    senders: Mutex<HashMap<String, Arc<dyn MessageSender>>>,
}

impl ReplySenders {
    /// Opens senders through `factory` on first use.
    pub fn new(factory: Arc<dyn SenderFactory>) -> Self {
        ReplySenders {
            factory,
            senders: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Replier for ReplySenders {
    async fn reply(&self, to: &str, message: OutgoingMessage) -> Result<(), ServiceBusError> {
        let cached = self.senders.lock().ok().and_then(|s| s.get(to).cloned());
        let sender = match cached {
            Some(sender) => sender,
            None => {
                let sender = self.factory.open_sender(to).await?;
                if let Ok(mut senders) = self.senders.lock() {
                    senders.insert(to.to_string(), sender.clone());
                }
                sender
            }
        };
        let result = sender.send(message).await;
        if result.as_ref().is_err_and(|e| e.is_retriable()) {
            // A detached link or a dropped session does not come back by itself: open a fresh sender next time.
            if let Ok(mut senders) = self.senders.lock() {
                senders.remove(to);
            }
        }
        result
    }
}
