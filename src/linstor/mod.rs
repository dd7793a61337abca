//! LINSTOR as trimtab sees it: the typed REST client, volume operations from messages, placement metrics.
//!
//! # Semantics
//!
//! * Every mutating call answers with an `ApiCallRc` list; success is decided from the return-code masks
//!   ([`RetCode`]), so an error entry fails the call whatever the HTTP status, and a warning-only reply
//!   (for instance "already deployed") succeeds.
//! * Creates are idempotent as the pipeline sees them: creating what already exists in the requested shape
//!   succeeds, and in another shape fails with [`LinstorError::Mismatch`] naming the difference.
//! * Least privilege lives in the types: [`LinstorReader`] has GET verbs only and is all that collectors,
//!   the planner and chat-ops hold; [`LinstorWriter`] is built only from the executor's credential.
//! * [`LinstorError::is_retriable`] decides retries: connection problems, timeouts, server errors without
//!   a definitive error entry and "satellite not connected" are retriable; everything else is permanent.

mod client;
pub mod config;
mod error;
pub mod exposition;
pub mod ops;
pub mod placement;
pub mod retcode;
pub mod types;

pub use client::{LinstorReader, LinstorWriter, Outcome};
pub use config::{Credential, LinstorConfig, ValidatedLinstorConfig};
pub use error::LinstorError;
pub use exposition::MetricSample;
pub use retcode::{ApiCallRc, ApiCallRcList, RetCode};
