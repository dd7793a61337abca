//! Collectors: sample queue depth, arrival rate, lag, write latency and pool capacity on a fixed step into the
//! metric store, and the Cassandra-backed [`SampleHistory`] that keeps the store across restarts.
//!
//! Collectors hold read handles only: the depth collector (management endpoint), the lag tracker, the writer's
//! observation window, the pipeline counters, a knob receiver, and a [`LinstorReader`] (GET verbs only). None
//! of them can change anything.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use crate::pipeline::adapters::error_chain;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::series::{Sample, SeriesKey};
use super::store::{MetricStore, SampleHistory, StoreError};
use crate::cassandra::{
    unmixed, BatchObservation, BatchOutcome, CassandraError, ObservationWindow, OwnTables,
    MS_PER_METRIC_BUCKET,
};
use crate::linstor::placement::{PlacementInputs, PlacementSnapshot};
use crate::linstor::{LinstorError, LinstorReader};
use crate::pipeline::{Knobs, PipelineStats};
use crate::servicebus::depth::{DepthCollector, EntityDepth};
use crate::servicebus::lag::{LagSnapshot, LagTracker};
use crate::servicebus::Entity;

/// Batch observations kept per (batch rows, concurrency) setting.
const BATCHES_PER_SETTING: usize = 2_000;

/// Series names the collectors write.
pub mod names {
    /// Messages per second arriving (received plus growth of the active count), all entities.
    pub const ARRIVAL_RATE: &str = "arrival_rate";
    /// Active messages per entity (`entity` label).
    pub const QUEUE_ACTIVE: &str = "queue_active";
    /// Dead-lettered messages per entity.
    pub const QUEUE_DEAD_LETTER: &str = "queue_dead_letter";
    /// Scheduled messages per entity.
    pub const QUEUE_SCHEDULED: &str = "queue_scheduled";
    /// Messages in flight per partition key (`key` label).
    pub const LAG_IN_FLIGHT: &str = "lag_in_flight";
    /// Age of the oldest unsettled message per partition key, seconds.
    pub const LAG_OLDEST_AGE_S: &str = "lag_oldest_age_s";
    /// p99 end-to-end latency per partition key, milliseconds.
    pub const LAG_E2E_P99_MS: &str = "lag_e2e_p99_ms";
    /// p99 batch write latency per batch size class (`max_rows` label), milliseconds.
    pub const WRITE_P99_MS: &str = "write_latency_p99_ms";
    /// Failed batch writes in the step.
    pub const WRITE_ERRORS: &str = "write_errors";
    /// Free KiB per pool and node (`node`, `pool` labels).
    pub const POOL_FREE_KIB: &str = "pool_free_kib";
    /// Used fraction per pool and node.
    pub const POOL_USED_FRACTION: &str = "pool_used_fraction";
    /// Free KiB of a pool class summed over its nodes (`pool` label).
    pub const POOL_CLASS_FREE_KIB: &str = "pool_class_free_kib";
}

/// Why a collection step failed in part. The step records what it could; this names what it could not.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The metric store refused a sample.
    #[error("metric store")]
    Store(#[from] StoreError),
    /// LINSTOR could not be read.
    #[error("linstor placement")]
    Linstor(#[from] LinstorError),
    /// The depth of an entity could not be read.
    #[error("queue depth of {entity}: {message}")]
    Depth {
        /// The entity.
        entity: String,
        /// Why.
        message: String,
    },
}

impl CollectError {
    /// Whether the next step may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            CollectError::Store(e) => e.is_retriable(),
            CollectError::Linstor(e) => e.is_retriable(),
            CollectError::Depth { .. } => true,
        }
    }
}

/// The read handles collectors sample. Every one is optional, so a partial deployment still collects the rest.
#[derive(Default, Clone)]
pub struct Sources {
    /// Queue depth from the management endpoint, with the entities to read.
    pub depth: Option<(DepthCollector, Vec<Entity>)>,
    /// Lag per partition key.
    pub lag: Option<Arc<LagTracker>>,
    /// The writer's per-batch observations.
    pub writes: Option<Arc<ObservationWindow>>,
    /// The pipeline's counters.
    pub stats: Option<Arc<PipelineStats>>,
    /// The knobs in force (read only): the settings the agent plans from. (Batch measurements carry the setting
    /// they were sent under.)
    pub knobs: Option<watch::Receiver<Knobs>>,
    /// LINSTOR with the read credential.
    pub linstor: Option<LinstorReader>,
}

/// Batch measurements for one (batch rows, concurrency) setting.
#[derive(Debug, Clone, Default)]
pub struct SettingBatches {
    /// Recent batch observations while the setting was in force, oldest first.
    pub batches: VecDeque<BatchObservation>,
}

/// What the latest step saw, for the planner and chat-ops.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Unix seconds of the step.
    pub at: i64,
    /// The latest depth per entity.
    pub depth: Vec<EntityDepth>,
    /// Messages per second arriving over the last step.
    pub arrival_per_s: Option<f64>,
    /// Lag per partition key.
    pub lag: Option<LagSnapshot>,
    /// The placement inputs and the snapshot computed from them.
    pub placement: Option<(PlacementInputs, PlacementSnapshot)>,
    /// Batch measurements per (batch rows, concurrency), accumulated over steps.
    pub batches: BTreeMap<(u32, u32), SettingBatches>,
    /// Mean bytes per row written, over the observations seen.
    pub avg_row_bytes: f64,
    /// Errors of the latest step (what could not be collected), as sentences.
    pub errors: Vec<String>,
}

/// Samples every source on each call of [`Collector::step`] and writes the series into the store.
pub struct Collector {
    sources: Sources,
    store: Arc<MetricStore>,
    last_received: Option<(i64, u64, u64)>,
    last_batches: u64,
    last_errors: u64,
    bytes_rows: (u64, u64),
    state: Collected,
    lag_window: std::time::Duration,
}

fn key(name: &str) -> SeriesKey {
    SeriesKey::new(name)
}

/// Adds a sample to the step's batch; a value that is not a finite number is named in `errors` instead.
fn record(
    pending: &mut Vec<(SeriesKey, Sample)>,
    k: SeriesKey,
    at: i64,
    value: f64,
    errors: &mut Vec<String>,
) {
    if value.is_finite() {
        pending.push((k, Sample { at, value }));
    } else {
        errors.push(format!("{k} at {at}: {value} is not a finite number"));
    }
}

impl Collector {
    /// A collector over `sources` writing into `store`, with lag percentiles over the completions of the last
    /// `lag_window` (at most the lag tracker's own window).
    pub fn new(sources: Sources, store: Arc<MetricStore>, lag_window: std::time::Duration) -> Self {
        Collector {
            sources,
            store,
            last_received: None,
            last_batches: 0,
            last_errors: 0,
            bytes_rows: (0, 0),
            state: Collected::default(),
            lag_window,
        }
    }

    /// The store samples go to.
    pub fn store(&self) -> &Arc<MetricStore> {
        &self.store
    }

    /// What the latest step saw.
    pub fn latest(&self) -> &Collected {
        &self.state
    }

    /// Samples everything once at `now` (Unix seconds). Sources that fail are named in `latest().errors`.
    pub async fn step(&mut self, now: i64) -> &Collected {
        let mut errors = Vec::new();
        // Every sample of the step, written to the store at the end in one call.
        let mut pending: Vec<(SeriesKey, Sample)> = Vec::new();
        self.state.at = now;

        // Queue depth per entity.
        let mut active_total = 0u64;
        let mut depths = Vec::new();
        if let Some((collector, entities)) = &self.sources.depth {
            for entity in entities {
                match collector.depth(entity).await {
                    Ok(d) => depths.push(d),
                    Err(e) => errors.push(
                        CollectError::Depth {
                            entity: entity.to_string(),
                            message: e.to_string(),
                        }
                        .to_string(),
                    ),
                }
            }
        }
        for d in &depths {
            active_total += d.counts.active;
            let label = |n: &str| key(n).with_label("entity", d.entity.clone());
            record(
                &mut pending,
                label(names::QUEUE_ACTIVE),
                now,
                d.counts.active as f64,
                &mut errors,
            );
            record(
                &mut pending,
                label(names::QUEUE_DEAD_LETTER),
                now,
                d.counts.dead_letter as f64,
                &mut errors,
            );
            record(
                &mut pending,
                label(names::QUEUE_SCHEDULED),
                now,
                d.counts.scheduled as f64,
                &mut errors,
            );
        }
        if !depths.is_empty() {
            self.state.depth = depths;
        }

        // Arrival rate: what was received plus what piled up, per second since the last step.
        if let Some(stats) = &self.sources.stats {
            let received = stats.snapshot().received;
            if let Some((at, prev_received, prev_active)) = self.last_received {
                let dt = (now - at).max(1) as f64;
                let grown = active_total as f64 - prev_active as f64;
                let rate = ((received.saturating_sub(prev_received)) as f64 + grown).max(0.0) / dt;
                self.state.arrival_per_s = Some(rate);
                record(
                    &mut pending,
                    key(names::ARRIVAL_RATE),
                    now,
                    rate,
                    &mut errors,
                );
            }
            self.last_received = Some((now, received, active_total));
        }

        // Lag per partition key.
        if let Some(lag) = &self.sources.lag {
            let snap = lag.snapshot_over(self.lag_window);
            for (k, l) in &snap.keys {
                let label = |n: &str| key(n).with_label("key", k.clone());
                record(
                    &mut pending,
                    label(names::LAG_IN_FLIGHT),
                    now,
                    l.in_flight as f64,
                    &mut errors,
                );
                record(
                    &mut pending,
                    label(names::LAG_OLDEST_AGE_S),
                    now,
                    l.oldest_age_ms as f64 / 1e3,
                    &mut errors,
                );
                if let Some(p99) = l.latency_p99_ms {
                    record(
                        &mut pending,
                        label(names::LAG_E2E_P99_MS),
                        now,
                        p99 as f64,
                        &mut errors,
                    );
                }
            }
            self.state.lag = Some(snap);
        }

        // Write latency per batch size class and errors; new batches attributed to the setting they were sent
        // under (a batch in flight across a knob change measures the old setting).
        if let Some(writes) = &self.sources.writes {
            let snap = writes.snapshot();
            for class in &snap.by_size {
                if class.p99_ms > 0.0 {
                    let k =
                        key(names::WRITE_P99_MS).with_label("max_rows", class.max_rows.to_string());
                    record(&mut pending, k, now, class.p99_ms, &mut errors);
                }
            }
            let new_errors = snap.total_errors.saturating_sub(self.last_errors);
            record(
                &mut pending,
                key(names::WRITE_ERRORS),
                now,
                new_errors as f64,
                &mut errors,
            );
            self.last_errors = snap.total_errors;
            let fresh = snap.total_batches.saturating_sub(self.last_batches) as usize;
            self.last_batches = snap.total_batches;
            let recent = writes.recent();
            let start = recent.len().saturating_sub(fresh);
            for o in &recent[start..] {
                if o.outcome == BatchOutcome::Ok {
                    self.bytes_rows.0 += o.bytes as u64;
                    self.bytes_rows.1 += o.rows as u64;
                }
            }
            for o in unmixed(&recent[start..], &recent) {
                let entry = self
                    .state
                    .batches
                    .entry((o.batch_rows, o.concurrency))
                    .or_default();
                entry.batches.push_back(o);
                if entry.batches.len() > BATCHES_PER_SETTING {
                    entry.batches.pop_front();
                }
            }
            if self.bytes_rows.1 > 0 {
                self.state.avg_row_bytes = self.bytes_rows.0 as f64 / self.bytes_rows.1 as f64;
            }
        }

        // Pool capacity, read with GET only.
        if let Some(reader) = &self.sources.linstor {
            match read_placement(reader).await {
                Ok(inputs) => {
                    let snapshot = PlacementSnapshot::from_inputs(&inputs);
                    let mut classes: BTreeMap<&str, u64> = BTreeMap::new();
                    for p in &snapshot.pools {
                        let label = |n: &str| {
                            key(n)
                                .with_label("node", p.node.clone())
                                .with_label("pool", p.pool.clone())
                        };
                        record(
                            &mut pending,
                            label(names::POOL_FREE_KIB),
                            now,
                            p.free_kib as f64,
                            &mut errors,
                        );
                        if p.total_kib > 0 {
                            let used = 1.0 - p.free_kib as f64 / p.total_kib as f64;
                            record(
                                &mut pending,
                                label(names::POOL_USED_FRACTION),
                                now,
                                used,
                                &mut errors,
                            );
                        }
                        *classes.entry(p.pool.as_str()).or_default() += p.free_kib;
                    }
                    for (pool, free) in classes {
                        let k = key(names::POOL_CLASS_FREE_KIB).with_label("pool", pool);
                        record(&mut pending, k, now, free as f64, &mut errors);
                    }
                    self.state.placement = Some((inputs, snapshot));
                }
                Err(e) => errors.push(format!("linstor placement: {}", e.reason())),
            }
        }

        let count = pending.len();
        if let Err(e) = self.store.record_all(pending).await {
            errors.push(format!("recording the step's {count} samples: {e}"));
        }
        for e in &errors {
            tracing::warn!(error = %e, "collection step incomplete");
        }
        self.state.errors = errors;
        &self.state
    }
}

/// Everything the placement snapshot and the planner's observed state are built from, read with GET only.
pub async fn read_placement(reader: &LinstorReader) -> Result<PlacementInputs, LinstorError> {
    let (controller_props, nodes, pools, groups, definitions, resources) = tokio::try_join!(
        reader.controller_properties(),
        reader.nodes(),
        reader.storage_pools(),
        reader.resource_groups(),
        reader.resource_definitions(),
        reader.resources(&[]),
    )?;
    Ok(PlacementInputs {
        controller_props,
        nodes,
        pools,
        groups,
        definitions,
        resources,
    })
}

/// Metric history in Cassandra's `metric_history` table, through [`OwnTables`].
///
/// The series column holds the key as JSON, so labels with any characters survive the round trip. A partition
/// holds one hour of every series, so a collection step is one single-partition batch; the series names are
/// listed once each in `metric_series` the first time this process writes them.
pub struct TableHistory {
    tables: Arc<OwnTables>,
    /// Series this process has listed in `metric_series` already.
    registered: Mutex<HashSet<String>>,
}

fn history_err(e: CassandraError) -> StoreError {
    StoreError::History {
        retriable: e.is_retriable(),
        source: Box::new(e),
    }
}

fn encode(key: &SeriesKey) -> String {
    // Serializing a struct of strings to JSON cannot fail.
    serde_json::to_string(key).unwrap_or_else(|_| key.name.clone())
}

fn to_time(at: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl TableHistory {
    /// History over `tables`.
    pub fn new(tables: Arc<OwnTables>) -> Self {
        TableHistory {
            tables,
            registered: Mutex::new(HashSet::new()),
        }
    }

    fn registered(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.registered
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The hour buckets that exist and overlap `from <= at < to` (Unix seconds).
    async fn buckets(&self, from: i64, to: i64) -> Result<Vec<i64>, StoreError> {
        let per_bucket = MS_PER_METRIC_BUCKET / 1000;
        Ok(self
            .tables
            .metric_buckets()
            .await
            .map_err(history_err)?
            .into_iter()
            .filter(|&b| b >= from.div_euclid(per_bucket) && b <= (to - 1).div_euclid(per_bucket))
            .collect())
    }
}

#[async_trait::async_trait]
impl SampleHistory for TableHistory {
    async fn append(&self, samples: &[(SeriesKey, Sample)]) -> Result<(), StoreError> {
        let rows: Vec<(String, OffsetDateTime, f64)> = samples
            .iter()
            .map(|(key, s)| (encode(key), to_time(s.at), s.value))
            .collect();
        // Listed before the samples are written, so every series with samples can be found again.
        let new: Vec<String> = {
            let known = self.registered();
            let mut new: Vec<String> = rows
                .iter()
                .map(|(series, _, _)| series)
                .filter(|series| !known.contains(*series))
                .cloned()
                .collect();
            new.sort();
            new.dedup();
            new
        };
        if !new.is_empty() {
            self.tables
                .register_metric_series(&new)
                .await
                .map_err(history_err)?;
            self.registered().extend(new);
        }
        self.tables
            .insert_metric_samples(&rows)
            .await
            .map_err(history_err)
    }

    async fn range(&self, key: &SeriesKey, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let series = encode(key);
        let per_bucket = MS_PER_METRIC_BUCKET / 1000;
        let mut out = Vec::new();
        // Only the buckets that exist: a range from the beginning of time must not query every hour since.
        for bucket in self.buckets(from, to).await? {
            let lo = (bucket * per_bucket).max(from);
            let hi = ((bucket + 1) * per_bucket).min(to);
            let rows = self
                .tables
                .load_metric_samples(&series, to_time(lo), to_time(hi))
                .await
                .map_err(history_err)?;
            out.extend(rows.into_iter().map(|(t, value)| Sample {
                at: t.unix_timestamp(),
                value,
            }));
        }
        out.sort_by_key(|s| s.at);
        Ok(out)
    }

    async fn keys(&self) -> Result<Vec<SeriesKey>, StoreError> {
        let series = self.tables.metric_series().await.map_err(history_err)?;
        // A series written by something else (not JSON) is not one of ours and is skipped.
        Ok(series
            .iter()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// Reads whole hours, newest first, until every listed series has `capacity` samples or the hours run out:
    /// a restart reads the last few partitions, not one query per series and hour.
    async fn recent(
        &self,
        capacity: usize,
        before: i64,
    ) -> Result<HashMap<SeriesKey, Vec<Sample>>, StoreError> {
        let keys = self.keys().await?;
        let wanted: HashMap<String, SeriesKey> =
            keys.into_iter().map(|k| (encode(&k), k)).collect();
        let mut newest_first: HashMap<String, Vec<Sample>> = HashMap::new();
        let mut buckets = self.buckets(i64::MIN, before).await?;
        buckets.reverse();
        for bucket in buckets {
            if wanted
                .keys()
                .all(|s| newest_first.get(s).is_some_and(|v| v.len() >= capacity))
            {
                break;
            }
            let mut rows = self
                .tables
                .load_metric_bucket(bucket)
                .await
                .map_err(history_err)?;
            rows.sort_by_key(|r| std::cmp::Reverse(r.1));
            for (series, at, value) in rows {
                let at = at.unix_timestamp();
                if at >= before || !wanted.contains_key(&series) {
                    continue;
                }
                let samples = newest_first.entry(series).or_default();
                if samples.len() < capacity {
                    samples.push(Sample { at, value });
                }
            }
        }
        Ok(wanted
            .into_iter()
            .map(|(series, key)| {
                let mut samples = newest_first.remove(&series).unwrap_or_default();
                samples.reverse();
                (key, samples)
            })
            .collect())
    }
}

/// Most samples a [`WriteBehindHistory`] keeps waiting; past it the oldest are dropped (with a warning), so a node
/// that refuses writes for hours cannot grow the queue without bound.
const MOST_QUEUED_SAMPLES: usize = 200_000;

/// Samples per write of a [`WriteBehindHistory`]: a long hold must not become one huge batch.
const SAMPLES_PER_WRITE: usize = 2_000;

/// Metric history written behind the collector: an append queues the step's samples and returns, and a task of
/// its own writes what has queued through a [`TableHistory`], after [`OwnTables::give_way`]. Samples held while
/// the pipeline keeps its write slots busy go together afterwards, one batch per hour bucket.
///
/// What this gives up: a sample reaches the window before the table, so a crash loses the samples still queued
/// (at most [`crate::cassandra::GiveWayConfig::max_hold`] of them, plus one write), and a restart reloads the
/// window without them. A failed write is retried while it is retriable, else logged and dropped; the step that
/// queued it has long finished. [`SampleHistory::flush`] writes what is queued at once (the agent calls it when it
/// stops).
pub struct WriteBehindHistory {
    table: Arc<TableHistory>,
    queue: Arc<Mutex<VecDeque<(SeriesKey, Sample)>>>,
    wake: Arc<tokio::sync::Notify>,
    /// Held while a write runs, so a flush does not race the background task for the same samples' order.
    writing: Arc<tokio::sync::Mutex<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl WriteBehindHistory {
    /// Starts the writing task over `tables` (it needs a tokio runtime).
    pub fn start(tables: Arc<OwnTables>) -> Self {
        let table = Arc::new(TableHistory::new(tables.clone()));
        let queue: Arc<Mutex<VecDeque<(SeriesKey, Sample)>>> = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let writing = Arc::new(tokio::sync::Mutex::new(()));
        let task = tokio::spawn({
            let (table, queue, wake, writing) =
                (table.clone(), queue.clone(), wake.clone(), writing.clone());
            async move {
                loop {
                    wake.notified().await;
                    tables.give_way().await;
                    let _writing = writing.lock().await;
                    if let Err(e) = write_queued(&table, &queue).await {
                        tracing::warn!(
                            error = %error_chain(&e),
                            "writing metric history failed; retrying in a second"
                        );
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        wake.notify_one();
                    }
                }
            }
        });
        WriteBehindHistory {
            table,
            queue,
            wake,
            writing,
            task,
        }
    }

    /// Samples queued and not yet written.
    pub fn queued(&self) -> usize {
        lock_queue(&self.queue).len()
    }
}

impl Drop for WriteBehindHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock_queue(
    queue: &Mutex<VecDeque<(SeriesKey, Sample)>>,
) -> std::sync::MutexGuard<'_, VecDeque<(SeriesKey, Sample)>> {
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes the queue through `table`, a write of at most [`SAMPLES_PER_WRITE`] at a time. A retriable failure puts
/// the samples back at the front and returns the error; any other drops them with a warning.
async fn write_queued(
    table: &TableHistory,
    queue: &Mutex<VecDeque<(SeriesKey, Sample)>>,
) -> Result<(), StoreError> {
    loop {
        let chunk: Vec<(SeriesKey, Sample)> = {
            let mut q = lock_queue(queue);
            let n = q.len().min(SAMPLES_PER_WRITE);
            q.drain(..n).collect()
        };
        if chunk.is_empty() {
            return Ok(());
        }
        match table.append(&chunk).await {
            Ok(()) => {}
            Err(
                e @ StoreError::History {
                    retriable: true, ..
                },
            ) => {
                let mut q = lock_queue(queue);
                for s in chunk.into_iter().rev() {
                    q.push_front(s);
                }
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(samples = chunk.len(), error = %error_chain(&e), "metric samples could not be written; dropped");
            }
        }
    }
}

#[async_trait::async_trait]
impl SampleHistory for WriteBehindHistory {
    async fn append(&self, samples: &[(SeriesKey, Sample)]) -> Result<(), StoreError> {
        {
            let mut q = lock_queue(&self.queue);
            q.extend(samples.iter().cloned());
            let over = q.len().saturating_sub(MOST_QUEUED_SAMPLES);
            if over > 0 {
                q.drain(..over);
                tracing::warn!(
                    dropped = over,
                    "metric history queue full: the oldest samples were dropped unwritten"
                );
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The table's samples and the queued ones, oldest first.
    async fn range(&self, key: &SeriesKey, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let mut out = self.table.range(key, from, to).await?;
        out.extend(
            lock_queue(&self.queue)
                .iter()
                .filter(|(k, s)| k == key && s.at >= from && s.at < to)
                .map(|(_, s)| *s),
        );
        out.sort_by_key(|s| s.at);
        out.dedup_by_key(|s| s.at);
        Ok(out)
    }

    async fn keys(&self) -> Result<Vec<SeriesKey>, StoreError> {
        let mut keys = self.table.keys().await?;
        keys.extend(lock_queue(&self.queue).iter().map(|(k, _)| k.clone()));
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn recent(
        &self,
        capacity: usize,
        before: i64,
    ) -> Result<HashMap<SeriesKey, Vec<Sample>>, StoreError> {
        self.table.recent(capacity, before).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        write_queued(&self.table, &self.queue).await
    }
}
