//! The executor's actuators over the real parts: LINSTOR through the writer credential, knobs through `LiveKnobs`.
//!
//! Only the executor holds these: [`LinstorPlacement`] carries the LINSTOR write credential and
//! [`PipelineKnobs`] the handle that changes the running pipeline. Collectors and chat-ops get readers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cassandra::{unmixed, BatchObservation, BatchOutcome, ObservationWindow};
use crate::executor::{
    ActuatorError, Knob, KnobActuator, PlacementActuator, ReplicaView, WindowStats,
};
use crate::linstor::placement::{DEFAULT_PLACE_COUNT, DEFAULT_RESOURCE_GROUP};
use crate::linstor::retcode::{FAIL_EXISTS_RSC, FAIL_NOT_FOUND_RSC};
use crate::linstor::types::{AutoSelectFilter, ResourceGroupModify, ResourceWithVolumes};
use crate::linstor::{LinstorError, LinstorWriter};
use crate::pipeline::{Knobs, LiveKnobs};
use crate::planner::{ReplicaState, ServiceTime, Settings};

fn linstor_failed(what: &str, e: &LinstorError) -> ActuatorError {
    ActuatorError {
        reason: format!("{what}: {}", e.reason()),
        retriable: e.is_retriable(),
    }
}

/// Placement verbs over LINSTOR's REST API with the executor's credential.
pub struct LinstorPlacement {
    writer: LinstorWriter,
}

impl LinstorPlacement {
    /// Placement through `writer` (built from the executor credential).
    pub fn new(writer: LinstorWriter) -> Self {
        LinstorPlacement { writer }
    }
}

/// One replica as the planner models it, from `/v1/view/resources`.
pub fn replica_state(r: &ResourceWithVolumes) -> ReplicaState {
    let res = &r.resource;
    let diskful = !res.is_diskless();
    let pool = r
        .volumes
        .first()
        .map(|v| v.storage_pool_name.clone())
        .filter(|p| !p.is_empty())
        .or_else(|| res.props.get("StorPoolName").cloned())
        .unwrap_or_default();
    ReplicaState {
        node: res.node_name.clone(),
        pool: if diskful { pool } else { String::new() },
        diskful,
        up_to_date: diskful
            && !r.volumes.is_empty()
            && r.volumes
                .iter()
                .all(|v| v.state.disk_state.as_deref() == Some("UpToDate")),
        in_use: res.state.as_ref().and_then(|s| s.in_use).unwrap_or(false),
    }
}

#[async_trait]
impl PlacementActuator for LinstorPlacement {
    async fn add_replica(
        &self,
        resource: &str,
        node: &str,
        pool: &str,
    ) -> Result<(), ActuatorError> {
        match self.writer.create_diskful(resource, node, pool).await {
            Ok(_) => Ok(()),
            // Idempotent: the replica is already there (a retry after a crash).
            Err(e) if e.api_code() == Some(FAIL_EXISTS_RSC) => Ok(()),
            Err(e) => Err(linstor_failed(
                &format!("creating {resource} on {node}/{pool}"),
                &e,
            )),
        }
    }

    async fn remove_replica(&self, resource: &str, node: &str) -> Result<(), ActuatorError> {
        match self.writer.delete_resource(resource, node).await {
            Ok(_) => Ok(()),
            Err(e) if e.api_code() == Some(FAIL_NOT_FOUND_RSC) => Ok(()),
            Err(e) => Err(linstor_failed(
                &format!("deleting {resource} on {node}"),
                &e,
            )),
        }
    }

    /// The place count lives on the resource's group (`PUT /v1/resource-groups/{rg}`), so every definition in
    /// that group gets it; the controller places replicas up to a raised count. This is why the shipped policy
    /// sends it to a person. Setting the count it already has is a no-op at the controller.
    async fn set_place_count(&self, resource: &str, place_count: u32) -> Result<(), ActuatorError> {
        let definition = self
            .writer
            .reader()
            .resource_definition(resource)
            .await
            .map_err(|e| linstor_failed(&format!("reading definition {resource}"), &e))?;
        let group = definition
            .resource_group_name
            .as_deref()
            .filter(|g| !g.is_empty())
            .unwrap_or(DEFAULT_RESOURCE_GROUP)
            .to_string();
        let modify = ResourceGroupModify {
            select_filter: Some(AutoSelectFilter {
                place_count: Some(place_count),
                ..AutoSelectFilter::default()
            }),
            ..ResourceGroupModify::default()
        };
        self.writer
            .modify_resource_group(&group, &modify)
            .await
            .map(drop)
            .map_err(|e| {
                linstor_failed(
                    &format!("setting place count {place_count} on group {group} of {resource}"),
                    &e,
                )
            })
    }

    async fn replicas(&self, resource: &str) -> Result<ReplicaView, ActuatorError> {
        let reader = self.writer.reader();
        let definition = reader
            .resource_definition(resource)
            .await
            .map_err(|e| linstor_failed(&format!("reading definition {resource}"), &e))?;
        let group = definition
            .resource_group_name
            .as_deref()
            .unwrap_or(DEFAULT_RESOURCE_GROUP)
            .to_string();
        let place_count = match reader.resource_group(&group).await {
            Ok(g) => g.select_filter.place_count.unwrap_or(DEFAULT_PLACE_COUNT),
            Err(e) if e.is_not_found() => DEFAULT_PLACE_COUNT,
            Err(e) => return Err(linstor_failed(&format!("reading group {group}"), &e)),
        };
        let replicas = reader
            .resources(&[resource])
            .await
            .map_err(|e| linstor_failed(&format!("reading replicas of {resource}"), &e))?
            .iter()
            .filter(|r| r.resource.name == resource && !r.resource.is_deleting())
            .map(replica_state)
            .collect();
        Ok(ReplicaView {
            place_count,
            replicas,
        })
    }
}

/// The pipeline's live knobs, judged by the Cassandra writer's batch observations.
pub struct PipelineKnobs {
    knobs: LiveKnobs,
    observations: Arc<ObservationWindow>,
}

impl PipelineKnobs {
    /// Knobs set through `knobs`, measured from `observations` (the writer's window).
    pub fn new(knobs: LiveKnobs, observations: Arc<ObservationWindow>) -> Self {
        PipelineKnobs {
            knobs,
            observations,
        }
    }

    /// The batches of `batches` sent under the setting in force, leaving out those in flight alongside another
    /// setting's among `all`.
    fn of_setting_in_force(
        &self,
        batches: &[BatchObservation],
        all: &[BatchObservation],
    ) -> Vec<BatchObservation> {
        let k = self.knobs.get();
        let mine: Vec<_> = batches
            .iter()
            .filter(|o| o.setting() == (k.batch_rows, k.write_concurrency))
            .copied()
            .collect();
        unmixed(&mine, all)
    }
}

/// The planner's view of the pipeline knobs.
pub fn settings_of(k: &Knobs) -> Settings {
    Settings {
        batch_rows: k.batch_rows,
        batch_bytes: u64::from(k.batch_bytes),
        concurrency: k.write_concurrency,
        prefetch: k.prefetch,
    }
}

/// Nearest-rank percentile of `values` (sorted here); 0 for none.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[async_trait]
impl KnobActuator for PipelineKnobs {
    async fn current(&self) -> Result<Settings, ActuatorError> {
        Ok(settings_of(&self.knobs.get()))
    }

    async fn set(&self, knob: Knob, value: u64) -> Result<(), ActuatorError> {
        let narrow = |v: u64| {
            u32::try_from(v).map_err(|_| ActuatorError {
                reason: format!("{knob:?} value {value} does not fit the pipeline's 32-bit knob"),
                retriable: false,
            })
        };
        let v = narrow(value)?;
        self.knobs
            .update(|k| match knob {
                Knob::BatchRows => k.batch_rows = v,
                Knob::BatchBytes => k.batch_bytes = v,
                Knob::Concurrency => k.write_concurrency = v,
                Knob::Prefetch => k.prefetch = v,
            })
            .map(|_| ())
            .map_err(|e| ActuatorError {
                reason: e.to_string(),
                retriable: false,
            })
    }

    /// Waits `window`, and longer (up to [`IDLE_WINDOWS`] windows) while no batch of the setting in force is
    /// written: an idle window says nothing about the setting, and judging it as zero throughput would roll back
    /// every change made just before traffic paused. Still idle after that, it is an error: the change stays,
    /// unverified. Only batches sent under the setting in force, and not in flight alongside another setting's
    /// ([`unmixed`]), are judged: the first ones after a change wait behind what the old setting sent.
    async fn observe(&self, window: Duration) -> Result<WindowStats, ActuatorError> {
        let before = self.observations.snapshot();
        let mut waited = 0;
        loop {
            tokio::time::sleep(window).await;
            waited += 1;
            let after = self.observations.snapshot();
            let n = after.total_batches.saturating_sub(before.total_batches) as usize;
            let recent = self.observations.recent();
            let fresh = &recent[recent.len().saturating_sub(n)..];
            let judged = self.of_setting_in_force(fresh, &recent);
            if !judged.is_empty() {
                return Ok(window_stats(judged, self.knobs.get().write_concurrency));
            }
            if waited >= IDLE_WINDOWS {
                return Err(ActuatorError {
                    reason: format!(
                        "no batch of the setting in force was written in {} s, so it cannot be judged",
                        window.as_secs_f64() * f64::from(IDLE_WINDOWS)
                    ),
                    retriable: true,
                });
            }
        }
    }

    /// The batches of the setting in force answered in the last `window`, at once: waiting a window before every
    /// change would hold back a relief change while the backlog it is meant to relieve grows. With none written
    /// in it, waits like [`Self::observe`].
    async fn observed(&self, window: Duration) -> Result<WindowStats, ActuatorError> {
        let since = std::time::Instant::now().checked_sub(window);
        let recent = self.observations.recent();
        let first = recent
            .iter()
            .rposition(|o| since.is_some_and(|s| o.ended < s))
            .map_or(0, |i| i + 1);
        let past = self.of_setting_in_force(&recent[first..], &recent);
        if past.is_empty() {
            return self.observe(window).await;
        }
        Ok(window_stats(past, self.knobs.get().write_concurrency))
    }
}

/// Observation windows `observe` waits at most for a first batch.
pub const IDLE_WINDOWS: u32 = 5;

/// p99 and capacity of a set of batch observations at `concurrency`.
///
/// Throughput is the capacity the setting showed: rows written per second that a write slot was busy, times the
/// writes in flight. A failed attempt (a write timeout after waiting in the node's queue) held its slot too and
/// wrote nothing, so its time counts: otherwise a setting that times out half its writes would look as fast as its
/// lucky half. Rows actually written per second would follow the arrival rate instead, so a knob change judged on
/// them would look worse whenever traffic happened to drop during the window. That capacity is real only when the
/// slots were in use, so the stats also carry the rows actually written per second of the window's span (first
/// write started to last ended) and the share of slot time used. p99 is of the writes that succeeded.
pub fn window_stats(
    batches: impl IntoIterator<Item = crate::cassandra::BatchObservation>,
    concurrency: u32,
) -> WindowStats {
    let mut latencies = Vec::new();
    let (mut rows, mut busy_s, mut failed) = (0usize, 0.0f64, 0usize);
    // Each batch is `rows / call_rows` of its call, so the calls they came from number the sum of those shares,
    // and rows per call is rows over that sum, however many batches each call was split into.
    let (mut call_rows, mut calls) = (0usize, 0.0f64);
    let mut first_start: Option<std::time::Instant> = None;
    let mut last_end: Option<std::time::Instant> = None;
    let batches: Vec<_> = batches.into_iter().collect();
    for o in &batches {
        let start = o.started();
        first_start = Some(first_start.map_or(start, |f| f.min(start)));
        last_end = Some(last_end.map_or(o.ended, |l| l.max(o.ended)));
        if o.outcome == BatchOutcome::Ok {
            latencies.push(o.latency.as_secs_f64() * 1e3);
            rows += o.rows;
            busy_s += o.latency.as_secs_f64();
            if o.call_rows >= o.rows && o.rows > 0 {
                call_rows += o.rows;
                calls += o.rows as f64 / o.call_rows as f64;
            }
        } else {
            failed += 1;
            busy_s += o.latency.as_secs_f64();
        }
    }
    let ok = latencies.len();
    let throughput = if busy_s > 0.0 {
        rows as f64 / busy_s * f64::from(concurrency.max(1))
    } else {
        0.0
    };
    let span_s = match (first_start, last_end) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let (rows_written_per_s, slot_share) = if span_s > 0.0 {
        (
            Some(rows as f64 / span_s),
            Some((busy_s / (span_s * f64::from(concurrency.max(1)))).min(1.0)),
        )
    } else {
        (None, None)
    };
    WindowStats {
        writes_in_flight: Spans::new(&batches).mean_met(),
        round_rows: (calls > 0.0).then(|| call_rows as f64 / calls),
        p99_ms: percentile(&mut latencies, 0.99),
        throughput_rows_per_s: throughput,
        rows_written_per_s,
        slot_share,
        mean_rows: if ok > 0 { rows as f64 / ok as f64 } else { 0.0 },
        error_share: if ok + failed > 0 {
            failed as f64 / (ok + failed) as f64
        } else {
            0.0
        },
    }
}

/// When a setting's writes started and ended, sorted, to count the writes each one met in flight.
struct Spans {
    starts: Vec<std::time::Instant>,
    ends: Vec<std::time::Instant>,
}

impl Spans {
    fn new<'a>(writes: impl IntoIterator<Item = &'a BatchObservation>) -> Spans {
        let (mut starts, mut ends): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|o| (o.started(), o.ended)).unzip();
        starts.sort_unstable();
        ends.sort_unstable();
        Spans { starts, ends }
    }

    /// Writes in flight when a write started at `s`, itself included: every write started at or before `s` that
    /// had not ended by then.
    fn met_at(&self, s: std::time::Instant) -> usize {
        let started = self.starts.partition_point(|&x| x <= s);
        let ended = self.ends.partition_point(|&e| e <= s);
        started.saturating_sub(ended).max(1)
    }

    /// Writes in flight when each write started, itself included, averaged over the writes; `None` without any.
    fn mean_met(&self) -> Option<f64> {
        if self.starts.is_empty() {
            return None;
        }
        let met: usize = self.starts.iter().map(|&s| self.met_at(s)).sum();
        Some(met as f64 / self.starts.len() as f64)
    }
}

/// Fewest lone writes a service-time fit is made from.
const MIN_SOLO_WRITES: usize = 10;

/// The fit and the queueing measured against it; the figures and [`ServiceTime::expected_ms`] are plain data
/// in the planner's model.
impl ServiceTime {
    /// Fits the writes of `settings` (each one setting's batches, so that "alone" means alone among writes of the
    /// same client) that succeeded and met no other write in flight; `None` with fewer than
    /// [`MIN_SOLO_WRITES`] of them.
    pub fn fit<'a, W>(settings: impl IntoIterator<Item = W>) -> Option<ServiceTime>
    where
        W: IntoIterator<Item = &'a BatchObservation> + Copy,
    {
        let mut points = Vec::new();
        for batches in settings {
            let spans = Spans::new(batches);
            points.extend(
                batches
                    .into_iter()
                    .filter(|o| o.outcome == BatchOutcome::Ok && spans.met_at(o.started()) == 1)
                    .map(|o| (o.bytes as f64 / 1024.0, o.latency.as_secs_f64() * 1e3)),
            );
        }
        if points.len() < MIN_SOLO_WRITES {
            return None;
        }
        let n = points.len() as f64;
        let (mx, my) = points
            .iter()
            .fold((0.0, 0.0), |(x, y), &(px, py)| (x + px / n, y + py / n));
        let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(xy, xx), &(px, py)| {
            (xy + (px - mx) * (py - my), xx + (px - mx) * (px - mx))
        });
        // Sizes too alike to show a slope, or a slope below zero (noise): every size costs the mean.
        let slope = if sxx > 1e-9 {
            (sxy / sxx).max(0.0)
        } else {
            0.0
        };
        let base = my - slope * mx;
        if base >= 0.0 {
            return Some(ServiceTime {
                base_ms: base,
                ms_per_kib: slope,
            });
        }
        // A line through the origin when the best line would give small writes no cost at all (only a slope
        // above zero does that, so some write had bytes and `xx` is positive).
        let (xy, xx) = points.iter().fold((0.0, 0.0), |(xy, xx), &(px, py)| {
            (xy + px * py, xx + px * px)
        });
        Some(ServiceTime {
            base_ms: 0.0,
            ms_per_kib: xy / xx,
        })
    }

    /// How long the successful writes of `batches` took against what they would have taken alone (total over
    /// total): 1 when writes did not wait for each other at the node, about `n` when each waited for `n − 1`
    /// others' service. `None` without a successful write.
    pub fn queueing(&self, batches: &[BatchObservation]) -> Option<f64> {
        let (took, alone) = batches
            .iter()
            .filter(|o| o.outcome == BatchOutcome::Ok)
            .fold((0.0, 0.0), |(t, a), o| {
                (
                    t + o.latency.as_secs_f64() * 1e3,
                    a + self.expected_ms(o.bytes as f64),
                )
            });
        (alone > 0.0).then(|| took / alone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cassandra::{BatchObservation, BatchOutcome};
    use std::time::Duration;

    fn batch(rows: usize, ms: u64, outcome: BatchOutcome) -> BatchObservation {
        BatchObservation {
            rows,
            call_rows: rows,
            bytes: rows * 2048,
            latency: Duration::from_millis(ms),
            outcome,
            attempt: 1,
            batch_rows: 32,
            concurrency: 32,
            ended: std::time::Instant::now(),
        }
    }

    #[test]
    fn slot_share_and_rows_written_show_whether_the_capacity_was_used() {
        // 32 writes allowed, one 100 ms write of 10 rows at a time, 200 ms apart: 10 writes span 1.9 s.
        let start = std::time::Instant::now();
        let one_at_a_time = (1..=10u64).map(|i| BatchObservation {
            ended: start + Duration::from_millis(200 * i),
            ..batch(10, 100, BatchOutcome::Ok)
        });
        let s = window_stats(one_at_a_time, 32);
        let span = 1.9;
        let written = s.rows_written_per_s.expect("measured");
        assert!((written - 100.0 / span).abs() < 1e-6, "{s:?}");
        let share = s.slot_share.expect("measured");
        assert!((share - 1.0 / (span * 32.0)).abs() < 1e-6, "{s:?}");
        // The capacity figure still counts every slot; the executor judges it only where the share is high.
        assert!((s.throughput_rows_per_s - 3200.0).abs() < 1e-6, "{s:?}");
    }

    #[test]
    fn writes_in_flight_counts_the_queue_a_write_met_not_the_idle_time_between_bursts() {
        // 8 writes allowed; bursts of 4 writes of 100 ms started together, one burst a second, for 5 s.
        let start = std::time::Instant::now();
        let bursts = (0..5u64).flat_map(|burst| {
            (0..4).map(move |_| BatchObservation {
                ended: start + Duration::from_millis(1000 * burst + 100),
                ..batch(10, 100, BatchOutcome::Ok)
            })
        });
        let s = window_stats(bursts, 8);
        // Slot time used: 20 × 0.1 s of 4.1 s × 8 slots, which says 0.5 writes in flight on average.
        let share = s.slot_share.expect("measured");
        assert!((share * 8.0 - 2.0 / 4.1).abs() < 1e-6, "{s:?}");
        // Each write met the other three of its burst.
        assert_eq!(s.writes_in_flight, Some(4.0), "{s:?}");

        // One write at a time, back to back: each met only itself.
        let serial = (1..=10u64).map(|i| BatchObservation {
            ended: start + Duration::from_millis(100 * i),
            ..batch(10, 100, BatchOutcome::Ok)
        });
        assert_eq!(window_stats(serial, 8).writes_in_flight, Some(1.0));
        assert_eq!(window_stats(Vec::new(), 8).writes_in_flight, None);
    }

    #[test]
    fn rows_per_round_count_each_write_call_once_however_it_was_split() {
        // A round of 32 rows split into four batches of 8 (four partitions), and one of 16 rows in two of 8.
        let split = |call_rows: usize, batches: usize| {
            (0..batches).map(move |_| BatchObservation {
                call_rows,
                ..batch(8, 50, BatchOutcome::Ok)
            })
        };
        let s = window_stats(split(32, 4).chain(split(16, 2)), 4);
        assert_eq!(s.mean_rows, 8.0);
        assert_eq!(s.round_rows, Some(24.0), "{s:?}");
        // A write whose call is not known (older observations) says nothing about rounds.
        let unknown = (0..3).map(|_| BatchObservation {
            call_rows: 0,
            ..batch(8, 50, BatchOutcome::Ok)
        });
        assert_eq!(window_stats(unknown, 4).round_rows, None);
    }

    #[test]
    fn a_write_timeout_costs_its_slot_time_and_writes_nothing() {
        let clean = window_stats((0..10).map(|_| batch(10, 100, BatchOutcome::Ok)), 4);
        // 10 rows per 100 ms of slot time, 4 slots.
        assert!(
            (clean.throughput_rows_per_s - 400.0).abs() < 1e-6,
            "{clean:?}"
        );
        assert_eq!(clean.error_share, 0.0);

        let timeout = BatchOutcome::Retriable("write_timeout");
        let mixed = window_stats(
            (0..10)
                .map(|_| batch(10, 100, BatchOutcome::Ok))
                .chain((0..2).map(|_| batch(10, 500, timeout))),
            4,
        );
        // The same 100 rows took 1 s + 2 × 0.5 s of slot time: half the capacity, and p99 still of the writes that
        // succeeded.
        assert!(
            (mixed.throughput_rows_per_s - 200.0).abs() < 1e-6,
            "{mixed:?}"
        );
        assert_eq!(mixed.p99_ms, 100.0);
        assert!((mixed.error_share - 2.0 / 12.0).abs() < 1e-9);
    }

    #[test]
    fn lone_writes_give_the_service_time_and_queued_writes_show_how_long_they_waited() {
        // Alone, a write costs 8 ms plus 2 ms per KiB: one at a time, sizes 1 to 12 rows of 2 KiB.
        let start = std::time::Instant::now();
        let lone: Vec<_> = (1..=12u64)
            .map(|i| BatchObservation {
                ended: start + Duration::from_millis(100 * i),
                ..batch(i as usize, 8 + 4 * i, BatchOutcome::Ok)
            })
            .collect();
        // Writes of 4 rows (24 ms alone), four sent together, each finishing 24 ms after the one before.
        let queued: Vec<_> = (1..=4u64)
            .map(|k| BatchObservation {
                ended: start + Duration::from_millis(5_000 + 24 * k),
                ..batch(4, 24 * k, BatchOutcome::Ok)
            })
            .collect();
        let fit =
            ServiceTime::fit([lone.as_slice(), queued.as_slice()]).expect("twelve lone writes");
        // The four started together, so none of them is a lone write.
        assert!((fit.base_ms - 8.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.ms_per_kib - 2.0).abs() < 1e-6, "{fit:?}");
        assert!((fit.expected_ms(4.0 * 2048.0) - 24.0).abs() < 1e-6);
        assert!((fit.queueing(&lone).unwrap() - 1.0).abs() < 1e-6);
        // 24 + 48 + 72 + 96 ms against 4 × 24 ms alone.
        assert!((fit.queueing(&queued).unwrap() - 2.5).abs() < 1e-6);
        // Too few lone writes to fit: no figure rather than a guess.
        assert_eq!(ServiceTime::fit([&lone[..9]]), None);
        assert_eq!(fit.queueing(&[]), None);
    }
}
