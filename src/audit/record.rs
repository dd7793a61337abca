//! One audit record: its fields, its kinds, and how its hash is computed over canonical JSON.

use serde::{Deserialize, Serialize};

use super::canonical::canonical_sha256;

/// The record format version this build writes and verifies.
pub const AUDIT_VERSION: u32 = 1;

/// The `prev_hash` of the first record in a log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A change was proposed by the planner.
    Proposal,
    /// The policy gate decided on a change (with its reasons).
    Decision,
    /// A person approved a queued proposal.
    Approval,
    /// A person rejected a queued proposal.
    Rejection,
    /// A proposal expired because its inputs drifted.
    Expired,
    /// The executor is about to call an actuator; written and synced before the call.
    ApplyStart,
    /// What the actuator call did.
    ApplyOutcome,
    /// A knob change made things worse and was undone.
    Rollback,
    /// The executor refused a change before any side effect (verb not granted, paused, over a cap).
    Refused,
    /// Applying was paused (kill switch on).
    Paused,
    /// Applying was resumed.
    Resumed,
    /// The operating mode changed (for example autonomous dropped to recommend).
    Mode,
    /// The policy was loaded or a reload failed.
    Policy,
    /// A torn last line from a crash was found, saved aside and cut from the log.
    TornTail,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Record format version, [`AUDIT_VERSION`] for records this build writes.
    pub version: u32,
    /// Position in the chain, starting at 0, without gaps.
    pub seq: u64,
    /// Wall-clock time of writing, milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What the record describes.
    pub kind: AuditKind,
    /// Who caused it: `planner`, `gate`, `executor`, or the name given to `proposals approve --by`.
    pub actor: String,
    /// The change or proposal id the record is about (empty for log-wide events).
    pub subject: String,
    /// The facts: decision reasons, the change itself, outcome, errors.
    pub detail: serde_json::Value,
    /// The `hash` of the previous record, [`GENESIS_HASH`] for the first.
    pub prev_hash: String,
    /// sha256 over the canonical JSON of every other field.
    pub hash: String,
}

/// The fields that the hash covers: everything but the hash itself.
#[derive(Serialize)]
struct Hashed<'a> {
    version: u32,
    seq: u64,
    at_unix_ms: i64,
    kind: AuditKind,
    actor: &'a str,
    subject: &'a str,
    detail: &'a serde_json::Value,
    prev_hash: &'a str,
}

impl AuditRecord {
    /// The hash this record should carry, computed from its other fields.
    pub fn compute_hash(&self) -> Result<String, serde_json::Error> {
        canonical_sha256(&Hashed {
            version: self.version,
            seq: self.seq,
            at_unix_ms: self.at_unix_ms,
            kind: self.kind,
            actor: &self.actor,
            subject: &self.subject,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
        })
    }
}
