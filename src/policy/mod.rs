//! The policy gate: Rego policies from `policies/` evaluated in-process with regorus, failing closed.
//!
//! Each planned change gets a [`Decision`]: allow, needs approval, or deny, with sentences a person can read.
//! A policy directory that does not load or validate makes the gate deny everything and say why; a reload
//! that fails keeps the policy that was working.

mod gate;
mod mode;

pub use gate::{check, Decision, Gate, GateContext, Grants, Verdict, SUPPORTED_POLICY_VERSION};
pub use mode::{effective_mode, AccuracyGrace, Mode, ModeDecision};

use std::path::PathBuf;

/// Verbs of operations a person starts that still go through the gate (they are not planner changes):
/// `redrive_dead_letters` moves dead-lettered messages back to their entity.
pub const OPERATION_VERBS: [&str; 1] = ["redrive_dead_letters"];

/// Why the policy could not be loaded, validated or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy or data file could not be read.
    #[error("policy file {path} could not be read")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Rego file did not parse, or a data file is not JSON.
    #[error("policy file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The files load but do not make a usable policy (missing version, unknown verb, no decision rule).
    #[error("policy in {dir} failed validation: {message}")]
    Invalid {
        /// The policy directory.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Evaluating the policy for a change failed.
    #[error("policy evaluation failed: {message}")]
    Eval {
        /// The evaluator's message.
        message: String,
    },
}

impl PolicyError {
    /// Only reading can succeed on retry (a file being replaced); bad policy stays bad until someone fixes it.
    pub fn is_retriable(&self) -> bool {
        matches!(self, PolicyError::Read { .. })
    }
}
