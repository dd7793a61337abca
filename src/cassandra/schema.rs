//! Creates trimtab's keyspace and tables when they are absent; the statements are the schema's documentation.
//!
//! ```cql
//! CREATE KEYSPACE IF NOT EXISTS trimtab WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1};
//!
//! -- The pipeline's output. One partition per stream and UTC day of the event time bounds partition
//! -- size; the Service Bus message id is the clustering key, so a redelivered message overwrites its
//! -- own row instead of adding one (writes are idempotent).
//! CREATE TABLE IF NOT EXISTS trimtab.events (
//!     stream text, day text, message_id text,
//!     event_time timestamp, enqueued_at timestamp, written_at timestamp, payload text,
//!     PRIMARY KEY ((stream, day), message_id));
//!
//! -- Collected metrics, one partition per hour (bucket = hours since the epoch) holding every series, so one
//! -- collection step is one single-partition batch rather than a write per sample.
//! CREATE TABLE IF NOT EXISTS trimtab.metric_history (
//!     bucket bigint, series text, ts timestamp, value double,
//!     PRIMARY KEY ((bucket), series, ts));
//!
//! -- The names of the series in metric_history, all in one partition (home = 0): trimtab keeps a few hundred.
//! CREATE TABLE IF NOT EXISTS trimtab.metric_series (
//!     home int, series text,
//!     PRIMARY KEY ((home), series));
//!
//! -- Forecasts per series: each run (made_at) predicts several horizon steps; actual and score are
//! -- filled in later, when the target time has passed.
//! CREATE TABLE IF NOT EXISTS trimtab.forecasts (
//!     series text, made_at timestamp, step int, target_ts timestamp,
//!     point double, lo double, hi double, actual double, score double,
//!     PRIMARY KEY ((series), made_at, step));
//!
//! -- Proposed changes and their state (proposed, approved, applied, ...), as JSON.
//! CREATE TABLE IF NOT EXISTS trimtab.proposals (
//!     id text, state text, json text, updated timestamp,
//!     PRIMARY KEY (id));
//!
//! -- The hash-chained audit log; 65,536 records per partition (bucket = seq / 65536).
//! CREATE TABLE IF NOT EXISTS trimtab.audit_log (
//!     bucket bigint, seq bigint, prev_hash text, hash text, record text,
//!     PRIMARY KEY ((bucket), seq));
//! ```

use scylla::client::session::Session;

use super::config::CassandraConfig;
use super::error::CassandraError;

/// Records per `audit_log` partition.
pub const AUDIT_BUCKET: u64 = 65_536;

/// The table statements, with `{ks}` standing for the keyspace.
const TABLES: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS {ks}.events (stream text, day text, message_id text, event_time timestamp, \
     enqueued_at timestamp, written_at timestamp, payload text, PRIMARY KEY ((stream, day), message_id))",
    "CREATE TABLE IF NOT EXISTS {ks}.metric_history (bucket bigint, series text, ts timestamp, value double, \
     PRIMARY KEY ((bucket), series, ts))",
    "CREATE TABLE IF NOT EXISTS {ks}.metric_series (home int, series text, PRIMARY KEY ((home), series))",
    "CREATE TABLE IF NOT EXISTS {ks}.forecasts (series text, made_at timestamp, step int, target_ts timestamp, \
     point double, lo double, hi double, actual double, score double, PRIMARY KEY ((series), made_at, step))",
    "CREATE TABLE IF NOT EXISTS {ks}.proposals (id text, state text, json text, updated timestamp, PRIMARY KEY (id))",
    "CREATE TABLE IF NOT EXISTS {ks}.audit_log (bucket bigint, seq bigint, prev_hash text, hash text, record text, \
     PRIMARY KEY ((bucket), seq))",
];

/// Every statement `ensure_schema` runs, in order, for the configured keyspace.
pub fn statements(config: &CassandraConfig) -> Vec<String> {
    let ks = &config.keyspace;
    let mut out = vec![format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
        config.replication.cql()
    )];
    out.extend(TABLES.iter().map(|t| t.replace("{ks}", ks)));
    out
}

/// Creates the keyspace and tables if absent. Idempotent: running it against an existing schema changes nothing.
pub async fn ensure_schema(
    session: &Session,
    config: &CassandraConfig,
) -> Result<(), CassandraError> {
    for statement in statements(config) {
        let mut query = scylla::statement::Statement::new(statement.clone());
        query.set_request_timeout(Some(
            config
                .request_timeout()
                .max(std::time::Duration::from_secs(10)),
        ));
        session
            .query_unpaged(query, &[])
            .await
            .map_err(|source| CassandraError::Schema {
                statement: statement
                    .split('(')
                    .next()
                    .unwrap_or(&statement)
                    .trim()
                    .to_string(),
                source: Box::new(source),
            })?;
    }
    tracing::info!(keyspace = %config.keyspace, "cassandra schema ready");
    Ok(())
}
