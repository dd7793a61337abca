//! The ingest hold hook: something outside the pipeline (maintenance windows) may pause or slow receiving per entity.
//!
//! Holding back happens before a receive call, never after: messages stay in Service Bus, unlocked, while a path
//! is paused, so nothing is lost and nothing waits on a lock that could expire.

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::servicebus::Entity;

/// Decides how much the pipeline may receive from an entity right now.
#[async_trait]
pub trait IngestHold: Send + Sync {
    /// How many messages may be received from `entity` now, at most `wanted`. While the entity is paused this
    /// waits (returning 0 when `stop` is cancelled); while it is slowed it waits for its rate and returns a share.
    async fn admit(&self, entity: &Entity, wanted: u32, stop: &CancellationToken) -> u32;
}
