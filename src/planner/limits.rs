//! The planner's objectives, bounds and hysteresis bands: a serde config with documented defaults.

use serde::{Deserialize, Serialize};

/// Objectives and thresholds the planner plans against.
///
/// Every threshold that triggers a change comes with a second, stricter one that the result must meet
/// (hysteresis): a value hovering around one line then cannot make the planner flip back and forth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// p99 batch write latency objective, milliseconds.
    #[serde(default = "default_p99_objective_ms")]
    pub p99_objective_ms: f64,
    /// A setting not in use is adopted only if its p99 is this fraction under the objective (the one in use is
    /// kept while it is under the objective itself).
    #[serde(default = "default_p99_enter_margin")]
    pub p99_enter_margin: f64,
    /// Share of batch attempts that may fail (write timeouts, Overloaded) before a setting counts as
    /// overloading the node, whatever its p99.
    #[serde(default = "default_max_error_share")]
    pub max_error_share: f64,
    /// Lag objective: age of the oldest unprocessed message, seconds.
    #[serde(default = "default_lag_objective_s")]
    pub lag_objective_s: f64,
    /// Largest byte cap per batch the planner sets. The writer's batches hold rows of one partition, which
    /// Cassandra exempts from `batch_size_warn_threshold` (5 KiB) and `batch_size_fail_threshold` (50 KiB) since
    /// 3.6 (CASSANDRA-10876), so the 5 KiB warning is no bound here; this cap (48 KiB, the pipeline's default)
    /// keeps every batch under the fail threshold even if one were ever spread over partitions, and bounds the
    /// size of one request.
    #[serde(default = "default_batch_bytes_max")]
    pub batch_bytes_max: u64,
    /// Largest factor one change may move a knob by, up or down: the policy's `max_knob_step_ratio`, so the steps
    /// the planner takes are ones the gate lets through on their own. Farther targets are reached in several
    /// steps, each measured before the next.
    #[serde(default = "default_max_step_ratio")]
    pub max_step_ratio: f64,
    /// Service Bus lock duration, seconds; prefetched messages must be processed within it.
    #[serde(default = "default_lock_duration_s")]
    pub lock_duration_s: f64,
    /// Fraction of the lock duration the prefetched messages may take to process.
    #[serde(default = "default_prefetch_lock_fraction")]
    pub prefetch_lock_fraction: f64,
    /// Capacity wanted above the required arrival rate, as a factor (1.1 = 10 % headroom).
    #[serde(default = "default_capacity_headroom")]
    pub capacity_headroom: f64,
    /// Throughput gain that justifies switching away from a setting that meets every objective.
    #[serde(default = "default_switch_gain")]
    pub switch_gain: f64,
    /// Smallest throughput gain worth a change at all (below it the difference is measurement noise).
    #[serde(default = "default_min_gain")]
    pub min_gain: f64,
    /// Smallest rows per batch.
    #[serde(default = "default_min_batch_rows")]
    pub min_batch_rows: u32,
    /// Largest rows per batch.
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: u32,
    /// Largest write concurrency.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Largest prefetch count.
    #[serde(default = "default_max_prefetch")]
    pub max_prefetch: u32,
    /// A pool forecast to be this full (used / total) at the horizon has replicas moved off.
    #[serde(default = "default_pool_high_water")]
    pub pool_high_water: f64,
    /// Moves drain a pool to this fill, and no pool receives a replica that takes it above it.
    #[serde(default = "default_pool_drain_to")]
    pub pool_drain_to: f64,
    /// Spread of pool fill (max - min) that triggers rebalancing.
    #[serde(default = "default_skew_trigger")]
    pub skew_trigger: f64,
    /// Spread rebalancing aims for once triggered.
    #[serde(default = "default_skew_target")]
    pub skew_target: f64,
    /// Seconds of a setting's most recent batches its figures (p99, throughput, errors) are computed from, so the
    /// setting in force is judged on how it does now: a burst or the settling after a change ages out of the
    /// figures instead of lingering in them while the load is light and batches are few.
    #[serde(default = "default_measure_window_s")]
    pub measure_window_s: f64,
    /// Seconds of settlements whose p99 end-to-end lag counts in the planner's lag figure (with the age of the
    /// oldest unsettled message), so a peak that has passed stops counting as lag once it is this old.
    #[serde(default = "default_lag_window_s")]
    pub lag_window_s: f64,
    /// Seconds a target is left alone after a change.
    #[serde(default = "default_cooldown_s")]
    pub cooldown_s: i64,
    /// Seconds after a knob change before a further cut may relieve a node that is still overloaded (p99 over the
    /// objective, or writes failing): shedding load is the safe direction, like a Kubernetes HPA that scales up at
    /// once and stabilises only its scale-down. A step limit stops any one cut from going deep, so an overload
    /// that one cut did not cure is otherwise left in place for a whole `cooldown_s`. Anything that raises a
    /// knob still waits the full cooldown, which keeps a cut and a raise from alternating. Never longer than
    /// `cooldown_s`.
    #[serde(default = "default_relief_cooldown_s")]
    pub relief_cooldown_s: i64,
    /// Queueing (`BatchSample::queueing`: how long writes took against a lone write of their size) at which the
    /// node counts as serving fewer writes at once than the setting keeps in flight: concurrency is cut toward
    /// what it does serve, as relief, even with the p99 under its objective. The writes past that number only
    /// wait; with fewer in flight latency falls, batches fill fuller, and the node is spared the queue a burst
    /// would grow behind them.
    #[serde(default = "default_queueing_cut")]
    pub queueing_cut: f64,
    /// Queueing below which more writes in flight may be tried for capacity; at or above it, writes already wait
    /// for each other at the node and more of them would wait too. Below `queueing_cut`, so a cut and a raise
    /// cannot follow each other on the same figure.
    #[serde(default = "default_queueing_raise_below")]
    pub queueing_raise_below: f64,
    /// Share of the lag objective that two rounds of writes may take on a saturated node. There a message that
    /// arrives as a round is cut waits for that round's writes and then for its own, so a round kept through a
    /// cut of writes in flight is held to the rows whose two rounds fit this share; the rest of the objective is
    /// left to receiving, the linger and settlement.
    #[serde(default = "default_round_lag_share")]
    pub round_lag_share: f64,
    /// Most changes in one plan.
    #[serde(default = "default_max_changes_per_step")]
    pub max_changes_per_step: usize,
    /// Fewest observations before the forecast is trusted.
    #[serde(default = "default_min_history_points")]
    pub min_history_points: u32,
    /// Rolling MASE at or above which the forecast is not trusted (1 = no better than seasonal naive).
    #[serde(default = "default_max_mase")]
    pub max_mase: f64,
    /// Plan steps in a row the rolling MASE must stay at or above `max_mase` before autonomous mode drops to
    /// recommend. Hysteresis in time: a burst nobody forecast makes the very next score terrible, and dropping at
    /// once would take autonomy away exactly when the lag the burst causes needs a reaction; a forecast that stays
    /// bad for this many steps has stopped being accurate. Thin data drops at once.
    #[serde(default = "default_mase_grace_steps")]
    pub mase_grace_steps: u32,
}

const fn default_p99_objective_ms() -> f64 {
    50.0
}
const fn default_p99_enter_margin() -> f64 {
    0.10
}
const fn default_max_error_share() -> f64 {
    0.01
}
const fn default_lag_objective_s() -> f64 {
    30.0
}
const fn default_batch_bytes_max() -> u64 {
    48 * 1024
}
const fn default_max_step_ratio() -> f64 {
    4.0
}
const fn default_lock_duration_s() -> f64 {
    60.0
}
const fn default_prefetch_lock_fraction() -> f64 {
    0.5
}
const fn default_capacity_headroom() -> f64 {
    1.1
}
const fn default_switch_gain() -> f64 {
    0.15
}
const fn default_min_gain() -> f64 {
    0.05
}
const fn default_min_batch_rows() -> u32 {
    1
}
const fn default_max_batch_rows() -> u32 {
    500
}
const fn default_max_concurrency() -> u32 {
    64
}
const fn default_max_prefetch() -> u32 {
    // Never plan a prefetch the pipeline would refuse.
    crate::pipeline::knobs::MAX_PREFETCH
}
const fn default_pool_high_water() -> f64 {
    0.85
}
const fn default_pool_drain_to() -> f64 {
    0.80
}
const fn default_skew_trigger() -> f64 {
    0.30
}
const fn default_skew_target() -> f64 {
    0.20
}
const fn default_cooldown_s() -> i64 {
    600
}
const fn default_lag_window_s() -> f64 {
    300.0
}
const fn default_relief_cooldown_s() -> i64 {
    120
}
const fn default_queueing_cut() -> f64 {
    2.5
}
const fn default_round_lag_share() -> f64 {
    0.75
}
const fn default_queueing_raise_below() -> f64 {
    1.5
}
const fn default_max_changes_per_step() -> usize {
    10
}
const fn default_measure_window_s() -> f64 {
    60.0
}
const fn default_min_history_points() -> u32 {
    48
}
const fn default_max_mase() -> f64 {
    1.0
}
const fn default_mase_grace_steps() -> u32 {
    3
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            p99_objective_ms: default_p99_objective_ms(),
            p99_enter_margin: default_p99_enter_margin(),
            max_error_share: default_max_error_share(),
            lag_objective_s: default_lag_objective_s(),
            batch_bytes_max: default_batch_bytes_max(),
            max_step_ratio: default_max_step_ratio(),
            lock_duration_s: default_lock_duration_s(),
            prefetch_lock_fraction: default_prefetch_lock_fraction(),
            capacity_headroom: default_capacity_headroom(),
            switch_gain: default_switch_gain(),
            min_gain: default_min_gain(),
            min_batch_rows: default_min_batch_rows(),
            max_batch_rows: default_max_batch_rows(),
            max_concurrency: default_max_concurrency(),
            max_prefetch: default_max_prefetch(),
            pool_high_water: default_pool_high_water(),
            pool_drain_to: default_pool_drain_to(),
            skew_trigger: default_skew_trigger(),
            skew_target: default_skew_target(),
            cooldown_s: default_cooldown_s(),
            relief_cooldown_s: default_relief_cooldown_s(),
            queueing_cut: default_queueing_cut(),
            queueing_raise_below: default_queueing_raise_below(),
            round_lag_share: default_round_lag_share(),
            max_changes_per_step: default_max_changes_per_step(),
            measure_window_s: default_measure_window_s(),
            lag_window_s: default_lag_window_s(),
            min_history_points: default_min_history_points(),
            max_mase: default_max_mase(),
            mase_grace_steps: default_mase_grace_steps(),
        }
    }
}

/// A limits value that cannot be planned against.
#[derive(Debug, thiserror::Error)]
#[error("planner limits: {field} is {value}, expected {expected}")]
pub struct InvalidLimits {
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What it should be.
    pub expected: &'static str,
}

impl InvalidLimits {
    /// Never: fix the configuration.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

impl Limits {
    /// Checks the bands are ordered the way hysteresis needs; pure, no IO.
    pub fn validate(self) -> Result<Self, InvalidLimits> {
        let bad = |field, value: f64, expected| {
            Err(InvalidLimits {
                field,
                value: value.to_string(),
                expected,
            })
        };
        if self.p99_objective_ms.is_nan() || self.p99_objective_ms <= 0.0 {
            return bad(
                "p99_objective_ms",
                self.p99_objective_ms,
                "a positive number of milliseconds",
            );
        }
        if self.lag_objective_s.is_nan() || self.lag_objective_s <= 0.0 {
            return bad(
                "lag_objective_s",
                self.lag_objective_s,
                "a positive number of seconds",
            );
        }
        if !(self.pool_drain_to > 0.0
            && self.pool_drain_to < self.pool_high_water
            && self.pool_high_water <= 1.0)
        {
            return bad(
                "pool_drain_to",
                self.pool_drain_to,
                "between 0 and pool_high_water, which is at most 1",
            );
        }
        if !(self.skew_target >= 0.0 && self.skew_target < self.skew_trigger) {
            return bad(
                "skew_target",
                self.skew_target,
                "at least 0 and below skew_trigger",
            );
        }
        if !(self.min_gain >= 0.0 && self.min_gain <= self.switch_gain) {
            return bad("min_gain", self.min_gain, "between 0 and switch_gain");
        }
        if self.max_step_ratio.is_nan() || self.max_step_ratio < 1.5 {
            return bad(
                "max_step_ratio",
                self.max_step_ratio,
                "at least 1.5 (a smaller step cannot move a knob of 1 or 2)",
            );
        }
        if self.lag_window_s.is_nan() || self.lag_window_s <= 0.0 {
            return bad(
                "lag_window_s",
                self.lag_window_s,
                "a positive number of seconds",
            );
        }
        if self.relief_cooldown_s < 0 {
            return bad(
                "relief_cooldown_s",
                self.relief_cooldown_s as f64,
                "at least 0 seconds",
            );
        }
        if !(self.queueing_raise_below >= 1.0 && self.queueing_raise_below < self.queueing_cut) {
            return bad(
                "queueing_raise_below",
                self.queueing_raise_below,
                "at least 1 and below queueing_cut",
            );
        }
        if !(self.round_lag_share > 0.0 && self.round_lag_share <= 1.0) {
            return bad(
                "round_lag_share",
                self.round_lag_share,
                "above 0 and at most 1 (a share of the lag objective)",
            );
        }
        if self.min_batch_rows == 0 || self.min_batch_rows > self.max_batch_rows {
            return bad(
                "min_batch_rows",
                f64::from(self.min_batch_rows),
                "at least 1 and at most max_batch_rows",
            );
        }
        Ok(self)
    }
}
