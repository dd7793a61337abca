//! The changing endpoints: approve or reject a proposal, pause or resume applying.
//!
//! Each does what the command line does (`trimtab proposals approve`, `trimtab pause`), through the executor's
//! proposal store and state directory: the audit record is written first, under the audit file's lock, then the
//! state changes. The write token is checked before any of this runs ([`super::auth`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::read::blocking;
use super::{ApiError, Shared};
use crate::audit::{AuditKind, AuditLog};
use crate::executor::StateDir;

/// Longest `by` or `reason` accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// The body of a decision on a proposal; it may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Who decides (recorded in the audit log); `api` when not given.
    #[serde(default)]
    pub by: Option<String>,
}

/// The body of pause and resume; it may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    /// Who does it (recorded in the audit log); `api` when not given.
    #[serde(default)]
    pub by: Option<String>,
    /// Why (recorded with the pause flag and in the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Parses an optional JSON body, naming what was expected when it is not that.
fn body<T: Default + serde::de::DeserializeOwned>(
    bytes: &Bytes,
    expected: &str,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "request body is not valid: expected {expected}: {e}"
        ))
    })
}

/// Checks free text given by a person: bounded, no control characters.
fn text(field: &str, value: Option<String>, default: &str) -> Result<String, ApiError> {
    let value = value.map(|v| v.trim().to_string()).unwrap_or_default();
    let value = if value.is_empty() {
        default.to_string()
    } else {
        value
    };
    if value.chars().count() > MAX_TEXT_CHARS || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field} is not valid: expected at most {MAX_TEXT_CHARS} characters without control characters"
        )));
    }
    Ok(value)
}

fn open_audit(dir: &StateDir) -> Result<AuditLog, ApiError> {
    let (log, torn) = AuditLog::open(&dir.audit_log())
        .map_err(|e| ApiError::Internal(format!("opening the audit log: {e}")))?;
    if let Some(t) = torn {
        tracing::warn!(bytes = t.bytes, offset = t.offset, saved_to = %t.saved_to.display(), "audit log had a torn tail; saved aside and recorded");
    }
    Ok(log)
}

fn state_dir(s: &Shared) -> Result<StateDir, ApiError> {
    s.state_dir().ok_or(ApiError::Unavailable(
        "the control loop is not running: no state directory to change",
    ))
}

#[derive(Clone, Copy)]
enum Verdict {
    Approve,
    Reject,
}

async fn decide(
    s: Arc<Shared>,
    id: String,
    raw: Bytes,
    verdict: Verdict,
) -> Result<Json<Value>, ApiError> {
    let decision: DecisionBody = body(&raw, r#"JSON such as {"by": "alice"} or an empty body"#)?;
    let by = text("by", decision.by, "api")?;
    let dir = state_dir(&s)?;
    let store = s.proposals()?;
    let p = blocking(move || {
        let mut audit = open_audit(&dir)?;
        match verdict {
            Verdict::Approve => store
                .approve(&id, &by, &mut audit, now())
                .map_err(ApiError::executor(format!("approving proposal {id}"))),
            Verdict::Reject => store
                .reject(&id, &by, &mut audit, now())
                .map_err(ApiError::executor(format!("rejecting proposal {id}"))),
        }
    })
    .await?;
    tracing::info!(proposal = %p.id, status = ?p.status, "proposal decided over the api");
    Ok(Json(json!(p)))
}

/// `POST /v1/proposals/{id}/approve`: audited, then approved; the agent runs exactly it on its next step.
pub(crate) async fn approve(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(s, id, raw, Verdict::Approve).await
}

/// `POST /v1/proposals/{id}/reject`: audited, then rejected; it never runs.
pub(crate) async fn reject(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(s, id, raw, Verdict::Reject).await
}

/// `POST /v1/pause`: audited, then the flag is set; every apply is refused until resume.
pub(crate) async fn pause(
    State(s): State<Arc<Shared>>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: SwitchBody = body(
        &raw,
        r#"JSON such as {"by": "alice", "reason": "incident"} or an empty body"#,
    )?;
    let by = text("by", b.by, "api")?;
    let reason = text("reason", b.reason, "")?;
    let dir = state_dir(&s)?;
    let flag = blocking(move || {
        let mut audit = open_audit(&dir)?;
        audit
            .append(AuditKind::Paused, &by, "", json!({ "reason": reason }))
            .map_err(|e| ApiError::Internal(format!("auditing the pause: {e}")))?;
        dir.pause(&by, &reason, now())
            .map_err(ApiError::executor("setting the pause flag"))
    })
    .await?;
    tracing::info!(by = %flag.by, "paused over the api");
    Ok(Json(json!({ "paused": flag })))
}

/// `POST /v1/resume`: audited, then the flag is cleared.
pub(crate) async fn resume(
    State(s): State<Arc<Shared>>,
    raw: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: SwitchBody = body(&raw, r#"JSON such as {"by": "alice"} or an empty body"#)?;
    let by = text("by", b.by, "api")?;
    let reason = text("reason", b.reason, "")?;
    let dir = state_dir(&s)?;
    let was_paused = blocking(move || {
        let mut audit = open_audit(&dir)?;
        audit
            .append(AuditKind::Resumed, &by, "", json!({ "reason": reason }))
            .map_err(|e| ApiError::Internal(format!("auditing the resume: {e}")))?;
        dir.resume()
            .map_err(ApiError::executor("clearing the pause flag"))
    })
    .await?;
    tracing::info!(was_paused, "resumed over the api");
    Ok(Json(json!({ "paused": null, "was_paused": was_paused })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_may_be_empty_and_bad_ones_name_what_was_expected() {
        let empty: SwitchBody = body(&Bytes::from_static(b"  "), "x").unwrap();
        assert!(empty.by.is_none());
        let err =
            body::<SwitchBody>(&Bytes::from_static(b"{\"who\":1}"), "JSON with by").unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        assert!(err.to_string().contains("expected JSON with by"), "{err}");
        assert!(err.to_string().contains("unknown field `who`"), "{err}");
    }

    #[test]
    fn names_are_bounded_and_free_of_control_characters() {
        assert_eq!(text("by", None, "api").unwrap(), "api");
        assert_eq!(text("by", Some(" alice ".into()), "api").unwrap(), "alice");
        assert!(text("by", Some("a\nb".into()), "api").is_err());
        assert!(text("by", Some("x".repeat(201)), "api").is_err());
    }
}
