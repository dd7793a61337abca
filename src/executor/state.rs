//! The state directory: the pause flag, the apply ledger, and atomic JSON writes shared by the proposal store.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ExecutorError;

/// The default state directory, relative to where trimtab runs.
pub const DEFAULT_STATE_DIR: &str = "./trimtab-state";

/// Who paused applying and why (the content of the `paused` flag file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseFlag {
    /// Format version (1).
    pub version: u32,
    /// Who paused.
    pub by: String,
    /// Unix seconds.
    pub at: i64,
    /// Why, as given.
    pub reason: String,
}

/// Unix seconds of applied changes within the last hour, for the changes-per-hour cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ledger {
    version: u32,
    applied_at: Vec<i64>,
}

/// trimtab's state directory: `paused`, `ledger.json`, `proposals/`, `audit.log`.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> ExecutorError + 'a {
    move |source| ExecutorError::State {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Writes `value` as JSON to `path` atomically: a synced temporary file renamed over it, then the directory synced.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ExecutorError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(value).map_err(ExecutorError::Encode)?;
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp, "create"))?;
    f.write_all(&text).map_err(io_err(&tmp, "write"))?;
    f.sync_all().map_err(io_err(&tmp, "sync"))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, "rename"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Best effort: not every filesystem lets a directory be synced; the rename is already atomic.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads JSON from `path`; `None` if the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ExecutorError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ExecutorError::BadStateFile {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ExecutorError::State {
            path: path.to_path_buf(),
            op: "read",
            source,
        }),
    }
}

impl StateDir {
    /// The state directory at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The audit log inside it.
    pub fn audit_log(&self) -> PathBuf {
        crate::audit::cli::log_path(&self.root)
    }

    /// The proposals folder inside it.
    pub fn proposals_dir(&self) -> PathBuf {
        self.root.join("proposals")
    }

    fn pause_path(&self) -> PathBuf {
        self.root.join("paused")
    }

    /// The pause flag, if applying is paused.
    pub fn paused(&self) -> Result<Option<PauseFlag>, ExecutorError> {
        read_json(&self.pause_path())
    }

    /// Pauses applying (the kill switch); every later apply is refused until [`StateDir::resume`].
    pub fn pause(&self, by: &str, reason: &str, now: i64) -> Result<PauseFlag, ExecutorError> {
        let flag = PauseFlag {
            version: 1,
            by: by.into(),
            at: now,
            reason: reason.into(),
        };
        write_json_atomic(&self.pause_path(), &flag)?;
        Ok(flag)
    }

    /// Resumes applying; returns whether it was paused.
    pub fn resume(&self) -> Result<bool, ExecutorError> {
        let path = self.pause_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ExecutorError::State {
                path,
                op: "remove",
                source,
            }),
        }
    }

    fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.json")
    }

    /// How many changes were applied in the hour before `now`.
    pub fn changes_last_hour(&self, now: i64) -> Result<u32, ExecutorError> {
        let ledger: Ledger = read_json(&self.ledger_path())?.unwrap_or_default();
        Ok(ledger
            .applied_at
            .iter()
            .filter(|&&t| now - t < 3600)
            .count() as u32)
    }

    /// Records one applied change at `now`.
    pub fn record_applied(&self, now: i64) -> Result<(), ExecutorError> {
        let mut ledger: Ledger = read_json(&self.ledger_path())?.unwrap_or_default();
        ledger.version = 1;
        ledger.applied_at.retain(|&t| now - t < 3600);
        ledger.applied_at.push(now);
        write_json_atomic(&self.ledger_path(), &ledger)
    }
}
