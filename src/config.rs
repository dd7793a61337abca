//! The TOML configuration: one typed section per component, validated without IO, then built.
//!
//! Secrets never live in the file: the Service Bus connection string and the LLM key are read from the
//! environment variables the sections name, and LINSTOR tokens from `LS_*`-style variables or the file's
//! `token_env` fields. `trimtab run --config FILE` reads this; `trimtab demo` and `trimtab sim` build one in
//! memory that points at the stand-ins. A commented example is in `trimtab.example.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cassandra::CassandraConfig;
use crate::chatops::config::ChatopsConfig;
use crate::linstor::config::LinstorConfig;
use crate::pipeline::PipelineConfig;
use crate::policy::Mode;
use crate::servicebus::azure::ServiceBusConfig;
use crate::servicebus::renewal::RenewalConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Service Bus namespace and how to authenticate to it.
    pub servicebus: ServiceBusConfig,
    /// When and how message locks are renewed while work is in flight.
    #[serde(default)]
    pub lock_renewal: RenewalConfig,
    /// The Cassandra cluster, keyspace and writer settings.
    pub cassandra: CassandraConfig,
    /// The LINSTOR controller and the two credentials (reader, executor).
    pub linstor: LinstorConfig,
    /// What to receive and how the work path behaves; its `knobs` are the live settings.
    pub pipeline: PipelineConfig,
    /// The control loop: sampling, planning, policy and where trimtab keeps its local state.
    #[serde(default)]
    pub agent: AgentConfig,
    /// Chat-ops: the LLM endpoint, if any.
    #[serde(default)]
    pub chatops: Option<ChatopsConfig>,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiConfig,
}

/// The `[agent]` section: the control loop.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `recommend` (propose and record, never apply) or `autonomous` (apply what policy allows).
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Where proposals, the pause flag and the local audit log live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory of the Rego policies and their data files.
    #[serde(default = "default_policies_dir")]
    pub policies_dir: PathBuf,
    /// Where fitted forecasters' model cards are written.
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// The fixed step at which metrics are sampled, in milliseconds.
    #[serde(default = "default_sample_ms")]
    pub sample_interval_ms: u64,
    /// How often the planner runs, in milliseconds.
    #[serde(default = "default_plan_ms")]
    pub plan_interval_ms: u64,
    /// Honour the maintenance windows in `{policies_dir}/windows.json`: pause or slow ingest of the paths
    /// they name while they are open, recording each hold in the audit log under `state_dir`.
    #[serde(default = "default_maintenance_windows")]
    pub maintenance_windows: bool,
}

fn default_mode() -> Mode {
    Mode::Recommend
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("trimtab-state")
}
fn default_policies_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("models")
}
const fn default_sample_ms() -> u64 {
    10_000
}
const fn default_plan_ms() -> u64 {
    60_000
}
const fn default_maintenance_windows() -> bool {
    true
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            mode: default_mode(),
            state_dir: default_state_dir(),
            policies_dir: default_policies_dir(),
            models_dir: default_models_dir(),
            sample_interval_ms: default_sample_ms(),
            plan_interval_ms: default_plan_ms(),
            maintenance_windows: default_maintenance_windows(),
        }
    }
}

impl AgentConfig {
    /// The sampling step.
    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms)
    }
}

/// The `[api]` section: the HTTP API, `/metrics` and the web page.
///
/// Tokens never live in the file: each `*_token_env` names the environment variable that holds the token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API; empty to turn it off.
    #[serde(default = "default_api_bind")]
    pub bind: String,
    /// Environment variable holding the bearer token that approve, reject, pause and resume require. When the
    /// variable is unset or empty, every mutating endpoint answers 403: nothing can be changed over HTTP.
    #[serde(default = "default_write_token_env")]
    pub write_token_env: String,
    /// Environment variable holding a bearer token that reads require; empty (the default) leaves reads open.
    /// `/healthz`, `/readyz`, `/metrics`, the page and the OpenAPI document stay open either way.
    #[serde(default)]
    pub read_token_env: String,
}

fn default_api_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_write_token_env() -> String {
    "TRIMTAB_API_TOKEN".into()
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            bind: default_api_bind(),
            write_token_env: default_write_token_env(),
            read_token_env: String::new(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the field and what was expected.
        message: String,
    },
    /// A section fails validation.
    #[error("config file {path}: [{section}] {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The section.
        section: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates a file (no network IO).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates TOML text; `path` only names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks every section without IO.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |section, message: String| ConfigError::Invalid {
            path: path.into(),
            section,
            message,
        };
        self.servicebus
            .validate()
            .map_err(|e| invalid("servicebus", e.to_string()))?;
        self.lock_renewal
            .validate()
            .map_err(|e| invalid("lock_renewal", e))?;
        self.cassandra
            .validate()
            .map_err(|e| invalid("cassandra", e.to_string()))?;
        self.linstor
            .validate()
            .map_err(|e| invalid("linstor", e.to_string()))?;
        self.pipeline
            .validate()
            .map_err(|e| invalid("pipeline", e.to_string()))?;
        if self.agent.sample_interval_ms == 0 || self.agent.plan_interval_ms == 0 {
            return Err(invalid(
                "agent",
                "sample_interval_ms and plan_interval_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../trimtab.example.toml");

    #[test]
    fn the_shipped_example_parses_and_validates() {
        let config =
            Config::parse("trimtab.example.toml", EXAMPLE).expect("the example config is valid");
        assert_eq!(config.pipeline.entities.len(), 2);
    }

    #[test]
    fn errors_name_the_file_the_section_and_the_field() {
        let broken = EXAMPLE.replace("[pipeline]", "[pipeline]\nbatchsize = 3");
        let err = Config::parse("my.toml", &broken).unwrap_err().to_string();
        assert!(err.starts_with("config file my.toml is invalid"), "{err}");
        assert!(err.contains("unknown field `batchsize`"), "{err}");
        let empty = EXAMPLE.replace(
            "entities = [\"events\", { topic = \"orders\", subscription = \"trimtab\" }]",
            "entities = []",
        );
        let err = Config::parse("my.toml", &empty).unwrap_err().to_string();
        assert!(
            err.contains("[pipeline] pipeline.entities is empty"),
            "{err}"
        );
    }
}
