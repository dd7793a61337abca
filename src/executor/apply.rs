//! Applying gated changes: grants check, kill switch, caps, audit first, knob verify and rollback, two-phase moves.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::actuator::{knob_values, KnobActuator, PlacementActuator, WindowStats};
use super::proposals::{ProposalStatus, ProposalStore};
use super::state::StateDir;
use super::ExecutorError;
use crate::audit::{AuditKind, AuditLog, AuditRecord};
use crate::planner::{fingerprint, Action, Change, Observed, Plan, Settings};
use crate::policy::{Gate, GateContext, Mode, ModeDecision, Verdict};

/// How the executor applies and checks changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    /// Seconds of measurements taken before and after a knob change to judge it.
    #[serde(default = "default_verify_window_s")]
    pub verify_window_s: u64,
    /// Relative worsening of p99 latency or throughput over the window that rolls a knob change back.
    #[serde(default = "default_rollback_tolerance")]
    pub rollback_tolerance: f64,
    /// Seconds to wait for a new replica to become UpToDate before giving up on a move (the source is kept).
    #[serde(default = "default_up_to_date_timeout_s")]
    pub up_to_date_timeout_s: u64,
    /// Seconds between replica state reads while waiting.
    #[serde(default = "default_poll_interval_s")]
    pub poll_interval_s: u64,
    /// Most moves in progress at once.
    #[serde(default = "default_max_concurrent_moves")]
    pub max_concurrent_moves: u32,
    /// Most changes applied per hour.
    #[serde(default = "default_max_changes_per_hour")]
    pub max_changes_per_hour: u32,
}

const fn default_verify_window_s() -> u64 {
    60
}
/// Throughput drop tolerated over the verification window for a change that relieves a queueing node (its plan
/// carries `relief_of_p99_ms`): fewer writes in flight should leave capacity as it was, but a short window of
/// bursty load measures fuller or emptier batches, and with them a throughput that moved by a third either way
/// in the replays. Only a collapse (half the throughput gone) undoes the relief; a smaller real loss shows up
/// as a capacity shortfall in the next plans, which probe concurrency back up while p99 is under half the
/// objective (not always so once batches are full: see `planner::knobs::probe`).
pub const RELIEF_TOLERANCE: f64 = 0.5;

pub use crate::planner::SATURATED_SLOT_SHARE;

/// Share of failed write attempts above which halving it excuses a relief change's higher p99 (the planner's
/// default `max_error_share`, the share at which it calls the node overloaded).
pub const RELIEF_ERROR_SHARE: f64 = 0.01;

/// Most the mean rows per batch may differ between the windows before and after a knob change (as a share of the
/// larger) for their throughput to be compared: beyond it the load changed, not the setting.
pub const FILL_TOLERANCE: f64 = 0.25;

/// Whether two windows wrote batches full enough alike that their throughput compares the settings, not the load.
/// A change of the batch caps changes the fill on purpose, so its throughput is always compared.
fn comparable_fill(before: &WindowStats, after: &WindowStats, caps_changed: bool) -> bool {
    if caps_changed {
        return true;
    }
    let (a, b) = (before.mean_rows, after.mean_rows);
    let larger = a.max(b);
    larger <= 0.0 || (a - b).abs() <= FILL_TOLERANCE * larger
}

const fn default_rollback_tolerance() -> f64 {
    0.05
}
const fn default_up_to_date_timeout_s() -> u64 {
    3600
}
const fn default_poll_interval_s() -> u64 {
    10
}
const fn default_max_concurrent_moves() -> u32 {
    4
}
const fn default_max_changes_per_hour() -> u32 {
    20
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            verify_window_s: default_verify_window_s(),
            rollback_tolerance: default_rollback_tolerance(),
            up_to_date_timeout_s: default_up_to_date_timeout_s(),
            poll_interval_s: default_poll_interval_s(),
            max_concurrent_moves: default_max_concurrent_moves(),
            max_changes_per_hour: default_max_changes_per_hour(),
        }
    }
}

/// Why a change is being applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "origin", rename_all = "snake_case")]
pub enum ApplyOrigin {
    /// Policy allowed it in autonomous mode.
    Automatic,
    /// A person approved this proposal.
    Approved {
        /// The proposal id.
        proposal: String,
        /// Who approved it.
        by: String,
    },
}

/// What happened to one change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ChangeOutcome {
    /// Recommend mode: recorded as a proposal, not applied.
    Recommended {
        /// The proposal id.
        proposal: String,
    },
    /// Queued for a person's approval.
    Queued {
        /// The proposal id.
        proposal: String,
    },
    /// Denied by policy.
    Denied {
        /// The gate's reasons.
        reasons: Vec<String>,
    },
    /// Refused by the executor before any side effect (verb not granted, paused, over a cap).
    Refused {
        /// Why.
        reason: String,
    },
    /// Applied and, for knobs, verified.
    Applied {
        /// What was done.
        detail: String,
    },
    /// Applied, found to make things worse, and undone.
    RolledBack {
        /// Why.
        detail: String,
    },
    /// An actuator call failed or a precondition did not hold mid-way.
    Failed {
        /// Why.
        error: String,
    },
    /// The process stopped after the start of the change was audited and before its outcome was: what a
    /// restart found, written by [`Executor::reconcile_interrupted`].
    Interrupted {
        /// What the actuators report now, and what happens next.
        found: String,
    },
    /// An approved proposal whose inputs drifted; it will be planned again.
    Expired {
        /// The proposal id.
        proposal: String,
        /// What drifted.
        reason: String,
    },
}

/// What one step did, change by change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The mode the step ran in (and why, if it was dropped to recommend).
    pub mode: ModeDecision,
    /// (change id, outcome), in plan order.
    pub outcomes: Vec<(String, ChangeOutcome)>,
}

impl StepReport {
    /// The outcome for a change id.
    pub fn outcome(&self, change_id: &str) -> Option<&ChangeOutcome> {
        self.outcomes
            .iter()
            .find(|(id, _)| id == change_id)
            .map(|(_, o)| o)
    }
}

/// Applies gated changes through the actuators. Holds the only handles with write access.
pub struct Executor {
    placement: Arc<dyn PlacementActuator>,
    knobs: Arc<dyn KnobActuator>,
    audit: Arc<Mutex<AuditLog>>,
    state: StateDir,
    proposals: ProposalStore,
    config: ExecutorConfig,
    moves_in_progress: AtomicU32,
    last_mode: Mutex<Option<ModeDecision>>,
    last_policy_error: Mutex<Option<String>>,
}

struct MoveGuard<'a>(&'a AtomicU32);

impl Drop for MoveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The status a proposal takes after its change ran, if it ran.
fn ran_status(outcome: &ChangeOutcome, now: i64) -> Option<ProposalStatus> {
    match outcome {
        ChangeOutcome::Applied { detail } | ChangeOutcome::RolledBack { detail } => {
            Some(ProposalStatus::Applied {
                at: now,
                outcome: detail.clone(),
            })
        }
        ChangeOutcome::Failed { error } => Some(ProposalStatus::Failed {
            at: now,
            error: error.clone(),
        }),
        _ => None,
    }
}

fn failed(e: impl std::fmt::Display) -> ChangeOutcome {
    ChangeOutcome::Failed {
        error: e.to_string(),
    }
}

impl Executor {
    /// An executor over the given actuators, audit log and state directory.
    pub fn new(
        placement: Arc<dyn PlacementActuator>,
        knobs: Arc<dyn KnobActuator>,
        audit: Arc<Mutex<AuditLog>>,
        state: StateDir,
        config: ExecutorConfig,
    ) -> Self {
        Executor {
            placement,
            knobs,
            audit,
            proposals: ProposalStore::new(state.clone()),
            state,
            config,
            moves_in_progress: AtomicU32::new(0),
            last_mode: Mutex::new(None),
            last_policy_error: Mutex::new(None),
        }
    }

    /// The proposal store in this executor's state directory.
    pub fn proposals(&self) -> &ProposalStore {
        &self.proposals
    }

    /// Appends one audit record (synced before returning).
    pub fn audit(
        &self,
        kind: AuditKind,
        actor: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<AuditRecord, ExecutorError> {
        let mut log = self.audit.lock().map_err(|_| ExecutorError::BadStateFile {
            path: self.state.audit_log(),
            message: "audit lock poisoned".into(),
        })?;
        Ok(log.append(kind, actor, subject, detail)?)
    }

    fn context(&self, mode: Mode, now: i64) -> Result<GateContext, ExecutorError> {
        Ok(GateContext {
            mode,
            concurrent_moves: self.moves_in_progress.load(Ordering::SeqCst),
            changes_last_hour: self.state.changes_last_hour(now)?,
        })
    }

    fn note_mode(&self, mode: &ModeDecision) -> Result<(), ExecutorError> {
        let changed = {
            let mut last = self
                .last_mode
                .lock()
                .map_err(|_| ExecutorError::BadStateFile {
                    path: self.state.root().to_path_buf(),
                    message: "mode lock poisoned".into(),
                })?;
            let changed = last.as_ref() != Some(mode);
            *last = Some(mode.clone());
            changed
        };
        if changed {
            tracing::info!(mode = ?mode.mode, configured = ?mode.configured, why = ?mode.why, "operating mode");
            self.audit(
                AuditKind::Mode,
                "executor",
                "",
                serde_json::to_value(mode).map_err(ExecutorError::Encode)?,
            )?;
        }
        Ok(())
    }

    /// Reloads the policy and audits the outcome. A failed reload keeps the policy in use (see
    /// [`Gate::reload`]); the inner result says whether it succeeded.
    pub fn reload_policy(
        &self,
        gate: &mut Gate,
    ) -> Result<Result<(), crate::policy::PolicyError>, ExecutorError> {
        let result = gate.reload();
        let detail = match &result {
            Ok(()) => serde_json::json!({ "reloaded": true, "digest": gate.digest() }),
            Err(e) => serde_json::json!({
                "reloaded": false,
                "error": e.to_string(),
                "kept_digest": gate.digest(),
            }),
        };
        self.audit(AuditKind::Policy, "gate", "", detail)?;
        Ok(result)
    }

    /// Runs one plan: audits each change and its gate decision, then applies (autonomous, allowed), queues
    /// (needs approval, or anything in recommend mode) or records the denial.
    pub async fn run_step(
        &self,
        gate: &Gate,
        mode: &ModeDecision,
        plan: &Plan,
        observed: &Observed,
        settings: &Settings,
        now: i64,
    ) -> Result<StepReport, ExecutorError> {
        self.note_mode(mode)?;
        let error = gate.load_error().map(str::to_string);
        let new_error = match self.last_policy_error.lock() {
            Ok(mut last) if *last != error => {
                *last = error.clone();
                error
            }
            _ => None,
        };
        if let Some(err) = new_error {
            // Once per distinct error, not every step.
            self.audit(
                AuditKind::Policy,
                "gate",
                "",
                serde_json::json!({ "error": err, "effect": "denying every change" }),
            )?;
        }
        let mut outcomes = Vec::new();
        for change in &plan.changes {
            let mode = &mode.for_change(change.uses_forecast, change.action.sheds_load());
            let open = self
                .proposals
                .list()?
                .into_iter()
                .find(|p| p.change.id == change.id && p.status.is_open());
            // A recommendation made while trimtab ran in recommend mode does not hold the change back once it is
            // autonomous: the change is gated again like a new one, and the recommendation follows its outcome.
            let recommended = match open {
                Some(p)
                    if p.status == ProposalStatus::Recommended && mode.mode == Mode::Autonomous =>
                {
                    Some(p.id)
                }
                Some(p) => {
                    let outcome = match p.status {
                        ProposalStatus::Recommended => {
                            ChangeOutcome::Recommended { proposal: p.id }
                        }
                        _ => ChangeOutcome::Queued { proposal: p.id },
                    };
                    outcomes.push((change.id.clone(), outcome));
                    continue;
                }
                None => None,
            };
            self.supersede_recommendations(change, now)?;
            self.audit(
                AuditKind::Proposal,
                "planner",
                &change.id,
                serde_json::to_value(change).map_err(ExecutorError::Encode)?,
            )?;
            let decision = gate.evaluate(change, &self.context(mode.mode, now)?);
            self.audit(
                AuditKind::Decision,
                "gate",
                &change.id,
                serde_json::to_value(&decision).map_err(ExecutorError::Encode)?,
            )?;
            let print = fingerprint(observed, settings, change);
            let outcome = match (decision.verdict, mode.mode) {
                (Verdict::Deny, _) => ChangeOutcome::Denied {
                    reasons: decision.reasons,
                },
                (_, Mode::Recommend) => {
                    let (p, _) = self.proposals.create(
                        change,
                        ProposalStatus::Recommended,
                        print,
                        decision,
                        now,
                    )?;
                    ChangeOutcome::Recommended { proposal: p.id }
                }
                (Verdict::NeedsApproval, Mode::Autonomous) => match recommended {
                    Some(id) => {
                        self.proposals.set_status(&id, ProposalStatus::Pending)?;
                        ChangeOutcome::Queued { proposal: id }
                    }
                    None => {
                        let (p, _) = self.proposals.create(
                            change,
                            ProposalStatus::Pending,
                            print,
                            decision,
                            now,
                        )?;
                        ChangeOutcome::Queued { proposal: p.id }
                    }
                },
                (Verdict::Allow, Mode::Autonomous) => {
                    let outcome = self
                        .apply(change, gate, ApplyOrigin::Automatic, now)
                        .await?;
                    if let Some(id) = recommended {
                        if let Some(status) = ran_status(&outcome, now) {
                            self.proposals.set_status(&id, status)?;
                        }
                    }
                    outcome
                }
            };
            outcomes.push((change.id.clone(), outcome));
        }
        Ok(StepReport {
            mode: mode.clone(),
            outcomes,
        })
    }

    /// Runs approved proposals (autonomous mode only): exactly the approved change, if its plan hash still
    /// matches and its inputs have not drifted; a drifted one expires and is planned again.
    pub async fn run_approved(
        &self,
        gate: &Gate,
        mode: &ModeDecision,
        observed: &Observed,
        settings: &Settings,
        now: i64,
    ) -> Result<StepReport, ExecutorError> {
        let mut outcomes = Vec::new();
        if mode.mode != Mode::Autonomous {
            return Ok(StepReport {
                mode: mode.clone(),
                outcomes,
            });
        }
        for p in self.proposals.list()? {
            let ProposalStatus::Approved { by, .. } = &p.status else {
                continue;
            };
            if let Err(e) = self.proposals.check_hash(&p) {
                self.audit(
                    AuditKind::Refused,
                    "executor",
                    &p.id,
                    serde_json::json!({ "reason": e.to_string() }),
                )?;
                self.proposals.set_status(
                    &p.id,
                    ProposalStatus::Failed {
                        at: now,
                        error: e.to_string(),
                    },
                )?;
                outcomes.push((
                    p.change.id.clone(),
                    ChangeOutcome::Refused {
                        reason: e.to_string(),
                    },
                ));
                continue;
            }
            let print = fingerprint(observed, settings, &p.change);
            if print != p.fingerprint {
                let reason = format!(
                    "inputs drifted since proposal (fingerprint {} now {})",
                    p.fingerprint.chars().take(12).collect::<String>(),
                    print.chars().take(12).collect::<String>()
                );
                self.audit(
                    AuditKind::Expired,
                    "executor",
                    &p.id,
                    serde_json::json!({ "reason": reason }),
                )?;
                self.proposals.set_status(
                    &p.id,
                    ProposalStatus::Expired {
                        reason: reason.clone(),
                        at: now,
                    },
                )?;
                outcomes.push((
                    p.change.id.clone(),
                    ChangeOutcome::Expired {
                        proposal: p.id.clone(),
                        reason,
                    },
                ));
                continue;
            }
            let decision = gate.evaluate(&p.change, &self.context(mode.mode, now)?);
            self.audit(
                AuditKind::Decision,
                "gate",
                &p.id,
                serde_json::to_value(&decision).map_err(ExecutorError::Encode)?,
            )?;
            if decision.verdict == Verdict::Deny {
                // Stays approved: a cap or the kill switch may clear by the next step.
                outcomes.push((
                    p.change.id.clone(),
                    ChangeOutcome::Denied {
                        reasons: decision.reasons,
                    },
                ));
                continue;
            }
            let origin = ApplyOrigin::Approved {
                proposal: p.id.clone(),
                by: by.clone(),
            };
            let outcome = self.apply(&p.change, gate, origin, now).await?;
            if let Some(status) = ran_status(&outcome, now) {
                self.proposals.set_status(&p.id, status)?;
            }
            outcomes.push((p.change.id.clone(), outcome));
        }
        Ok(StepReport {
            mode: mode.clone(),
            outcomes,
        })
    }

    /// Finds changes whose start was audited but whose outcome was not (the process stopped in between), reads
    /// what the actuators report now, and audits that as their outcome ([`ChangeOutcome::Interrupted`]). Run it
    /// once at start, before the first step. Idempotent: a reconciled change has an outcome and is not found again.
    ///
    /// Nothing is undone or redone here: the verbs are idempotent and the planner plans again from what it
    /// observes; an approved proposal whose run was cut short stays approved and runs again (or expires, if its
    /// inputs drifted).
    pub async fn reconcile_interrupted(
        &self,
    ) -> Result<Vec<(String, ChangeOutcome)>, ExecutorError> {
        let path = self.state.audit_log();
        let records = match crate::audit::tail(&path, usize::MAX) {
            Ok(r) => r,
            Err(e) if !path.exists() => {
                tracing::debug!(error = %e, "no audit log yet; nothing to reconcile");
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        // The latest start per change with no outcome after it (a move has two starts: add, then remove).
        let mut open: std::collections::BTreeMap<String, AuditRecord> = Default::default();
        for r in records {
            match r.kind {
                AuditKind::ApplyStart => {
                    open.insert(r.subject.clone(), r);
                }
                AuditKind::ApplyOutcome => {
                    open.remove(&r.subject);
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (id, start) in open {
            let found = match serde_json::from_value::<Change>(start.detail["change"].clone()) {
                Ok(change) => {
                    let phase = start.detail["phase"].as_str().unwrap_or("apply");
                    format!(
                        "stopped during phase {phase} (start record seq {}); {}",
                        start.seq,
                        self.inspect(&change.action).await
                    )
                }
                Err(e) => format!(
                    "stopped after start record seq {}, whose change could not be read back: {e}",
                    start.seq
                ),
            };
            tracing::warn!(change = %id, %found, "a change was interrupted by a restart; reconciled");
            let outcome = ChangeOutcome::Interrupted { found };
            self.audit(
                AuditKind::ApplyOutcome,
                "executor",
                &id,
                serde_json::to_value(&outcome).map_err(ExecutorError::Encode)?,
            )?;
            out.push((id, outcome));
        }
        Ok(out)
    }

    /// What the actuators report now about the target of `action`, as a sentence.
    async fn inspect(&self, action: &Action) -> String {
        let replicas = |resource: &str| {
            let resource = resource.to_string();
            async move { self.placement.replicas(&resource).await }
        };
        let on = |view: &super::ReplicaView, node: &str| {
            view.replicas
                .iter()
                .find(|r| r.node == node && r.diskful)
                .map(|r| r.up_to_date)
        };
        let state = |found: Option<bool>| match found {
            Some(true) => "present and UpToDate",
            Some(false) => "present, not UpToDate yet",
            None => "absent",
        };
        match action {
            Action::SetKnobs { from, to } => match self.knobs.current().await {
                Ok(now) if now == *to => {
                    "the knobs are at the new setting (not verified)".to_string()
                }
                Ok(now) if now == *from => {
                    "the knobs are at the old setting: not applied (the planner plans again from what it measures)"
                        .to_string()
                },
                Ok(now) => format!("the knobs are at {now:?}, neither the old nor the new setting"),
                Err(e) => format!("the knobs could not be read: {e}"),
            },
            Action::AddReplica { resource, node, .. } => match replicas(resource).await {
                Ok(view) => format!("replica of {resource} on {node} is {}", state(on(&view, node))),
                Err(e) => format!("replicas of {resource} could not be read: {e}"),
            },
            Action::MoveReplica {
                resource,
                from_node,
                to_node,
                ..
            } => match replicas(resource).await {
                Ok(view) => format!(
                    "replica of {resource} on the target {to_node} is {}, on the source {from_node} {}",
                    state(on(&view, to_node)),
                    state(on(&view, from_node))
                ),
                Err(e) => format!("replicas of {resource} could not be read: {e}"),
            },
            Action::RemoveReplica { resource, node } => match replicas(resource).await {
                Ok(view) => format!("replica of {resource} on {node} is {}", state(on(&view, node))),
                Err(e) => format!("replicas of {resource} could not be read: {e}"),
            },
            Action::SetPlaceCount { resource, to, .. } => match replicas(resource).await {
                Ok(view) => format!(
                    "place count of {resource} is {} (the change wanted {to})",
                    view.place_count
                ),
                Err(e) => format!("replicas of {resource} could not be read: {e}"),
            },
            Action::DeleteResource { resource } => {
                format!("no actuator can delete a resource; {resource} was left alone")
            }
        }
    }

    /// One open recommendation per target: a new change planned for a target expires the older recommendations
    /// for it (audited), so a person approving one approves the latest plan, not one the planner has moved past.
    fn supersede_recommendations(&self, change: &Change, now: i64) -> Result<(), ExecutorError> {
        for old in self.proposals.list()? {
            if old.status != ProposalStatus::Recommended
                || old.change.target != change.target
                || old.change.id == change.id
            {
                continue;
            }
            let reason = format!("superseded by a newer recommendation, change {}", change.id);
            self.audit(
                AuditKind::Expired,
                "executor",
                &old.id,
                serde_json::json!({ "reason": reason }),
            )?;
            self.proposals
                .set_status(&old.id, ProposalStatus::Expired { reason, at: now })?;
        }
        Ok(())
    }

    fn refuse(&self, change: &Change, reason: String) -> Result<ChangeOutcome, ExecutorError> {
        tracing::warn!(change = %change.id, verb = change.action.verb(), %reason, "change refused");
        self.audit(
            AuditKind::Refused,
            "executor",
            &change.id,
            serde_json::json!({ "verb": change.action.verb(), "reason": reason }),
        )?;
        Ok(ChangeOutcome::Refused { reason })
    }

    /// Applies one change the gate let through. Checks, before any side effect: the verb is granted by policy,
    /// applying is not paused (state flag or policy kill switch), and the caps hold. Then audits the start
    /// (synced) and calls the actuators; audits the outcome.
    pub async fn apply(
        &self,
        change: &Change,
        gate: &Gate,
        origin: ApplyOrigin,
        now: i64,
    ) -> Result<ChangeOutcome, ExecutorError> {
        let verb = change.action.verb();
        let granted: BTreeSet<String> = gate.grants().callable();
        if !granted.contains(verb) {
            return self.refuse(
                change,
                format!("verb {verb} is not granted by policy (granted: {granted:?})"),
            );
        }
        if let Some(flag) = self.state.paused()? {
            return self.refuse(
                change,
                format!(
                    "applying is paused by {} at {}: {}",
                    flag.by, flag.at, flag.reason
                ),
            );
        }
        if gate.kill_switch() {
            return self.refuse(change, "the policy kill switch is on".to_string());
        }
        let is_move = matches!(change.action, Action::MoveReplica { .. });
        let moves = self.moves_in_progress.load(Ordering::SeqCst);
        if is_move && moves >= self.config.max_concurrent_moves {
            return self.refuse(
                change,
                format!(
                    "concurrent moves {} exceed limit {}",
                    moves + 1,
                    self.config.max_concurrent_moves
                ),
            );
        }
        let last_hour = self.state.changes_last_hour(now)?;
        if last_hour >= self.config.max_changes_per_hour {
            return self.refuse(
                change,
                format!(
                    "changes in the last hour {} exceed limit {}",
                    last_hour + 1,
                    self.config.max_changes_per_hour
                ),
            );
        }
        let _guard = is_move.then(|| {
            self.moves_in_progress.fetch_add(1, Ordering::SeqCst);
            MoveGuard(&self.moves_in_progress)
        });
        let phase = if is_move { "add_target" } else { "apply" };
        self.audit(
            AuditKind::ApplyStart,
            "executor",
            &change.id,
            serde_json::json!({ "change": change, "origin": origin, "phase": phase }),
        )?;
        self.state.record_applied(now)?;
        let outcome = match &change.action {
            Action::SetKnobs { to, .. } => self.apply_knobs(change, to).await?,
            Action::AddReplica {
                resource,
                node,
                pool,
            } => match self.placement.add_replica(resource, node, pool).await {
                Ok(()) => ChangeOutcome::Applied {
                    detail: format!("added {resource} on {node}/{pool}"),
                },
                Err(e) => failed(e),
            },
            Action::MoveReplica {
                resource,
                from_node,
                to_node,
                to_pool,
                ..
            } => {
                self.apply_move(change, resource, from_node, to_node, to_pool)
                    .await?
            }
            Action::RemoveReplica { resource, node } => {
                match self.removal_blocker(resource, node, None).await {
                    Some(why) => ChangeOutcome::Failed { error: why },
                    None => match self.placement.remove_replica(resource, node).await {
                        Ok(()) => ChangeOutcome::Applied {
                            detail: format!("removed {resource} from {node}"),
                        },
                        Err(e) => failed(e),
                    },
                }
            }
            Action::SetPlaceCount { resource, to, .. } => {
                match self.placement.set_place_count(resource, *to).await {
                    Ok(()) => ChangeOutcome::Applied {
                        detail: format!("place count of {resource} set to {to}"),
                    },
                    Err(e) => failed(e),
                }
            }
            Action::DeleteResource { resource } => ChangeOutcome::Failed {
                error: format!("no actuator can delete a resource; {resource} left alone"),
            },
        };
        self.audit(
            AuditKind::ApplyOutcome,
            "executor",
            &change.id,
            serde_json::to_value(&outcome).map_err(ExecutorError::Encode)?,
        )?;
        Ok(outcome)
    }

    async fn apply_knobs(
        &self,
        change: &Change,
        to: &Settings,
    ) -> Result<ChangeOutcome, ExecutorError> {
        let window = Duration::from_secs(self.config.verify_window_s);
        let before = match self.knobs.current().await {
            Ok(s) => s,
            Err(e) => return Ok(failed(e)),
        };
        let baseline = match self.knobs.observed(window).await {
            Ok(s) => s,
            Err(e) => return Ok(failed(e)),
        };
        let old = knob_values(&before);
        for (i, (knob, value)) in knob_values(to).into_iter().enumerate() {
            if old[i].1 == value {
                continue;
            }
            if let Err(e) = self.knobs.set(knob, value).await {
                let restore = self
                    .restore_knobs(
                        change,
                        &before,
                        &format!("setting {knob:?} failed: {e}"),
                        None,
                    )
                    .await?;
                return Ok(ChangeOutcome::Failed {
                    error: format!("setting {knob:?} to {value} failed: {e}; {restore}"),
                });
            }
        }
        let after = match self.knobs.observe(window).await {
            Ok(s) => s,
            Err(e) => return Ok(failed(format!("knobs set but not verified: {e}"))),
        };
        let tol = self.config.rollback_tolerance;
        let mut worse = Vec::new();
        // Bigger batches deliberately trade some p99 (still under the objective) for throughput; the plan says
        // which p99 it measured for the new setting. Worse means worse than both that and the old p99.
        // A relief change was planned on the p99 measured over many batches at the old setting; a short window
        // just before the change may have caught a lull, so the worse of the two is what relief is judged against.
        let expected_p99 = change
            .reason
            .figures
            .get("chosen_p99_ms")
            .or_else(|| change.reason.figures.get("relief_of_p99_ms"))
            .copied()
            .unwrap_or(0.0);
        // A p99 rise is the price of the throughput the change was made for when it stays within the objective the
        // planner chose under and throughput rose by more than the tolerance: with a 2-second window of a few dozen
        // batches, p99 is close to the slowest batch, and judging that alone rolled back changes that quadrupled
        // capacity over a 3 ms wobble. Without a stated objective any rise counts.
        // A change that adds capacity (more writes in flight, bigger batches) and then kept up with write slots
        // to spare has paid for its p99 rise too: its throughput follows the load, not the setting, so it cannot
        // show the rise (a probe from 2 to 4 writes in flight for a capacity shortfall was rolled back for a p99
        // of 86 ms against 50, with the objective at 250).
        let full = |w: &WindowStats| w.slot_share.is_none_or(|s| s >= SATURATED_SLOT_SHARE);
        let adds_capacity = to.concurrency > before.concurrency
            || to.batch_rows > before.batch_rows
            || to.batch_bytes > before.batch_bytes;
        let objective = change.reason.figures.get("p99_objective_ms").copied();
        let paid_for = (after.throughput_rows_per_s > baseline.throughput_rows_per_s * (1.0 + tol)
            || (adds_capacity && !full(&after)))
            && objective.is_some_and(|o| after.p99_ms <= o);
        // Relief that turns write timeouts into slower successes raises the p99 of the successes while the node
        // does better: with the error share at least halved, that rise is not held against it.
        let relief = change.reason.figures.contains_key("relief_of_p99_ms");
        let errors_fell = baseline.error_share > RELIEF_ERROR_SHARE
            && after.error_share <= baseline.error_share / 2.0;
        if after.p99_ms > baseline.p99_ms.max(expected_p99) * (1.0 + tol)
            && !paid_for
            && !(relief && errors_fell)
        {
            let expected = if expected_p99 > baseline.p99_ms {
                format!(" and {expected_p99:.1} ms expected")
            } else {
                String::new()
            };
            worse.push(format!(
                "p99 {:.1} ms worse than {:.1} ms before{expected} (tolerance {:.0} %)",
                after.p99_ms,
                baseline.p99_ms,
                tol * 100.0
            ));
        }
        // A change made to relieve a queueing node (fewer writes in flight) is judged on p99; throughput, which
        // follows how full the batches of the moment are, may wobble by up to `RELIEF_TOLERANCE`.
        let throughput_tol = if relief {
            tol.max(RELIEF_TOLERANCE)
        } else {
            tol
        };
        // Throughput here is capacity shown (rows written per second of write-slot time, times writes in flight).
        // It says nothing about the setting when the load changed between the windows (a burst ended, so batches
        // filled differently), nor when the new setting kept up with slots to spare: then p99 alone judges it. A
        // setting that ran full is held to what the old one did: its capacity when it too ran full, else the rows
        // it actually wrote (counting slots it never used made a setting with 32 writes allowed and two running
        // look sixteen times as fast as it was).
        let caps_changed =
            (before.batch_rows, before.batch_bytes) != (to.batch_rows, to.batch_bytes);
        let comparable = comparable_fill(&baseline, &after, caps_changed);
        let reference = if full(&baseline) {
            baseline.throughput_rows_per_s
        } else {
            baseline
                .rows_written_per_s
                .unwrap_or(baseline.throughput_rows_per_s)
        };
        let mut notes = String::new();
        if !comparable {
            notes = format!(
                "; throughput not compared, the load changed: {:.1} rows per batch before, {:.1} after",
                baseline.mean_rows, after.mean_rows
            );
        } else if !full(&after) {
            notes = format!(
                "; throughput not compared, the new setting kept up with write slots to spare ({:.0} % used)",
                after.slot_share.unwrap_or(0.0) * 100.0
            );
        } else if after.throughput_rows_per_s < reference * (1.0 - throughput_tol) {
            let what = if full(&baseline) {
                "before"
            } else {
                "written before"
            };
            worse.push(format!(
                "throughput {:.0} rows/s worse than {:.0} rows/s {what} (tolerance {:.0} %)",
                after.throughput_rows_per_s,
                reference,
                throughput_tol * 100.0
            ));
        }
        if worse.is_empty() {
            return Ok(ChangeOutcome::Applied {
                detail: format!(
                    "knobs set; over {} s p99 {:.1} → {:.1} ms, throughput {:.0} → {:.0} rows/s{notes}",
                    self.config.verify_window_s,
                    baseline.p99_ms,
                    after.p99_ms,
                    baseline.throughput_rows_per_s,
                    after.throughput_rows_per_s
                ),
            });
        }
        let why = worse.join("; ");
        let restore = self
            .restore_knobs(change, &before, &why, Some((baseline, after)))
            .await?;
        Ok(ChangeOutcome::RolledBack {
            detail: format!("{why}; {restore}"),
        })
    }

    /// Puts the knobs back to `before`, audited before it does.
    async fn restore_knobs(
        &self,
        change: &Change,
        before: &Settings,
        why: &str,
        stats: Option<(WindowStats, WindowStats)>,
    ) -> Result<String, ExecutorError> {
        self.audit(
            AuditKind::Rollback,
            "executor",
            &change.id,
            serde_json::json!({ "why": why, "restoring": before, "baseline_and_after": stats }),
        )?;
        for (knob, value) in knob_values(before) {
            if let Err(e) = self.knobs.set(knob, value).await {
                return Ok(format!("rollback of {knob:?} failed: {e}"));
            }
        }
        Ok("knobs restored".to_string())
    }

    /// Why removing `node`'s replica of `resource` would be unsafe, if it would: it is in use, or fewer than
    /// the place count of diskful UpToDate replicas would remain (`required_up_to_date` must be one of them).
    async fn removal_blocker(
        &self,
        resource: &str,
        node: &str,
        required_up_to_date: Option<&str>,
    ) -> Option<String> {
        let view = match self.placement.replicas(resource).await {
            Ok(v) => v,
            Err(e) => return Some(format!("cannot read replicas of {resource}: {e}")),
        };
        if view.replicas.iter().any(|r| r.node == node && r.in_use) {
            return Some(format!(
                "replica of {resource} on {node} is in use; not removing it"
            ));
        }
        if let Some(target) = required_up_to_date {
            if !view
                .replicas
                .iter()
                .any(|r| r.node == target && r.diskful && r.up_to_date)
            {
                return Some(format!(
                    "replica of {resource} on {target} is not UpToDate; source on {node} kept"
                ));
            }
        }
        let remaining = view
            .replicas
            .iter()
            .filter(|r| r.node != node && r.diskful && r.up_to_date)
            .count();
        if remaining < view.place_count as usize {
            return Some(format!(
                "removing {resource} from {node} would leave {remaining} UpToDate diskful replicas, below place count {}",
                view.place_count
            ));
        }
        None
    }

    async fn apply_move(
        &self,
        change: &Change,
        resource: &str,
        from_node: &str,
        to_node: &str,
        to_pool: &str,
    ) -> Result<ChangeOutcome, ExecutorError> {
        if let Err(e) = self.placement.add_replica(resource, to_node, to_pool).await {
            return Ok(failed(format!(
                "adding {resource} on {to_node}/{to_pool} failed: {e}"
            )));
        }
        let poll = Duration::from_secs(self.config.poll_interval_s.max(1));
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.up_to_date_timeout_s);
        loop {
            match self.placement.replicas(resource).await {
                Ok(view)
                    if view
                        .replicas
                        .iter()
                        .any(|r| r.node == to_node && r.diskful && r.up_to_date) =>
                {
                    break
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%resource, error = %e, "reading replica state failed; retrying")
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(ChangeOutcome::Failed {
                    error: format!(
                        "replica of {resource} on {to_node} not UpToDate after {} s; source on {from_node} kept",
                        self.config.up_to_date_timeout_s
                    ),
                });
            }
            tokio::time::sleep(poll).await;
        }
        if let Some(why) = self
            .removal_blocker(resource, from_node, Some(to_node))
            .await
        {
            return Ok(ChangeOutcome::Failed {
                error: format!("added on {to_node}, but {why}"),
            });
        }
        self.audit(
            AuditKind::ApplyStart,
            "executor",
            &change.id,
            serde_json::json!({ "change": change, "phase": "remove_source", "target_up_to_date": to_node }),
        )?;
        match self.placement.remove_replica(resource, from_node).await {
            Ok(()) => Ok(ChangeOutcome::Applied {
                detail: format!("moved {resource}: added on {to_node}/{to_pool}, UpToDate, then removed from {from_node}"),
            }),
            Err(e) => Ok(failed(format!("added on {to_node} (UpToDate) but removing from {from_node} failed: {e}"))),
        }
    }
}
