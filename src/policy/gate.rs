//! Loading, validating, reloading and evaluating the Rego policy; every failure turns into a deny.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Mode, PolicyError};
use crate::planner::{Action, Change, Settings, ALL_VERBS};
use crate::windows::WindowSet;

/// The policy data `version` this build understands.
pub const SUPPORTED_POLICY_VERSION: u64 = 1;

/// The gate's answer for one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// May be applied automatically in autonomous mode.
    Allow,
    /// Queued until a person approves it.
    NeedsApproval,
    /// Never applied.
    Deny,
}

/// A verdict with the sentences that led to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, one sentence each (for a deny: every deny reason).
    pub reasons: Vec<String>,
    /// sha256 over the policy files that decided, empty when no policy is loaded.
    pub policy_digest: String,
}

/// Facts about the moment of decision that policy rules may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateContext {
    /// The mode in force.
    pub mode: Mode,
    /// Moves currently in progress.
    pub concurrent_moves: u32,
    /// Changes applied in the last hour.
    pub changes_last_hour: u32,
}

/// The verbs policy grants, from `grants.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Format version, [`SUPPORTED_POLICY_VERSION`].
    pub version: u64,
    /// Verbs applied without a person in autonomous mode.
    pub auto: BTreeSet<String>,
    /// Verbs that need a person's approval.
    pub approval: BTreeSet<String>,
    /// Verbs trimtab never calls.
    pub never: BTreeSet<String>,
}

impl Grants {
    /// Verbs the executor may call at all (automatically or once approved).
    pub fn callable(&self) -> BTreeSet<String> {
        self.auto.union(&self.approval).cloned().collect()
    }
}

#[derive(Clone)]
struct Loaded {
    engine: regorus::Engine,
    grants: Grants,
    kill_switch: bool,
    digest: String,
    /// Maintenance windows from `windows.json` (none when absent); the open ones go in `input.windows`.
    windows: WindowSet,
}

/// The policy gate. Cheap to share behind an `Arc`; evaluation clones the loaded engine.
pub struct Gate {
    dir: PathBuf,
    loaded: Option<Loaded>,
    error: Option<String>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("dir", &self.dir)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn parse_err(path: &Path, e: impl std::fmt::Display) -> PolicyError {
    PolicyError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn invalid(dir: &Path, message: String) -> PolicyError {
    PolicyError::Invalid {
        dir: dir.to_path_buf(),
        message,
    }
}

fn load_dir(dir: &Path) -> Result<Loaded, PolicyError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| PolicyError::Read {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut engine = regorus::Engine::new();
    let mut data = serde_json::Map::new();
    let mut hasher = Sha256::new();
    let mut rego_files = 0;
    for path in &entries {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        match ext {
            "rego" => {
                let text = read(path)?;
                hasher.update(name.as_bytes());
                hasher.update(text.as_bytes());
                engine
                    .add_policy(path.display().to_string(), text)
                    .map_err(|e| parse_err(path, e))?;
                rego_files += 1;
            }
            "json" => {
                let text = read(path)?;
                hasher.update(name.as_bytes());
                hasher.update(text.as_bytes());
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| parse_err(path, e))?;
                match value.get("version").and_then(serde_json::Value::as_u64) {
                    Some(SUPPORTED_POLICY_VERSION) => {}
                    other => {
                        return Err(invalid(
                            dir,
                            format!(
                                "{name}: version is {other:?}, expected {SUPPORTED_POLICY_VERSION}"
                            ),
                        ))
                    }
                }
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string();
                data.insert(stem, value);
            }
            _ => {}
        }
    }
    if rego_files == 0 {
        return Err(invalid(dir, "no .rego files".to_string()));
    }
    let grants_value = data
        .get("grants")
        .cloned()
        .ok_or_else(|| invalid(dir, "grants.json is missing".into()))?;
    let grants: Grants = serde_json::from_value(grants_value)
        .map_err(|e| invalid(dir, format!("grants.json: {e}")))?;
    let known: BTreeSet<&str> = ALL_VERBS
        .into_iter()
        .chain(super::OPERATION_VERBS)
        .collect();
    let lists = [
        ("auto", &grants.auto),
        ("approval", &grants.approval),
        ("never", &grants.never),
    ];
    for (list, verbs) in lists {
        if let Some(v) = verbs.iter().find(|v| !known.contains(v.as_str())) {
            return Err(invalid(
                dir,
                format!(
                    "grants.json: {list} names unknown verb {v}; known verbs are {ALL_VERBS:?}"
                ),
            ));
        }
    }
    if let Some(v) = grants
        .auto
        .intersection(&grants.never)
        .chain(grants.approval.intersection(&grants.never))
        .next()
    {
        return Err(invalid(
            dir,
            format!("grants.json: verb {v} is both granted and listed under never"),
        ));
    }
    let limits = data
        .get("limits")
        .ok_or_else(|| invalid(dir, "limits.json is missing".into()))?;
    let kill_switch = match limits.get("kill_switch") {
        Some(serde_json::Value::Bool(b)) => *b,
        other => {
            return Err(invalid(
                dir,
                format!("limits.json: kill_switch is {other:?}, expected true or false"),
            ))
        }
    };
    let windows = match data.get("windows") {
        Some(value) => {
            WindowSet::from_value(value).map_err(|e| invalid(dir, format!("windows.json: {e}")))?
        }
        None => WindowSet::default(),
    };
    let document = serde_json::json!({ "trimtab": data });
    engine
        .add_data(regorus::Value::from(document))
        .map_err(|e| invalid(dir, format!("data could not be added: {e}")))?;
    let loaded = Loaded {
        engine,
        grants,
        kill_switch,
        digest: hex::encode(hasher.finalize()),
        windows,
    };
    // Validation by use: a probe change must evaluate to one of the three verdicts.
    let probe = Change {
        id: "probe".into(),
        target: "pipeline".into(),
        action: Action::SetKnobs {
            from: Settings::default(),
            to: Settings::default(),
        },
        reason: Default::default(),
        expected_effect: String::new(),
        uses_forecast: false,
    };
    let ctx = GateContext {
        mode: Mode::Recommend,
        concurrent_moves: 0,
        changes_last_hour: 0,
    };
    evaluate_loaded(&loaded, &change_value(&probe)?, &ctx)
        .map_err(|e| invalid(dir, format!("probe evaluation failed: {e}")))?;
    Ok(loaded)
}

fn strings(value: regorus::Value, rule: &str) -> Result<Vec<String>, PolicyError> {
    if value == regorus::Value::Undefined {
        return Ok(Vec::new());
    }
    let json = value.to_json_str().map_err(|e| PolicyError::Eval {
        message: format!("{rule}: {e}"),
    })?;
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Array(items)) => Ok(items
            .into_iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect()),
        _ => Err(PolicyError::Eval {
            message: format!("{rule} is {json}, expected a set of strings"),
        }),
    }
}

fn change_value(change: &Change) -> Result<serde_json::Value, PolicyError> {
    serde_json::to_value(change).map_err(|e| PolicyError::Eval {
        message: format!("change {} could not be encoded: {e}", change.id),
    })
}

fn evaluate_loaded(
    loaded: &Loaded,
    change: &serde_json::Value,
    ctx: &GateContext,
) -> Result<Decision, PolicyError> {
    let eval = |message: String| PolicyError::Eval { message };
    let mut engine = loaded.engine.clone();
    let windows = loaded.windows.gate_input(time::OffsetDateTime::now_utc());
    let input = serde_json::json!({ "change": change, "context": ctx, "windows": windows });
    let verb = change
        .pointer("/action/verb")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("(none)")
        .to_string();
    engine.set_input(regorus::Value::from(input));
    let mut rule = |name: &str| {
        engine
            .eval_rule(format!("data.trimtab.gate.{name}"))
            .map_err(|e| eval(format!("{name}: {e}")))
    };
    let decision = rule("decision")?;
    let deny = strings(rule("deny")?, "deny")?;
    let approval = strings(rule("approval")?, "approval")?;
    let allow = strings(rule("allow")?, "allow")?;
    let (verdict, reasons) = match decision.as_string().map(|s| s.to_string()).as_deref() {
        Ok("deny") if deny.is_empty() => (
            Verdict::Deny,
            vec![format!("no policy rule allows verb {verb}")],
        ),
        Ok("deny") => (Verdict::Deny, deny),
        Ok("needs_approval") => (Verdict::NeedsApproval, approval),
        Ok("allow") => (Verdict::Allow, allow),
        _ => {
            return Err(eval(format!(
                "decision is {decision}, expected \"allow\", \"needs_approval\" or \"deny\""
            )))
        }
    };
    Ok(Decision {
        verdict,
        reasons,
        policy_digest: loaded.digest.clone(),
    })
}

/// Loads and validates the policy in `dir` without keeping it: for a command that should refuse to start on a
/// policy that would leave the gate denying everything.
pub fn check(dir: &Path) -> Result<(), PolicyError> {
    load_dir(dir).map(|_| ())
}

impl Gate {
    /// Loads the policy in `dir`. Never fails: a policy that does not load leaves the gate denying everything,
    /// with the error in [`Gate::load_error`] and in every decision's reasons.
    pub fn load(dir: &Path) -> Gate {
        match load_dir(dir) {
            Ok(loaded) => {
                tracing::info!(dir = %dir.display(), digest = %loaded.digest, "policy loaded");
                Gate {
                    dir: dir.to_path_buf(),
                    loaded: Some(loaded),
                    error: None,
                }
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "policy did not load; denying every change");
                Gate {
                    dir: dir.to_path_buf(),
                    loaded: None,
                    error: Some(e.to_string()),
                }
            }
        }
    }

    /// Reloads from the same directory. On failure the policy in use (if any) stays in use and the error is
    /// returned (and kept in [`Gate::load_error`] only if no policy was in use).
    pub fn reload(&mut self) -> Result<(), PolicyError> {
        match load_dir(&self.dir) {
            Ok(loaded) => {
                tracing::info!(dir = %self.dir.display(), digest = %loaded.digest, "policy reloaded");
                self.loaded = Some(loaded);
                self.error = None;
                Ok(())
            }
            Err(e) => {
                if self.loaded.is_some() {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "policy reload failed; keeping the old policy");
                } else {
                    self.error = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Why no policy is loaded, if none is.
    pub fn load_error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The digest of the policy in use, if any.
    pub fn digest(&self) -> Option<&str> {
        self.loaded.as_ref().map(|l| l.digest.as_str())
    }

    /// The grants in use; empty (nothing callable) when no policy is loaded.
    pub fn grants(&self) -> Grants {
        self.loaded
            .as_ref()
            .map(|l| l.grants.clone())
            .unwrap_or_default()
    }

    /// Whether the policy's kill switch is on; on when no policy is loaded.
    pub fn kill_switch(&self) -> bool {
        self.loaded.as_ref().is_none_or(|l| l.kill_switch)
    }

    /// Decides on one change. Fails closed: no policy, or an evaluation error, gives a deny that says why.
    pub fn evaluate(&self, change: &Change, ctx: &GateContext) -> Decision {
        match change_value(change) {
            Ok(value) => self.evaluate_value(&change.id, &value, ctx),
            Err(e) => Decision {
                verdict: Verdict::Deny,
                reasons: vec![format!("denied because {e}")],
                policy_digest: self.digest().unwrap_or_default().to_string(),
            },
        }
    }

    /// Decides on an operator's operation that is not a planner change (a re-drive): `change` has the shape of
    /// a [`Change`] (`id`, `target`, `action` with a `verb` from [`super::OPERATION_VERBS`], `reason`).
    pub fn evaluate_operation(&self, change: &serde_json::Value, ctx: &GateContext) -> Decision {
        let id = change
            .get("id")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("(operation)")
            .to_string();
        self.evaluate_value(&id, change, ctx)
    }

    fn evaluate_value(&self, id: &str, change: &serde_json::Value, ctx: &GateContext) -> Decision {
        let Some(loaded) = &self.loaded else {
            let why = self
                .error
                .clone()
                .unwrap_or_else(|| "no policy loaded".to_string());
            return Decision {
                verdict: Verdict::Deny,
                reasons: vec![format!("policy not loaded, denying everything: {why}")],
                policy_digest: String::new(),
            };
        };
        match evaluate_loaded(loaded, change, ctx) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(change = %id, error = %e, "policy evaluation failed; denying");
                Decision {
                    verdict: Verdict::Deny,
                    reasons: vec![format!("denied because {e}")],
                    policy_digest: loaded.digest.clone(),
                }
            }
        }
    }
}
