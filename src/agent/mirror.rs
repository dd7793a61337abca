//! The audit mirror into Cassandra's `audit_log`: `publish` hands the record to a task and returns at once.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditMirror, AuditRecord, MirrorError};
use crate::cassandra::{AuditRow, OwnTables};

/// Most records one mirror write carries, and most bytes of records (under Cassandra's 50 KiB batch fail
/// threshold, which a batch in one partition is exempt from since 3.6, but which bounds one request anyway).
const RECORDS_PER_WRITE: usize = 64;
const BYTES_PER_WRITE: usize = 48 * 1024;

/// Publishes audit records to Cassandra from a background task, in the order the log appended them.
///
/// The local file is written and synced before `publish` is called, so a record the task fails to store is not
/// lost: the local log keeps it and the task logs a warning. Nothing sends it to the table again; the table then
/// lacks the records of that write (up to [`RECORDS_PER_WRITE`]) until someone re-publishes them (writes are
/// idempotent on `seq`).
///
/// The records that queued up while a write was in flight go together in the next one (one request per bucket,
/// at most [`RECORDS_PER_WRITE`] records and [`BYTES_PER_WRITE`] bytes). trimtab's tables may share the node it
/// tunes: a plan step audits a record for every proposal and gate decision, and one request per record took a
/// share of a small node's write workers in the middle of the bursts trimtab was cutting writes in flight for.
pub struct CassandraMirror {
    tx: mpsc::UnboundedSender<AuditRecord>,
}

/// A record as its `audit_log` row; `None` (logged) if it does not encode.
fn row_of(record: &AuditRecord) -> Option<AuditRow> {
    match serde_json::to_string(record) {
        Ok(json) => Some(AuditRow {
            seq: record.seq,
            prev_hash: record.prev_hash.clone(),
            hash: record.hash.clone(),
            record: json,
        }),
        Err(e) => {
            tracing::error!(seq = record.seq, error = %e, "audit record not encodable for cassandra");
            None
        }
    }
}

impl CassandraMirror {
    /// Starts the task writing to `tables`; it drains what it was given, then stops, once `token` is cancelled.
    pub fn spawn(tables: Arc<OwnTables>, token: CancellationToken) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<AuditRecord>();
        tokio::spawn(async move {
            let mut carried: Option<AuditRow> = None;
            loop {
                let first = match carried.take() {
                    Some(row) => row,
                    None => {
                        let record = tokio::select! {
                            r = rx.recv() => r,
                            _ = token.cancelled() => {
                                rx.close();
                                rx.recv().await
                            }
                        };
                        let Some(record) = record else { break };
                        let Some(row) = row_of(&record) else { continue };
                        row
                    }
                };
                // Records that arrive while the pipeline keeps the node busy wait and go together afterwards.
                tokio::select! {
                    _ = tables.give_way() => {}
                    _ = token.cancelled() => {}
                }
                let mut bytes = first.record.len();
                let mut rows = vec![first];
                while rows.len() < RECORDS_PER_WRITE {
                    let Ok(record) = rx.try_recv() else { break };
                    let Some(row) = row_of(&record) else { continue };
                    if bytes + row.record.len() > BYTES_PER_WRITE {
                        carried = Some(row);
                        break;
                    }
                    bytes += row.record.len();
                    rows.push(row);
                }
                let mut tries = 0;
                loop {
                    match tables.append_audit(&rows).await {
                        Ok(()) => break,
                        Err(e) if e.is_retriable() && tries < 3 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(200 * tries)).await;
                        }
                        Err(e) => {
                            tracing::warn!(
                                first_seq = rows[0].seq,
                                records = rows.len(),
                                error = %e,
                                "audit records not mirrored to cassandra; the local log has them"
                            );
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
