//! Cassandra: the batching, idempotent `scylla` event writer, the schema, and trimtab's own tables.
//!
//! * [`config`]: [`CassandraConfig`], validated without IO.
//! * [`schema`]: the keyspace and tables, created if absent (the CQL is in that module's doc).
//! * [`writer`]: [`EventWriter`], prepared idempotent INSERTs grouped into unlogged batches of one
//!   partition, bounded by live [`WriterKnobs`], with retries and a [`WriterSnapshot`] of recent batches.
//! * [`error`]: [`CassandraError`] and the one place that decides what is retriable.
//! * [`tables`]: [`OwnTables`], typed reads and writes of metric samples, forecasts, proposals and the audit log.
//! * [`give_way`]: [`GiveWay`], which holds trimtab's own writes back while the pipeline's use most of their
//!   slots on the node they share.
//! * [`observe`]: the bounded window of [`BatchObservation`]s behind the snapshot.
//!
//! Semantics: writes are idempotent (a redelivered message overwrites its own row, because the
//! message id is in the primary key), so at-least-once delivery yields exactly one row per message.
//! A row outcome of `Ok` means the write was acknowledged at the configured consistency.

pub mod config;
pub mod error;
pub mod give_way;
pub mod observe;
pub mod schema;
pub mod tables;
pub mod writer;

pub use config::{CassandraConfig, Consistency, Replication};
pub use error::CassandraError;
pub use give_way::{GiveWay, GiveWayConfig};
pub use observe::{
    unmixed, BatchObservation, BatchOutcome, ObservationWindow, SizeClass, WriterSnapshot,
};
pub use schema::ensure_schema;
pub use tables::{
    metric_bucket, AuditRow, ForecastRow, OwnTables, ProposalRow, StoredEvent, MS_PER_METRIC_BUCKET,
};
pub use writer::{batch_groups, connect_session, EventRow, EventWriter, RowOutcome, WriterKnobs};
