//! The planner's observed state, built from what the collectors saw: the LINSTOR cluster and the write path.

use std::collections::{BTreeMap, BTreeSet};

use super::actuators::{replica_state, window_stats};
use crate::linstor::placement::{keys, DEFAULT_PLACE_COUNT, DEFAULT_RESOURCE_GROUP};
use crate::metrics::collect::Collected;
use crate::planner::{
    Automation, BatchSample, Limits, NodeState, Observed, PipelineObservation, PoolState,
    ResourceState, ServiceTime,
};

/// Most batches per setting that a throughput and p99 figure is computed from (the most recent ones).
const BATCHES_PER_FIGURE: usize = 500;

/// Fewest batches a figure is computed from: when a setting's measure window (`Limits::measure_window_s`) holds
/// fewer, its most recent batches up to this many are used, however old.
const MIN_BATCHES_PER_FIGURE: usize = 20;

/// A setting's most recent batches, newest first, that its figures are computed from: those that ended within the
/// measure window before its newest one (at most [`BATCHES_PER_FIGURE`]), or its newest
/// [`MIN_BATCHES_PER_FIGURE`] when the window holds fewer.
fn figure_batches(
    batches: &std::collections::VecDeque<crate::cassandra::BatchObservation>,
    window: std::time::Duration,
) -> Vec<crate::cassandra::BatchObservation> {
    let Some(newest) = batches.back().map(|b| b.ended) else {
        return Vec::new();
    };
    let in_window = batches
        .iter()
        .rev()
        .take(BATCHES_PER_FIGURE)
        .take_while(|b| newest.saturating_duration_since(b.ended) <= window)
        .count();
    batches
        .iter()
        .rev()
        .take(in_window.max(MIN_BATCHES_PER_FIGURE))
        .copied()
        .collect()
}

/// What the agent remembers between steps to build the observed state.
#[derive(Debug, Default)]
pub struct ObserveState {
    /// Since when each resource has been under-replicated (Unix seconds), as first seen.
    under_since: BTreeMap<String, i64>,
}

fn flag(value: Option<&String>) -> Option<bool> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("true" | "yes" | "1") => Some(true),
        Some("false" | "no" | "0") => Some(false),
        _ => None,
    }
}

impl ObserveState {
    /// The observed state at `now` from the latest collection.
    pub fn observed(&mut self, c: &Collected, limits: &Limits, now: i64) -> Observed {
        let mut observed = Observed {
            pipeline: pipeline(c, limits),
            ..Observed::default()
        };
        let Some((inputs, snapshot)) = &c.placement else {
            return observed;
        };
        observed.nodes = inputs
            .nodes
            .iter()
            .map(|n| NodeState {
                name: n.name.clone(),
                online: n.is_online(),
                evicted: n.is_evicted(),
                aux: n
                    .props
                    .iter()
                    .filter_map(|(k, v)| k.strip_prefix("Aux/").map(|k| (k.to_string(), v.clone())))
                    .collect(),
            })
            .collect();
        observed.pools = snapshot
            .pools
            .iter()
            .map(|p| PoolState {
                node: p.node.clone(),
                name: p.pool.clone(),
                total_kib: p.total_kib,
                free_kib: p.free_kib,
            })
            .collect();
        let groups: BTreeMap<&str, _> =
            inputs.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let mut under_now = BTreeSet::new();
        for d in &inputs.definitions {
            let group = groups
                .get(
                    d.resource_group_name
                        .as_deref()
                        .unwrap_or(DEFAULT_RESOURCE_GROUP),
                )
                .copied();
            let place_count = group
                .and_then(|g| g.select_filter.place_count)
                .unwrap_or(DEFAULT_PLACE_COUNT);
            let replicas: Vec<_> = inputs
                .resources
                .iter()
                .filter(|r| r.resource.name == d.name && !r.resource.is_deleting())
                .map(replica_state)
                .collect();
            let diskful = replicas.iter().filter(|r| r.diskful).count() as u32;
            let under_replicated_since = if diskful < place_count {
                under_now.insert(d.name.clone());
                Some(*self.under_since.entry(d.name.clone()).or_insert(now))
            } else {
                None
            };
            observed.resources.push(ResourceState {
                name: d.name.clone(),
                place_count,
                size_kib: d
                    .volume_definitions
                    .iter()
                    .flatten()
                    .map(|v| v.size_kib)
                    .sum(),
                replicas_on_different: group
                    .and_then(|g| g.select_filter.replicas_on_different.clone())
                    .unwrap_or_default(),
                replicas,
                balance_resources: flag(d.props.get(keys::BALANCE_RESOURCES_ENABLED)).or_else(
                    || group.and_then(|g| flag(g.props.get(keys::BALANCE_RESOURCES_ENABLED))),
                ),
                under_replicated_since,
            });
        }
        self.under_since.retain(|name, _| under_now.contains(name));
        let a = &snapshot.automation;
        let defaults = Automation::default();
        observed.automation = Automation {
            balance_resources_enabled: a.balance_resources_enabled,
            balance_interval_s: a
                .balance_resources_interval_s
                .map_or(defaults.balance_interval_s, |s| s as i64),
            balance_grace_s: a
                .balance_resources_grace_period_s
                .map_or(defaults.balance_grace_s, |s| s as i64),
            // LINSTOR evicts after 60 minutes offline unless told otherwise; only an explicit 0 turns it off.
            auto_evict_enabled: a.auto_evict_after_minutes.is_none_or(|m| m > 0.0),
            evacuating_nodes: inputs
                .nodes
                .iter()
                .filter(|n| n.flags.iter().any(|f| f == "EVACUATE"))
                .map(|n| n.name.clone())
                .collect(),
        };
        observed
    }
}

/// The write path: lag, backlog, arrival, row size and what each measured (rows, concurrency) setting achieved.
fn pipeline(c: &Collected, limits: &Limits) -> PipelineObservation {
    let window = std::time::Duration::from_secs_f64(limits.measure_window_s.max(0.0));
    // Lag: the longest a message has waited, either still unsettled or settled within the lag window (p99 over
    // `Limits::lag_window_s`, which the collector's lag snapshot covers).
    let lag_s = c
        .lag
        .as_ref()
        .map(|l| {
            l.keys
                .values()
                .map(|k| {
                    let oldest = k.oldest_age_ms as f64 / 1e3;
                    let p99 = k.latency_p99_ms.unwrap_or(0) as f64 / 1e3;
                    oldest.max(p99)
                })
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    let service = ServiceTime::fit(c.batches.values().map(|b| &b.batches));
    let batches = c
        .batches
        .iter()
        .filter(|(_, b)| !b.batches.is_empty())
        .map(|(&(rows, concurrency), b)| {
            let figured = figure_batches(&b.batches, window);
            let queueing = service.and_then(|f| f.queueing(&figured));
            let stats = window_stats(figured, concurrency);
            BatchSample {
                rows,
                concurrency,
                throughput_rows_per_s: stats.throughput_rows_per_s,
                p99_ms: stats.p99_ms,
                mean_rows: stats.mean_rows,
                error_share: stats.error_share,
                slot_share: stats.slot_share,
                writes_in_flight: stats.writes_in_flight,
                round_rows: stats.round_rows,
                queueing,
            }
        })
        .filter(|s| s.throughput_rows_per_s > 0.0)
        .collect();
    PipelineObservation {
        lag_s,
        backlog_messages: c.depth.iter().map(|d| d.counts.active as f64).sum(),
        arrival_per_s: c.arrival_per_s.unwrap_or(0.0),
        avg_row_bytes: c.avg_row_bytes,
        batches,
        service,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cassandra::{BatchObservation, BatchOutcome};

    #[test]
    fn a_setting_is_judged_on_its_last_window_of_batches_but_never_on_too_few() {
        let t0 = Instant::now();
        // A batch that ended `at_ms` after t0 and took `ms`.
        let batch = |at_ms: u64, ms: u64| BatchObservation {
            rows: 10,
            call_rows: 10,
            bytes: 1000,
            latency: Duration::from_millis(ms),
            outcome: BatchOutcome::Ok,
            attempt: 1,
            batch_rows: 32,
            concurrency: 8,
            ended: t0 + Duration::from_millis(at_ms),
        };
        // A slow stretch (300 ms batches) at 0–1 s, then fast ones (20 ms) from 10 s to 13 s.
        let mut batches: VecDeque<_> = (0..100).map(|i| batch(i * 10, 300)).collect();
        batches.extend((0..30).map(|i| batch(10_000 + i * 100, 20)));
        let window = Duration::from_secs(3);
        let figures = window_stats(figure_batches(&batches, window), 8);
        assert_eq!(figures.p99_ms, 20.0, "the slow stretch aged out");
        // With only five batches in the window, the newest twenty are used, slow ones among them.
        let mut few: VecDeque<_> = (0..100).map(|i| batch(i * 10, 300)).collect();
        few.extend((0..5).map(|i| batch(10_000 + i * 100, 20)));
        let figures = window_stats(figure_batches(&few, window), 8);
        assert_eq!(figures.p99_ms, 300.0);
        assert_eq!(figure_batches(&few, window).len(), MIN_BATCHES_PER_FIGURE);
    }
}
