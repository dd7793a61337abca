//! `LinstorError`: every way a LINSTOR call fails, and whether trying again can help.

use std::path::PathBuf;

use super::retcode::{self, ApiCallRc};

/// A failed LINSTOR call or an unusable client configuration. Never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum LinstorError {
    /// The configuration is not usable; `field` names the setting.
    #[error("invalid linstor config: {field}: {reason}")]
    InvalidConfig {
        /// The setting, e.g. `controllers` or `LS_CONTROLLERS`.
        field: &'static str,
        /// What was wrong and what was expected.
        reason: String,
    },
    /// A certificate, key or token file could not be read.
    #[error("failed to read linstor {what} from {path}")]
    ReadCredential {
        /// `root ca`, `user certificate`, `user key` or `token`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// reqwest refused the TLS material or settings.
    #[error("failed to build the linstor http client: {reason}")]
    Client {
        /// What was being configured.
        reason: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// No controller could be reached, or the connection broke mid-request.
    #[error("{method} {path}: cannot reach linstor controller {controller}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The last controller tried.
        controller: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The controller did not answer in time.
    #[error(
        "{method} {path}: linstor controller {controller} did not answer within {timeout_ms} ms"
    )]
    Timeout {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The controller asked.
        controller: String,
        /// The configured timeout.
        timeout_ms: u64,
    },
    /// The controller refused the call with an `ApiCallRc` error entry; the text is LINSTOR's own.
    #[error("{method} {path}: linstor {code_name} (http {status}): {text}", code_name = error.ret_code, text = error.text())]
    Api {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The first error entry.
        error: Box<ApiCallRc>,
        /// Every entry of the reply.
        replies: Vec<ApiCallRc>,
    },
    /// A failing HTTP status without an `ApiCallRc` error entry in the body.
    #[error("{method} {path}: http status {status}: {body}")]
    Http {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// The start of the body, for diagnosis.
        body: String,
    },
    /// A successful reply whose body is not the expected JSON.
    #[error("{method} {path}: cannot decode the reply")]
    Decode {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// serde's description.
        #[source]
        source: serde_json::Error,
    },
    /// The object exists but not in the shape asked for, so "create" cannot be treated as done.
    #[error("{object} exists in another shape: {difference}")]
    Mismatch {
        /// What exists, e.g. `resource definition pvc-1`.
        object: String,
        /// What differs, e.g. `volume 0 of pvc-1 is 1048576 KiB, request asks 2097152 KiB`.
        difference: String,
    },
}

impl LinstorError {
    /// Whether the same call may succeed later: connection problems, timeouts, server errors without a
    /// definitive `ApiCallRc` error, and the controller's own "satellite not connected" or "unknown error".
    /// Not-found, exists-in-another-shape, not-enough-nodes, invalid sizes and denied access are permanent.
    pub fn is_retriable(&self) -> bool {
        match self {
            LinstorError::Transport { .. } | LinstorError::Timeout { .. } => true,
            LinstorError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            LinstorError::Api { error, .. } => {
                matches!(
                    error.ret_code.code(),
                    retcode::FAIL_NOT_CONNECTED | retcode::FAIL_UNKNOWN_ERROR
                )
            }
            LinstorError::InvalidConfig { .. }
            | LinstorError::ReadCredential { .. }
            | LinstorError::Client { .. }
            | LinstorError::Decode { .. }
            | LinstorError::Mismatch { .. } => false,
        }
    }

    /// The code bits of LINSTOR's error entry, e.g. 996 for not-enough-nodes.
    pub fn api_code(&self) -> Option<u32> {
        match self {
            LinstorError::Api { error, .. } => Some(error.ret_code.code()),
            _ => None,
        }
    }

    /// LINSTOR's error entry, if the controller sent one.
    pub fn api_error(&self) -> Option<&ApiCallRc> {
        match self {
            LinstorError::Api { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The object does not exist (codes 300-399, or HTTP 404 without a body).
    pub fn is_not_found(&self) -> bool {
        match self {
            LinstorError::Api { error, .. } => (300..400).contains(&error.ret_code.code()),
            LinstorError::Http { status, .. } => *status == 404,
            _ => false,
        }
    }

    /// The controller refused for lack of credentials or rights (401/403, codes 400-499, sign-in failures).
    pub fn is_access_denied(&self) -> bool {
        match self {
            LinstorError::Api { error, status, .. } => {
                let code = error.ret_code.code();
                (retcode::FAIL_ACC_DENIED_FIRST..=retcode::FAIL_ACC_DENIED_LAST).contains(&code)
                    || code == retcode::FAIL_SIGN_IN
                    || code == retcode::FAIL_SIGN_IN_MISSING_CREDENTIALS
                    || *status == 401
            }
            LinstorError::Http { status, .. } => *status == 401 || *status == 403,
            _ => false,
        }
    }

    /// LINSTOR's message with cause and details, for a reply or a dead-letter reason; the whole error text otherwise.
    pub fn reason(&self) -> String {
        match self {
            LinstorError::Api { error, .. } => error.text(),
            LinstorError::Mismatch { object, difference } => {
                format!("{object} exists in another shape: {difference}")
            }
            other => other.to_string(),
        }
    }
}
