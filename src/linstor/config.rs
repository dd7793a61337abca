//! How trimtab reaches the LINSTOR controller: controller URLs, TLS and the two credentials, validated without IO.
//!
//! The settings follow LINSTOR's own client conventions (golinstor, piraeus): `LS_CONTROLLERS` is a comma
//! list of `linstor://host`, `linstor+ssl://host`, `http(s)://host[:port]` or bare hosts, with the default
//! ports 3370 (HTTP) and 3371 (HTTPS); `LS_ROOT_CA`, `LS_USER_CERTIFICATE` and `LS_USER_KEY` name PEM files
//! for mutual TLS. LINSTOR's bearer tokens (API 1.28) have no scopes, so least privilege is trimtab's job:
//! the `reader` credential builds a [`LinstorReader`](super::LinstorReader) with GET verbs only, and only the
//! separate `executor` credential can build a [`LinstorWriter`](super::LinstorWriter).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::LinstorError;

/// Default plain-HTTP port of the controller's REST API.
pub const DEFAULT_HTTP_PORT: u16 = 3370;
/// Default HTTPS port of the controller's REST API.
pub const DEFAULT_HTTPS_PORT: u16 = 3371;

/// The `[linstor]` section of trimtab's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinstorConfig {
    /// Controllers, tried in order until one answers: `linstor://host`, `linstor+ssl://host`,
    /// `http://host:port`, `https://host` or a bare host (HTTPS when TLS files are set). Empty means
    /// `linstor://localhost`. `LS_CONTROLLERS` fills this from the environment.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// PEM file with the CA that signed the controller's certificate (`LS_ROOT_CA`). The system roots when absent.
    #[serde(default)]
    pub root_ca: Option<PathBuf>,
    /// Time allowed for one request, connection included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time allowed to open a connection, in milliseconds; the next controller is tried after it.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Credential for metrics, planning and placement: used with GET requests only.
    #[serde(default)]
    pub reader: Credential,
    /// Credential for the executor's changes (create, place, move, delete). Absent: trimtab cannot change LINSTOR.
    #[serde(default)]
    pub executor: Option<Credential>,
}

const fn default_timeout_ms() -> u64 {
    30_000
}

const fn default_connect_timeout_ms() -> u64 {
    3_000
}

impl Default for LinstorConfig {
    fn default() -> Self {
        LinstorConfig {
            controllers: Vec::new(),
            root_ca: None,
            timeout_ms: default_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            reader: Credential::default(),
            executor: None,
        }
    }
}

/// One identity towards the controller: a bearer token, a client certificate, both, or neither (plain HTTP).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Bearer token, inline. Prefer `token_file` or `token_env` so the token stays out of the config file.
    #[serde(default)]
    pub token: Option<String>,
    /// File holding the bearer token (surrounding whitespace is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// PEM client certificate for mutual TLS (`LS_USER_CERTIFICATE`); needs `user_key`.
    #[serde(default)]
    pub user_certificate: Option<PathBuf>,
    /// PEM private key of `user_certificate` (`LS_USER_KEY`).
    #[serde(default)]
    pub user_key: Option<PathBuf>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token itself is never printed.
        f.debug_struct("Credential")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("user_certificate", &self.user_certificate)
            .field("user_key", &self.user_key)
            .finish()
    }
}

impl Credential {
    /// A credential that sends `token` as `Authorization: Bearer`.
    pub fn bearer(token: impl Into<String>) -> Credential {
        Credential {
            token: Some(token.into()),
            ..Credential::default()
        }
    }

    fn has_tls_identity(&self) -> bool {
        self.user_certificate.is_some()
    }

    fn validate(&self, field: &'static str) -> Result<(), LinstorError> {
        let token_sources = usize::from(self.token.is_some())
            + usize::from(self.token_file.is_some())
            + usize::from(self.token_env.is_some());
        if token_sources > 1 {
            return Err(LinstorError::InvalidConfig {
                field,
                reason: "set at most one of token, token_file and token_env".into(),
            });
        }
        if self.user_certificate.is_some() != self.user_key.is_some() {
            return Err(LinstorError::InvalidConfig {
                field,
                reason: "user_certificate and user_key go together: set both or neither".into(),
            });
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(LinstorError::InvalidConfig {
                field,
                reason: "token is empty".into(),
            });
        }
        Ok(())
    }

    /// Reads the token from wherever it is configured. IO: files and the environment.
    pub(crate) fn load_token(&self) -> Result<Option<String>, LinstorError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        if let Some(path) = &self.token_file {
            let text =
                std::fs::read_to_string(path).map_err(|source| LinstorError::ReadCredential {
                    what: "token",
                    path: path.clone(),
                    source,
                })?;
            return Ok(Some(text.trim().to_owned()));
        }
        if let Some(var) = &self.token_env {
            return match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Some(value.trim().to_owned())),
                _ => Err(LinstorError::InvalidConfig {
                    field: "token_env",
                    reason: format!("environment variable {var} is unset or empty"),
                }),
            };
        }
        Ok(None)
    }
}

/// A configuration that passed [`LinstorConfig::validate`]: parsed controller URLs and checked credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedLinstorConfig {
    /// Controller base URLs, in the order they are tried.
    pub controllers: Vec<Url>,
    /// CA file.
    pub root_ca: Option<PathBuf>,
    /// Request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read credential.
    pub reader: Credential,
    /// Write credential.
    pub executor: Option<Credential>,
}

impl LinstorConfig {
    /// A configuration from LINSTOR's environment variables: `LS_CONTROLLERS`, `LS_ROOT_CA`,
    /// `LS_USER_CERTIFICATE` and `LS_USER_KEY` (the latter two become the reader's identity).
    /// The executor credential is never taken from the environment: it has to be configured on purpose.
    pub fn from_env() -> LinstorConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        LinstorConfig {
            controllers: var("LS_CONTROLLERS")
                .map(|list| {
                    list.split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            root_ca: var("LS_ROOT_CA").map(PathBuf::from),
            reader: Credential {
                user_certificate: var("LS_USER_CERTIFICATE").map(PathBuf::from),
                user_key: var("LS_USER_KEY").map(PathBuf::from),
                ..Credential::default()
            },
            ..LinstorConfig::default()
        }
    }

    /// A configuration for one controller URL with an optional reader and executor token; for tests and `demo`.
    pub fn for_controller(
        url: &str,
        reader_token: Option<&str>,
        executor_token: Option<&str>,
    ) -> LinstorConfig {
        LinstorConfig {
            controllers: vec![url.to_owned()],
            reader: reader_token.map(Credential::bearer).unwrap_or_default(),
            executor: Some(executor_token.map(Credential::bearer).unwrap_or_default()),
            ..LinstorConfig::default()
        }
    }

    /// Checks the settings without IO and parses the controller URLs.
    pub fn validate(&self) -> Result<ValidatedLinstorConfig, LinstorError> {
        if self.timeout_ms == 0 {
            return Err(LinstorError::InvalidConfig {
                field: "timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        if self.connect_timeout_ms == 0 {
            return Err(LinstorError::InvalidConfig {
                field: "connect_timeout_ms",
                reason: "must be greater than 0".into(),
            });
        }
        self.reader.validate("reader")?;
        if let Some(executor) = &self.executor {
            executor.validate("executor")?;
        }
        let tls_default = self.root_ca.is_some()
            || self.reader.has_tls_identity()
            || self
                .executor
                .as_ref()
                .is_some_and(Credential::has_tls_identity);
        let controllers = if self.controllers.is_empty() {
            vec![parse_controller("linstor://localhost", tls_default)?]
        } else {
            self.controllers
                .iter()
                .map(|c| parse_controller(c, tls_default))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(ValidatedLinstorConfig {
            controllers,
            root_ca: self.root_ca.clone(),
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            reader: self.reader.clone(),
            executor: self.executor.clone(),
        })
    }
}

/// Parses one controller as `LS_CONTROLLERS` writes it into a base URL with an explicit port.
pub fn parse_controller(text: &str, tls_default: bool) -> Result<Url, LinstorError> {
    let text = text.trim();
    let invalid = |reason: String| LinstorError::InvalidConfig {
        field: "controllers",
        reason,
    };
    let (scheme, rest) = match text.split_once("://") {
        Some(("linstor" | "http", rest)) => ("http", rest),
        Some(("linstor+ssl" | "https", rest)) => ("https", rest),
        Some((other, _)) => {
            return Err(invalid(format!(
                "{text:?} has scheme {other:?}: expected linstor, linstor+ssl, http or https"
            )))
        }
        None if tls_default => ("https", text),
        None => ("http", text),
    };
    let mut url = Url::parse(&format!("{scheme}://{rest}"))
        .map_err(|e| invalid(format!("{text:?} is not a controller address: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(format!("{text:?} has no host")));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(invalid(format!(
            "{text:?} has a path or query: expected host[:port] only"
        )));
    }
    if url.port().is_none() {
        let port = if scheme == "https" {
            DEFAULT_HTTPS_PORT
        } else {
            DEFAULT_HTTP_PORT
        };
        // Setting a port on an http(s) URL with a host cannot fail.
        let _ = url.set_port(Some(port));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, tls: bool, expected: &str) {
        assert_eq!(
            parse_controller(text, tls).unwrap().as_str(),
            expected,
            "parsing {text:?}"
        );
    }

    #[test]
    fn controller_addresses_follow_linstor_conventions() {
        check("linstor://ctrl", false, "http://ctrl:3370/");
        check("linstor+ssl://ctrl", false, "https://ctrl:3371/");
        check("https://ctrl", false, "https://ctrl:3371/");
        check("http://ctrl:8080", false, "http://ctrl:8080/");
        check("ctrl", false, "http://ctrl:3370/");
        check("ctrl", true, "https://ctrl:3371/");
        check("10.0.0.1:4000", false, "http://10.0.0.1:4000/");
        check("[::1]", false, "http://[::1]:3370/");
        assert!(parse_controller("ftp://ctrl", false)
            .unwrap_err()
            .to_string()
            .contains("expected linstor"));
        assert!(parse_controller("http://ctrl/v1", false)
            .unwrap_err()
            .to_string()
            .contains("path"));
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let mut config = LinstorConfig::for_controller("linstor://a,b", None, None);
        config.controllers = vec!["linstor://a".into(), "b:1".into()];
        let validated = config.validate().unwrap();
        assert_eq!(validated.controllers.len(), 2);
        config.reader.user_certificate = Some("/c.pem".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("reader") && err.contains("user_key"), "{err}");
        config.reader = Credential::default();
        config.timeout_ms = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("timeout_ms"));
        let parsed: Result<LinstorConfig, _> = toml::from_str("controllers = [\"x\"]\nbogus = 1\n");
        assert!(parsed.unwrap_err().to_string().contains("bogus"));
    }

    #[test]
    fn environment_follows_ls_variables_and_never_grants_the_executor() {
        // Only this test touches the LS_* variables.
        std::env::set_var("LS_CONTROLLERS", "linstor://a, linstor+ssl://b:4000,");
        std::env::set_var("LS_ROOT_CA", "/etc/linstor/ca.pem");
        let config = LinstorConfig::from_env();
        std::env::remove_var("LS_CONTROLLERS");
        std::env::remove_var("LS_ROOT_CA");
        let validated = config.validate().unwrap();
        let urls: Vec<&str> = validated.controllers.iter().map(Url::as_str).collect();
        assert_eq!(urls, vec!["http://a:3370/", "https://b:4000/"]);
        assert_eq!(
            validated.root_ca.as_deref(),
            Some(std::path::Path::new("/etc/linstor/ca.pem"))
        );
        assert!(validated.executor.is_none());
    }

    #[test]
    fn missing_tls_files_are_named_in_the_error() {
        let mut config = LinstorConfig::for_controller("linstor+ssl://ctrl", None, None);
        config.root_ca = Some("/nonexistent/ca.pem".into());
        let err = super::super::LinstorReader::new(&config.validate().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("root ca from /nonexistent/ca.pem"),
            "{err}"
        );
        let mut config = LinstorConfig::for_controller("ctrl", None, None);
        config.reader.token_file = Some("/nonexistent/token".into());
        let err = super::super::LinstorReader::new(&config.validate().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("token from /nonexistent/token"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let text = format!(
            "{:?}",
            LinstorConfig::for_controller("x", Some("s3cret-read"), Some("s3cret-write"))
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
