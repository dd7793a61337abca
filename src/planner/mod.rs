//! Pure planning: from observed state, forecast, settings, history and limits to a [`Plan`]. No IO.
//!
//! [`plan`] is deterministic: the same inputs give the same plan, byte for byte. It is also idempotent in the
//! sense the control loop needs: planning again from the state the plan leaves behind ([`project`]) changes
//! nothing, because every trigger has a hysteresis band and every change is planned against the projected
//! state of the changes before it.
//!
//! Order of priority within one plan, sharing the `max_changes_per_step` cap: missing replicas, pipeline knobs,
//! pools forecast to fill up, skew.

mod knobs;
mod limits;
mod model;
mod placement;
mod projection;

pub use limits::{InvalidLimits, Limits};
pub use model::*;
pub use projection::{fingerprint, project, violations};

use crate::audit::canonical::canonical_sha256;

/// The plan under construction: changes, skips, and the cap.
pub(crate) struct Step {
    changes: Vec<Change>,
    skipped: Vec<Skipped>,
    cap: usize,
}

impl Step {
    pub(crate) fn has_room(&self) -> bool {
        self.changes.len() < self.cap
    }

    pub(crate) fn cap_reason(&self) -> String {
        format!(
            "cap of {} changes per step reached; left for the next step",
            self.cap
        )
    }

    pub(crate) fn skip(&mut self, target: String, reason: String) {
        self.skipped.push(Skipped { target, reason });
    }

    /// Keeps one of each skip, and none for a target that got a change after all (in a later round).
    pub(crate) fn dedupe_skips(&mut self) {
        let changed: std::collections::BTreeSet<&str> =
            self.changes.iter().map(|c| c.target.as_str()).collect();
        let mut seen = std::collections::BTreeSet::new();
        self.skipped.retain(|s| {
            !changed.contains(s.target.as_str())
                && seen.insert((s.target.clone(), s.reason.clone()))
        });
    }

    pub(crate) fn push(
        &mut self,
        target: String,
        action: Action,
        reason: Reason,
        expected_effect: String,
        uses_forecast: bool,
    ) {
        self.changes.push(Change {
            id: change_id(&target, &action),
            target,
            action,
            reason,
            expected_effect,
            uses_forecast,
        });
    }
}

/// A change's id: the first 16 hex digits of sha256 over the canonical JSON of target and action.
pub fn change_id(target: &str, action: &Action) -> String {
    let mut id = canonical_sha256(&(target, action)).unwrap_or_default();
    id.truncate(16);
    id
}

/// Target key of the pipeline knobs.
pub const PIPELINE_TARGET: &str = "pipeline";

/// Plans one step. Pure and deterministic; `now` is Unix seconds.
pub fn plan(
    observed: &Observed,
    forecast: &ForecastView,
    settings: &Settings,
    history: &History,
    limits: &Limits,
    now: i64,
) -> Plan {
    let mut step = Step {
        changes: Vec::new(),
        skipped: Vec::new(),
        cap: limits.max_changes_per_step,
    };
    let trust = knobs::judge_forecast(forecast, limits);
    let mut notes = Vec::new();
    if let Some(why) = &trust.why_not {
        notes.push(why.clone());
    }

    placement::plan_placement_priority(
        observed,
        forecast,
        history,
        limits,
        now,
        &mut step,
        |step| {
            let key = PIPELINE_TARGET.to_string();
            let Some(k) = knobs::plan_knobs(observed, forecast, settings, limits, &trust) else {
                return;
            };
            // A cut for a node still overloaded may follow sooner (`Limits::relief_cooldown_s`).
            let (kind, cooldown) = if k.relieves_overload {
                (
                    "relief cooldown",
                    limits.relief_cooldown_s.min(limits.cooldown_s),
                )
            } else {
                ("cooldown", limits.cooldown_s)
            };
            if history.in_flight.contains(&key) {
                step.skip(key, "a knob change is still being verified".to_string());
            } else if let Some(at) = history
                .last_changed
                .get(&key)
                .filter(|&&at| now - at < cooldown)
            {
                step.skip(
                    key,
                    format!(
                        "{kind}: knobs changed {} s ago, {kind} {cooldown} s",
                        now - at
                    ),
                );
            } else if !step.has_room() {
                let reason = step.cap_reason();
                step.skip(key, reason);
            } else {
                step.push(key, k.action, k.reason, k.expected_effect, k.uses_forecast);
            }
        },
    );

    Plan {
        version: PLAN_VERSION,
        generated_at: now,
        forecast_trusted: trust.trusted,
        notes,
        changes: step.changes,
        skipped: step.skipped,
    }
}
