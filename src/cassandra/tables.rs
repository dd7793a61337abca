//! Typed access to trimtab's own tables (metric samples, forecasts, proposals, audit log) and event reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::errors::ExecutionError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use time::OffsetDateTime;

use super::config::CassandraConfig;
use super::error::CassandraError;
use super::schema::AUDIT_BUCKET;
use super::writer::{day_of, timestamp};

/// Milliseconds per `metric_history` partition (one hour).
pub const MS_PER_METRIC_BUCKET: i64 = 3_600_000;

/// The `metric_history` partition a sample time falls in.
pub fn metric_bucket(at: OffsetDateTime) -> i64 {
    timestamp(at).0.div_euclid(MS_PER_METRIC_BUCKET)
}

/// `audit_log` columns as read: seq, prev_hash, hash, record.
type AuditColumns = (i64, Option<String>, Option<String>, Option<String>);
/// `events` columns as read: message_id, event_time, enqueued_at, payload.
type EventColumns = (
    String,
    Option<CqlTimestamp>,
    Option<CqlTimestamp>,
    Option<String>,
);

/// One record of the audit log as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// Hash of this record.
    pub hash: String,
    /// The record as JSON.
    pub record: String,
}

/// A proposal as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposalRow {
    /// Proposal id.
    pub id: String,
    /// State name (proposed, approved, applied, ...).
    pub state: String,
    /// The proposal as JSON.
    pub json: String,
    /// When it was last written.
    pub updated: OffsetDateTime,
}

/// One forecast step, with its later actual value and score once known.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRow {
    /// Series forecast.
    pub series: String,
    /// When the forecast was made.
    pub made_at: OffsetDateTime,
    /// Horizon step, from 1.
    pub step: i32,
    /// The time the step predicts.
    pub target_ts: OffsetDateTime,
    /// Point forecast.
    pub point: f64,
    /// Lower bound of the interval.
    pub lo: f64,
    /// Upper bound of the interval.
    pub hi: f64,
    /// What was observed at `target_ts`, once known.
    pub actual: Option<f64>,
    /// The score of the forecast against `actual`, once known.
    pub score: Option<f64>,
}

/// One stored event, as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Service Bus message id.
    pub message_id: String,
    /// The event's own time.
    pub event_time: OffsetDateTime,
    /// When Service Bus enqueued it.
    pub enqueued_at: OffsetDateTime,
    /// The payload as JSON text.
    pub payload: String,
}

/// Prepared statements over trimtab's tables.
pub struct OwnTables {
    session: Arc<Session>,
    /// What the background writers (metric history, forecasts, audit mirror) wait for; unset, they write at once.
    give_way: std::sync::OnceLock<super::GiveWay>,
    keyspace: String,
    insert_sample: PreparedStatement,
    register_series: PreparedStatement,
    load_samples: PreparedStatement,
    load_bucket: PreparedStatement,
    list_series: PreparedStatement,
    list_buckets: PreparedStatement,
    append_audit: PreparedStatement,
    load_audit: PreparedStatement,
    upsert_proposal: PreparedStatement,
    insert_forecast: PreparedStatement,
    score_forecast: PreparedStatement,
    load_forecasts: PreparedStatement,
    load_events: PreparedStatement,
}

fn time_of(t: CqlTimestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl OwnTables {
    /// Prepares every statement on a session whose keyspace already has the schema.
    pub async fn new(
        session: Arc<Session>,
        config: &CassandraConfig,
    ) -> Result<OwnTables, CassandraError> {
        let ks = &config.keyspace;
        let prepare = |text: String| {
            let session = session.clone();
            let config = config.clone();
            async move {
                let mut p = session.prepare(text.as_str()).await.map_err(|source| {
                    CassandraError::Prepare {
                        statement: text.clone(),
                        source: Box::new(source),
                    }
                })?;
                p.set_is_idempotent(true);
                p.set_consistency(config.consistency.driver());
                p.set_request_timeout(Some(config.request_timeout()));
                Ok::<_, CassandraError>(p)
            }
        };
        Ok(OwnTables {
            insert_sample: prepare(format!("INSERT INTO {ks}.metric_history (bucket, series, ts, value) VALUES (?, ?, ?, ?)")).await?,
            register_series: prepare(format!("INSERT INTO {ks}.metric_series (home, series) VALUES (0, ?)")).await?,
            load_samples: prepare(format!(
                "SELECT ts, value FROM {ks}.metric_history WHERE bucket = ? AND series = ? AND ts >= ? AND ts < ?"
            ))
            .await?,
            load_bucket: prepare(format!("SELECT series, ts, value FROM {ks}.metric_history WHERE bucket = ?")).await?,
            list_series: prepare(format!("SELECT series FROM {ks}.metric_series WHERE home = 0")).await?,
            list_buckets: prepare(format!("SELECT DISTINCT bucket FROM {ks}.metric_history")).await?,
            append_audit: prepare(format!(
                "INSERT INTO {ks}.audit_log (bucket, seq, prev_hash, hash, record) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            load_audit: prepare(format!("SELECT seq, prev_hash, hash, record FROM {ks}.audit_log WHERE bucket = ?")).await?,
            upsert_proposal: prepare(format!("INSERT INTO {ks}.proposals (id, state, json, updated) VALUES (?, ?, ?, ?)")).await?,
            insert_forecast: prepare(format!(
                "INSERT INTO {ks}.forecasts (series, made_at, step, target_ts, point, lo, hi) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ))
            .await?,
            score_forecast: prepare(format!(
                "INSERT INTO {ks}.forecasts (series, made_at, step, actual, score) VALUES (?, ?, ?, ?, ?)"
            ))
            .await?,
            load_forecasts: prepare(format!(
                "SELECT made_at, step, target_ts, point, lo, hi, actual, score FROM {ks}.forecasts WHERE series = ?"
            ))
            .await?,
            load_events: prepare(format!(
                "SELECT message_id, event_time, enqueued_at, payload FROM {ks}.events WHERE stream = ? AND day = ?"
            ))
            .await?,
            keyspace: ks.clone(),
            session,
            give_way: std::sync::OnceLock::new(),
        })
    }

    /// Makes [`OwnTables::give_way`] hold the background writers while the pipeline's writes keep their slots
    /// busy (on a node the tables share with the pipeline's events). Set once, as the app is built: a second call
    /// is logged and ignored.
    pub fn give_way_to(&self, give_way: super::GiveWay) {
        if self.give_way.set(give_way).is_err() {
            tracing::warn!("the agent's writes already give way to one pipeline; keeping that one");
        }
    }

    /// Waits, as configured by [`OwnTables::give_way_to`], while the pipeline is busy; returns how long. Called by
    /// the writers of metric history, forecasts and the audit mirror before they write, never by the executor's
    /// proposal state.
    pub async fn give_way(&self) -> std::time::Duration {
        match self.give_way.get() {
            Some(g) => g.wait().await,
            None => std::time::Duration::ZERO,
        }
    }

    fn query_err(what: &str) -> impl Fn(ExecutionError) -> CassandraError + '_ {
        move |source| CassandraError::Query {
            what: what.to_string(),
            source: Box::new(source),
        }
    }

    fn decode_err(what: &str) -> impl Fn(String) -> CassandraError + '_ {
        move |reason| CassandraError::Decode {
            what: what.to_string(),
            reason,
        }
    }

    async fn rows<R>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, CassandraError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(Self::query_err(what))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        let typed = rows
            .rows::<R>()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        typed
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| Self::decode_err(what)(e.to_string()))
    }

    /// Runs `statement` once per value set: one request for a single set, else one unlogged batch. Callers
    /// keep a batch to one partition, which Cassandra exempts from its batch size checks.
    async fn write_all<V: scylla::serialize::row::SerializeRow>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: Vec<V>,
    ) -> Result<(), CassandraError> {
        match values.len() {
            0 => Ok(()),
            1 => self
                .session
                .execute_unpaged(statement, &values[0])
                .await
                .map(drop)
                .map_err(Self::query_err(what)),
            n => {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in 0..n {
                    batch.append_statement(statement.clone());
                }
                batch.set_is_idempotent(true);
                batch.set_consistency(statement.get_consistency().unwrap_or_default());
                batch.set_request_timeout(statement.get_request_timeout());
                self.session
                    .batch(&batch, &values)
                    .await
                    .map(drop)
                    .map_err(Self::query_err(what))
            }
        }
    }

    /// Stores metric samples `(series, time, value)`: one single-partition batch per hour they fall in (one
    /// for a collection step). Writing the same series and time again overwrites.
    pub async fn insert_metric_samples(
        &self,
        samples: &[(String, OffsetDateTime, f64)],
    ) -> Result<(), CassandraError> {
        let mut by_bucket: BTreeMap<i64, Vec<(i64, &str, CqlTimestamp, f64)>> = BTreeMap::new();
        for (series, at, value) in samples {
            let bucket = metric_bucket(*at);
            by_bucket.entry(bucket).or_default().push((
                bucket,
                series.as_str(),
                timestamp(*at),
                *value,
            ));
        }
        for values in by_bucket.into_values() {
            self.write_all("insert metric samples", &self.insert_sample, values)
                .await?;
        }
        Ok(())
    }

    /// Lists series names in `metric_series` (one single-partition batch).
    pub async fn register_metric_series(&self, series: &[String]) -> Result<(), CassandraError> {
        let values: Vec<(&str,)> = series.iter().map(|s| (s.as_str(),)).collect();
        self.write_all("register metric series", &self.register_series, values)
            .await
    }

    /// Every series name registered in `metric_series`.
    pub async fn metric_series(&self) -> Result<Vec<String>, CassandraError> {
        let rows: Vec<(String,)> = self
            .rows("list metric series", &self.list_series, ())
            .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// The `metric_history` partitions that exist (hours since the epoch), oldest first. A scan of partition
    /// keys, done only to read history back.
    pub async fn metric_buckets(&self) -> Result<Vec<i64>, CassandraError> {
        let rows: Vec<(i64,)> = self
            .rows("list metric buckets", &self.list_buckets, ())
            .await?;
        let mut buckets: Vec<i64> = rows.into_iter().map(|(b,)| b).collect();
        buckets.sort_unstable();
        Ok(buckets)
    }

    /// Every sample in one hour's partition, `(series, time, value)`.
    pub async fn load_metric_bucket(
        &self,
        bucket: i64,
    ) -> Result<Vec<(String, OffsetDateTime, f64)>, CassandraError> {
        let rows: Vec<(String, CqlTimestamp, f64)> = self
            .rows("load metric bucket", &self.load_bucket, (bucket,))
            .await?;
        Ok(rows
            .into_iter()
            .map(|(s, t, v)| (s, time_of(t), v))
            .collect())
    }

    /// The samples of a series with `from <= ts < to`, oldest first: one query per hour of the range, so callers
    /// reading far back list the partitions that exist first ([`OwnTables::metric_buckets`]).
    pub async fn load_metric_samples(
        &self,
        series: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<Vec<(OffsetDateTime, f64)>, CassandraError> {
        let (from, to) = (timestamp(from), timestamp(to));
        let mut out = Vec::new();
        if to.0 <= from.0 {
            return Ok(out);
        }
        for bucket in
            from.0.div_euclid(MS_PER_METRIC_BUCKET)..=(to.0 - 1).div_euclid(MS_PER_METRIC_BUCKET)
        {
            let rows: Vec<(CqlTimestamp, f64)> = self
                .rows(
                    "load metric samples",
                    &self.load_samples,
                    (bucket, series, from, to),
                )
                .await?;
            out.extend(rows.into_iter().map(|(t, v)| (time_of(t), v)));
        }
        Ok(out)
    }

    /// Appends audit records: one request per bucket (its partition), so a burst of records costs the node a
    /// request per bucket rather than one per record. Writing the same `seq` again overwrites it (the caller owns
    /// the chain).
    pub async fn append_audit(&self, rows: &[AuditRow]) -> Result<(), CassandraError> {
        let mut by_bucket: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for r in rows {
            let bucket = (r.seq / AUDIT_BUCKET) as i64;
            by_bucket.entry(bucket).or_default().push((
                bucket,
                r.seq as i64,
                r.prev_hash.as_str(),
                r.hash.as_str(),
                r.record.as_str(),
            ));
        }
        for values in by_bucket.into_values() {
            self.write_all("append audit record", &self.append_audit, values)
                .await?;
        }
        Ok(())
    }

    /// The whole audit log in `seq` order (reads bucket after bucket until an empty one).
    pub async fn load_audit(&self) -> Result<Vec<AuditRow>, CassandraError> {
        let mut out = Vec::new();
        for bucket in 0i64.. {
            let rows: Vec<AuditColumns> = self
                .rows("load audit log", &self.load_audit, (bucket,))
                .await?;
            if rows.is_empty() {
                break;
            }
            out.extend(rows.into_iter().map(|(seq, prev, hash, record)| AuditRow {
                seq: seq as u64,
                prev_hash: prev.unwrap_or_default(),
                hash: hash.unwrap_or_default(),
                record: record.unwrap_or_default(),
            }));
        }
        Ok(out)
    }

    /// Writes a proposal's state and JSON, replacing what was there.
    pub async fn upsert_proposal(
        &self,
        id: &str,
        state: &str,
        json: &str,
    ) -> Result<(), CassandraError> {
        let now = timestamp(OffsetDateTime::now_utc());
        self.session
            .execute_unpaged(&self.upsert_proposal, (id, state, json, now))
            .await
            .map_err(Self::query_err("upsert proposal"))?;
        Ok(())
    }

    /// Every proposal, in no particular order.
    pub async fn load_proposals(&self) -> Result<Vec<ProposalRow>, CassandraError> {
        let query = format!(
            "SELECT id, state, json, updated FROM {}.proposals",
            self.keyspace
        );
        let what = "load proposals";
        let result = self
            .session
            .query_unpaged(query, &[])
            .await
            .map_err(Self::query_err(what))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        let typed = rows
            .rows::<(String, Option<String>, Option<String>, Option<CqlTimestamp>)>()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        typed
            .map(|r| {
                r.map(|(id, state, json, updated)| ProposalRow {
                    id,
                    state: state.unwrap_or_default(),
                    json: json.unwrap_or_default(),
                    updated: updated.map_or(OffsetDateTime::UNIX_EPOCH, time_of),
                })
                .map_err(|e| Self::decode_err(what)(e.to_string()))
            })
            .collect()
    }

    /// Stores forecast steps (their actual and score come later); the steps of one forecast share the series'
    /// partition, so they go as one batch.
    pub async fn insert_forecasts(&self, rows: &[ForecastRow]) -> Result<(), CassandraError> {
        let mut by_series: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for f in rows {
            by_series.entry(f.series.as_str()).or_default().push((
                f.series.as_str(),
                timestamp(f.made_at),
                f.step,
                timestamp(f.target_ts),
                f.point,
                f.lo,
                f.hi,
            ));
        }
        for values in by_series.into_values() {
            self.write_all("insert forecast", &self.insert_forecast, values)
                .await?;
        }
        Ok(())
    }

    /// Records the observed value and score of forecast steps of one series, `(made_at, step, actual, score)`:
    /// one batch, since they share the series' partition.
    pub async fn score_forecasts(
        &self,
        series: &str,
        scores: &[(OffsetDateTime, i32, f64, f64)],
    ) -> Result<(), CassandraError> {
        let values: Vec<_> = scores
            .iter()
            .map(|&(made_at, step, actual, score)| {
                (series, timestamp(made_at), step, actual, score)
            })
            .collect();
        self.write_all("score forecast", &self.score_forecast, values)
            .await
    }

    /// Every forecast step of a series, by `made_at` then step.
    pub async fn load_forecasts(&self, series: &str) -> Result<Vec<ForecastRow>, CassandraError> {
        type Row = (
            CqlTimestamp,
            i32,
            Option<CqlTimestamp>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        );
        let rows: Vec<Row> = self
            .rows("load forecasts", &self.load_forecasts, (series,))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(made_at, step, target, point, lo, hi, actual, score)| ForecastRow {
                    series: series.to_string(),
                    made_at: time_of(made_at),
                    step,
                    target_ts: target.map_or(OffsetDateTime::UNIX_EPOCH, time_of),
                    point: point.unwrap_or(f64::NAN),
                    lo: lo.unwrap_or(f64::NAN),
                    hi: hi.unwrap_or(f64::NAN),
                    actual,
                    score,
                },
            )
            .collect())
    }

    /// How many rows `events` holds. A full scan: for tests and the demo summary, not for production sizes.
    pub async fn count_events(&self) -> Result<u64, CassandraError> {
        let what = "count events";
        let query = format!("SELECT COUNT(*) FROM {}.events", self.keyspace);
        let result = self
            .session
            .query_unpaged(query, &[])
            .await
            .map_err(Self::query_err(what))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        let (n,): (i64,) = rows
            .single_row()
            .map_err(|e| Self::decode_err(what)(e.to_string()))?;
        Ok(n as u64)
    }

    /// The events of one stream on one UTC day (the day of `on`), by message id.
    pub async fn load_events(
        &self,
        stream: &str,
        on: OffsetDateTime,
    ) -> Result<Vec<StoredEvent>, CassandraError> {
        let rows: Vec<EventColumns> = self
            .rows("load events", &self.load_events, (stream, day_of(on)))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(message_id, event_time, enqueued_at, payload)| StoredEvent {
                    message_id,
                    event_time: event_time.map_or(OffsetDateTime::UNIX_EPOCH, time_of),
                    enqueued_at: enqueued_at.map_or(OffsetDateTime::UNIX_EPOCH, time_of),
                    payload: payload.unwrap_or_default(),
                },
            )
            .collect())
    }
}
