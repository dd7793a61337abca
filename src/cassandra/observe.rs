//! What each batch did (latency, rows, bytes, outcome), kept in a bounded recent window with a cheap snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How one batch attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchOutcome {
    /// Written.
    Ok,
    /// Failed in a way that may succeed later (`kind` as in [`super::CassandraError::kind`]).
    Retriable(&'static str),
    /// Failed for good.
    Permanent(&'static str),
}

/// One batch attempt as the writer timed it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BatchObservation {
    /// Rows in the batch.
    pub rows: usize,
    /// Rows of the write call the batch was cut from (the pipeline's chunk, split by partition and the batch
    /// caps): with the batches of a call, how many rows a round of writes carried. Zero when not known.
    #[serde(default)]
    pub call_rows: usize,
    /// Bytes of row data in the batch.
    pub bytes: usize,
    /// Time from sending to the answer.
    pub latency: Duration,
    /// How it ended.
    pub outcome: BatchOutcome,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// Rows per batch in force when it was sent: the setting its latency belongs to. A batch sent before a knob
    /// change that ends after it measures the old setting, not the new one.
    pub batch_rows: u32,
    /// Write concurrency in force when it was sent.
    pub concurrency: u32,
    /// When the answer came (monotonic clock), so a window of recent batches can be picked out.
    #[serde(skip)]
    pub ended: std::time::Instant,
}

impl BatchObservation {
    /// When it was sent (monotonic clock).
    pub fn started(&self) -> std::time::Instant {
        self.ended.checked_sub(self.latency).unwrap_or(self.ended)
    }

    /// The setting it was sent under: (rows per batch, write concurrency).
    pub fn setting(&self) -> (u32, u32) {
        (self.batch_rows, self.concurrency)
    }
}

/// The batches of `judged` that were in flight only alongside batches of their own setting among `all`.
///
/// Right after a knob change the node still works off what the old setting sent, so the first batches of the new
/// setting wait behind the old one's queue, and the old setting's last batches behind the new one's: their latency
/// belongs to neither setting. Judging a cut from 32 writes in flight to 8 on those batches saw the old queue.
pub fn unmixed(judged: &[BatchObservation], all: &[BatchObservation]) -> Vec<BatchObservation> {
    let mut others: BTreeMap<(u32, u32), (Vec<std::time::Instant>, Vec<std::time::Instant>)> =
        BTreeMap::new();
    for setting in judged.iter().map(BatchObservation::setting) {
        others.entry(setting).or_insert_with(|| {
            // Other settings' batches by start, with the latest end among those started so far.
            let mut spans: Vec<_> = all
                .iter()
                .filter(|o| o.setting() != setting)
                .map(|o| (o.started(), o.ended))
                .collect();
            spans.sort_by_key(|&(start, _)| start);
            let starts = spans.iter().map(|&(start, _)| start).collect();
            let mut latest = None;
            let latest_end = spans
                .iter()
                .map(|&(_, end)| {
                    *latest.insert(latest.map_or(end, |l: std::time::Instant| l.max(end)))
                })
                .collect();
            (starts, latest_end)
        });
    }
    judged
        .iter()
        .filter(|o| {
            let (starts, latest_end) = &others[&o.setting()];
            // Other batches sent before this one ended; one of them still running after it started overlaps it.
            let sent_before = starts.partition_point(|&start| start < o.ended);
            sent_before == 0 || latest_end[sent_before - 1] <= o.started()
        })
        .copied()
        .collect()
}

/// Latency of the batches of one size class in the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeClass {
    /// Batches with at most this many rows (and more than the previous class's bound): 1, 2, 4, 8, ...
    pub max_rows: usize,
    /// Batch attempts in the window.
    pub batches: usize,
    /// Median latency of the successful ones, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of the successful ones, in milliseconds.
    pub p99_ms: f64,
}

/// A cheap summary of the recent window plus totals since start, for the metrics collector and tuner.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WriterSnapshot {
    /// Batch attempts in the window.
    pub window_batches: usize,
    /// Rows written by the batches in the window.
    pub window_rows_ok: usize,
    /// Median latency of successful batches in the window, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of successful batches in the window, in milliseconds.
    pub p99_ms: f64,
    /// Latency per batch size class.
    pub by_size: Vec<SizeClass>,
    /// Failed attempts in the window by error kind.
    pub errors: BTreeMap<String, usize>,
    /// Batch attempts since start.
    pub total_batches: u64,
    /// Rows written since start.
    pub total_rows_ok: u64,
    /// Failed batch attempts since start.
    pub total_errors: u64,
    /// Batches being sent right now.
    pub in_flight: u64,
}

/// A bounded ring of recent observations.
#[derive(Debug)]
pub struct ObservationWindow {
    capacity: usize,
    recent: Mutex<VecDeque<BatchObservation>>,
    total_batches: AtomicU64,
    total_rows_ok: AtomicU64,
    total_errors: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

impl ObservationWindow {
    /// A window holding at most `capacity` observations (at least 1).
    pub fn new(capacity: usize) -> ObservationWindow {
        ObservationWindow {
            capacity: capacity.max(1),
            recent: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
            total_batches: AtomicU64::new(0),
            total_rows_ok: AtomicU64::new(0),
            total_errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Adds one observation, dropping the oldest when full.
    pub fn record(&self, o: BatchObservation) {
        self.total_batches.fetch_add(1, Ordering::Relaxed);
        match o.outcome {
            BatchOutcome::Ok => {
                self.total_rows_ok
                    .fetch_add(o.rows as u64, Ordering::Relaxed);
            }
            _ => {
                self.total_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == self.capacity {
            recent.pop_front();
        }
        recent.push_back(o);
    }

    /// Batches sent and not yet answered.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The observations currently in the window, oldest first.
    pub fn recent(&self) -> Vec<BatchObservation> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Summarises the window.
    pub fn snapshot(&self) -> WriterSnapshot {
        let recent = self.recent();
        let mut ok_latencies = Vec::new();
        let mut classes: BTreeMap<usize, (usize, Vec<f64>)> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut rows_ok = 0;
        for o in &recent {
            let class = o.rows.max(1).next_power_of_two();
            let entry = classes.entry(class).or_default();
            entry.0 += 1;
            match o.outcome {
                BatchOutcome::Ok => {
                    let ms = o.latency.as_secs_f64() * 1e3;
                    ok_latencies.push(ms);
                    entry.1.push(ms);
                    rows_ok += o.rows;
                }
                BatchOutcome::Retriable(kind) | BatchOutcome::Permanent(kind) => {
                    *errors.entry(kind.to_string()).or_insert(0) += 1;
                }
            }
        }
        WriterSnapshot {
            window_batches: recent.len(),
            window_rows_ok: rows_ok,
            p50_ms: percentile(&mut ok_latencies, 0.50),
            p99_ms: percentile(&mut ok_latencies, 0.99),
            by_size: classes
                .into_iter()
                .map(|(max_rows, (batches, mut lat))| SizeClass {
                    max_rows,
                    batches,
                    p50_ms: percentile(&mut lat, 0.50),
                    p99_ms: percentile(&mut lat, 0.99),
                })
                .collect(),
            errors,
            total_batches: self.total_batches.load(Ordering::Relaxed),
            total_rows_ok: self.total_rows_ok.load(Ordering::Relaxed),
            total_errors: self.total_errors.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Nearest-rank percentile; 0 for an empty set.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(rows: usize, ms: u64, outcome: BatchOutcome) -> BatchObservation {
        BatchObservation {
            rows,
            call_rows: rows,
            bytes: rows * 100,
            latency: Duration::from_millis(ms),
            outcome,
            attempt: 1,
            batch_rows: 32,
            concurrency: 32,
            ended: std::time::Instant::now(),
        }
    }

    #[test]
    fn window_is_bounded_and_summarised_per_size_class() {
        let w = ObservationWindow::new(100);
        for i in 0..150u64 {
            w.record(obs(if i % 2 == 0 { 32 } else { 3 }, i, BatchOutcome::Ok));
        }
        w.record(obs(32, 1, BatchOutcome::Retriable("write_timeout")));
        let s = w.snapshot();
        assert_eq!(s.window_batches, 100);
        assert_eq!(s.total_batches, 151);
        assert_eq!(s.total_errors, 1);
        assert_eq!(s.errors.get("write_timeout"), Some(&1));
        let classes: Vec<usize> = s.by_size.iter().map(|c| c.max_rows).collect();
        assert_eq!(classes, vec![4, 32]);
        assert!(s.p99_ms >= s.p50_ms && s.p50_ms > 50.0, "{s:?}");
    }

    #[test]
    fn batches_in_flight_alongside_another_setting_are_left_out() {
        let t0 = std::time::Instant::now();
        // A batch of `setting` sent at `start` ms that took `ms`.
        let sent = |setting: (u32, u32), start: u64, ms: u64| BatchObservation {
            batch_rows: setting.0,
            concurrency: setting.1,
            latency: Duration::from_millis(ms),
            ended: t0 + Duration::from_millis(start + ms),
            ..obs(10, ms, BatchOutcome::Ok)
        };
        let (old, new) = ((32, 32), (32, 8));
        let all = vec![
            sent(old, 0, 100),   // before the change, alone: kept
            sent(old, 150, 300), // sent before the change, ends at 450 while `new` runs: left out
            sent(new, 200, 400), // waited behind the old one: left out
            sent(new, 460, 50),  // sent after the last old batch ended: kept
            sent(new, 520, 40),  // kept
        ];
        let kept = unmixed(&all, &all);
        let starts: Vec<_> = kept
            .iter()
            .map(|o| (o.setting(), (o.started() - t0).as_millis()))
            .collect();
        assert_eq!(starts, vec![(old, 0), (new, 460), (new, 520)]);
        // Judging only the newest batches still sees the older ones they overlapped.
        assert_eq!(unmixed(&all[2..], &all).len(), 2);
    }

    #[test]
    fn percentile_uses_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut [], 0.5), 0.0);
    }
}
