//! The planner's inputs (observed state, forecast view, settings, history, limits) and its output (a plan).
//!
//! These are trimtab's own plain data types: the LINSTOR client, the metric store and the forecaster are
//! adapted into them, so the planner depends on none of those modules and does no IO.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The plan format version.
pub const PLAN_VERSION: u32 = 1;

/// What trimtab sees of the cluster and the pipeline at planning time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// LINSTOR satellites.
    pub nodes: Vec<NodeState>,
    /// Storage pools (diskful ones; diskless pools carry no data and are left out).
    pub pools: Vec<PoolState>,
    /// Resource definitions with their replicas.
    pub resources: Vec<ResourceState>,
    /// LINSTOR's own automation, so the planner does not double-act.
    pub automation: Automation,
    /// Measurements of the write path.
    pub pipeline: PipelineObservation,
}

/// One LINSTOR node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Whether the controller sees it ONLINE.
    pub online: bool,
    /// Whether auto-evict has flagged it EVICTED.
    pub evicted: bool,
    /// `Aux/*` properties without the `Aux/` prefix (for example `zone`), used by `replicas_on_different`.
    pub aux: BTreeMap<String, String>,
}

/// One storage pool on one node; sizes in KiB as LINSTOR reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    /// The node it lives on.
    pub node: String,
    /// The pool name.
    pub name: String,
    /// Total capacity, KiB.
    pub total_kib: u64,
    /// Free capacity, KiB.
    pub free_kib: u64,
}

/// One resource definition and where its replicas are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// Resource definition name.
    pub name: String,
    /// The place count of its resource group (diskful replicas wanted).
    pub place_count: u32,
    /// Size of one replica, KiB.
    pub size_kib: u64,
    /// `replicas_on_different` keys from its select filter (with or without the `Aux/` prefix).
    pub replicas_on_different: Vec<String>,
    /// Where it is deployed.
    pub replicas: Vec<ReplicaState>,
    /// `BalanceResourcesEnabled` on the resource or its group; `None` means inherited (on by default).
    pub balance_resources: Option<bool>,
    /// Unix seconds since when it has had fewer diskful replicas than its place count, if it has.
    pub under_replicated_since: Option<i64>,
}

/// One replica of a resource on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Node name.
    pub node: String,
    /// Storage pool name (empty for diskless).
    pub pool: String,
    /// Whether it holds data (not DISKLESS, not a tiebreaker).
    pub diskful: bool,
    /// Whether its disk state is UpToDate.
    pub up_to_date: bool,
    /// Whether it is in use (primary); such a replica is never removed.
    pub in_use: bool,
}

/// LINSTOR's own automation that may already cover a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Automation {
    /// `BalanceResourcesEnabled` on the controller (default true): tops resources up to their place count.
    pub balance_resources_enabled: bool,
    /// `BalanceResourcesInterval`, seconds (default 3600).
    pub balance_interval_s: i64,
    /// `BalanceResourcesGracePeriod`, seconds (default 3600).
    pub balance_grace_s: i64,
    /// Whether auto-evict is active (it re-places replicas of evicted nodes).
    pub auto_evict_enabled: bool,
    /// Nodes with an evacuation in progress.
    pub evacuating_nodes: Vec<String>,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            balance_resources_enabled: true,
            balance_interval_s: 3600,
            balance_grace_s: 3600,
            auto_evict_enabled: true,
            evacuating_nodes: Vec::new(),
        }
    }
}

/// Measurements of the write path over the recent window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineObservation {
    /// Age of the oldest unprocessed message, seconds.
    pub lag_s: f64,
    /// Messages waiting in the queue.
    pub backlog_messages: f64,
    /// Measured arrival rate, messages (rows) per second.
    pub arrival_per_s: f64,
    /// Mean encoded row size, bytes.
    pub avg_row_bytes: f64,
    /// Throughput and p99 latency measured per (batch rows, concurrency).
    pub batches: Vec<BatchSample>,
    /// What a write costs the node when it waits for none of ours, fitted to the writes that met no other in
    /// flight. `None` when too few such writes were seen.
    #[serde(default)]
    pub service: Option<ServiceTime>,
}

/// What one write costs at the node when it waits for none of ours: a fixed cost per request plus a cost per KiB,
/// fitted (least squares) to the latency of writes that met no other write in flight when they started
/// (`ServiceTime::fit`, in `agent::actuators`, which also measures queueing against it). This is TCP Vegas's
/// base round trip for a batch of a given size: a write that took longer waited, at the node, behind writes in
/// flight with it. Other clients' load is part of the base, so the figure shows the queue trimtab's own writes
/// make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceTime {
    /// Milliseconds of a write of no bytes.
    pub base_ms: f64,
    /// Milliseconds per KiB of row data.
    pub ms_per_kib: f64,
}

impl ServiceTime {
    /// Milliseconds a lone write of `bytes` of row data takes.
    pub fn expected_ms(&self, bytes: f64) -> f64 {
        self.base_ms + self.ms_per_kib * bytes / 1024.0
    }
}

/// Share of its write-slot time a setting must use for its throughput figure to count as its capacity
/// ([`BatchSample::slot_share`]): below it the writer had slots to spare, so the load, not the node, set the
/// figure. The planner grows batches only for a setting this busy, and the executor compares throughput only then.
pub const SATURATED_SLOT_SHARE: f64 = 0.8;

/// What one (batch rows, concurrency) setting achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchSample {
    /// Rows per batch.
    pub rows: u32,
    /// Concurrent batch writes.
    pub concurrency: u32,
    /// Rows written per second.
    pub throughput_rows_per_s: f64,
    /// p99 batch write latency, milliseconds.
    pub p99_ms: f64,
    /// Rows the batches actually held, on average: below `rows` when the byte cap or the arrival rate cut them
    /// short. Zero when not measured.
    #[serde(default)]
    pub mean_rows: f64,
    /// Share of batch attempts that failed (write timeouts, Overloaded): a setting that makes the node refuse
    /// work is overloading it, whatever its p99.
    #[serde(default)]
    pub error_share: f64,
    /// Share of the setting's write-slot time that writes were in flight (slot share times concurrency is the
    /// mean number of writes in flight): a setting allowed 32 writes that kept 3 in flight queued 3 at the node,
    /// not 32. `None` when not measured.
    #[serde(default)]
    pub slot_share: Option<f64>,
    /// Writes in flight when one of the setting's writes started, itself included, on average: the queue a write
    /// met at the node. A bursty load keeps many writes in flight during its bursts and none between them, which
    /// `slot_share` averages away. `None` when not measured.
    #[serde(default)]
    pub writes_in_flight: Option<f64>,
    /// How long the setting's writes took against what each would have taken alone at the node (total over total,
    /// see [`ServiceTime`]): about 1 when writes did not wait for each other, `n` when each waited
    /// for `n − 1` others. Writes in flight beyond what the node serves at once wait without adding throughput.
    /// `None` when not measured (too few lone writes to know the service time).
    #[serde(default)]
    pub queueing: Option<f64>,
    /// Rows per round of writes: the pipeline's chunk (at most batch rows × concurrency) that a round of batches
    /// was cut from, one batch per partition, averaged over the rounds. Below the cap the load filled the round;
    /// at it, the round limited how many rows each batch carried. `None` when not measured.
    #[serde(default)]
    pub round_rows: Option<f64>,
}

/// What the forecaster says, reduced to what planning needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForecastView {
    /// How far ahead the forecast looks, seconds.
    pub horizon_s: i64,
    /// Forecast arrival rate over the horizon, if there is one.
    pub arrival: Option<ArrivalForecast>,
    /// Forecast growth of pools over the horizon.
    pub pools: Vec<PoolForecast>,
    /// How much the forecast can be trusted.
    pub trust: ForecastTrust,
}

/// Forecast arrival rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrivalForecast {
    /// Point forecast, messages per second.
    pub mean_per_s: f64,
    /// Upper end of the prediction interval, messages per second.
    pub upper_per_s: f64,
}

/// Forecast growth of one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolForecast {
    /// Node name.
    pub node: String,
    /// Pool name.
    pub pool: String,
    /// Upper end of the interval for growth in used space over the horizon, KiB.
    pub growth_kib_upper: u64,
}

/// The forecaster's track record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ForecastTrust {
    /// How many observations the model was fitted on.
    pub history_points: u32,
    /// Rolling mean absolute scaled error against the seasonal naive forecast (below 1 is better than naive).
    pub rolling_mase: Option<f64>,
}

/// The live pipeline knobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Settings {
    /// Rows per batch.
    pub batch_rows: u32,
    /// Byte cap per batch.
    pub batch_bytes: u64,
    /// Concurrent batch writes.
    pub concurrency: u32,
    /// Service Bus prefetch count.
    pub prefetch: u32,
}

/// What the planner remembers between steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Unix seconds of the last change applied per target key (`pipeline`, `resource:NAME`).
    pub last_changed: BTreeMap<String, i64>,
    /// Target keys with a change still in progress (a move waiting for UpToDate, a proposal awaiting approval).
    pub in_flight: BTreeSet<String>,
}

impl History {
    /// Records that every change of `plan` was made at `now`.
    pub fn record(&mut self, plan: &Plan, now: i64) {
        for change in &plan.changes {
            self.record_change(change, now);
        }
    }

    /// Records that one change was applied at `now`, starting its target's cooldown.
    pub fn record_change(&mut self, change: &Change, now: i64) {
        self.last_changed.insert(change.target.clone(), now);
    }
}

/// A plan: plain, serializable data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// Unix seconds it was made at.
    pub generated_at: i64,
    /// Whether the forecast was trusted and used.
    pub forecast_trusted: bool,
    /// Plan-wide remarks (for example why the forecast was not used).
    pub notes: Vec<String>,
    /// The changes, in priority order.
    pub changes: Vec<Change>,
    /// Cases considered and deliberately left alone, with why.
    pub skipped: Vec<Skipped>,
}

/// One change the planner wants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Stable id: a hash of target and action, so the same change planned twice has the same id.
    pub id: String,
    /// Target key: `pipeline` or `resource:NAME`; cooldowns are per target.
    pub target: String,
    /// What to do.
    pub action: Action,
    /// The numbers that triggered it.
    pub reason: Reason,
    /// What should happen if it is applied.
    pub expected_effect: String,
    /// Whether the change rests on a forecast (an arrival forecast for capacity, a pool growth forecast for a
    /// move), rather than on measurements alone. When the forecasts stop being accurate, autonomous mode stops
    /// applying these and only recommends them; changes made on measurements go on through the gate.
    #[serde(default)]
    pub uses_forecast: bool,
}

/// Why a change was planned: a sentence and the figures in it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Human-readable, with the numbers.
    pub summary: String,
    /// The same numbers, structured.
    pub figures: BTreeMap<String, f64>,
}

/// A case the planner looked at and left alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Target key.
    pub target: String,
    /// Why nothing is done (another automation covers it, cooldown, cap, no candidate).
    pub reason: String,
}

/// What a change does. The `verb` tag is what policy grants name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Set the pipeline knobs from one coherent setting to another.
    SetKnobs {
        /// Current setting.
        from: Settings,
        /// New setting.
        to: Settings,
    },
    /// Add a diskful replica.
    AddReplica {
        /// Resource definition name.
        resource: String,
        /// Node to add it on.
        node: String,
        /// Storage pool on that node.
        pool: String,
    },
    /// Two-phase move: add on the target, wait until it is UpToDate, then remove the source.
    MoveReplica {
        /// Resource definition name.
        resource: String,
        /// Source node.
        from_node: String,
        /// Source pool.
        from_pool: String,
        /// Target node.
        to_node: String,
        /// Target pool.
        to_pool: String,
    },
    /// Remove a replica (never below the place count).
    RemoveReplica {
        /// Resource definition name.
        resource: String,
        /// Node to remove it from.
        node: String,
    },
    /// Change a resource's place count.
    SetPlaceCount {
        /// Resource definition name.
        resource: String,
        /// Current count.
        from: u32,
        /// New count.
        to: u32,
    },
    /// Delete a resource definition. trimtab never plans this; the verb exists so policy can forbid it by name.
    DeleteResource {
        /// Resource definition name.
        resource: String,
    },
}

/// The verbs policy grants can name.
pub const ALL_VERBS: [&str; 6] = [
    "set_knobs",
    "add_replica",
    "move_replica",
    "remove_replica",
    "set_place_count",
    "delete_resource",
];

impl Action {
    /// The verb policy grants name.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::SetKnobs { .. } => "set_knobs",
            Action::AddReplica { .. } => "add_replica",
            Action::MoveReplica { .. } => "move_replica",
            Action::RemoveReplica { .. } => "remove_replica",
            Action::SetPlaceCount { .. } => "set_place_count",
            Action::DeleteResource { .. } => "delete_resource",
        }
    }

    /// Whether it only sheds load from the Cassandra node: fewer batch writes in flight, and no knob raised.
    pub fn sheds_load(&self) -> bool {
        match self {
            Action::SetKnobs { from, to } => {
                to.concurrency < from.concurrency
                    && to.batch_rows <= from.batch_rows
                    && to.batch_bytes <= from.batch_bytes
                    && to.prefetch <= from.prefetch
            }
            _ => false,
        }
    }

    /// The resource it touches, if it is a placement action.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Action::SetKnobs { .. } => None,
            Action::AddReplica { resource, .. }
            | Action::MoveReplica { resource, .. }
            | Action::RemoveReplica { resource, .. }
            | Action::SetPlaceCount { resource, .. }
            | Action::DeleteResource { resource } => Some(resource),
        }
    }
}
