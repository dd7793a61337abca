//! Where the time goes: each settled message's end-to-end latency split into the four stages it passed through.
//!
//! The stages are measured between consecutive timestamps of one message, so they add up to its end-to-end
//! latency by construction:
//!
//! * `queued`: from the broker's enqueued time to receipt (time waiting in Service Bus),
//! * `batch_wait`: from receipt to the start of the write or LINSTOR call (waiting for a batch or a permit),
//! * `work`: the write (with its retries) or the LINSTOR call (with its reply),
//! * `settle`: from the end of the work to the broker's answer to complete, abandon or dead-letter.
//!
//! Lifetime totals are atomics; a ring of recent messages per path gives the "now" view that names the stage
//! lag is growing in. Recording is a few atomic adds and one short lock per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;

/// How many recent messages per path the "recent" view averages over.
const RECENT: usize = 2_048;

/// The stage names, in the order a message passes through them.
pub const STAGE_NAMES: [&str; 4] = ["queued", "batch_wait", "work", "settle"];

/// Which work a message went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// An event row for Cassandra.
    Event,
    /// A LINSTOR volume operation.
    Volume,
    /// Dead-lettered straight from the router (no work).
    Rejected,
}

impl Path {
    fn index(self) -> usize {
        match self {
            Path::Event => 0,
            Path::Volume => 1,
            Path::Rejected => 2,
        }
    }

    /// The label used in metric names and the state.
    pub fn name(self) -> &'static str {
        match self {
            Path::Event => "event",
            Path::Volume => "volume",
            Path::Rejected => "rejected",
        }
    }
}

const PATHS: [Path; 3] = [Path::Event, Path::Volume, Path::Rejected];

/// The timestamps of one message, filled in as it moves; kept with the in-flight message.
#[derive(Debug, Clone, Copy)]
pub struct Stamps {
    /// Wall-clock time in Service Bus before receipt, in µs (never negative: clock skew clamps to 0).
    queued_us: u64,
    received: Instant,
    work_start: Option<Instant>,
    work_end: Option<Instant>,
}

impl Stamps {
    /// Stamps a message received now that the broker enqueued at `enqueued_at`.
    pub fn received(enqueued_at: OffsetDateTime) -> Stamps {
        let queued = OffsetDateTime::now_utc() - enqueued_at;
        Stamps {
            queued_us: u64::try_from(queued.whole_microseconds()).unwrap_or(0),
            received: Instant::now(),
            work_start: None,
            work_end: None,
        }
    }

    /// The write or LINSTOR call for this message starts at `at`.
    pub fn work_started(&mut self, at: Instant) {
        self.work_start = Some(at);
    }

    /// The write or LINSTOR call for this message has its outcome at `at`; the first call counts (a backoff
    /// before an abandon is settlement, not work).
    pub fn work_ended(&mut self, at: Instant) {
        self.work_end.get_or_insert(at);
    }
}

/// One message's stages, in µs; they sum to `end_to_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breakdown {
    /// `[queued, batch_wait, work, settle]`, µs.
    pub stages: [u64; 4],
}

impl Breakdown {
    /// Enqueued to settled, µs.
    pub fn end_to_end(&self) -> u64 {
        self.stages.iter().sum()
    }

    /// Closes the stamps at `settled`: a stage that never started takes no time.
    pub fn of(stamps: &Stamps, settled: Instant) -> Breakdown {
        let micros =
            |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64;
        let work_start = stamps.work_start.unwrap_or(settled);
        let work_end = stamps.work_end.unwrap_or(work_start).max(work_start);
        Breakdown {
            stages: [
                stamps.queued_us,
                micros(stamps.received, work_start),
                micros(work_start, work_end),
                micros(work_end, settled),
            ],
        }
    }
}

#[derive(Default)]
struct Totals {
    count: AtomicU64,
    stage_us: [AtomicU64; 4],
}

/// The per-stage clock the pipeline records into; shared, cheap to record, cheap to snapshot.
#[derive(Default)]
pub struct StageClock {
    totals: [Totals; 3],
    recent: [Mutex<VecDeque<Breakdown>>; 3],
}

impl std::fmt::Debug for StageClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageClock").finish_non_exhaustive()
    }
}

/// One stage's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageFigures {
    /// `queued`, `batch_wait`, `work` or `settle`.
    pub stage: &'static str,
    /// Mean over the recent messages, ms.
    pub recent_mean_ms: f64,
    /// Share of the recent end-to-end latency spent here, 0..=1.
    pub recent_share: f64,
    /// Sum since start, seconds.
    pub total_s: f64,
}

/// The breakdown of one path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathBreakdown {
    /// `event`, `volume` or `rejected`.
    pub path: &'static str,
    /// Messages settled since start.
    pub settled: u64,
    /// Messages in the recent view.
    pub recent: usize,
    /// Mean end-to-end latency of the recent messages, ms (the sum of the stages' means).
    pub recent_end_to_end_mean_ms: f64,
    /// Median end-to-end latency of the recent messages, ms.
    pub recent_end_to_end_p50_ms: f64,
    /// Mean end-to-end latency since start, ms.
    pub end_to_end_mean_ms: f64,
    /// The four stages in order.
    pub stages: Vec<StageFigures>,
    /// The stage with the largest recent share: where the time goes now.
    pub dominant: Option<&'static str>,
}

/// A copy of the stage figures at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct StageSnapshot {
    /// One entry per path that has settled messages.
    pub paths: Vec<PathBreakdown>,
}

impl StageClock {
    /// Records one settled message.
    pub fn record(&self, path: Path, breakdown: Breakdown) {
        let totals = &self.totals[path.index()];
        totals.count.fetch_add(1, Ordering::Relaxed);
        for (sum, value) in totals.stage_us.iter().zip(breakdown.stages) {
            sum.fetch_add(value, Ordering::Relaxed);
        }
        let mut recent = self.recent[path.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(breakdown);
    }

    /// The figures now.
    pub fn snapshot(&self) -> StageSnapshot {
        let paths = PATHS
            .iter()
            .filter_map(|&path| self.path_snapshot(path))
            .collect();
        StageSnapshot { paths }
    }

    fn path_snapshot(&self, path: Path) -> Option<PathBreakdown> {
        let totals = &self.totals[path.index()];
        let settled = totals.count.load(Ordering::Relaxed);
        if settled == 0 {
            return None;
        }
        let recent: Vec<Breakdown> = self.recent[path.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let n = recent.len().max(1) as f64;
        let mut means = [0f64; 4];
        for b in &recent {
            for (mean, value) in means.iter_mut().zip(b.stages) {
                *mean += value as f64 / 1_000.0 / n;
            }
        }
        let e2e_mean: f64 = means.iter().sum();
        let mut e2e: Vec<u64> = recent.iter().map(Breakdown::end_to_end).collect();
        e2e.sort_unstable();
        let p50 = e2e.get(e2e.len() / 2).map_or(0.0, |v| *v as f64 / 1_000.0);
        let total_us: Vec<u64> = totals
            .stage_us
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect();
        let stages: Vec<StageFigures> = STAGE_NAMES
            .iter()
            .zip(means)
            .zip(&total_us)
            .map(|((stage, mean), total)| StageFigures {
                stage,
                recent_mean_ms: mean,
                recent_share: if e2e_mean > 0.0 { mean / e2e_mean } else { 0.0 },
                total_s: *total as f64 / 1e6,
            })
            .collect();
        let dominant = stages
            .iter()
            .filter(|s| s.recent_mean_ms > 0.0)
            .max_by(|a, b| a.recent_mean_ms.total_cmp(&b.recent_mean_ms))
            .map(|s| s.stage);
        Some(PathBreakdown {
            path: path.name(),
            settled,
            recent: recent.len(),
            recent_end_to_end_mean_ms: e2e_mean,
            recent_end_to_end_p50_ms: p50,
            end_to_end_mean_ms: total_us.iter().sum::<u64>() as f64 / 1_000.0 / settled as f64,
            stages,
            dominant,
        })
    }
}

impl StageSnapshot {
    /// The breakdown of one path, if it has settled messages.
    pub fn path(&self, name: &str) -> Option<&PathBreakdown> {
        self.paths.iter().find(|p| p.path == name)
    }

    /// The figures as metric samples: `trimtab_stage_<stage>_seconds_total{path}`,
    /// `trimtab_stage_<stage>_recent_mean_seconds{path}` and `trimtab_stage_settled_total{path}`.
    pub fn metric_samples(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for p in &self.paths {
            out.push((
                format!("trimtab_stage_settled_total{{path=\"{}\"}}", p.path),
                p.settled as f64,
            ));
            out.push((
                format!(
                    "trimtab_stage_end_to_end_recent_mean_seconds{{path=\"{}\"}}",
                    p.path
                ),
                p.recent_end_to_end_mean_ms / 1e3,
            ));
            for s in &p.stages {
                out.push((
                    format!(
                        "trimtab_stage_{}_seconds_total{{path=\"{}\"}}",
                        s.stage, p.path
                    ),
                    s.total_s,
                ));
                out.push((
                    format!(
                        "trimtab_stage_{}_recent_mean_seconds{{path=\"{}\"}}",
                        s.stage, p.path
                    ),
                    s.recent_mean_ms / 1e3,
                ));
            }
        }
        out
    }

    /// The figures in Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        self.metric_samples()
            .into_iter()
            .map(|(name, value)| format!("{name} {value}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stages_add_up_and_the_slowest_is_named() {
        let clock = StageClock::default();
        let start = Instant::now();
        let mut stamps = Stamps {
            queued_us: 5_000,
            received: start,
            work_start: None,
            work_end: None,
        };
        stamps.work_started(start + Duration::from_millis(2));
        stamps.work_ended(start + Duration::from_millis(30));
        let b = Breakdown::of(&stamps, start + Duration::from_millis(31));
        assert_eq!(b.stages, [5_000, 2_000, 28_000, 1_000]);
        assert_eq!(b.end_to_end(), 36_000);
        clock.record(Path::Event, b);
        let snap = clock.snapshot();
        let event = snap.path("event").expect("event path recorded");
        assert_eq!(event.dominant, Some("work"));
        assert!((event.recent_end_to_end_mean_ms - 36.0).abs() < 1e-9);
        assert!(snap.path("volume").is_none());
        assert!(snap
            .prometheus()
            .contains("trimtab_stage_work_seconds_total{path=\"event\"} 0.028"));
    }

    #[test]
    fn a_message_without_work_spends_it_all_waiting_then_settling() {
        let start = Instant::now();
        let stamps = Stamps {
            queued_us: 0,
            received: start,
            work_start: None,
            work_end: None,
        };
        let b = Breakdown::of(&stamps, start + Duration::from_millis(4));
        assert_eq!(b.stages, [0, 4_000, 0, 0]);
    }
}
