//! The work path: receive with peek-lock, route, batch, write or run the volume operation, then settle.
//!
//! * [`adapters`]: the boundaries bound to the real LINSTOR executor, lag tracker, lock renewer and reply senders.
//! * [`knobs`]: the live settings (batch size, concurrency, prefetch, in-flight bound).
//! * [`router`]: a message becomes an event row, a volume request or a dead-letter decision.
//! * [`sink`]: the downstream boundaries (event sink, volume handler, replier).
//! * [`run`]: the loop itself: back-pressure, batching, retry with backoff, settlement, graceful drain.
//! * [`stats`]: counters with a cheap snapshot.
//! * [`stages`]: each message's end-to-end latency split into queued, batch wait, work and settlement.
//! * [`hold`]: the hook that lets maintenance windows pause or slow receiving per entity.
//!
//! **Invariant:** a message is completed only after its effect is durable; a retriable failure is retried with
//! backoff and then abandoned; a permanent one is dead-lettered with a reason.

pub mod adapters;
pub mod hold;
pub mod knobs;
pub mod router;
pub mod run;
pub mod sink;
pub mod stages;
pub mod stats;

#[cfg(test)]
mod scenarios;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::servicebus::Entity;

pub use knobs::{Knobs, LiveKnobs};
pub use run::Pipeline;
pub use stats::{PipelineStats, StatsSnapshot};

/// The `[pipeline]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Queues (`"orders"`) and topic subscriptions (`{ topic = "t", subscription = "s" }`) to receive from.
    pub entities: Vec<Entity>,
    /// Bodies larger than this (bytes) are dead-lettered as `Oversize`.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Longest wait of one receive call (ms); also bounds how fast receiving stops on shutdown.
    #[serde(default = "default_receive_wait_ms")]
    pub receive_wait_ms: u64,
    /// How long the batcher waits for more events before writing a partial batch (ms).
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Write attempts for a row before its message is abandoned for redelivery.
    #[serde(default = "default_write_attempts")]
    pub write_attempts: u32,
    /// First retry backoff (ms); doubles per attempt up to `backoff_max_ms`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest retry backoff (ms).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// How long shutdown waits for in-flight work to be written and settled (ms).
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// Starting values of the live knobs.
    #[serde(default)]
    pub knobs: Knobs,
}

const fn default_max_message_bytes() -> usize {
    256 * 1024
}
const fn default_receive_wait_ms() -> u64 {
    500
}
const fn default_linger_ms() -> u64 {
    5
}
const fn default_write_attempts() -> u32 {
    5
}
const fn default_backoff_initial_ms() -> u64 {
    100
}
const fn default_backoff_max_ms() -> u64 {
    5_000
}
const fn default_grace_ms() -> u64 {
    30_000
}

impl PipelineConfig {
    /// A configuration with every default for the given entities.
    pub fn for_entities(entities: Vec<Entity>) -> Self {
        PipelineConfig {
            entities,
            max_message_bytes: default_max_message_bytes(),
            receive_wait_ms: default_receive_wait_ms(),
            linger_ms: default_linger_ms(),
            write_attempts: default_write_attempts(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            grace_ms: default_grace_ms(),
            knobs: Knobs::default(),
        }
    }

    /// The backoff before attempt `attempt + 1` (attempt counts from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64 << attempt.saturating_sub(1).min(16);
        Duration::from_millis(
            self.backoff_initial_ms
                .saturating_mul(factor)
                .min(self.backoff_max_ms),
        )
    }
}

/// A pipeline configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineConfigError {
    /// No entity to receive from.
    #[error("pipeline.entities is empty: expected at least one queue or subscription")]
    NoEntities,
    /// A knob is out of range.
    #[error("pipeline.knobs: {0}")]
    Knob(#[from] knobs::KnobError),
    /// A duration or size is zero.
    #[error("pipeline.{field} = 0: expected a positive value")]
    Zero {
        /// The field.
        field: &'static str,
    },
}

impl PipelineConfig {
    /// Checks the configuration without IO.
    pub fn validate(&self) -> Result<(), PipelineConfigError> {
        if self.entities.is_empty() {
            return Err(PipelineConfigError::NoEntities);
        }
        self.knobs.validate()?;
        for (field, value) in [
            ("max_message_bytes", self.max_message_bytes as u64),
            ("receive_wait_ms", self.receive_wait_ms),
            ("write_attempts", u64::from(self.write_attempts)),
            ("grace_ms", self.grace_ms),
        ] {
            if value == 0 {
                return Err(PipelineConfigError::Zero { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = PipelineConfig::for_entities(vec![Entity::Queue("q".into())]);
        let ms: Vec<u128> = (1..=8).map(|a| config.backoff(a).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn parses_queues_and_subscriptions_and_refuses_unknown_fields() {
        let config: PipelineConfig = toml::from_str(
            r#"
            entities = ["orders", { topic = "t", subscription = "s" }]
            [knobs]
            batch_rows = 8
            "#,
        )
        .unwrap();
        assert_eq!(config.entities[1].path(), "t/Subscriptions/s");
        assert_eq!(config.knobs.batch_rows, 8);
        config.validate().unwrap();
        let err = toml::from_str::<PipelineConfig>("entities = []\nbatchsize = 3").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `batchsize`"),
            "{err}"
        );
        let empty = PipelineConfig::for_entities(vec![]);
        assert!(empty
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pipeline.entities is empty"));
    }
}
