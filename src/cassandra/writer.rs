//! The event writer: prepared idempotent INSERTs in unlogged single-partition batches, bounded concurrency,
//! live knobs, retries with backoff, and one observation per batch attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::config::CassandraConfig;
use super::error::{execution_is_retriable, execution_kind, CassandraError};
use super::observe::{BatchObservation, BatchOutcome, ObservationWindow, WriterSnapshot};
use super::schema;

/// One row of `events`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// The stream (with the day, the partition key).
    pub stream: String,
    /// The Service Bus message id: the clustering key, so a redelivery overwrites its own row.
    pub message_id: String,
    /// The event's own time; its UTC day picks the partition.
    pub event_time: OffsetDateTime,
    /// When Service Bus enqueued the message.
    pub enqueued_at: OffsetDateTime,
    /// The event's payload as JSON text.
    pub payload: String,
}

impl EventRow {
    /// The partition's day, `YYYY-MM-DD` in UTC, of the event time.
    pub fn day(&self) -> String {
        day_of(self.event_time)
    }

    /// The row's size as counted against `max_row_bytes` and `max_batch_bytes`.
    pub fn bytes(&self) -> usize {
        self.stream.len() + 10 + self.message_id.len() + self.payload.len() + 3 * 8
    }
}

/// How [`EventWriter::write`] groups rows into batch requests: by partition (stream, day) in order of first
/// appearance, each partition cut into batches of at most `max_rows` rows and `max_bytes` bytes (a row larger
/// than `max_bytes` still goes, alone). Takes `(index, row)` pairs and returns the indices of each batch, so the
/// pipeline can count the requests a chunk of rows will become before it hands the chunk over.
pub fn batch_groups<'a>(
    rows: impl IntoIterator<Item = (usize, &'a EventRow)>,
    max_rows: usize,
    max_bytes: usize,
) -> Vec<Vec<usize>> {
    let mut partitions: HashMap<(&str, String), Vec<(usize, usize)>> = HashMap::new();
    let mut order = Vec::new();
    for (i, row) in rows {
        let key = (row.stream.as_str(), row.day());
        let group = partitions.entry(key.clone()).or_default();
        if group.is_empty() {
            order.push(key);
        }
        group.push((i, row.bytes()));
    }
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for key in order {
        let mut batch: Vec<usize> = Vec::new();
        let mut bytes = 0;
        for (i, b) in partitions.remove(&key).unwrap_or_default() {
            if !batch.is_empty() && (batch.len() >= max_rows || bytes + b > max_bytes) {
                batches.push(std::mem::take(&mut batch));
                bytes = 0;
            }
            batch.push(i);
            bytes += b;
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
    }
    batches
}

/// The `day` column for a time: `YYYY-MM-DD` in UTC.
pub fn day_of(t: OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

pub(crate) fn timestamp(t: OffsetDateTime) -> CqlTimestamp {
    CqlTimestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The result for one row passed to [`EventWriter::write`].
pub type RowOutcome = Result<(), CassandraError>;

/// The writer's live knobs. Cloning shares them: a setter called from any task takes effect for the
/// next batch formed (rows per batch, bytes) or the next batch sent (in flight).
#[derive(Debug, Clone)]
pub struct WriterKnobs {
    inner: Arc<KnobState>,
}

#[derive(Debug)]
struct KnobState {
    rows_per_batch: AtomicUsize,
    max_batch_bytes: AtomicUsize,
    max_in_flight: AtomicUsize,
    permits: Arc<Semaphore>,
    resize: std::sync::Mutex<()>,
}

impl WriterKnobs {
    /// Knobs starting at the given values (each at least 1).
    pub fn new(rows_per_batch: usize, max_batch_bytes: usize, max_in_flight: usize) -> WriterKnobs {
        let max_in_flight = max_in_flight.max(1);
        WriterKnobs {
            inner: Arc::new(KnobState {
                rows_per_batch: AtomicUsize::new(rows_per_batch.max(1)),
                max_batch_bytes: AtomicUsize::new(max_batch_bytes.max(1)),
                max_in_flight: AtomicUsize::new(max_in_flight),
                permits: Arc::new(Semaphore::new(max_in_flight)),
                resize: std::sync::Mutex::new(()),
            }),
        }
    }

    /// Most rows per batch.
    pub fn rows_per_batch(&self) -> usize {
        self.inner.rows_per_batch.load(Ordering::Relaxed)
    }

    /// Most bytes of row data per batch.
    pub fn max_batch_bytes(&self) -> usize {
        self.inner.max_batch_bytes.load(Ordering::Relaxed)
    }

    /// Most batches in flight.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::Relaxed)
    }

    /// Sets the most rows per batch (at least 1).
    pub fn set_rows_per_batch(&self, n: usize) {
        self.inner.rows_per_batch.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the most bytes per batch (at least 1; a single row larger than this still goes alone).
    pub fn set_max_batch_bytes(&self, n: usize) {
        self.inner
            .max_batch_bytes
            .store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the most batches in flight (at least 1). Lowering it waits for running batches to finish
    /// before their permits disappear; it never cancels a request.
    pub fn set_max_in_flight(&self, n: usize) {
        let n = n.max(1);
        let _guard = self.inner.resize.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.inner.max_in_flight.swap(n, Ordering::Relaxed);
        let permits = &self.inner.permits;
        if n > old {
            permits.add_permits(n - old);
        } else if n < old {
            let want = old - n;
            let rest = want - permits.forget_permits(want);
            if rest > 0 {
                let permits = permits.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        handle.spawn(async move {
                            if let Ok(p) = permits.acquire_many_owned(rest as u32).await {
                                p.forget();
                            }
                        });
                    }
                    Err(_) => tracing::warn!(
                        rest,
                        "max_in_flight lowered outside a runtime: some permits stay until restart"
                    ),
                }
            }
        }
    }

    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.inner.permits.acquire().await.ok()
    }
}

/// Opens a session with the driver's default settings and the configured contact points.
pub async fn connect_session(config: &CassandraConfig) -> Result<Arc<Session>, CassandraError> {
    config.validate()?;
    SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .build()
        .await
        .map(Arc::new)
        .map_err(|e| CassandraError::Connect {
            contact_points: config.contact_points.join(","),
            source: Arc::new(e),
        })
}

/// Writes event rows to `events`. Cheap to share behind an `Arc`; `write` may be called concurrently.
pub struct EventWriter {
    session: Arc<Session>,
    insert: PreparedStatement,
    knobs: WriterKnobs,
    window: Arc<ObservationWindow>,
    config: CassandraConfig,
}

impl EventWriter {
    /// Connects, creates the schema if absent and prepares the INSERT.
    pub async fn connect(config: &CassandraConfig) -> Result<EventWriter, CassandraError> {
        let session = connect_session(config).await?;
        schema::ensure_schema(&session, config).await?;
        EventWriter::new(session, config).await
    }

    /// Prepares the INSERT on an existing session whose keyspace already has the schema.
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
    ) -> Result<EventWriter, CassandraError> {
        config.validate()?;
        let statement = format!(
            "INSERT INTO {}.events (stream, day, message_id, event_time, enqueued_at, written_at, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            config.keyspace
        );
        let mut insert = session
            .prepare(statement.as_str())
            .await
            .map_err(|source| CassandraError::Prepare {
                statement: statement.clone(),
                source: Box::new(source),
            })?;
        insert.set_is_idempotent(true);
        insert.set_consistency(config.consistency.driver());
        insert.set_request_timeout(Some(config.request_timeout()));
        Ok(EventWriter {
            session,
            insert,
            knobs: WriterKnobs::new(
                config.rows_per_batch,
                config.max_batch_bytes,
                config.max_in_flight,
            ),
            window: Arc::new(ObservationWindow::new(config.observation_window)),
            config: config.clone(),
        })
    }

    /// The session, for trimtab's own tables.
    pub fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// The live knobs.
    pub fn knobs(&self) -> WriterKnobs {
        self.knobs.clone()
    }

    /// The observation window, shared with whoever wants to read it.
    pub fn observations(&self) -> Arc<ObservationWindow> {
        self.window.clone()
    }

    /// A summary of recent batches.
    pub fn snapshot(&self) -> WriterSnapshot {
        self.window.snapshot()
    }

    /// Writes rows and returns one outcome per row, in the order given. Rows are grouped by partition
    /// (stream, day) into unlogged batches of at most `rows_per_batch` rows and `max_batch_bytes`
    /// bytes, sent concurrently up to `max_in_flight`. Retriable failures are retried with backoff up
    /// to `max_attempts`; a batch failing permanently is split into single rows, so each error names
    /// the message that caused it.
    pub async fn write(&self, rows: Vec<EventRow>) -> Vec<RowOutcome> {
        let mut outcomes: Vec<Option<RowOutcome>> = vec![None; rows.len()];
        let mut valid = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            match self.check(row) {
                Ok(()) => valid.push((i, row)),
                Err(e) => outcomes[i] = Some(Err(e)),
            }
        }
        let chunks = batch_groups(
            valid,
            self.knobs.rows_per_batch(),
            self.knobs.max_batch_bytes(),
        );
        let done = futures::future::join_all(
            chunks
                .into_iter()
                .map(|chunk| self.send_chunk(&rows, chunk)),
        )
        .await;
        for (i, outcome) in done.into_iter().flatten() {
            outcomes[i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .zip(&rows)
            .map(|(o, row)| {
                o.unwrap_or_else(|| {
                    Err(CassandraError::InvalidRow {
                        message_id: row.message_id.clone(),
                        reason: "row was never sent".into(),
                    })
                })
            })
            .collect()
    }

    fn check(&self, row: &EventRow) -> Result<(), CassandraError> {
        let invalid = |reason: &str| CassandraError::InvalidRow {
            message_id: row.message_id.clone(),
            reason: reason.into(),
        };
        if row.message_id.is_empty() {
            return Err(invalid(
                "empty message id: expected the Service Bus message id",
            ));
        }
        if row.stream.is_empty() {
            return Err(invalid("empty stream: expected a stream name"));
        }
        let bytes = row.bytes();
        if bytes > self.config.max_row_bytes {
            return Err(CassandraError::RowTooLarge {
                message_id: row.message_id.clone(),
                bytes,
                limit: self.config.max_row_bytes,
            });
        }
        Ok(())
    }

    async fn send_chunk(&self, rows: &[EventRow], chunk: Vec<usize>) -> Vec<(usize, RowOutcome)> {
        match self.send_with_retry(rows, &chunk).await {
            Ok(()) => chunk.into_iter().map(|i| (i, Ok(()))).collect(),
            Err(e) if execution_is_retriable(&e) || chunk.len() == 1 => chunk
                .into_iter()
                .map(|i| {
                    (
                        i,
                        Err(CassandraError::Write {
                            message_id: rows[i].message_id.clone(),
                            source: Box::new(e.clone()),
                        }),
                    )
                })
                .collect(),
            Err(e) => {
                tracing::warn!(rows = chunk.len(), error = %e, "batch failed permanently; retrying its rows one by one");
                let mut out = Vec::with_capacity(chunk.len());
                for i in chunk {
                    let outcome = self.send_with_retry(rows, &[i]).await.map_err(|source| {
                        CassandraError::Write {
                            message_id: rows[i].message_id.clone(),
                            source: Box::new(source),
                        }
                    });
                    out.push((i, outcome));
                }
                out
            }
        }
    }

    async fn send_with_retry(
        &self,
        rows: &[EventRow],
        chunk: &[usize],
    ) -> Result<(), ExecutionError> {
        let now = timestamp(OffsetDateTime::now_utc());
        let days: Vec<String> = chunk.iter().map(|&i| rows[i].day()).collect();
        let values: Vec<_> = chunk
            .iter()
            .zip(&days)
            .map(|(&i, day)| {
                let r = &rows[i];
                (
                    r.stream.as_str(),
                    day.as_str(),
                    r.message_id.as_str(),
                    timestamp(r.event_time),
                    timestamp(r.enqueued_at),
                    now,
                    r.payload.as_str(),
                )
            })
            .collect();
        let bytes: usize = chunk.iter().map(|&i| rows[i].bytes()).sum();
        let batch = (chunk.len() > 1).then(|| {
            let mut b = Batch::new(BatchType::Unlogged);
            for _ in chunk {
                b.append_statement(self.insert.clone());
            }
            b.set_is_idempotent(true);
            b.set_consistency(self.config.consistency.driver());
            b.set_request_timeout(Some(self.config.request_timeout()));
            b
        });
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = self.knobs.permit().await;
                let (batch_rows, concurrency) = (
                    self.knobs.rows_per_batch() as u32,
                    self.knobs.max_in_flight() as u32,
                );
                self.window.in_flight.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let result = match &batch {
                    Some(b) => self.session.batch(b, &values).await.map(drop),
                    None => self
                        .session
                        .execute_unpaged(&self.insert, &values[0])
                        .await
                        .map(drop),
                };
                let latency = started.elapsed();
                self.window.in_flight.fetch_sub(1, Ordering::Relaxed);
                let outcome = match &result {
                    Ok(()) => BatchOutcome::Ok,
                    Err(e) if execution_is_retriable(e) => {
                        BatchOutcome::Retriable(execution_kind(e))
                    }
                    Err(e) => BatchOutcome::Permanent(execution_kind(e)),
                };
                self.window.record(BatchObservation {
                    rows: chunk.len(),
                    call_rows: rows.len(),
                    bytes,
                    latency,
                    outcome,
                    attempt,
                    batch_rows,
                    concurrency,
                    ended: Instant::now(),
                });
                result
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if !execution_is_retriable(&e) || attempt >= self.config.max_attempts => {
                    return Err(e)
                }
                Err(e) => {
                    let wait = self.backoff(attempt);
                    tracing::debug!(attempt, rows = chunk.len(), error = %e, wait_ms = wait.as_millis() as u64, "retrying batch");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Exponential backoff with jitter between half and the full step.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .config
            .initial_backoff_ms
            .saturating_mul(1u64 << (attempt - 1).min(20));
        let capped = base.min(self.config.max_backoff_ms).max(1);
        Duration::from_millis(rand::thread_rng().gen_range(capped / 2..=capped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_is_the_utc_date_of_the_event() {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("ts");
        assert_eq!(day_of(t), "2023-11-14");
        let shifted = t.to_offset(time::UtcOffset::from_hms(-10, 0, 0).expect("offset"));
        assert_eq!(day_of(shifted), "2023-11-14");
    }

    fn row(stream: &str, id: usize, payload_bytes: usize) -> EventRow {
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("ts");
        EventRow {
            stream: stream.to_string(),
            message_id: format!("m{id:03}"),
            event_time: t,
            enqueued_at: t,
            payload: "x".repeat(payload_bytes),
        }
    }

    #[test]
    fn batches_are_per_partition_within_the_row_and_byte_caps() {
        // Streams a, b, a, a, b, a: two partitions, a's four rows cut at 3 rows, b's two rows together.
        let rows: Vec<EventRow> = ["a", "b", "a", "a", "b", "a"]
            .iter()
            .enumerate()
            .map(|(i, s)| row(s, i, 100))
            .collect();
        let groups = batch_groups(rows.iter().enumerate(), 3, 1 << 20);
        assert_eq!(groups, vec![vec![0, 2, 3], vec![5], vec![1, 4]]);

        // A byte cap of two rows (each row is 100 B of payload plus its keys) cuts every partition in pairs; a
        // row larger than the cap still goes, alone.
        let two = 2 * rows[0].bytes();
        let groups = batch_groups(rows.iter().enumerate(), 100, two);
        assert_eq!(groups, vec![vec![0, 2], vec![3, 5], vec![1, 4]]);
        let big = [row("a", 9, 10_000), row("a", 10, 100)];
        assert_eq!(
            batch_groups(big.iter().enumerate(), 100, two),
            vec![vec![0], vec![1]]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writers_are_not_starved_while_max_in_flight_moves_under_load() {
        let k = WriterKnobs::new(32, 1024, 8);
        let peak = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..32)
            .map(|_| {
                let (k, peak, running) = (k.clone(), peak.clone(), running.clone());
                tokio::spawn(async move {
                    for _ in 0..100 {
                        let _permit = k.permit().await.expect("permit");
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for n in [2, 8, 1, 16, 3, 8, 2, 32, 1, 8] {
            k.set_max_in_flight(n);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tokio::time::timeout(Duration::from_secs(20), futures::future::join_all(writers))
            .await
            .expect("writers starved while max_in_flight was lowered and raised");
        assert!(
            peak.load(Ordering::SeqCst) <= 32,
            "more writers than any bound"
        );
        tokio::time::timeout(Duration::from_secs(5), async {
            while k.inner.permits.available_permits() != 8 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "permits settled at {}, not the final bound 8",
                k.inner.permits.available_permits()
            )
        });
    }

    #[tokio::test]
    async fn max_in_flight_can_go_up_and_down_at_run_time() {
        let k = WriterKnobs::new(32, 1024, 4);
        k.set_max_in_flight(10);
        assert_eq!(k.inner.permits.available_permits(), 10);
        let held = k.permit().await.expect("permit");
        k.set_max_in_flight(2);
        tokio::task::yield_now().await;
        assert_eq!(k.max_in_flight(), 2);
        assert_eq!(
            k.inner.permits.available_permits(),
            1,
            "one permit held, one left"
        );
        drop(held);
        assert_eq!(k.inner.permits.available_permits(), 2);
    }
}
