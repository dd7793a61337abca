//! The mirror sink: a second copy of every audit record, outside this machine (Cassandra in production).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::AuditRecord;

/// Why a record did not reach the mirror.
#[derive(Debug, thiserror::Error)]
#[error("audit mirror unavailable: {reason}")]
pub struct MirrorError {
    /// What went wrong, without secrets.
    pub reason: String,
}

/// A second, remote copy of the audit chain.
///
/// `publish` is called after the record is durable in the local file, in seq order. It must be idempotent on
/// `seq` (a record can be published again after a failure) and should not block for long: implementations
/// backed by a network store hand the record to a task and return.
pub trait AuditMirror: Send + Sync {
    /// Stores one record; an error keeps it in the log's backlog to be published again with the next append.
    fn publish(&self, record: &AuditRecord) -> Result<(), MirrorError>;
}

/// An in-memory mirror for tests and the embedded demo; it can be told to fail.
#[derive(Default)]
pub struct MemoryMirror {
    records: Mutex<Vec<AuditRecord>>,
    failing: AtomicBool,
}

impl MemoryMirror {
    /// An empty, working mirror.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every following `publish` fail (true) or succeed (false).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The records published so far, in order.
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl AuditMirror for MemoryMirror {
    fn publish(&self, record: &AuditRecord) -> Result<(), MirrorError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(MirrorError {
                reason: "memory mirror set to fail".into(),
            });
        }
        let mut records = self.records.lock().map_err(|_| MirrorError {
            reason: "memory mirror lock poisoned".into(),
        })?;
        if !records.iter().any(|r| r.seq == record.seq) {
            records.push(record.clone());
        }
        Ok(())
    }
}
