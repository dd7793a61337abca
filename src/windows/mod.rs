//! Maintenance windows from policy data (`policies/windows.json`): what is under maintenance, when, and what
//! trimtab does meanwhile.
//!
//! A window names a target (a Cassandra cluster, a LINSTOR node or a storage pool), a time span in RFC 3339, and
//! what happens to ingest that feeds it: `pause` (stop receiving from the listed entities until the window ends),
//! `slow` (receive at most `max_per_second` from them) or `none`. While a window is active the policy gate is
//! given it (`input.windows`), and `policies/windows.rego` denies every placement change that touches its node or
//! pool, and every re-drive into its entities. [`hold::WindowHold`] does the ingest side, audits each pause and
//! resume, and keeps a snapshot for the state.
//!
//! ```json
//! {"version": 1, "windows": [{"id": "cassandra-upgrade", "target": {"cassandra": "main"},
//!   "start": "2026-11-22T02:00:00Z", "end": "2026-11-22T03:00:00Z", "ingest": "pause", "entities": ["events"],
//!   "reason": "rolling upgrade to 5.0"}]}
//! ```

pub mod hold;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use hold::{WindowDecision, WindowHold, WindowsSnapshot};

/// The `version` of `windows.json` this build reads.
pub const WINDOWS_VERSION: u64 = 1;

/// What a window is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A Cassandra cluster, by the name operators use for it.
    Cassandra(String),
    /// A LINSTOR satellite node.
    LinstorNode(String),
    /// A LINSTOR storage pool (on every node).
    StoragePool(String),
}

impl Target {
    /// `cassandra main`, `linstor node n2`, `storage pool pool-ssd`.
    pub fn describe(&self) -> String {
        match self {
            Target::Cassandra(name) => format!("cassandra {name}"),
            Target::LinstorNode(name) => format!("linstor node {name}"),
            Target::StoragePool(name) => format!("storage pool {name}"),
        }
    }
}

/// What happens to ingest feeding the target while the window is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IngestMode {
    /// Stop receiving from the window's entities; messages wait in Service Bus.
    #[default]
    Pause,
    /// Receive at most `max_per_second` from the window's entities.
    Slow,
    /// Leave ingest alone (the window only freezes placement).
    None,
}

/// One maintenance window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// A name unique in the file, used in audit records and gate reasons.
    pub id: String,
    /// What is under maintenance.
    pub target: Target,
    /// When the window opens (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    /// When it closes (RFC 3339); ingest resumes and held-back messages drain.
    #[serde(with = "time::serde::rfc3339")]
    pub end: OffsetDateTime,
    /// What happens to ingest feeding the target.
    #[serde(default)]
    pub ingest: IngestMode,
    /// Service Bus entity paths whose messages go to the target (`events`, `topic/Subscriptions/sub`).
    #[serde(default)]
    pub entities: Vec<String>,
    /// For `slow`: messages per second allowed from each entity.
    #[serde(default)]
    pub max_per_second: Option<u32>,
    /// Why, for people reading the audit log.
    #[serde(default)]
    pub reason: String,
}

impl Window {
    /// Whether the window is open at `now` (start inclusive, end exclusive).
    pub fn active_at(&self, now: OffsetDateTime) -> bool {
        self.start <= now && now < self.end
    }
}

/// The contents of `windows.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowSet {
    /// Format version, [`WINDOWS_VERSION`].
    pub version: u64,
    /// The windows, in any order.
    #[serde(default)]
    pub windows: Vec<Window>,
}

/// A windows file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WindowsError {
    /// The file could not be read.
    #[error("windows file {path} could not be read")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a windows document.
    #[error("windows data is invalid: expected {{\"version\": 1, \"windows\": [...]}}")]
    Parse(#[source] serde_json::Error),
    /// A window is inconsistent.
    #[error("window {id}: {problem}")]
    Invalid {
        /// The window's id.
        id: String,
        /// What is wrong.
        problem: String,
    },
}

impl WindowsError {
    /// Only reading may succeed later (a file being replaced).
    pub fn is_retriable(&self) -> bool {
        matches!(self, WindowsError::Read { .. })
    }
}

impl WindowSet {
    /// Parses and validates windows from policy data.
    pub fn from_value(value: &serde_json::Value) -> Result<WindowSet, WindowsError> {
        let set: WindowSet = serde_json::from_value(value.clone()).map_err(WindowsError::Parse)?;
        set.validate()
    }

    /// Reads and validates a windows file.
    pub fn load(path: &Path) -> Result<WindowSet, WindowsError> {
        let text = std::fs::read_to_string(path).map_err(|source| WindowsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(WindowsError::Parse)?;
        WindowSet::from_value(&value)
    }

    /// Checks the windows without IO and returns them.
    pub fn validate(self) -> Result<WindowSet, WindowsError> {
        let invalid = |id: &str, problem: String| WindowsError::Invalid {
            id: id.to_string(),
            problem,
        };
        if self.version != WINDOWS_VERSION {
            return Err(invalid(
                "(file)",
                format!("version is {}, expected {WINDOWS_VERSION}", self.version),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for w in &self.windows {
            if w.id.is_empty() {
                return Err(invalid("(unnamed)", "id is empty: expected a name".into()));
            }
            if !seen.insert(w.id.as_str()) {
                return Err(invalid(
                    &w.id,
                    "id is used twice: expected unique ids".into(),
                ));
            }
            if w.end <= w.start {
                return Err(invalid(
                    &w.id,
                    format!("end {} is not after start {}", w.end, w.start),
                ));
            }
            match (w.ingest, w.max_per_second) {
                (IngestMode::Slow, None | Some(0)) => {
                    return Err(invalid(
                        &w.id,
                        "ingest is slow but max_per_second is missing or 0: expected a positive rate".into(),
                    ))
                }
                (IngestMode::Pause | IngestMode::Slow, _) if w.entities.is_empty() => {
                    return Err(invalid(
                        &w.id,
                        "ingest is held but no entities are listed: expected the entities that feed the target".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(self)
    }

    /// The windows open at `now`.
    pub fn active_at(&self, now: OffsetDateTime) -> Vec<&Window> {
        self.windows.iter().filter(|w| w.active_at(now)).collect()
    }

    /// The open windows as the policy gate sees them (`input.windows`).
    pub fn gate_input(&self, now: OffsetDateTime) -> serde_json::Value {
        let active: Vec<serde_json::Value> = self
            .active_at(now)
            .into_iter()
            .map(|w| {
                serde_json::json!({
                    "id": w.id,
                    "target": w.target,
                    "target_name": w.target.describe(),
                    "end": w.end.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "entities": w.entities,
                    "reason": w.reason,
                })
            })
            .collect();
        serde_json::Value::Array(active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(value: serde_json::Value, expected: &str) {
        let err = WindowSet::from_value(&value).expect_err("should be refused");
        assert!(err.to_string().contains(expected), "{err}");
    }

    #[test]
    fn bad_windows_are_refused_with_the_window_named() {
        let w = |extra: serde_json::Value| {
            let mut base = json!({"id": "w1", "target": {"linstor_node": "n1"},
                "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "ingest": "none"});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            json!({"version": 1, "windows": [base]})
        };
        assert!(WindowSet::from_value(&w(json!({}))).is_ok());
        check(w(json!({"end": "2025-01-01T00:00:00Z"})), "window w1: end");
        check(
            w(json!({"ingest": "slow", "entities": ["q"]})),
            "max_per_second is missing",
        );
        check(w(json!({"ingest": "pause"})), "no entities are listed");
        check(
            w(json!({"target": {"rack": "r1"}})),
            "windows data is invalid",
        );
        check(json!({"version": 2, "windows": []}), "version is 2");
    }

    #[test]
    fn a_window_is_active_from_start_until_end() {
        let set = WindowSet::from_value(
            &json!({"version": 1, "windows": [{"id": "w", "target": {"storage_pool": "p"},
            "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z", "ingest": "none"}]}),
        )
        .unwrap();
        let at = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(set.active_at(at("2025-12-31T23:59:59Z")).len(), 0);
        assert_eq!(set.active_at(at("2026-01-01T00:00:00Z")).len(), 1);
        assert_eq!(set.active_at(at("2026-01-01T01:00:00Z")).len(), 0);
        let input = set.gate_input(at("2026-01-01T00:30:00Z"));
        assert_eq!(input[0]["target"], json!({"storage_pool": "p"}));
        assert_eq!(input[0]["end"], json!("2026-01-01T01:00:00Z"));
    }
}
