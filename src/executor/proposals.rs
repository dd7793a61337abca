//! Proposals: changes waiting for a person, one JSON file each in the state directory, hashed so that
//! what runs is exactly what was approved.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::state::{read_json, write_json_atomic, StateDir};
use super::ExecutorError;
use crate::audit::canonical::canonical_sha256;
use crate::audit::{AuditKind, AuditLog};
use crate::planner::Change;
use crate::policy::Decision;

/// The proposal file format version.
pub const PROPOSAL_VERSION: u32 = 1;

/// Where a proposal stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProposalStatus {
    /// Planned in recommend mode; nothing runs unless a person approves and trimtab is autonomous.
    Recommended,
    /// Policy says a person must approve it.
    Pending,
    /// Approved; the agent runs it on its next step in autonomous mode if its inputs have not drifted.
    Approved {
        /// Who approved.
        by: String,
        /// Unix seconds.
        at: i64,
    },
    /// Rejected; never runs.
    Rejected {
        /// Who rejected.
        by: String,
        /// Unix seconds.
        at: i64,
    },
    /// Its inputs drifted before it ran; it will be planned again.
    Expired {
        /// What drifted.
        reason: String,
        /// Unix seconds.
        at: i64,
    },
    /// It ran.
    Applied {
        /// Unix seconds.
        at: i64,
        /// What happened.
        outcome: String,
    },
    /// It ran and failed, or was refused at run time.
    Failed {
        /// Unix seconds.
        at: i64,
        /// Why.
        error: String,
    },
}

impl ProposalStatus {
    /// Whether a person can still approve or reject it.
    pub fn is_open(&self) -> bool {
        matches!(self, ProposalStatus::Recommended | ProposalStatus::Pending)
    }
}

/// One proposal file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    /// [`PROPOSAL_VERSION`].
    pub version: u32,
    /// Proposal id (file name without `.json`).
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Where it stands.
    pub status: ProposalStatus,
    /// Exactly what will run.
    pub change: Change,
    /// sha256 over the canonical JSON of `change`; checked before it runs.
    pub plan_hash: String,
    /// Fingerprint of the observed inputs the change depends on; a mismatch at run time expires it.
    pub fingerprint: String,
    /// The gate's decision when it was proposed.
    pub decision: Decision,
}

/// The hash a proposal's `plan_hash` must equal.
pub fn plan_hash(change: &Change) -> Result<String, ExecutorError> {
    canonical_sha256(change).map_err(ExecutorError::Encode)
}

/// The proposals in a state directory.
#[derive(Debug, Clone)]
pub struct ProposalStore {
    state: StateDir,
}

impl ProposalStore {
    /// The store inside `state`.
    pub fn new(state: StateDir) -> Self {
        ProposalStore { state }
    }

    fn path(&self, id: &str) -> Result<PathBuf, ExecutorError> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(ExecutorError::BadProposalId { id: id.to_string() });
        }
        Ok(self.state.proposals_dir().join(format!("{id}.json")))
    }

    /// Creates a proposal for `change` (or returns the open one that already exists for the same change).
    pub fn create(
        &self,
        change: &Change,
        status: ProposalStatus,
        fingerprint: String,
        decision: Decision,
        now: i64,
    ) -> Result<(Proposal, bool), ExecutorError> {
        if let Some(open) = self
            .list()?
            .into_iter()
            .find(|p| p.change.id == change.id && p.status.is_open())
        {
            return Ok((open, false));
        }
        let short: String = change
            .id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let id = format!("p{now}-{short}");
        let proposal = Proposal {
            version: PROPOSAL_VERSION,
            id: id.clone(),
            created_at: now,
            status,
            change: change.clone(),
            plan_hash: plan_hash(change)?,
            fingerprint,
            decision,
        };
        write_json_atomic(&self.path(&id)?, &proposal)?;
        Ok((proposal, true))
    }

    /// Every proposal, oldest first.
    pub fn list(&self) -> Result<Vec<Proposal>, ExecutorError> {
        let dir = self.state.proposals_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ExecutorError::State {
                    path: dir,
                    op: "read directory",
                    source,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(p) = read_json::<Proposal>(&path)? {
                    out.push(p);
                }
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Target keys with a proposal waiting for a person or approved but not yet run: feed these into
    /// [`crate::planner::History::in_flight`] so the planner does not propose a second change for them.
    ///
    /// A recommendation (recommend mode) does not count: it is advice, not a change under way, and holding its
    /// target back would freeze planning for it until a person acted; a newer recommendation supersedes it.
    pub fn in_flight_targets(&self) -> Result<std::collections::BTreeSet<String>, ExecutorError> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|p| {
                matches!(
                    p.status,
                    ProposalStatus::Pending | ProposalStatus::Approved { .. }
                )
            })
            .map(|p| p.change.target)
            .collect())
    }

    /// One proposal.
    pub fn get(&self, id: &str) -> Result<Proposal, ExecutorError> {
        read_json(&self.path(id)?)?
            .ok_or_else(|| ExecutorError::NoSuchProposal { id: id.to_string() })
    }

    /// Overwrites a proposal's status.
    pub fn set_status(&self, id: &str, status: ProposalStatus) -> Result<Proposal, ExecutorError> {
        let mut p = self.get(id)?;
        p.status = status;
        write_json_atomic(&self.path(id)?, &p)?;
        Ok(p)
    }

    /// Checks that the stored change still hashes to the approved `plan_hash`.
    pub fn check_hash(&self, p: &Proposal) -> Result<(), ExecutorError> {
        let actual = plan_hash(&p.change)?;
        if actual != p.plan_hash {
            return Err(ExecutorError::PlanHashMismatch {
                id: p.id.clone(),
                expected: p.plan_hash.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Approves an open proposal: audits who approved it (before the status changes), then marks it approved.
    pub fn approve(
        &self,
        id: &str,
        by: &str,
        audit: &mut AuditLog,
        now: i64,
    ) -> Result<Proposal, ExecutorError> {
        let p = self.get(id)?;
        if !p.status.is_open() {
            return Err(ExecutorError::NotOpen {
                id: id.to_string(),
                status: format!("{:?}", p.status),
            });
        }
        self.check_hash(&p)?;
        audit.append(
            AuditKind::Approval,
            by,
            id,
            serde_json::json!({ "change": p.change, "plan_hash": p.plan_hash, "fingerprint": p.fingerprint }),
        )?;
        self.set_status(
            id,
            ProposalStatus::Approved {
                by: by.to_string(),
                at: now,
            },
        )
    }

    /// Rejects an open proposal, audited first.
    pub fn reject(
        &self,
        id: &str,
        by: &str,
        audit: &mut AuditLog,
        now: i64,
    ) -> Result<Proposal, ExecutorError> {
        let p = self.get(id)?;
        if !p.status.is_open() {
            return Err(ExecutorError::NotOpen {
                id: id.to_string(),
                status: format!("{:?}", p.status),
            });
        }
        audit.append(
            AuditKind::Rejection,
            by,
            id,
            serde_json::json!({ "plan_hash": p.plan_hash }),
        )?;
        self.set_status(
            id,
            ProposalStatus::Rejected {
                by: by.to_string(),
                at: now,
            },
        )
    }
}
