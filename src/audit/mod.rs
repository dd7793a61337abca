//! The append-only, hash-chained audit log: every proposal, decision, approval and apply, written before the change.
//!
//! Each record carries `seq`, `prev_hash` and a sha256 `hash` over its canonical JSON, so editing, removing or
//! reordering any record breaks the chain at a seq that [`verify`] names. [`AuditLog::append`] writes one line
//! and syncs it to disk before returning, then publishes it to an [`AuditMirror`] (Cassandra in production).
//! A crash mid-write leaves a torn last line: [`AuditLog::open`] saves it aside, cuts it, and records that it did.

pub mod canonical;
pub mod cli;
mod log;
mod mirror;
mod record;

pub use log::{tail, verify, AuditLog, TornTail, VerifyFailure, VerifyReport};
pub use mirror::{AuditMirror, MemoryMirror, MirrorError};
pub use record::{AuditKind, AuditRecord, AUDIT_VERSION, GENESIS_HASH};

use std::path::PathBuf;

/// Why the audit log could not be opened, appended to, or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A filesystem call on the log failed.
    #[error("audit log {path}: {op} failed")]
    Io {
        /// The log file (or its torn-tail copy).
        path: PathBuf,
        /// What was being done: open, lock, read, write, sync, truncate.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line in the log is not a valid record, or the chain is broken; trimtab will not append after it.
    #[error("audit log {path} is corrupt at line {line} (seq {seq}): {reason}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The seq that was expected at that line.
        seq: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("audit record could not be encoded")]
    Encode(#[source] serde_json::Error),
}

impl AuditError {
    /// Whether trying again later may succeed (a full disk or a lock held elsewhere, not a corrupt log).
    pub fn is_retriable(&self) -> bool {
        matches!(self, AuditError::Io { .. })
    }
}
