//! The pipeline's two downstream boundaries (the Cassandra writer and the LINSTOR executor) as it sees them.
//!
//! Each outcome says whether a retry can help; the pipeline turns that into abandon-with-backoff or dead-letter.
//! The adapters over the real writer and executor live with the components in `crate::pipeline::adapters`.

use async_trait::async_trait;

use crate::message::VolumeRequest;
use crate::servicebus::{OutgoingMessage, ServiceBusError};

/// One event row: the Cassandra writer's row type (the message id is in its primary key, so a redelivery overwrites).
pub use crate::cassandra::EventRow as EventRecord;

/// Why a downstream call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Whether the same call may succeed later.
    pub retriable: bool,
    /// A short, stable reason (used as the dead-letter reason), e.g. `WriteRejected`.
    pub reason: &'static str,
    /// What went wrong, naming the offending message or resource.
    pub message: String,
}

impl SinkError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// Durable storage for events.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Writes the rows (grouping and concurrency are the sink's business) and returns one outcome per row, in order.
    /// `Ok` means the row is durable.
    async fn write(&self, rows: Vec<EventRecord>) -> Vec<Result<(), SinkError>>;
}

/// The result of a volume operation, sent to `reply_to` when the request names one.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeOutcome {
    /// The reply body (JSON), describing the operation and the resource's state.
    pub reply: serde_json::Value,
}

/// Executes volume requests against LINSTOR.
#[async_trait]
pub trait VolumeHandler: Send + Sync {
    /// Runs the request to completion. Errors carry a reply body too, so the requester learns of the failure.
    async fn handle(
        &self,
        request: &VolumeRequest,
    ) -> Result<VolumeOutcome, (SinkError, serde_json::Value)>;
}

/// Sends replies to the entity a request named in `reply_to`.
#[async_trait]
pub trait Replier: Send + Sync {
    /// Sends one reply to `to` (a queue name or `topic` path).
    async fn reply(&self, to: &str, message: OutgoingMessage) -> Result<(), ServiceBusError>;
}
