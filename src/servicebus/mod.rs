//! Service Bus as the pipeline sees it: one trait for the verbs trimtab uses, with their delivery semantics.
//!
//! # Semantics
//!
//! * **At-least-once.** A message received in peek-lock mode stays on the entity, locked to this receiver,
//!   until it is settled. If the receiver crashes, or the lock expires before settlement, Service Bus makes the
//!   message available again and raises its delivery count. Every handler must therefore be idempotent.
//! * **A lost lock** (the lock expired, or the link carrying it was detached) means the message may already be
//!   in another receiver's hands: settling it fails with [`ServiceBusError::LockLost`] and the work done for it
//!   must be safe to repeat. Keep locks alive with [`renewal`] while work is in flight.
//! * **Complete** removes the message for good: call it only after the effect is durable. **Abandon** releases
//!   the lock at once for a quick redelivery. **Dead-letter** moves the message to the entity's dead-letter
//!   sub-queue with a reason and a description; it is never delivered again from the main entity.
//! * After `max_delivery_count` deliveries (10 by default) Service Bus dead-letters a message by itself with the
//!   reason `MaxDeliveryCountExceeded`.
//! * Send is not idempotent on its own: a retried send may duplicate a message unless the entity has duplicate
//!   detection on; receivers dedupe on `message_id`.
//!
//! The real client (`azure.rs`) is the only file that names the `azservicebus` crate, so the official Azure SDK
//! can replace it in one file when it ships.

pub mod azure;
pub mod depth;
pub mod lag;
#[cfg(any(test, feature = "sim"))]
pub mod memory;
pub mod renewal;
pub mod sas;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use uuid::Uuid;

/// A queue, or a subscription of a topic.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(untagged)]
pub enum Entity {
    /// A queue, by name.
    Queue(String),
    /// A subscription of a topic. Senders send to the topic; receivers read the subscription.
    Subscription {
        /// Topic name.
        topic: String,
        /// Subscription name.
        subscription: String,
    },
}

impl Entity {
    /// The entity's path as Service Bus addresses it: `queue` or `topic/Subscriptions/sub`.
    pub fn path(&self) -> String {
        match self {
            Entity::Queue(q) => q.clone(),
            Entity::Subscription {
                topic,
                subscription,
            } => format!("{topic}/Subscriptions/{subscription}"),
        }
    }

    /// The entity's dead-letter sub-queue (`queue/$DeadLetterQueue`), addressed like an entity of its own.
    pub fn dead_letter_queue(&self) -> Entity {
        const SUFFIX: &str = "/$DeadLetterQueue";
        match self {
            Entity::Queue(q) => Entity::Queue(format!("{q}{SUFFIX}")),
            Entity::Subscription {
                topic,
                subscription,
            } => Entity::Subscription {
                topic: topic.clone(),
                subscription: format!("{subscription}{SUFFIX}"),
            },
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// A message to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingMessage {
    /// Identifier used for duplicate detection and for the idempotent Cassandra row.
    pub message_id: Option<String>,
    /// The body, sent as one AMQP data section.
    pub body: Bytes,
    /// Partition key (also the unit of lag when no session is set).
    pub partition_key: Option<String>,
    /// Session id, for session-enabled entities.
    pub session_id: Option<String>,
    /// Where a reply should go.
    pub reply_to: Option<String>,
    /// Correlation id, set on replies to the request's message id.
    pub correlation_id: Option<String>,
    /// MIME type of the body.
    pub content_type: Option<String>,
    /// Label, or subject.
    pub subject: Option<String>,
    /// Application properties (string-valued in trimtab).
    pub application_properties: BTreeMap<String, String>,
}

/// A message received in peek-lock mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The entity it came from.
    pub entity: Entity,
    /// Sender-assigned identifier.
    pub message_id: Option<String>,
    /// Lock token: identifies this delivery for settlement and lock renewal.
    pub lock_token: Uuid,
    /// Broker-assigned, unique and increasing per entity.
    pub sequence_number: i64,
    /// When the broker accepted the message (`x-opt-enqueued-time`).
    pub enqueued_at: OffsetDateTime,
    /// Until when this receiver holds the lock.
    pub locked_until: OffsetDateTime,
    /// How many times the message has been delivered, this delivery included (1 on the first).
    pub delivery_count: u32,
    /// Partition key, if the sender set one.
    pub partition_key: Option<String>,
    /// Session id, if the sender set one.
    pub session_id: Option<String>,
    /// Reply address, if the sender set one.
    pub reply_to: Option<String>,
    /// Correlation id, if the sender set one.
    pub correlation_id: Option<String>,
    /// MIME type of the body.
    pub content_type: Option<String>,
    /// Label, or subject.
    pub subject: Option<String>,
    /// Application properties, rendered as strings.
    pub application_properties: BTreeMap<String, String>,
    /// The body.
    pub body: Bytes,
}

impl ReceivedMessage {
    /// The key lag is accounted under: the session id, else the partition key, else `""`.
    pub fn lag_key(&self) -> &str {
        self.session_id
            .as_deref()
            .or(self.partition_key.as_deref())
            .unwrap_or("")
    }
}

/// What went wrong talking to Service Bus. Secrets never appear in these messages.
#[derive(Debug, thiserror::Error)]
pub enum ServiceBusError {
    /// The entity does not exist.
    #[error("entity {entity} not found")]
    EntityNotFound {
        /// The entity named in the call.
        entity: String,
    },
    /// The credentials were refused.
    #[error("unauthorized for {entity}: {detail}")]
    Unauthorized {
        /// The entity named in the call.
        entity: String,
        /// What the broker said.
        detail: String,
    },
    /// A message is larger than the link's maximum message size.
    #[error("message of {size} bytes exceeds the link's maximum message size of {max} bytes")]
    MessageTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The link's `max-message-size`.
        max: u64,
    },
    /// The lock was lost: the message may be redelivered to anyone.
    #[error("lock lost for message with lock token {lock_token}")]
    LockLost {
        /// The lock token of the delivery.
        lock_token: Uuid,
    },
    /// The broker is throttling (`com.microsoft:server-busy`): back off at least 10 s.
    #[error("server busy: {detail}")]
    ServerBusy {
        /// What the broker said.
        detail: String,
    },
    /// The connection or link failed; retrying on a new link may succeed.
    #[error("transport error: {detail}")]
    Transport {
        /// What failed.
        detail: String,
    },
    /// A message cannot be sent as given (for example a partition key that differs from its session id).
    #[error("invalid message: {detail}")]
    InvalidMessage {
        /// Which field is wrong and why.
        detail: String,
    },
    /// The configuration cannot work (for example a malformed connection string).
    #[error("invalid configuration: {detail}")]
    Config {
        /// What is wrong, without secret values.
        detail: String,
    },
}

impl ServiceBusError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ServiceBusError::ServerBusy { .. } | ServiceBusError::Transport { .. }
        )
    }

    /// How long to wait before retrying, when the error says.
    pub fn backoff_hint(&self) -> Option<Duration> {
        match self {
            // Service Bus documents a 10 s back-off for server-busy; the .NET client does the same.
            ServiceBusError::ServerBusy { .. } => Some(Duration::from_secs(10)),
            _ => None,
        }
    }
}

/// Sends to one entity.
#[async_trait]
pub trait MessageSender: Send + Sync {
    /// Sends one message.
    async fn send(&self, message: OutgoingMessage) -> Result<(), ServiceBusError>;

    /// Sends many messages packed into as few batch transfers as the link's maximum message size
    /// allows (never a fixed count). Returns the number of batches sent.
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<usize, ServiceBusError>;
}

/// Receives from one entity in peek-lock mode and settles what it received.
#[async_trait]
pub trait MessageReceiver: Send + Sync {
    /// Waits up to `max_wait` for at least one message and returns up to `max` of them, each locked.
    /// Returns an empty vector when nothing arrived in time.
    async fn receive(
        &self,
        max: u32,
        max_wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, ServiceBusError>;

    /// Removes the message for good. Call only after its effect is durable.
    async fn complete(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError>;

    /// Releases the lock so the message is redelivered, with its delivery count raised.
    async fn abandon(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError>;

    /// Moves the message to the dead-letter sub-queue with a reason and a description.
    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        description: &str,
    ) -> Result<(), ServiceBusError>;

    /// Extends the lock; returns the new locked-until time.
    async fn renew_lock(
        &self,
        message: &ReceivedMessage,
    ) -> Result<OffsetDateTime, ServiceBusError>;

    /// Sets how many messages the receiver may fetch ahead of `receive` calls (a live knob). Prefetched
    /// messages are locked while they wait, so keep it at or below what is handled in one lock duration.
    /// Takes effect at the next `receive`.
    fn set_prefetch(&self, prefetch: u32);

    /// The prefetch count last set.
    fn prefetch(&self) -> u32;
}
