//! Bearer tokens: every change needs the write token; reads need the read token when one is configured.
//!
//! Tokens come from environment variables the `[api]` section names, are compared in constant time over their
//! SHA-256 digests, and never appear in a log line or an error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, Shared};
use crate::config::ApiConfig;

/// A secret kept only as its digest, so it cannot leak through `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Keeps the digest of `token`.
    pub fn new(token: &str) -> Secret {
        Secret(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `offered` is this secret, in time independent of where they differ.
    fn matches(&self, offered: &str) -> bool {
        let offered: [u8; 32] = Sha256::digest(offered.as_bytes()).into();
        self.0
            .iter()
            .zip(offered.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The tokens in force.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Needed by approve, reject, pause and resume; `None` refuses them all.
    pub write: Option<Secret>,
    /// Needed by reads when set; the write token also reads.
    pub read: Option<Secret>,
    /// The variable the write token comes from, to name in errors.
    pub write_env: String,
    /// The variable the read token comes from, to name in errors.
    pub read_env: String,
}

impl Default for Tokens {
    /// No tokens: reads open, every change refused (naming the default variable to set).
    fn default() -> Self {
        Tokens {
            write: None,
            read: None,
            write_env: ApiConfig::default().write_token_env,
            read_env: "the variable [api].read_token_env names".into(),
        }
    }
}

impl Tokens {
    /// Reads the tokens from the environment variables `config` names; unset or empty variables give no token.
    pub fn from_env(config: &ApiConfig) -> Tokens {
        let read = |name: &str| {
            if name.is_empty() {
                return None;
            }
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim()))
        };
        Tokens {
            write: read(&config.write_token_env),
            read: read(&config.read_token_env),
            write_env: config.write_token_env.clone(),
            read_env: config.read_token_env.clone(),
        }
    }

    /// Tokens given directly (tests, the demo).
    pub fn fixed(write: Option<&str>, read: Option<&str>) -> Tokens {
        Tokens {
            write: write.map(Secret::new),
            read: read.map(Secret::new),
            write_env: "the configured write token".into(),
            read_env: "the configured read token".into(),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Nothing: health, readiness, `/metrics`, the page, the OpenAPI document.
    Open,
    /// The read token when one is configured.
    Read,
    /// The write token.
    Write,
}

/// What `method path` needs.
pub fn access(method: &Method, path: &str) -> Access {
    let open = path == "/"
        || path.starts_with("/assets/")
        || matches!(
            path,
            "/health" | "/healthz" | "/readyz" | "/metrics" | "/v1/openapi.json"
        );
    if open {
        return Access::Open;
    }
    // Every method but GET and HEAD changes something, so a route added later is closed by default; chat is the
    // one POST that only reads (its tools cannot change anything).
    let mutating = !matches!(*method, Method::GET | Method::HEAD) && path != "/v1/chat";
    if mutating {
        Access::Write
    } else {
        Access::Read
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks a request's token against what its route needs.
pub fn check(
    tokens: &Tokens,
    method: &Method,
    path: &str,
    offered: Option<&str>,
) -> Result<(), ApiError> {
    match access(method, path) {
        Access::Open => Ok(()),
        Access::Read => {
            let Some(read) = &tokens.read else {
                return Ok(());
            };
            let ok = offered.is_some_and(|t| {
                read.matches(t) || tokens.write.as_ref().is_some_and(|w| w.matches(t))
            });
            if ok {
                Ok(())
            } else {
                Err(ApiError::Unauthorized(format!(
                    "{method} {path} needs a bearer token: send `Authorization: Bearer <token>` with the token in {}",
                    tokens.read_env
                )))
            }
        }
        Access::Write => {
            let Some(write) = &tokens.write else {
                return Err(ApiError::Forbidden(format!(
                    "{method} {path} changes state and no write token is configured: set {} for trimtab",
                    tokens.write_env
                )));
            };
            match offered {
                Some(t) if write.matches(t) => Ok(()),
                Some(_) => Err(ApiError::Unauthorized(format!(
                    "{method} {path}: the bearer token is not the write token ({})",
                    tokens.write_env
                ))),
                None => Err(ApiError::Unauthorized(format!(
                    "{method} {path} changes state: send `Authorization: Bearer <token>` with the token in {}",
                    tokens.write_env
                ))),
            }
        }
    }
}

/// The middleware: refuses a request without the token its route needs.
pub(crate) async fn require(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let offered = bearer(&request).map(str::to_string);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    match check(&shared.extras.tokens, &method, &path, offered.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::info!(%method, %path, "api request refused: missing or wrong token");
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_case(
        tokens: &Tokens,
        method: Method,
        path: &str,
        offered: Option<&str>,
        expect: Option<u16>,
    ) {
        let got = check(tokens, &method, path, offered)
            .err()
            .map(|e| e.status().as_u16());
        assert_eq!(got, expect, "{method} {path} with {offered:?}");
    }

    #[test]
    fn writes_need_the_write_token_and_reads_the_read_token_when_set() {
        let both = Tokens::fixed(Some("w"), Some("r"));
        check_case(&both, Method::POST, "/v1/pause", Some("w"), None);
        check_case(&both, Method::POST, "/v1/pause", Some("r"), Some(401));
        check_case(
            &both,
            Method::POST,
            "/v1/proposals/p-1/approve",
            None,
            Some(401),
        );
        check_case(&both, Method::GET, "/v1/state", Some("r"), None);
        check_case(&both, Method::GET, "/v1/state", Some("w"), None);
        check_case(&both, Method::GET, "/v1/state", Some("x"), Some(401));
        check_case(&both, Method::POST, "/v1/chat", None, Some(401));
        check_case(&both, Method::GET, "/metrics", None, None);
        check_case(&both, Method::GET, "/", None, None);

        let write_only = Tokens::fixed(Some("w"), None);
        check_case(&write_only, Method::GET, "/v1/proposals", None, None);
        check_case(&write_only, Method::POST, "/v1/resume", None, Some(401));

        let none = Tokens::default();
        check_case(
            &none,
            Method::POST,
            "/v1/resume",
            Some("anything"),
            Some(403),
        );
        check_case(&none, Method::GET, "/v1/audit", None, None);
        // A changing route added later (say, dead-letter resubmission) needs the write token without being listed.
        check_case(
            &write_only,
            Method::POST,
            "/v1/dlq/orders/resubmit",
            None,
            Some(401),
        );
        check_case(&write_only, Method::DELETE, "/v1/anything", Some("w"), None);
    }

    #[test]
    fn errors_and_debug_output_never_contain_the_token() {
        let tokens = Tokens::fixed(Some("s3cret-w"), Some("s3cret-r"));
        assert!(!format!("{tokens:?}").contains("s3cret"));
        let e = check(&tokens, &Method::POST, "/v1/pause", Some("s3cret-r")).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
