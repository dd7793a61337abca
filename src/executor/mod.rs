//! The executor: least-privilege apply of gated changes, with audit first, blast-radius caps, a kill switch,
//! verification and rollback of knob changes, two-phase moves, and approvals.
//!
//! Only verbs the policy grants can run, and only through [`PlacementActuator`] and [`KnobActuator`], which
//! have no method for anything else. Every mutating call is preceded by an audit record synced to disk.
//!
//! The HTTP API offers the same as the command line through [`ProposalStore`] (list, get, approve, reject) and
//! [`StateDir`] (pause, resume).
//!
//! # One control step
//!
//! 1. Adapt the LINSTOR reader, metric store and forecaster into [`crate::planner::Observed`],
//!    [`crate::planner::ForecastView`] and [`crate::planner::Settings`]; fill `History::in_flight` from
//!    [`ProposalStore::in_flight_targets`].
//! 2. `let mode = grace.mode(configured, &forecast.trust, &limits);` (a [`crate::policy::AccuracyGrace`] kept
//!    across steps; [`crate::policy::effective_mode`] without the grace).
//! 3. `let plan = planner::plan(&observed, &forecast, &settings, &history, &limits, now);`
//! 4. `executor.run_approved(&gate, &mode, &observed, &settings, now)` then
//!    `executor.run_step(&gate, &mode, &plan, &observed, &settings, now)`.
//! 5. For every `Applied`/`RolledBack` outcome, `history.record_change(change, now)`.

mod actuator;
mod apply;
pub mod cli;
mod memory;
mod proposals;
mod state;

pub use actuator::{
    knob_values, ActuatorError, Knob, KnobActuator, PlacementActuator, ReplicaView, WindowStats,
};
pub use apply::{ApplyOrigin, ChangeOutcome, Executor, ExecutorConfig, StepReport};
pub use memory::{MemoryKnobs, MemoryPlacement};
pub use proposals::{plan_hash, Proposal, ProposalStatus, ProposalStore, PROPOSAL_VERSION};
pub use state::{PauseFlag, StateDir, DEFAULT_STATE_DIR};

use std::path::PathBuf;

/// Why the executor could not do its bookkeeping (an actuator failure is an outcome, not this error).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Writing the audit record failed, so nothing was applied.
    #[error("audit failed, nothing applied")]
    Audit(
        #[from]
        #[source]
        crate::audit::AuditError,
    ),
    /// A state-directory file could not be read or written.
    #[error("state file {path}: {op} failed")]
    State {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A state-directory file is not what trimtab writes.
    #[error("state file {path} is not valid: {message}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Something could not be encoded as JSON.
    #[error("could not encode state")]
    Encode(#[source] serde_json::Error),
    /// No proposal has this id.
    #[error("no proposal with id {id}")]
    NoSuchProposal {
        /// The id given.
        id: String,
    },
    /// A proposal id with characters other than letters, digits and `-`.
    #[error("proposal id {id:?} is not valid, expected letters, digits and '-'")]
    BadProposalId {
        /// The id given.
        id: String,
    },
    /// The proposal is no longer open for approval or rejection.
    #[error("proposal {id} is {status}, not open")]
    NotOpen {
        /// The id.
        id: String,
        /// Its status.
        status: String,
    },
    /// The stored change does not hash to what was approved: it was edited after proposal.
    #[error(
        "proposal {id} changed after it was proposed: plan hash {actual}, approved {expected}"
    )]
    PlanHashMismatch {
        /// The id.
        id: String,
        /// The hash recorded at proposal time.
        expected: String,
        /// The hash of the change as stored now.
        actual: String,
    },
}

impl ExecutorError {
    /// Whether trying the same thing again may work (IO), as opposed to bad input or tampering.
    pub fn is_retriable(&self) -> bool {
        match self {
            ExecutorError::Audit(e) => e.is_retriable(),
            ExecutorError::State { .. } => true,
            _ => false,
        }
    }
}
