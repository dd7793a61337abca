//! The local audit file: open (with torn-tail recovery), append with fsync under a file lock, verify, tail.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{AuditError, AuditKind, AuditMirror, AuditRecord, AUDIT_VERSION, GENESIS_HASH};

/// A torn last line found when the log was opened: the bytes after the last newline, left by a crash mid-write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// Byte offset in the log where the torn line started (the log was cut back to it).
    pub offset: u64,
    /// How many bytes the torn line had.
    pub bytes: u64,
    /// Where the torn bytes were saved before the log was cut.
    pub saved_to: PathBuf,
    /// sha256 of the torn bytes.
    pub sha256: String,
}

/// The result of a successful [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// How many records the chain has.
    pub records: u64,
    /// The hash of the last record ([`GENESIS_HASH`] for an empty log).
    pub head_hash: String,
}

/// The first place where [`verify`] found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("audit chain broken at seq {seq} (line {line}): {reason}")]
pub struct VerifyFailure {
    /// The first bad seq: the seq the record at `line` should have had.
    pub seq: u64,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The append side of the audit log. One per process; several processes may append to the same file,
/// serialised by an exclusive lock on it.
pub struct AuditLog {
    path: PathBuf,
    file: File,
    next_seq: u64,
    last_hash: String,
    known_len: u64,
    mirror: Option<Arc<dyn AuditMirror>>,
    mirror_backlog: Vec<AuditRecord>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Checks one line against the chain so far; returns the parsed record or why it is bad.
fn check_line(text: &str, expected_seq: u64, prev_hash: &str) -> Result<AuditRecord, String> {
    let record: AuditRecord =
        serde_json::from_str(text).map_err(|e| format!("not a valid audit record: {e}"))?;
    if record.version != AUDIT_VERSION {
        return Err(format!(
            "unsupported record version {}, expected {AUDIT_VERSION}",
            record.version
        ));
    }
    if record.seq != expected_seq {
        return Err(format!("seq is {}, expected {expected_seq}", record.seq));
    }
    if record.prev_hash != prev_hash {
        return Err(format!(
            "prev_hash {} does not match the previous record's hash {prev_hash}",
            record.prev_hash
        ));
    }
    let computed = record
        .compute_hash()
        .map_err(|e| format!("cannot hash record: {e}"))?;
    if computed != record.hash {
        return Err(format!(
            "hash {} does not match its content (computed {computed})",
            record.hash
        ));
    }
    Ok(record)
}

/// Walks complete lines of `bytes` (which start at chain position `seq`/`prev_hash`) and returns the new
/// position, the offset just after the last complete line, and the first failure, if any.
struct Walk {
    next_seq: u64,
    last_hash: String,
    complete_len: usize,
    records: Vec<AuditRecord>,
    failure: Option<VerifyFailure>,
}

fn walk(bytes: &[u8], first_line: usize, seq: u64, prev_hash: &str) -> Walk {
    let mut w = Walk {
        next_seq: seq,
        last_hash: prev_hash.to_string(),
        complete_len: 0,
        records: Vec::new(),
        failure: None,
    };
    let mut start = 0usize;
    let mut line = first_line;
    while let Some(pos) = bytes[start..].iter().position(|b| *b == b'\n') {
        let end = start + pos;
        let text = String::from_utf8_lossy(&bytes[start..end]);
        match check_line(&text, w.next_seq, &w.last_hash) {
            Ok(record) => {
                w.next_seq += 1;
                w.last_hash = record.hash.clone();
                w.records.push(record);
            }
            Err(reason) => {
                w.failure = Some(VerifyFailure {
                    seq: w.next_seq,
                    line,
                    reason,
                });
                return w;
            }
        }
        start = end + 1;
        w.complete_len = start;
        line += 1;
    }
    w
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, checking the whole chain.
    ///
    /// A torn last line (bytes after the final newline, from a crash mid-write) is copied to
    /// `<path>.torn-<offset>`, cut from the log, and a [`AuditKind::TornTail`] record saying so is appended;
    /// the returned [`TornTail`] reports it. A broken chain anywhere else is an error: trimtab will not append
    /// to a log it cannot vouch for.
    pub fn open(path: &Path) -> Result<(Self, Option<TornTail>), AuditError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent, "create directory"))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io(path, "open"))?;
        file.lock().map_err(io(path, "lock"))?;
        let result = Self::open_locked(path, file);
        if let Ok((log, _)) = &result {
            log.file.unlock().map_err(io(path, "unlock"))?;
        }
        result
    }

    fn open_locked(path: &Path, mut file: File) -> Result<(Self, Option<TornTail>), AuditError> {
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io(path, "seek"))?;
        file.read_to_end(&mut bytes).map_err(io(path, "read"))?;
        let w = walk(&bytes, 1, 0, GENESIS_HASH);
        if let Some(f) = w.failure {
            return Err(AuditError::Corrupt {
                path: path.to_path_buf(),
                line: f.line,
                seq: f.seq,
                reason: f.reason,
            });
        }
        let mut log = AuditLog {
            path: path.to_path_buf(),
            file,
            next_seq: w.next_seq,
            last_hash: w.last_hash,
            known_len: w.complete_len as u64,
            mirror: None,
            mirror_backlog: Vec::new(),
        };
        let torn = if w.complete_len < bytes.len() {
            let tail = &bytes[w.complete_len..];
            let offset = w.complete_len as u64;
            let saved_to = PathBuf::from(format!("{}.torn-{offset}", path.display()));
            let mut copy = File::create(&saved_to).map_err(io(&saved_to, "create"))?;
            copy.write_all(tail).map_err(io(&saved_to, "write"))?;
            copy.sync_all().map_err(io(&saved_to, "sync"))?;
            log.file.set_len(offset).map_err(io(path, "truncate"))?;
            log.file.sync_all().map_err(io(path, "sync"))?;
            let torn = TornTail {
                offset,
                bytes: tail.len() as u64,
                saved_to,
                sha256: hex::encode(Sha256::digest(tail)),
            };
            tracing::warn!(path = %path.display(), offset, bytes = torn.bytes, saved_to = %torn.saved_to.display(),
                "audit log had a torn last line; saved aside and cut");
            let detail = serde_json::to_value(&torn).map_err(AuditError::Encode)?;
            log.append_locked(AuditKind::TornTail, "audit", "", detail)?;
            Some(torn)
        } else {
            None
        };
        Ok((log, torn))
    }

    /// Sends every following record to `mirror` as well.
    pub fn with_mirror(mut self, mirror: Arc<dyn AuditMirror>) -> Self {
        self.mirror = Some(mirror);
        self
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that have not reached the mirror yet (they are retried with the next append).
    pub fn mirror_backlog(&self) -> usize {
        self.mirror_backlog.len()
    }

    /// Appends one record and syncs it to disk before returning; then publishes it to the mirror.
    ///
    /// The caller writes this record *before* doing what it describes, so a crash right after leaves the
    /// intent on disk.
    pub fn append(
        &mut self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<AuditRecord, AuditError> {
        self.file.lock().map_err(io(&self.path, "lock"))?;
        let result = self.append_locked(kind, actor, subject, detail);
        let unlocked = self.file.unlock().map_err(io(&self.path, "unlock"));
        let record = result?;
        unlocked?;
        self.publish(record.clone());
        Ok(record)
    }

    fn append_locked(
        &mut self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<AuditRecord, AuditError> {
        self.catch_up()?;
        let mut record = AuditRecord {
            version: AUDIT_VERSION,
            seq: self.next_seq,
            at_unix_ms: now_unix_ms(),
            kind,
            actor: actor.to_string(),
            subject: subject.to_string(),
            detail,
            prev_hash: self.last_hash.clone(),
            hash: String::new(),
        };
        record.hash = record.compute_hash().map_err(AuditError::Encode)?;
        let mut line = serde_json::to_vec(&record).map_err(AuditError::Encode)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(io(&self.path, "write"))?;
        self.file.sync_data().map_err(io(&self.path, "sync"))?;
        self.next_seq += 1;
        self.last_hash = record.hash.clone();
        self.known_len += line.len() as u64;
        Ok(record)
    }

    /// Reads records other processes appended since we last looked, so our next seq follows theirs.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let len = self.file.metadata().map_err(io(&self.path, "stat"))?.len();
        if len == self.known_len {
            return Ok(());
        }
        let mut bytes = Vec::new();
        self.file
            .seek(SeekFrom::Start(self.known_len))
            .map_err(io(&self.path, "seek"))?;
        self.file
            .read_to_end(&mut bytes)
            .map_err(io(&self.path, "read"))?;
        let w = walk(&bytes, 0, self.next_seq, &self.last_hash);
        if let Some(f) = w.failure {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                line: f.line,
                seq: f.seq,
                reason: f.reason,
            });
        }
        if w.complete_len < bytes.len() {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                line: 0,
                seq: w.next_seq,
                reason: "another writer left a torn line; reopen the log to recover it".into(),
            });
        }
        self.next_seq = w.next_seq;
        self.last_hash = w.last_hash;
        self.known_len += w.complete_len as u64;
        Ok(())
    }

    fn publish(&mut self, record: AuditRecord) {
        let Some(mirror) = &self.mirror else { return };
        self.mirror_backlog.push(record);
        while let Some(first) = self.mirror_backlog.first() {
            match mirror.publish(first) {
                Ok(()) => {
                    self.mirror_backlog.remove(0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, backlog = self.mirror_backlog.len(),
                        "audit record not mirrored yet; kept for the next append");
                    break;
                }
            }
        }
    }
}

/// Checks the whole chain in the file at `path`: seq without gaps, each `prev_hash` equal to the previous
/// record's hash, each hash equal to its content, and no torn last line.
///
/// The outer error is a failure to read the file; the inner one names the first bad seq.
pub fn verify(path: &Path) -> Result<Result<VerifyReport, VerifyFailure>, AuditError> {
    let bytes = std::fs::read(path).map_err(io(path, "read"))?;
    let w = walk(&bytes, 1, 0, GENESIS_HASH);
    if let Some(f) = w.failure {
        return Ok(Err(f));
    }
    if w.complete_len < bytes.len() {
        return Ok(Err(VerifyFailure {
            seq: w.next_seq,
            line: w.records.len() + 1,
            reason: format!(
                "torn last line: {} bytes after the last newline (a crash mid-write); opening the log saves and cuts it",
                bytes.len() - w.complete_len
            ),
        }));
    }
    Ok(Ok(VerifyReport {
        records: w.next_seq,
        head_hash: w.last_hash,
    }))
}

/// The last `n` records of the log at `path`, oldest first; an error if the chain is broken.
pub fn tail(path: &Path, n: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let bytes = std::fs::read(path).map_err(io(path, "read"))?;
    let w = walk(&bytes, 1, 0, GENESIS_HASH);
    if let Some(f) = w.failure {
        return Err(AuditError::Corrupt {
            path: path.to_path_buf(),
            line: f.line,
            seq: f.seq,
            reason: f.reason,
        });
    }
    let skip = w.records.len().saturating_sub(n);
    Ok(w.records.into_iter().skip(skip).collect())
}
