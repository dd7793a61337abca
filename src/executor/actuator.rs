//! The side effects the executor may cause, as traits cut down to the verbs it uses.
//!
//! There is deliberately no "delete resource" here: a verb without a method cannot be called, whatever a
//! policy file says. The lead implements these over the LINSTOR writer and the pipeline's live knobs.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::planner::{ReplicaState, Settings};

/// Why an actuator call failed (no secrets in `reason`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("actuator failed: {reason}")]
pub struct ActuatorError {
    /// What went wrong, for example LINSTOR's ApiCallRc message verbatim.
    pub reason: String,
    /// Whether the same call may succeed later (timeouts, connection loss).
    pub retriable: bool,
}

impl ActuatorError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        self.retriable
    }
}

/// A resource's replicas as the controller reports them now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The place count in force.
    pub place_count: u32,
    /// Every replica, diskful or not.
    pub replicas: Vec<ReplicaState>,
}

/// Placement verbs on the storage cluster.
///
/// `add_replica` and `remove_replica` are idempotent at the controller (adding an existing replica answers
/// FAIL_EXISTS_RSC, removing a missing one FAIL_NOT_FOUND_RSC); implementations map those to `Ok`.
#[async_trait]
pub trait PlacementActuator: Send + Sync {
    /// Creates a diskful replica of `resource` on `node` in `pool`; it starts syncing and is not UpToDate yet.
    async fn add_replica(
        &self,
        resource: &str,
        node: &str,
        pool: &str,
    ) -> Result<(), ActuatorError>;
    /// Deletes the replica of `resource` on `node`.
    async fn remove_replica(&self, resource: &str, node: &str) -> Result<(), ActuatorError>;
    /// Sets the place count of `resource` (its resource group's select filter).
    async fn set_place_count(&self, resource: &str, place_count: u32) -> Result<(), ActuatorError>;
    /// Reads the replicas of `resource` and their disk states (GET only).
    async fn replicas(&self, resource: &str) -> Result<ReplicaView, ActuatorError>;
}

/// One pipeline knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    /// Rows per batch.
    BatchRows,
    /// Byte cap per batch.
    BatchBytes,
    /// Concurrent batch writes.
    Concurrency,
    /// Service Bus prefetch count.
    Prefetch,
}

/// Write-path performance over an observation window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// p99 batch write latency, milliseconds.
    pub p99_ms: f64,
    /// Rows written per second.
    pub throughput_rows_per_s: f64,
    /// Mean rows per batch written.
    #[serde(default)]
    pub mean_rows: f64,
    /// Share of batch attempts that failed.
    #[serde(default)]
    pub error_share: f64,
    /// Rows actually written per second of the window (what the load asked of the setting, when it kept up).
    /// `None` when not measured.
    #[serde(default)]
    pub rows_written_per_s: Option<f64>,
    /// Share of the window's write-slot time that writes used (slot time over window × concurrency): near 1 the
    /// setting ran at its capacity and `throughput_rows_per_s` is what it can do; well below, it kept up with
    /// slots to spare and showed no limit. `None` when not measured.
    #[serde(default)]
    pub slot_share: Option<f64>,
    /// Writes in flight when a write started, itself included, averaged over the window's writes: what a write
    /// queued behind at the node. Unlike `slot_share` × concurrency it leaves out the idle time between bursts.
    /// `None` when not measured.
    #[serde(default)]
    pub writes_in_flight: Option<f64>,
    /// Rows per round of writes: the rows of a write call (the pipeline's chunk, batch rows × concurrency at
    /// most) that the window's batches were cut from, averaged over the calls. `None` when not measured.
    #[serde(default)]
    pub round_rows: Option<f64>,
}

/// The pipeline's live knobs and the measurements that judge a change to them.
#[async_trait]
pub trait KnobActuator: Send + Sync {
    /// The knob values in force.
    async fn current(&self) -> Result<Settings, ActuatorError>;
    /// Sets one knob; the pipeline picks it up for the next batch.
    async fn set(&self, knob: Knob, value: u64) -> Result<(), ActuatorError>;
    /// Waits `window` and returns p99 and throughput measured over it.
    async fn observe(&self, window: Duration) -> Result<WindowStats, ActuatorError>;
    /// p99 and throughput of the `window` just past, the baseline a change is judged against. Without a record
    /// of what was written before now, this waits a window like [`KnobActuator::observe`].
    async fn observed(&self, window: Duration) -> Result<WindowStats, ActuatorError> {
        self.observe(window).await
    }
}

/// The knob values of `s` in the order the executor sets them.
pub fn knob_values(s: &Settings) -> [(Knob, u64); 4] {
    [
        (Knob::Prefetch, u64::from(s.prefetch)),
        (Knob::BatchBytes, s.batch_bytes),
        (Knob::BatchRows, u64::from(s.batch_rows)),
        (Knob::Concurrency, u64::from(s.concurrency)),
    ]
}
