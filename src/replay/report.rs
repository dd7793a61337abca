//! What a replay did, counted from the stores afterwards, and how it is printed for a person: the demo's summary
//! and the per-strategy comparison rows (lag objective minutes, lag percentiles, errors, changes, loss).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::sim::cql::capacity::TableWork;

use super::generate::{Expect, PlannedMessage};
use super::run::RunOutcome;

/// The end-of-run summary of a replay through the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Messages sent to Service Bus.
    pub sent: u64,
    /// Of those, events (expected to become rows).
    pub sent_events: u64,
    /// Of those, volume requests.
    pub sent_volume_requests: u64,
    /// Of those, deliberately malformed bodies.
    pub sent_malformed: u64,
    /// Rows found in Cassandra afterwards (read back, not counted in flight).
    pub rows_in_cassandra: u64,
    /// Messages found in the dead-letter queue afterwards.
    pub dead_lettered: u64,
    /// Dead-letter reasons and how many messages carry each.
    pub dead_letter_reasons: Vec<(String, u64)>,
    /// Volume operations that succeeded.
    pub volume_ops_done: u64,
    /// Replies found on the reply queue.
    pub replies: u64,
    /// Resources the LINSTOR controller holds afterwards.
    pub linstor_resources: u64,
    /// Messages still active on the queue when the replay ended.
    pub left_on_queue: u64,
    /// Wall time from the first send to the last settlement.
    pub elapsed: Duration,
    /// Median end-to-end latency (settled minus enqueued), milliseconds.
    pub e2e_p50_ms: f64,
    /// 99th percentile end-to-end latency, milliseconds.
    pub e2e_p99_ms: f64,
    /// Where the data is now, one line per store.
    pub locations: Vec<(String, String)>,
}

impl ReplaySummary {
    /// Rows per second over the run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows_in_cassandra as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "summary")?;
        writeln!(
            f,
            "  sent            {:>8}  ({} events, {} volume requests, {} malformed)",
            self.sent, self.sent_events, self.sent_volume_requests, self.sent_malformed
        )?;
        writeln!(
            f,
            "  rows written    {:>8}  (read back from Cassandra)",
            self.rows_in_cassandra
        )?;
        writeln!(
            f,
            "  volume ops done {:>8}  ({} replies received)",
            self.volume_ops_done, self.replies
        )?;
        let reasons: Vec<String> = self
            .dead_letter_reasons
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        writeln!(
            f,
            "  dead-lettered   {:>8}  ({})",
            self.dead_lettered,
            reasons.join(", ")
        )?;
        writeln!(f, "  left on queue   {:>8}", self.left_on_queue)?;
        writeln!(
            f,
            "  throughput      {:>8.0} rows/s over {:.1} s",
            self.throughput(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  end-to-end      p50 {:.1} ms, p99 {:.1} ms (settled minus enqueued)",
            self.e2e_p50_ms, self.e2e_p99_ms
        )?;
        writeln!(f, "where the data is now")?;
        for (store, location) in &self.locations {
            writeln!(f, "  {store:<14}  {location}")?;
        }
        Ok(())
    }
}

/// Equal parts of the trace the report splits minutes over into.
pub const PARTS: usize = 6;

/// One strategy's row of the comparison, computed from what the run left in the stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StrategyReport {
    /// The strategy's label.
    pub label: String,
    /// Whether the strategy held its knobs fixed (`static`).
    pub fixed: bool,
    /// Trace minutes during which the oldest unsettled message was older than the lag objective (wall time over
    /// the objective × speedup / 60).
    pub minutes_over: f64,
    /// Trace minutes in the replay.
    pub minutes: f64,
    /// Minutes over the objective in every run of this strategy (one entry unless `--repeat` is given).
    pub minutes_over_runs: Vec<f64>,
    /// Minutes over the objective in each of [`PARTS`] equal parts of the trace, in order: where a strategy lost
    /// its minutes (a tuner that starts cold loses them early).
    pub minutes_over_by_part: Vec<f64>,
    /// Median end-to-end lag (settled minus enqueued, every settled message), milliseconds of wall time.
    pub lag_p50_ms: f64,
    /// 99th percentile end-to-end lag, milliseconds of wall time.
    pub lag_p99_ms: f64,
    /// The oldest unsettled message's largest age seen, milliseconds of wall time.
    pub lag_max_ms: f64,
    /// Rows written per second over the run.
    pub rows_per_s: f64,
    /// Most rows written in one wall second.
    pub peak_rows_per_s: f64,
    /// Write requests the CQL node answered with WriteTimeout.
    pub write_timeouts: u64,
    /// Write requests the CQL node refused as Overloaded.
    pub overloaded: u64,
    /// Changes applied: knob changes seen on the live knobs plus placement changes the agent applied.
    pub changes: u64,
    /// Gate decisions by verdict (`allow`, `needs_approval`, `deny`).
    pub decisions: BTreeMap<String, u64>,
    /// What the agent proposed, one sentence each (recommend lists what it would have done).
    pub proposals: Vec<String>,
    /// Why the agent ran in recommend mode, if it did.
    pub mode_notes: Vec<String>,
    /// What became of each knob change the agent started.
    pub knob_outcomes: Vec<String>,
    /// Messages with no effect in any store (no row, no dead letter, no volume).
    pub lost: u64,
    /// Effects found more than once (a row twice, a dead letter twice, a row and a dead letter).
    pub duplicated: u64,
    /// Events that ended in the dead-letter queue instead of Cassandra.
    pub events_dead_lettered: u64,
    /// Messages left on the queue.
    pub left_on_queue: u64,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Mean milliseconds an event spent in each stage (queued, batch_wait, work, settle).
    pub event_stages_ms: Vec<(&'static str, f64)>,
    /// CQL write requests that were not the pipeline's batches (the agent's own tables).
    pub other_node_writes: u64,
    /// The pipeline's event writes the CQL node applied, and the worker time they took.
    pub events_node_work: TableWork,
    /// The other writes per table (`keyspace.table`), with the worker time they took.
    pub other_node_work: Vec<(String, TableWork)>,
}

impl StrategyReport {
    /// Worker seconds of the CQL node the other writes took, all tables together.
    pub fn other_node_work_s(&self) -> f64 {
        // Folded from 0.0: an empty `sum` of floats is -0.0, which the report would print as "-0.0".
        self.other_node_work
            .iter()
            .fold(0.0, |total, (_, w)| total + w.busy.as_secs_f64())
    }
}

/// Computes a strategy's row from a run. `lag_objective` and the trace minute (60 s / `speedup`) are wall time.
pub fn compare_row(
    outcome: &RunOutcome,
    planned: &[PlannedMessage],
    lag_objective: Duration,
    speedup: f64,
) -> StrategyReport {
    let mut by_id: HashMap<&str, u64> = HashMap::new();
    for r in &outcome.rows {
        *by_id.entry(r.message_id.as_str()).or_default() += 1;
    }
    let mut dead: HashMap<&[u8], u64> = HashMap::new();
    for (body, _) in &outcome.dead_letters {
        *dead.entry(body.as_slice()).or_default() += 1;
    }
    let mut lost = 0;
    let mut duplicated: u64 =
        by_id.values().map(|n| n - 1).sum::<u64>() + dead.values().map(|n| n - 1).sum::<u64>();
    let mut events_dead_lettered = 0;
    let mut planned_rows = HashSet::new();
    for p in planned {
        let id = p.message.message_id.as_deref().unwrap_or_default();
        let body = p.message.body.as_ref();
        let in_dlq = dead.contains_key(body);
        match p.expect {
            Expect::Row => {
                planned_rows.insert(id);
                match (by_id.contains_key(id), in_dlq) {
                    (true, true) => duplicated += 1,
                    (true, false) => {}
                    (false, true) => events_dead_lettered += 1,
                    (false, false) => lost += 1,
                }
            }
            Expect::Malformed | Expect::VolumeRefused => lost += u64::from(!in_dlq),
            Expect::VolumeOk => {
                let resource = crate::message::parse(body, 1 << 20)
                    .ok()
                    .and_then(|m| match m {
                        crate::message::Envelope::Volume(v) => Some(v.resource().to_string()),
                        _ => None,
                    });
                let done = resource.is_some_and(|r| outcome.linstor_resources.contains(&r));
                lost += u64::from(!done && !in_dlq);
            }
        }
    }
    // A row no planned event explains is an effect of nothing the trace sent.
    duplicated += by_id
        .keys()
        .filter(|id| !planned_rows.contains(*id))
        .count() as u64;

    let objective_ms = lag_objective.as_millis() as f64;
    // Each timeline point stands for the wall time since the one before it; a trace minute is 60 s / speedup.
    let trace_minutes_per_s = speedup / 60.0;
    let minutes = planned
        .last()
        .map_or(0.0, |p| p.at.as_secs_f64() * trace_minutes_per_s);
    let mut minutes_over = 0.0;
    let mut minutes_over_by_part = vec![0.0; PARTS];
    let mut previous = 0.0;
    for p in &outcome.timeline {
        if p.oldest_lag_ms as f64 > objective_ms {
            let over = (p.at_s - previous) * trace_minutes_per_s;
            minutes_over += over;
            // Points after the last send (the drain) count in the last part.
            let part = if minutes > 0.0 {
                ((p.at_s * trace_minutes_per_s / minutes * PARTS as f64) as usize).min(PARTS - 1)
            } else {
                0
            };
            minutes_over_by_part[part] += over;
        }
        previous = p.at_s;
    }
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for r in &outcome.rows {
        *per_second.entry(r.written_ms / 1000).or_default() += 1;
    }
    let elapsed_s = outcome.elapsed.as_secs_f64();
    StrategyReport {
        label: outcome.label.clone(),
        fixed: outcome.fixed,
        minutes_over,
        minutes,
        minutes_over_runs: vec![minutes_over],
        minutes_over_by_part,
        lag_p50_ms: outcome.settle_p50_ms,
        lag_p99_ms: outcome.settle_p99_ms,
        lag_max_ms: outcome
            .timeline
            .iter()
            .map(|p| p.oldest_lag_ms as f64)
            .fold(0.0, f64::max),
        rows_per_s: if elapsed_s > 0.0 {
            outcome.rows.len() as f64 / elapsed_s
        } else {
            0.0
        },
        peak_rows_per_s: per_second.values().copied().max().unwrap_or(0) as f64,
        write_timeouts: outcome.capacity.write_timeouts,
        overloaded: outcome.capacity.overloaded,
        changes: outcome.knob_changes + outcome.placement_changes,
        decisions: outcome.decisions.clone(),
        proposals: outcome.proposals.clone(),
        mode_notes: outcome.mode_notes.clone(),
        knob_outcomes: outcome.knob_outcomes.clone(),
        lost,
        duplicated,
        events_dead_lettered,
        left_on_queue: outcome.left_on_queue,
        elapsed_s,
        event_stages_ms: outcome.event_stages_ms.clone(),
        other_node_writes: outcome.other_node_writes,
        events_node_work: outcome.events_node_work,
        other_node_work: outcome.other_node_work.clone(),
    }
}

/// The row a strategy's repeated runs report: the median run by minutes over the objective (then p99 lag), with
/// every run's minutes over, and the messages lost or duplicated in any run, summed, so a loss in a run that was not
/// the median still shows. Returns the index of the median run among `runs`, or `None` when there are none.
pub fn median_of_runs(runs: &[StrategyReport]) -> Option<(usize, StrategyReport)> {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        runs[a]
            .minutes_over
            .total_cmp(&runs[b].minutes_over)
            .then(runs[a].lag_p99_ms.total_cmp(&runs[b].lag_p99_ms))
    });
    let median = *order.get(order.len() / 2)?;
    let mut row = runs[median].clone();
    row.minutes_over_runs = runs.iter().map(|r| r.minutes_over).collect();
    row.lost = runs.iter().map(|r| r.lost).sum();
    row.duplicated = runs.iter().map(|r| r.duplicated).sum();
    Some((median, row))
}

/// The lag over the replay: the age of the oldest unsettled message (milliseconds, wall) at each timeline point,
/// against the trace minute of that point.
pub fn lag_points(outcome: &RunOutcome, speedup: f64) -> Vec<(f64, f64)> {
    outcome
        .timeline
        .iter()
        .map(|p| (p.at_s * speedup / 60.0, p.oldest_lag_ms as f64))
        .collect()
}

/// When a static setting kept the lag under the objective for the whole replay, says so: no strategy can then
/// have fewer minutes over, and the comparison rests on the other columns. `None` when every static row went
/// over (or none ran).
pub fn unstressed(rows: &[StrategyReport]) -> Option<String> {
    // Shown as 0.0 in the tables.
    let calm = rows.iter().find(|r| r.fixed && r.minutes_over < 0.05)?;
    Some(format!(
        "{} never had the lag over the objective: at this load no strategy can have fewer minutes over, so compare \
         the p99 lag, errors and changes, or raise the load (`--nab-mean` for a NAB series, `--speedup`).",
        calm.label
    ))
}

/// The comparison as a fixed-width table, one strategy per line.
pub fn table(rows: &[StrategyReport]) -> String {
    let mut out = format!(
        "{:<30} {:>9} {:>9} {:>9} {:>8} {:>8} {:>7} {:>7} {:>16} {:>5} {:>5}\n",
        "strategy",
        "min over",
        "p50 lag",
        "p99 lag",
        "rows/s",
        "timeouts",
        "overld",
        "changes",
        "allow/appr/deny",
        "lost",
        "dup"
    );
    for r in rows {
        let d = |k: &str| r.decisions.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "{:<30} {:>4.1}/{:<4.0} {:>7.0}ms {:>7.0}ms {:>8.0} {:>8} {:>7} {:>7} {:>16} {:>5} {:>5}\n",
            r.label,
            r.minutes_over,
            r.minutes,
            r.lag_p50_ms,
            r.lag_p99_ms,
            r.rows_per_s,
            r.write_timeouts,
            r.overloaded,
            r.changes,
            format!("{}/{}/{}", d("allow"), d("needs_approval"), d("deny")),
            r.lost,
            r.duplicated
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, minutes_over: f64) -> StrategyReport {
        StrategyReport {
            label: label.into(),
            fixed: label.starts_with("static"),
            minutes_over,
            ..StrategyReport::default()
        }
    }

    #[test]
    fn repeated_runs_report_the_median_and_a_loss_in_any_run() {
        let mut runs = vec![
            row("trimtab", 48.0),
            row("trimtab", 33.6),
            row("trimtab", 38.4),
        ];
        runs[0].duplicated = 2;
        runs[1].lost = 1;
        let (median, reported) = median_of_runs(&runs).expect("three runs");
        assert_eq!(median, 2, "38.4 is the median of 33.6, 38.4 and 48.0");
        assert_eq!(reported.minutes_over, 38.4);
        assert_eq!(reported.minutes_over_runs, vec![48.0, 33.6, 38.4]);
        assert_eq!(
            (reported.lost, reported.duplicated),
            (1, 2),
            "the median run lost nothing, but the others did"
        );
        assert_eq!(median_of_runs(&[]), None);
    }

    #[test]
    fn a_replay_no_static_setting_went_over_in_says_minutes_over_cannot_separate_the_strategies() {
        let calm = [
            row("static 32x32 (defaults)", 374.3),
            row("static 32x4 (best of sweep)", 0.0),
            row("reactive", 1152.1),
            row("trimtab", 0.0),
        ];
        let note = unstressed(&calm).expect("the best static setting never went over");
        assert!(
            note.starts_with("static 32x4 (best of sweep) never had the lag over"),
            "{note}"
        );
        assert!(note.contains("--nab-mean"), "{note}");

        // Every static setting went over at least once: minutes over separate the strategies, nothing to say.
        let stressed = [
            row("static 32x32 (defaults)", 3.2),
            row("static 32x8 (best of sweep)", 3.1),
            row("trimtab", 0.0),
        ];
        assert_eq!(unstressed(&stressed), None);
    }
}
