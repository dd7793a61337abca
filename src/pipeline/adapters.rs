//! Adapters from the pipeline's boundaries to the real components: the LINSTOR volume executor, the lag tracker
//! with lock renewal, and Service Bus senders for replies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::linstor::ops::{VolumeExecutor, VolumeReply};
use crate::message::VolumeRequest;
use crate::servicebus::lag::{LagTracker, Settlement as LagSettlement};
use crate::servicebus::renewal::{LockRenewer, RenewalConfig};
use crate::servicebus::{
    MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

use super::run::{MessageObserver, Settled};
use super::sink::{Replier, SinkError, VolumeHandler, VolumeOutcome};

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

    fn on_settle(&self, message: &ReceivedMessage, outcome: Settled) {
        let how = match outcome {
            Settled::Completed => LagSettlement::Completed,
            Settled::Abandoned => LagSettlement::Abandoned,
            Settled::DeadLettered => LagSettlement::DeadLettered,
            Settled::Failed => LagSettlement::LockLost,
        };
        self.lag.settled(message, how);
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
        sender.send(message).await
    }
}
