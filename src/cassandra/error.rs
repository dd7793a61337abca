//! The Cassandra module's error type and the one place that decides which failures are worth retrying.

use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};

/// Everything that can go wrong talking to Cassandra.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CassandraError {
    /// The configuration failed validation; nothing was contacted.
    #[error("invalid cassandra config: {0}")]
    Config(String),
    /// No session could be opened to the contact points.
    #[error("cannot connect to cassandra at {contact_points}")]
    Connect {
        /// The contact points tried, comma-separated.
        contact_points: String,
        #[source]
        source: std::sync::Arc<NewSessionError>,
    },
    /// A schema statement (keyspace or table creation) failed.
    #[error("schema statement failed: {statement}")]
    Schema {
        /// The statement's first line.
        statement: String,
        #[source]
        source: Box<ExecutionError>,
    },
    /// A statement could not be prepared.
    #[error("cannot prepare {statement}")]
    Prepare {
        /// The statement text.
        statement: String,
        #[source]
        source: Box<PrepareError>,
    },
    /// A write of one event row failed; `retriable` says whether trying again later may succeed.
    #[error("write of message {message_id} failed")]
    Write {
        /// The Service Bus message id of the row.
        message_id: String,
        #[source]
        source: Box<ExecutionError>,
    },
    /// A row is larger than `max_row_bytes`; it can never be written.
    #[error("row for message {message_id} is {bytes} bytes, over the limit of {limit} bytes")]
    RowTooLarge {
        /// The Service Bus message id of the row.
        message_id: String,
        /// The row's estimated size.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A row is malformed (for example an empty stream or message id).
    #[error("row for message {message_id:?} is invalid: {reason}")]
    InvalidRow {
        /// The Service Bus message id of the row (possibly empty, which may be the problem).
        message_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A read or a write to one of trimtab's own tables failed.
    #[error("{what} failed")]
    Query {
        /// What was being done, such as `load audit log`.
        what: String,
        #[source]
        source: Box<ExecutionError>,
    },
    /// A result could not be decoded into the expected columns.
    #[error("cannot decode the result of {what}: {reason}")]
    Decode {
        /// What was being read.
        what: String,
        /// The decoder's complaint.
        reason: String,
    },
}

impl CassandraError {
    /// Whether the same request may succeed later: timeouts, overload, unavailability, broken or refused
    /// connections. Invalid queries, type mismatches and oversized rows or batches are permanent.
    pub fn is_retriable(&self) -> bool {
        match self {
            CassandraError::Connect { .. } => true,
            CassandraError::Write { source, .. }
            | CassandraError::Schema { source, .. }
            | CassandraError::Query { source, .. } => execution_is_retriable(source),
            CassandraError::Prepare { source, .. } => prepare_is_retriable(source),
            CassandraError::Config(_)
            | CassandraError::RowTooLarge { .. }
            | CassandraError::InvalidRow { .. }
            | CassandraError::Decode { .. } => false,
        }
    }

    /// A short label for metrics and observations: `write_timeout`, `overloaded`, `invalid`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            CassandraError::Write { source, .. }
            | CassandraError::Schema { source, .. }
            | CassandraError::Query { source, .. } => execution_kind(source),
            CassandraError::Connect { .. } => "connection",
            CassandraError::Prepare { .. } => "prepare",
            CassandraError::Config(_) => "config",
            CassandraError::RowTooLarge { .. } => "row_too_large",
            CassandraError::InvalidRow { .. } => "invalid_row",
            CassandraError::Decode { .. } => "decode",
        }
    }

    /// The message id this error is about, for errors about one row.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            CassandraError::Write { message_id, .. }
            | CassandraError::RowTooLarge { message_id, .. }
            | CassandraError::InvalidRow { message_id, .. } => Some(message_id),
            _ => None,
        }
    }
}

fn db_is_retriable(db: &DbError) -> bool {
    match db {
        DbError::WriteTimeout { .. }
        | DbError::ReadTimeout { .. }
        | DbError::Overloaded
        | DbError::Unavailable { .. }
        | DbError::IsBootstrapping
        | DbError::RateLimitReached { .. }
        | DbError::TruncateError
        | DbError::Unprepared { .. }
        | DbError::ServerError => true,
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::FunctionFailure { .. }
        | DbError::AuthenticationError
        | DbError::Unauthorized
        | DbError::ConfigError
        | DbError::ProtocolError
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. } => false,
        // An error code this driver does not know: retry, and let the message's delivery count
        // dead-letter it eventually, rather than drop data on a guess.
        _ => true,
    }
}

fn attempt_is_retriable(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => db_is_retriable(db),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => false,
        _ => true,
    }
}

fn prepare_is_retriable(e: &PrepareError) -> bool {
    match e {
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_is_retriable(first_attempt),
        _ => true,
    }
}

/// The single classification of driver errors.
pub(crate) fn execution_is_retriable(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(_) => false,
        ExecutionError::PrepareError(p) => prepare_is_retriable(p),
        ExecutionError::LastAttemptError(a) => attempt_is_retriable(a),
        // Empty plans, broken pools, client timeouts, schema agreement: all transient.
        _ => true,
    }
}

pub(crate) fn execution_kind(e: &ExecutionError) -> &'static str {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => match db {
            DbError::WriteTimeout { .. } => "write_timeout",
            DbError::ReadTimeout { .. } => "read_timeout",
            DbError::Overloaded => "overloaded",
            DbError::Unavailable { .. } => "unavailable",
            DbError::Invalid => "invalid",
            DbError::SyntaxError => "syntax",
            _ => "server_error",
        },
        ExecutionError::LastAttemptError(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::EmptyPlan => "connection",
        ExecutionError::RequestTimeout(_) => "client_timeout",
        ExecutionError::BadQuery(_) => "bad_query",
        _ => "other",
    }
}
