//! What chat-ops reads: the [`StateSource`] trait, its plain serializable snapshot types, and [`StaticState`].
//!
//! Chat-ops depends on no other module of trimtab. Whoever owns the live state (pipeline, metrics, forecaster,
//! planner, audit log) implements [`StateSource`] by copying into these types; tests and demos use
//! [`StaticState`]. Every item carries the time or time range it describes, so an answer can cite it.
//!
//! Strings that come from the pipeline (entity names, partition keys, dead-letter reasons and body
//! excerpts, proposal and audit reasons) are untrusted: chat-ops quotes and truncates them before a model
//! sees them. Nothing here can change state: the trait has read methods only.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// An inclusive time range, in UTC. A point in time is a range whose ends are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSpan {
    /// Start of the range.
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// End of the range.
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
}

impl TimeSpan {
    /// A range covering one instant.
    pub const fn at(t: OffsetDateTime) -> Self {
        Self { from: t, to: t }
    }

    /// Renders the range for people: `2026-11-22T03:00:00Z` or `2026-11-22T02:55:00Z..2026-11-22T03:00:00Z`.
    pub fn render(&self) -> String {
        let fmt = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.unix_timestamp().to_string())
        };
        if self.from == self.to {
            fmt(self.from)
        } else {
            format!("{}..{}", fmt(self.from), fmt(self.to))
        }
    }
}

/// Anything that can say which time it describes.
pub trait Timed {
    /// The time or time range this item describes.
    fn span(&self) -> TimeSpan;
}

/// One dead-lettered message, as a sample of why messages fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSample {
    /// The Service Bus message id.
    pub message_id: String,
    /// The reason trimtab gave when it dead-lettered the message. Untrusted text.
    pub reason: String,
    /// The start of the message body. Untrusted text.
    pub body_excerpt: String,
    /// When the message was dead-lettered.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Depth of one Service Bus entity (queue or subscription) at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueHealth {
    /// Entity path, such as `orders` or `events/subscriptions/trimtab`.
    pub entity: String,
    /// Messages waiting to be received.
    pub active: u64,
    /// Messages in the dead-letter sub-queue.
    pub dead_letter: u64,
    /// Messages scheduled for later delivery.
    pub scheduled: u64,
    /// When the depth was read.
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
    /// A few recent dead letters, newest first.
    #[serde(default)]
    pub recent_dead_letters: Vec<DeadLetterSample>,
}

impl Timed for QueueHealth {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.sampled_at)
    }
}

/// Lag of one partition key (a message's `stream`) over one measurement window.
///
/// A source returns one item per key and window, oldest window first, so a trend can be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionLag {
    /// Entity the messages came from.
    pub entity: String,
    /// Partition key (the event's `stream`). Untrusted text.
    pub key: String,
    /// Messages received but not yet settled at the end of the window.
    pub in_flight: u64,
    /// Age in seconds of the oldest unsettled message at the end of the window.
    pub oldest_age_s: f64,
    /// Median end-to-end latency (enqueue to settle) in the window, in milliseconds.
    pub e2e_p50_ms: f64,
    /// 99th percentile end-to-end latency in the window, in milliseconds.
    pub e2e_p99_ms: f64,
    /// Messages settled in the window.
    pub settled: u64,
    /// The measurement window.
    pub window: TimeSpan,
}

impl Timed for PartitionLag {
    fn span(&self) -> TimeSpan {
        self.window
    }
}

/// One forecast point with its prediction interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastPoint {
    /// The time the value is forecast for.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Point forecast.
    pub value: f64,
    /// Lower end of the prediction interval.
    pub lower: f64,
    /// Upper end of the prediction interval.
    pub upper: f64,
}

/// The latest forecast of one series and how accurate that series' forecasts have been.
///
/// Series names are `<metric>:<subject>`; pool capacity uses `pool_free_kib:<pool>` (free KiB summed over
/// nodes), which the "will it fill up" answer reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastSummary {
    /// Series name, such as `queue_active:orders` or `pool_free_kib:pool-ssd`.
    pub series: String,
    /// Unit of the values, such as `messages` or `KiB`.
    pub unit: String,
    /// Nominal coverage of the intervals, such as 0.8.
    pub interval_coverage: f64,
    /// The forecast points, in time order.
    pub points: Vec<ForecastPoint>,
    /// Mean absolute scaled error of recent forecasts against what happened (below 1 beats the naive forecast).
    pub rolling_mase: Option<f64>,
    /// Whether the forecaster trusts this series enough for the planner to act on it.
    pub trusted: bool,
    /// When the forecast was made.
    #[serde(with = "time::serde::rfc3339")]
    pub made_at: OffsetDateTime,
}

impl ForecastSummary {
    /// The horizon the points cover.
    pub fn horizon(&self) -> Option<TimeSpan> {
        Some(TimeSpan {
            from: self.points.first()?.at,
            to: self.points.last()?.at,
        })
    }
}

impl Timed for ForecastSummary {
    fn span(&self) -> TimeSpan {
        let to = self.points.last().map_or(self.made_at, |p| p.at);
        TimeSpan {
            from: self.made_at,
            to,
        }
    }
}

/// Capacity of one storage pool on one node at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSample {
    /// Storage pool name.
    pub pool: String,
    /// Node the pool lives on.
    pub node: String,
    /// Free capacity in KiB.
    pub free_kib: u64,
    /// Total capacity in KiB.
    pub total_kib: u64,
    /// When it was read.
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
}

impl Timed for PoolSample {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.sampled_at)
    }
}

/// Diskful replicas placed on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeReplicas {
    /// Node name.
    pub node: String,
    /// Number of replicas on it.
    pub replicas: u32,
}

/// Where volumes live and how full the pools are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSummary {
    /// When the placement (replicas, degraded, under-replicated) was read.
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
    /// Pool capacity samples: the latest per pool and node, plus older ones when the source keeps history.
    pub pools: Vec<PoolSample>,
    /// Replicas per node.
    pub replicas_per_node: Vec<NodeReplicas>,
    /// Resources with fewer diskful replicas than requested.
    pub under_replicated: Vec<String>,
    /// Resources with a replica that is not up to date.
    pub degraded: Vec<String>,
}

impl Timed for PlacementSummary {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.sampled_at)
    }
}

/// A planned change waiting for a person to approve or reject it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingProposal {
    /// Proposal id.
    pub id: String,
    /// What would change, such as `knob:batch_size` or `placement:pvc-7`.
    pub target: String,
    /// Value now, rendered.
    pub current: String,
    /// Value proposed, rendered.
    pub proposed: String,
    /// Why the planner proposes it. Untrusted text when it quotes pipeline data.
    pub reason: String,
    /// What the policy gate said, such as `needs_approval: step above 2x`.
    pub policy: String,
    /// When it was proposed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it lapses if nobody decides.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

impl Timed for PendingProposal {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.created_at)
    }
}

/// One record of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Sequence number in the log.
    pub seq: u64,
    /// When the record was written.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who acted: `planner`, `executor`, or a person.
    pub actor: String,
    /// What was done, such as `set_knob`, `approve`, `rollback`.
    pub action: String,
    /// What it was done to, such as `knob:batch_size`.
    pub target: String,
    /// Value before, rendered.
    pub before: Option<String>,
    /// Value after, rendered.
    pub after: Option<String>,
    /// Why.
    pub reason: String,
    /// How it ended: `applied`, `verified`, `rolled_back`, `denied`.
    pub outcome: String,
}

impl Timed for AuditEntry {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.at)
    }
}

/// One live setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Dotted name, such as `pipeline.batch_size` or `servicebus.connection_string`.
    pub name: String,
    /// Current value.
    pub value: serde_json::Value,
    /// When it last changed, when known.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub changed_at: Option<OffsetDateTime>,
}

/// The current knobs and the agent's mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsSnapshot {
    /// The agent's mode, such as `observe`, `propose` or `auto`.
    pub mode: String,
    /// The settings, knobs first.
    pub settings: Vec<Setting>,
    /// When the snapshot was read.
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
}

impl Timed for SettingsSnapshot {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.as_of)
    }
}

/// One schema drift: a field of a message kind that producers started sending differently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftItem {
    /// The message kind (`event`, `volume.create`).
    pub kind: String,
    /// The field path, or `(body)` for a size jump.
    pub field: String,
    /// `field_added`, `field_missing`, `type_changed` or `size_jump`.
    pub change: String,
    /// The drift in one sentence, with an example. Untrusted text (it quotes message values).
    pub summary: String,
    /// Messages that showed it.
    pub count: u64,
    /// First seen.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last seen.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Message ids of example bodies.
    pub examples: Vec<String>,
}

impl Timed for DriftItem {
    fn span(&self) -> TimeSpan {
        TimeSpan {
            from: self.first_seen,
            to: self.last_seen,
        }
    }
}

/// One stage's share of the time on a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageShare {
    /// `queued`, `batch_wait`, `work` or `settle`.
    pub stage: String,
    /// Mean over recent messages, ms.
    pub mean_ms: f64,
    /// Share of the end-to-end latency, 0..=1.
    pub share: f64,
}

/// Where the time goes on one path (`event`, `volume`, `rejected`), over recent messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageItem {
    /// The path.
    pub path: String,
    /// When the figures were read.
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
    /// Messages settled since start.
    pub settled: u64,
    /// Mean end-to-end latency of recent messages, ms; the stages' means add up to it.
    pub end_to_end_mean_ms: f64,
    /// The stages, in the order a message passes them.
    pub stages: Vec<StageShare>,
    /// The stage with the largest share.
    pub dominant: Option<String>,
}

impl Timed for StageItem {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.sampled_at)
    }
}

/// A maintenance window open now, with what it holds back and what was decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowItem {
    /// The window's id.
    pub id: String,
    /// What is under maintenance, e.g. `linstor node n2`.
    pub target: String,
    /// When it closes (RFC 3339).
    pub until: String,
    /// Entities whose ingest it holds back now.
    pub holding: Vec<String>,
    /// When the figures were read.
    #[serde(with = "time::serde::rfc3339")]
    pub sampled_at: OffsetDateTime,
}

impl Timed for WindowItem {
    fn span(&self) -> TimeSpan {
        TimeSpan::at(self.sampled_at)
    }
}

/// What the pipeline has noticed about its messages and its time: drift, stage breakdown, maintenance windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Insights {
    /// Whether the source carries these figures at all (a snapshot file or an older source does not).
    pub available: bool,
    /// Schema drift seen, oldest first.
    pub drift: Vec<DriftItem>,
    /// The stage breakdown per path.
    pub stages: Vec<StageItem>,
    /// Maintenance windows open now.
    pub windows: Vec<WindowItem>,
}

/// A failure to read state.
#[derive(Debug, thiserror::Error)]
#[error("state source {what} unavailable: {message}")]
pub struct StateError {
    /// Which read failed, such as `queues`.
    pub what: &'static str,
    /// Why, without secrets.
    pub message: String,
}

/// Read-only access to trimtab's state, as snapshots.
///
/// Implementations copy from the live components; each call may hit storage, so chat-ops calls only what
/// a question needs. No method changes anything, and chat-ops holds no other handle to trimtab.
#[async_trait]
pub trait StateSource: Send + Sync {
    /// The time answers are relative to ("the last hour"); the wall clock for a live source.
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
    /// Depth of every entity.
    async fn queues(&self) -> Result<Vec<QueueHealth>, StateError>;
    /// Lag per partition key and window, oldest window first.
    async fn lag(&self) -> Result<Vec<PartitionLag>, StateError>;
    /// The latest forecast of every series with its accuracy.
    async fn forecasts(&self) -> Result<Vec<ForecastSummary>, StateError>;
    /// Placement and pool capacity.
    async fn placement(&self) -> Result<PlacementSummary, StateError>;
    /// Proposals waiting for approval.
    async fn pending_proposals(&self) -> Result<Vec<PendingProposal>, StateError>;
    /// Audit records written at or after `since`, oldest first.
    async fn recent_audit(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>, StateError>;
    /// The current settings and mode.
    async fn settings(&self) -> Result<SettingsSnapshot, StateError>;
    /// Schema drift, the stage breakdown and open maintenance windows; `available: false` when not carried.
    async fn insights(&self) -> Result<Insights, StateError> {
        Ok(Insights::default())
    }
}

/// A fixed snapshot of everything, for tests, demos and adapters that copy state in one go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticState {
    /// The time the snapshot was taken; answers are relative to it.
    #[serde(with = "time::serde::rfc3339")]
    pub as_of: OffsetDateTime,
    /// See [`StateSource::queues`].
    pub queues: Vec<QueueHealth>,
    /// See [`StateSource::lag`].
    pub lag: Vec<PartitionLag>,
    /// See [`StateSource::forecasts`].
    pub forecasts: Vec<ForecastSummary>,
    /// See [`StateSource::placement`].
    pub placement: PlacementSummary,
    /// See [`StateSource::pending_proposals`].
    pub pending_proposals: Vec<PendingProposal>,
    /// Every audit record; [`StateSource::recent_audit`] filters by time.
    pub audit: Vec<AuditEntry>,
    /// See [`StateSource::settings`].
    pub settings: SettingsSnapshot,
}

impl StaticState {
    /// Reads a snapshot from JSON, naming the file in the error.
    pub fn from_json_file(path: &std::path::Path) -> Result<Self, StateError> {
        let text = std::fs::read_to_string(path).map_err(|e| StateError {
            what: "snapshot file",
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        serde_json::from_str(&text).map_err(|e| StateError {
            what: "snapshot file",
            message: format!(
                "{} is not a trimtab state snapshot (expected the JSON form of StaticState): {e}",
                path.display()
            ),
        })
    }
}

#[async_trait]
impl StateSource for StaticState {
    fn now(&self) -> OffsetDateTime {
        self.as_of
    }
    async fn queues(&self) -> Result<Vec<QueueHealth>, StateError> {
        Ok(self.queues.clone())
    }
    async fn lag(&self) -> Result<Vec<PartitionLag>, StateError> {
        Ok(self.lag.clone())
    }
    async fn forecasts(&self) -> Result<Vec<ForecastSummary>, StateError> {
        Ok(self.forecasts.clone())
    }
    async fn placement(&self) -> Result<PlacementSummary, StateError> {
        Ok(self.placement.clone())
    }
    async fn pending_proposals(&self) -> Result<Vec<PendingProposal>, StateError> {
        Ok(self.pending_proposals.clone())
    }
    async fn recent_audit(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>, StateError> {
        let mut records: Vec<_> = self
            .audit
            .iter()
            .filter(|r| r.at >= since)
            .cloned()
            .collect();
        records.sort_by_key(|r| (r.at, r.seq));
        Ok(records)
    }
    async fn settings(&self) -> Result<SettingsSnapshot, StateError> {
        Ok(self.settings.clone())
    }
}
