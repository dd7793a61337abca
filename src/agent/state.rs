//! Chat-ops' [`StateSource`] over the running agent: copies of its snapshot, its proposals and its audit log.
//!
//! Everything here reads: the snapshot behind a lock held only to clone it, proposal files, and the local audit
//! log (the record that is written first, so it is never behind what was applied).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::AgentSnapshot;
use crate::audit::{AuditKind, AuditRecord};
use crate::chatops::state::{
    AuditEntry, ForecastPoint, ForecastSummary, NodeReplicas, PartitionLag, PendingProposal,
    PlacementSummary, PoolSample, QueueHealth, Setting, SettingsSnapshot, StateError, StateSource,
    TimeSpan,
};
use crate::executor::{ProposalStatus, ProposalStore, StateDir};
use crate::metrics::collect::names;
use crate::planner::{Action, Change};

/// Audit records read back for "what changed recently" (the newest ones).
const AUDIT_TAIL: usize = 2_000;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The agent's state as chat-ops reads it.
#[derive(Clone)]
pub struct AgentState {
    snapshot: Arc<RwLock<AgentSnapshot>>,
    state: StateDir,
}

impl AgentState {
    /// A source over the agent's shared snapshot and state directory.
    pub fn new(snapshot: Arc<RwLock<AgentSnapshot>>, state: StateDir) -> Self {
        AgentState { snapshot, state }
    }

    fn snap(&self, what: &'static str) -> Result<AgentSnapshot, StateError> {
        self.snapshot
            .read()
            .map(|s| s.clone())
            .map_err(|_| StateError {
                what,
                message: "agent state lock poisoned".into(),
            })
    }
}

fn render_action(a: &Action) -> (String, String) {
    match a {
        Action::SetKnobs { from, to } => (
            format!(
                "batch_rows={} batch_bytes={} concurrency={} prefetch={}",
                from.batch_rows, from.batch_bytes, from.concurrency, from.prefetch
            ),
            format!(
                "batch_rows={} batch_bytes={} concurrency={} prefetch={}",
                to.batch_rows, to.batch_bytes, to.concurrency, to.prefetch
            ),
        ),
        Action::AddReplica {
            resource,
            node,
            pool,
        } => (
            format!("{resource}: no replica on {node}"),
            format!("{resource} on {node}/{pool}"),
        ),
        Action::MoveReplica {
            resource,
            from_node,
            from_pool,
            to_node,
            to_pool,
        } => (
            format!("{resource} on {from_node}/{from_pool}"),
            format!("{resource} on {to_node}/{to_pool}"),
        ),
        Action::RemoveReplica { resource, node } => (
            format!("{resource} on {node}"),
            format!("{resource}: removed from {node}"),
        ),
        Action::SetPlaceCount { resource, from, to } => (
            format!("{resource} place count {from}"),
            format!("{resource} place count {to}"),
        ),
        Action::DeleteResource { resource } => (resource.clone(), "deleted".into()),
    }
}

fn kind_name(kind: AuditKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// An audit record as chat-ops shows it: the change's target and values when the record carries the change.
fn entry(r: &AuditRecord) -> AuditEntry {
    let d = &r.detail;
    let change: Option<Change> = d
        .get("change")
        .cloned()
        .or_else(|| (r.kind == AuditKind::Proposal).then(|| d.clone()))
        .and_then(|c| serde_json::from_value(c).ok());
    let (before, after) = change
        .as_ref()
        .map(|c| render_action(&c.action))
        .map_or((None, None), |(b, a)| (Some(b), Some(a)));
    let text = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let reason = change
        .as_ref()
        .map(|c| c.reason.summary.clone())
        .or_else(|| {
            d.get("reasons").and_then(|v| v.as_array()).map(|rs| {
                rs.iter()
                    .filter_map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .or_else(|| text("reason"))
        .or_else(|| text("why"))
        .or_else(|| text("error"))
        .unwrap_or_default();
    let outcome = text("outcome")
        .or_else(|| text("verdict"))
        .or_else(|| text("phase"))
        .unwrap_or_else(|| kind_name(r.kind));
    AuditEntry {
        seq: r.seq,
        at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.at_unix_ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        actor: r.actor.clone(),
        action: change
            .as_ref()
            .map(|c| format!("{}:{}", kind_name(r.kind), c.action.verb()))
            .unwrap_or_else(|| kind_name(r.kind)),
        target: change
            .map(|c| c.target)
            .unwrap_or_else(|| r.subject.clone()),
        before,
        after,
        reason,
        outcome,
    }
}

#[async_trait]
impl StateSource for AgentState {
    async fn queues(&self) -> Result<Vec<QueueHealth>, StateError> {
        let s = self.snap("queues")?;
        Ok(s.collected
            .map(|c| {
                c.depth
                    .iter()
                    .map(|d| QueueHealth {
                        entity: d.entity.clone(),
                        active: d.counts.active,
                        dead_letter: d.counts.dead_letter,
                        scheduled: d.counts.scheduled,
                        sampled_at: d.observed_at,
                        recent_dead_letters: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn lag(&self) -> Result<Vec<PartitionLag>, StateError> {
        let s = self.snap("lag")?;
        let entity = s
            .collected
            .as_ref()
            .map(|c| c.depth.iter().map(|d| d.entity.clone()).collect::<Vec<_>>())
            .filter(|e| e.len() == 1)
            .and_then(|mut e| e.pop())
            .unwrap_or_else(|| "*".into());
        let mut out = Vec::new();
        for snap in &s.lag_history {
            let window = TimeSpan {
                from: snap.taken_at - time::Duration::milliseconds(snap.window_ms as i64),
                to: snap.taken_at,
            };
            for (key, l) in &snap.keys {
                out.push(PartitionLag {
                    entity: entity.clone(),
                    key: key.clone(),
                    in_flight: l.in_flight,
                    oldest_age_s: l.oldest_age_ms as f64 / 1e3,
                    e2e_p50_ms: l.latency_p50_ms.unwrap_or(0) as f64,
                    e2e_p99_ms: l.latency_p99_ms.unwrap_or(0) as f64,
                    settled: l.window_completed,
                    window,
                });
            }
        }
        Ok(out)
    }

    async fn forecasts(&self) -> Result<Vec<ForecastSummary>, StateError> {
        let s = self.snap("forecasts")?;
        Ok(s.forecasts
            .iter()
            .map(|f| {
                let series = if f.key.name == names::POOL_CLASS_FREE_KIB {
                    format!(
                        "pool_free_kib:{}",
                        f.key.labels.get("pool").cloned().unwrap_or_default()
                    )
                } else {
                    format!("{}:all", f.key.name)
                };
                let unit = if f.key.name == names::POOL_CLASS_FREE_KIB {
                    "KiB"
                } else {
                    "messages/s"
                };
                ForecastSummary {
                    series,
                    unit: unit.into(),
                    interval_coverage: f.coverage,
                    points: f
                        .point
                        .iter()
                        .enumerate()
                        .map(|(i, v)| ForecastPoint {
                            at: at(f.made_at + f.step_s * (i as i64 + 1)),
                            value: *v,
                            lower: f.lower[i],
                            upper: f.upper[i],
                        })
                        .collect(),
                    rolling_mase: f.accuracy.as_ref().and_then(|a| a.rolling_mase),
                    trusted: f.accuracy.as_ref().is_some_and(|a| a.trusted),
                    made_at: at(f.made_at),
                }
            })
            .collect())
    }

    async fn placement(&self) -> Result<PlacementSummary, StateError> {
        let s = self.snap("placement")?;
        let sampled_at = at(s.sampled_at);
        let Some((_, p)) = s.collected.and_then(|c| c.placement) else {
            return Err(StateError {
                what: "placement",
                message: "no placement has been read from linstor yet".into(),
            });
        };
        let mut degraded: Vec<String> = p.degraded.iter().map(|d| d.resource.clone()).collect();
        degraded.dedup();
        Ok(PlacementSummary {
            sampled_at,
            pools: p
                .pools
                .iter()
                .map(|pool| PoolSample {
                    pool: pool.pool.clone(),
                    node: pool.node.clone(),
                    free_kib: pool.free_kib,
                    total_kib: pool.total_kib,
                    sampled_at,
                })
                .collect(),
            replicas_per_node: p
                .nodes
                .iter()
                .map(|n| NodeReplicas {
                    node: n.node.clone(),
                    replicas: n.diskful,
                })
                .collect(),
            under_replicated: p
                .under_replicated
                .iter()
                .map(|u| u.resource.clone())
                .collect(),
            degraded,
        })
    }

    async fn pending_proposals(&self) -> Result<Vec<PendingProposal>, StateError> {
        let store = ProposalStore::new(self.state.clone());
        let list = store.list().map_err(|e| StateError {
            what: "pending proposals",
            message: e.to_string(),
        })?;
        Ok(list
            .into_iter()
            .filter(|p| p.status.is_open())
            .map(|p| {
                let (current, proposed) = render_action(&p.change.action);
                let verdict = serde_json::to_value(p.decision.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                PendingProposal {
                    id: p.id,
                    target: p.change.target.clone(),
                    current,
                    proposed,
                    reason: p.change.reason.summary.clone(),
                    // A recommendation (recommend mode) can be approved too; it runs once the agent is autonomous.
                    policy: match p.status {
                        ProposalStatus::Recommended => {
                            format!(
                                "{verdict} (recommended only): {}",
                                p.decision.reasons.join("; ")
                            )
                        }
                        _ => format!("{verdict}: {}", p.decision.reasons.join("; ")),
                    },
                    created_at: at(p.created_at),
                    expires_at: None,
                }
            })
            .collect())
    }

    async fn recent_audit(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>, StateError> {
        let path = self.state.audit_log();
        let records = match crate::audit::tail(&path, AUDIT_TAIL) {
            Ok(r) => r,
            Err(crate::audit::AuditError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Vec::new()
            }
            Err(e) => {
                return Err(StateError {
                    what: "recent audit",
                    message: e.to_string(),
                })
            }
        };
        let since_ms = (since.unix_timestamp_nanos() / 1_000_000) as i64;
        Ok(records
            .iter()
            .filter(|r| r.at_unix_ms >= since_ms)
            .map(entry)
            .collect())
    }

    async fn settings(&self) -> Result<SettingsSnapshot, StateError> {
        let s = self.snap("settings")?;
        let mode = match (&s.mode, s.configured_mode) {
            (Some(m), _) => {
                let name = serde_json::to_value(m.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string));
                match &m.why {
                    Some(why) => format!("{} ({why})", name.unwrap_or_default()),
                    None => name.unwrap_or_default(),
                }
            }
            (None, Some(c)) => serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            (None, None) => "unknown".into(),
        };
        let mut settings = Vec::new();
        if let Some(k) = s.settings {
            let values: BTreeMap<&str, u64> = [
                ("pipeline.batch_rows", u64::from(k.batch_rows)),
                ("pipeline.batch_bytes", k.batch_bytes),
                ("pipeline.write_concurrency", u64::from(k.concurrency)),
                ("pipeline.prefetch", u64::from(k.prefetch)),
            ]
            .into_iter()
            .collect();
            for (name, value) in values {
                settings.push(Setting {
                    name: name.into(),
                    value: value.into(),
                    changed_at: None,
                });
            }
        }
        Ok(SettingsSnapshot {
            mode,
            settings,
            as_of: at(s.sampled_at),
        })
    }
}

/// Where chat-ops' insights come from: the pipeline's counters (stage breakdown, drift) and the window hold.
#[derive(Clone)]
pub struct InsightSources {
    /// The pipeline's counters; their stage clock and drift monitor.
    pub stats: Arc<crate::pipeline::PipelineStats>,
    /// The maintenance windows' ingest hold, when windows are configured.
    pub windows: Option<Arc<crate::windows::WindowHold>>,
}

impl InsightSources {
    /// The insights as chat-ops reads them, at `now`.
    pub fn insights(&self, now: OffsetDateTime) -> crate::chatops::state::Insights {
        use crate::chatops::state::{DriftItem, Insights, StageItem, StageShare, WindowItem};
        let drift = self
            .stats
            .drift()
            .snapshot()
            .events
            .into_iter()
            .map(|e| DriftItem {
                summary: e.sentence(),
                kind: e.kind,
                field: e.field,
                change: e.change.name().to_string(),
                count: e.count,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                examples: e.examples.into_iter().map(|x| x.message_id).collect(),
            })
            .collect();
        let stages = self
            .stats
            .stages()
            .snapshot()
            .paths
            .into_iter()
            .map(|p| StageItem {
                path: p.path.to_string(),
                sampled_at: now,
                settled: p.settled,
                end_to_end_mean_ms: p.recent_end_to_end_mean_ms,
                stages: p
                    .stages
                    .iter()
                    .map(|s| StageShare {
                        stage: s.stage.to_string(),
                        mean_ms: s.recent_mean_ms,
                        share: s.recent_share,
                    })
                    .collect(),
                dominant: p.dominant.map(str::to_string),
            })
            .collect();
        let windows = self
            .windows
            .as_ref()
            .map(|w| {
                let snap = w.snapshot();
                snap.active
                    .iter()
                    .map(|(id, target, until)| WindowItem {
                        id: id.clone(),
                        target: target.describe(),
                        until: until.clone(),
                        holding: snap
                            .holds
                            .iter()
                            .filter(|h| &h.window == id)
                            .map(|h| h.entity.clone())
                            .collect(),
                        sampled_at: now,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Insights {
            available: true,
            drift,
            stages,
            windows,
        }
    }
}

/// A state source with the pipeline's insights (drift, stage breakdown, maintenance windows) added.
pub struct WithInsights<S> {
    inner: S,
    sources: InsightSources,
}

impl<S> WithInsights<S> {
    /// `inner` for everything else, `sources` for [`StateSource::insights`].
    pub fn new(inner: S, sources: InsightSources) -> Self {
        WithInsights { inner, sources }
    }
}

#[async_trait]
impl<S: StateSource> StateSource for WithInsights<S> {
    fn now(&self) -> OffsetDateTime {
        self.inner.now()
    }
    async fn queues(&self) -> Result<Vec<QueueHealth>, StateError> {
        self.inner.queues().await
    }
    async fn lag(&self) -> Result<Vec<PartitionLag>, StateError> {
        self.inner.lag().await
    }
    async fn forecasts(&self) -> Result<Vec<ForecastSummary>, StateError> {
        self.inner.forecasts().await
    }
    async fn placement(&self) -> Result<PlacementSummary, StateError> {
        self.inner.placement().await
    }
    async fn pending_proposals(&self) -> Result<Vec<PendingProposal>, StateError> {
        self.inner.pending_proposals().await
    }
    async fn recent_audit(&self, since: OffsetDateTime) -> Result<Vec<AuditEntry>, StateError> {
        self.inner.recent_audit(since).await
    }
    async fn settings(&self) -> Result<SettingsSnapshot, StateError> {
        self.inner.settings().await
    }
    async fn insights(&self) -> Result<crate::chatops::state::Insights, StateError> {
        Ok(self.sources.insights(self.inner.now()))
    }
}
