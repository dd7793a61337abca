//! The ingest side of maintenance windows: pause or slow receiving from the entities that feed a target under
//! maintenance, audit each pause and resume, and keep a snapshot of the decisions for the state.
//!
//! The windows file is re-read when it changes (checked at most every [`RELOAD_EVERY`]); a file that stops
//! validating keeps the windows that were in force and says why in the snapshot.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{IngestMode, Target, Window, WindowSet};
use crate::audit::{AuditKind, AuditLog};
use crate::pipeline::hold::IngestHold;
use crate::servicebus::Entity;

/// How often the windows file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_millis(500);
/// Longest sleep of a paused receive loop before it looks at the windows again.
const RECHECK: Duration = Duration::from_millis(250);
/// Decisions kept for the snapshot.
const DECISIONS_KEPT: usize = 100;

/// One pause, slow-down or resume, as the audit log and the state show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowDecision {
    /// When it was decided.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The window.
    pub window: String,
    /// The entity whose ingest it is about.
    pub entity: String,
    /// `ingest paused`, `ingest slowed` or `ingest resumed`.
    pub outcome: String,
    /// The target and the window's reason.
    pub reason: String,
}

/// A hold in force.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldView {
    /// The window.
    pub window: String,
    /// The entity held back.
    pub entity: String,
    /// `pause` or `slow`.
    pub mode: IngestMode,
    /// Since when.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// Until when (the window's end).
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

/// What the windows do now.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WindowsSnapshot {
    /// Windows open now: id, target and end.
    pub active: Vec<(String, Target, String)>,
    /// Holds in force.
    pub holds: Vec<HoldView>,
    /// The most recent decisions, oldest first.
    pub decisions: Vec<WindowDecision>,
    /// Why the windows file in force is not the one on disk, if it is not.
    pub load_error: Option<String>,
}

struct Source {
    path: Option<PathBuf>,
    set: WindowSet,
    modified: Option<SystemTime>,
    checked: Instant,
    error: Option<String>,
}

#[derive(Default)]
struct Holds {
    current: BTreeMap<(String, String), HoldView>,
    decisions: VecDeque<WindowDecision>,
    next_slot: BTreeMap<String, Instant>,
}

/// Maintenance windows as an [`IngestHold`] for the pipeline.
pub struct WindowHold {
    source: Mutex<Source>,
    holds: Mutex<Holds>,
    audit: Option<Arc<Mutex<AuditLog>>>,
}

impl std::fmt::Debug for WindowHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowHold").finish_non_exhaustive()
    }
}

impl WindowHold {
    /// Windows read from `path` (normally `policies/windows.json`) and re-read when it changes. A file that
    /// does not load leaves no window in force until it does, and says why in the snapshot.
    pub fn from_file(path: PathBuf, audit: Option<Arc<Mutex<AuditLog>>>) -> WindowHold {
        let hold = WindowHold {
            source: Mutex::new(Source {
                path: Some(path),
                set: WindowSet::default(),
                modified: None,
                checked: Instant::now() - RELOAD_EVERY,
                error: None,
            }),
            holds: Mutex::new(Holds::default()),
            audit,
        };
        hold.current();
        hold
    }

    /// A fixed set of windows.
    pub fn fixed(set: WindowSet, audit: Option<Arc<Mutex<AuditLog>>>) -> WindowHold {
        WindowHold {
            source: Mutex::new(Source {
                path: None,
                set,
                modified: None,
                checked: Instant::now(),
                error: None,
            }),
            holds: Mutex::new(Holds::default()),
            audit,
        }
    }

    /// The windows in force, re-read from the file if it changed.
    fn current(&self) -> WindowSet {
        let mut source = self.source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = source.path.clone() {
            if source.checked.elapsed() >= RELOAD_EVERY {
                source.checked = Instant::now();
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if modified != source.modified || source.error.is_some() {
                    source.modified = modified;
                    match WindowSet::load(&path) {
                        Ok(set) => {
                            tracing::info!(path = %path.display(), windows = set.windows.len(), "maintenance windows loaded");
                            source.set = set;
                            source.error = None;
                        }
                        Err(error) => {
                            let text = crate::pipeline::adapters::error_chain(&error);
                            if source.error.as_deref() != Some(text.as_str()) {
                                tracing::warn!(path = %path.display(), error = %text, "maintenance windows did not load; keeping the ones in force");
                            }
                            source.error = Some(text);
                        }
                    }
                }
            }
        }
        source.set.clone()
    }

    fn record(&self, decision: WindowDecision, detail: serde_json::Value) {
        tracing::info!(window = %decision.window, entity = %decision.entity, outcome = %decision.outcome, "maintenance window decision");
        if let Some(audit) = &self.audit {
            let mut log = audit.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(error) = log.append(AuditKind::Decision, "windows", &decision.window, detail)
            {
                tracing::error!(%error, window = %decision.window, "could not audit a maintenance window decision");
            }
        }
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        if holds.decisions.len() == DECISIONS_KEPT {
            holds.decisions.pop_front();
        }
        holds.decisions.push_back(decision);
    }

    /// Opens holds for windows that became active for `entity` and closes those that ended; audits each.
    fn note(&self, entity: &str, active: &[Window], now: OffsetDateTime) {
        let (opened, closed) = {
            let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
            let mut opened = Vec::new();
            for w in active {
                let key = (w.id.clone(), entity.to_string());
                if let std::collections::btree_map::Entry::Vacant(slot) = holds.current.entry(key) {
                    slot.insert(HoldView {
                        window: w.id.clone(),
                        entity: entity.to_string(),
                        mode: w.ingest,
                        since: now,
                        until: w.end,
                    });
                    opened.push(w.clone());
                }
            }
            let ended: Vec<(String, String)> = holds
                .current
                .keys()
                .filter(|(id, e)| e == entity && !active.iter().any(|w| &w.id == id))
                .cloned()
                .collect();
            let closed: Vec<HoldView> = ended
                .into_iter()
                .filter_map(|k| holds.current.remove(&k))
                .collect();
            (opened, closed)
        };
        for w in opened {
            let outcome = match w.ingest {
                IngestMode::Slow => "ingest slowed",
                _ => "ingest paused",
            };
            let reason = format!("{} under maintenance: {}", w.target.describe(), w.reason);
            let detail = serde_json::json!({
                "outcome": outcome, "window": w.id, "entity": entity, "target": w.target,
                "until": w.end.unix_timestamp(), "max_per_second": w.max_per_second, "reason": reason,
            });
            self.record(
                WindowDecision {
                    at: now,
                    window: w.id.clone(),
                    entity: entity.to_string(),
                    outcome: outcome.to_string(),
                    reason,
                },
                detail,
            );
        }
        for hold in closed {
            let held_ms = (now - hold.since).whole_milliseconds().max(0) as u64;
            let reason = format!("window {} ended; held-back messages drain now", hold.window);
            let detail = serde_json::json!({
                "outcome": "ingest resumed", "window": hold.window, "entity": entity,
                "held_ms": held_ms, "reason": reason,
            });
            self.record(
                WindowDecision {
                    at: now,
                    window: hold.window.clone(),
                    entity: entity.to_string(),
                    outcome: "ingest resumed".to_string(),
                    reason,
                },
                detail,
            );
        }
    }

    /// What the windows do now.
    pub fn snapshot(&self) -> WindowsSnapshot {
        let set = self.current();
        let now = OffsetDateTime::now_utc();
        let load_error = self
            .source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .clone();
        let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        WindowsSnapshot {
            active: set
                .active_at(now)
                .into_iter()
                .map(|w| {
                    let end = w
                        .end
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    (w.id.clone(), w.target.clone(), end)
                })
                .collect(),
            holds: holds.current.values().cloned().collect(),
            decisions: holds.decisions.iter().cloned().collect(),
            load_error,
        }
    }
}

#[async_trait]
impl IngestHold for WindowHold {
    async fn admit(&self, entity: &Entity, wanted: u32, stop: &CancellationToken) -> u32 {
        let path = entity.path();
        loop {
            let now = OffsetDateTime::now_utc();
            let set = self.current();
            let active: Vec<Window> = set
                .active_at(now)
                .into_iter()
                .filter(|w| w.ingest != IngestMode::None && w.entities.contains(&path))
                .cloned()
                .collect();
            self.note(&path, &active, now);
            if let Some(pause) = active.iter().find(|w| w.ingest == IngestMode::Pause) {
                let left = (pause.end - now).max(time::Duration::ZERO);
                let nap = Duration::try_from(left).unwrap_or(RECHECK).min(RECHECK);
                tokio::select! {
                    _ = stop.cancelled() => return 0,
                    _ = tokio::time::sleep(nap) => continue,
                }
            }
            let Some(rate) = active.iter().filter_map(|w| w.max_per_second).min() else {
                return wanted;
            };
            // Slow: hand out up to a tenth of a second's worth at a time, spaced to keep the rate.
            let slot = {
                let holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
                holds.next_slot.get(&path).copied()
            };
            if let Some(slot) = slot {
                tokio::select! {
                    _ = stop.cancelled() => return 0,
                    _ = tokio::time::sleep_until(slot.into()) => {}
                }
            }
            let n = wanted.min((rate / 10).max(1));
            let next = Instant::now() + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
            self.holds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_slot
                .insert(path.clone(), next);
            return n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(id: &str, ingest: IngestMode, start_s: i64, end_s: i64) -> Window {
        let now = OffsetDateTime::now_utc();
        Window {
            id: id.into(),
            target: Target::Cassandra("main".into()),
            start: now + time::Duration::seconds(start_s),
            end: now + time::Duration::seconds(end_s),
            ingest,
            entities: vec!["events".into()],
            max_per_second: Some(20),
            reason: "test".into(),
        }
    }

    #[tokio::test]
    async fn other_entities_pass_and_a_slow_window_spaces_receipts() {
        let set = WindowSet {
            version: 1,
            windows: vec![window("slow", IngestMode::Slow, -1, 60)],
        };
        let hold = WindowHold::fixed(set, None);
        let stop = CancellationToken::new();
        assert_eq!(
            hold.admit(&Entity::Queue("other".into()), 50, &stop).await,
            50
        );
        let started = Instant::now();
        let mut got = 0;
        for _ in 0..3 {
            got += hold.admit(&Entity::Queue("events".into()), 50, &stop).await;
        }
        assert_eq!(got, 6, "two per tenth of a second at 20/s");
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
        let snap = hold.snapshot();
        assert_eq!(snap.holds.len(), 1);
        assert_eq!(snap.decisions[0].outcome, "ingest slowed");
    }

    #[tokio::test]
    async fn a_pause_waits_until_the_window_ends_then_records_the_resume() {
        let set = WindowSet {
            version: 1,
            windows: vec![window("pause", IngestMode::Pause, -1, 1)],
        };
        let hold = WindowHold::fixed(set, None);
        let stop = CancellationToken::new();
        let started = Instant::now();
        let admitted = tokio::time::timeout(
            Duration::from_secs(10),
            hold.admit(&Entity::Queue("events".into()), 7, &stop),
        )
        .await
        .expect("the pause should end with its window, likely stuck");
        assert_eq!(admitted, 7);
        assert!(started.elapsed() >= Duration::from_millis(500));
        let outcomes: Vec<String> = hold
            .snapshot()
            .decisions
            .into_iter()
            .map(|d| d.outcome)
            .collect();
        assert_eq!(outcomes, vec!["ingest paused", "ingest resumed"]);
    }
}
