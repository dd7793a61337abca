//! The audit mirror into Cassandra's `audit_log`: `publish` hands the record to a task and returns at once.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditMirror, AuditRecord, MirrorError};
use crate::cassandra::OwnTables;

/// Publishes audit records to Cassandra from a background task, in the order the log appended them.
///
/// The local file is written and synced before `publish` is called, so a record the task fails to store is not
/// lost: the task logs it and the table is caught up by the next start's reconciliation (writes are idempotent
/// on `seq`).
pub struct CassandraMirror {
    tx: mpsc::UnboundedSender<AuditRecord>,
}

impl CassandraMirror {
    /// Starts the task writing to `tables`; it drains what it was given, then stops, once `token` is cancelled.
    pub fn spawn(tables: Arc<OwnTables>, token: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditRecord>();
        tokio::spawn(async move {
            loop {
                let record = tokio::select! {
                    r = rx.recv() => r,
                    _ = token.cancelled() => {
                        rx.close();
                        rx.recv().await
                    }
                };
                let Some(record) = record else { break };
                let json = match serde_json::to_string(&record) {
                    Ok(j) => j,
                    Err(e) => {
                        tracing::error!(seq = record.seq, error = %e, "audit record not encodable for cassandra");
                        continue;
                    }
                };
                let mut tries = 0;
                loop {
                    match tables
                        .append_audit(record.seq, &record.prev_hash, &record.hash, &json)
                        .await
                    {
                        Ok(()) => break,
                        Err(e) if e.is_retriable() && tries < 3 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                        }
                        Err(e) => {
                            tracing::warn!(seq = record.seq, error = %e, "audit record not mirrored to cassandra; the local log has it");
                            break;
                        }
                    }
                }
            }
        });
        CassandraMirror { tx }
    }
}

impl AuditMirror for CassandraMirror {
    fn publish(&self, record: &AuditRecord) -> Result<(), MirrorError> {
        self.tx.send(record.clone()).map_err(|_| MirrorError {
            reason: "the cassandra mirror task has stopped".into(),
        })
    }
}
