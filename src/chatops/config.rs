//! The `[chatops]` configuration: the LLM endpoint (optional), masking and quoting limits, prompt location.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Chat-ops settings. With no `[chatops.llm]` table, questions get templated answers only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatopsConfig {
    /// The OpenAI-compatible endpoint to ask; absent means templated answers only.
    #[serde(default)]
    pub llm: Option<LlmConfig>,
    /// Field names whose values are masked before anything leaves trimtab (matched case-insensitively
    /// against object keys and against setting names, as a substring). Added to the built-in list
    /// (`password`, `secret`, `token`, `api_key`, `connection_string`, `sas_key`, `shared_access_key`).
    #[serde(default)]
    pub sensitive_fields: Vec<String>,
    /// Longest string from the pipeline (names, reasons, message excerpts) passed to the model, in characters;
    /// longer strings are cut and marked as truncated.
    #[serde(default = "default_max_field_chars")]
    pub max_field_chars: usize,
    /// Most items per tool result passed to the model; the rest are counted but left out.
    #[serde(default = "default_max_items")]
    pub max_items_per_tool: usize,
    /// A directory holding `system.<version>.md` and `tools.<version>.json` to use instead of the built-in prompts.
    #[serde(default)]
    pub prompts_dir: Option<PathBuf>,
    /// Which prompt version to load, such as `v1`.
    #[serde(default = "default_prompt_version")]
    pub prompt_version: String,
}

impl Default for ChatopsConfig {
    fn default() -> Self {
        Self {
            llm: None,
            sensitive_fields: Vec::new(),
            max_field_chars: default_max_field_chars(),
            max_items_per_tool: default_max_items(),
            prompts_dir: None,
            prompt_version: default_prompt_version(),
        }
    }
}

const fn default_max_field_chars() -> usize {
    200
}

const fn default_max_items() -> usize {
    50
}

fn default_prompt_version() -> String {
    "v1".to_owned()
}

/// Field names that are always masked.
pub const BUILTIN_SENSITIVE_FIELDS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "apikey",
    "connection_string",
    "sas_key",
    "shared_access_key",
];

/// Which wire dialect the endpoint speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Provider {
    /// OpenAI itself, or anything speaking its chat-completions API (Ollama, vLLM, llama.cpp's llama-server).
    OpenaiCompatible,
    /// Azure OpenAI: the deployment replaces the model in the URL, and an API version is required.
    Azure {
        /// The `api-version` query parameter, such as `2024-10-21`.
        api_version: String,
        /// The deployment name.
        deployment: String,
    },
}

/// The LLM endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Wire dialect; `{ kind = "openai_compatible" }` unless Azure.
    #[serde(default = "default_provider")]
    pub provider: Provider,
    /// Base URL including the version path, such as `http://127.0.0.1:8088/v1` or `https://api.openai.com/v1`;
    /// for Azure the resource endpoint, such as `https://my-resource.openai.azure.com`.
    pub base_url: String,
    /// Model name sent with each request (llama-server ignores it).
    pub model: String,
    /// Name of the environment variable holding the API key. The key itself never appears in config or logs;
    /// without this, the key sent is `none`, which local servers accept.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Deadline for one model request, in milliseconds; a slower model gets the templated answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Most request rounds with tool calls before giving up on the model.
    #[serde(default = "default_max_tool_rounds")]
    pub max_tool_rounds: u32,
    /// Upper bound on tokens the model may generate per round.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

fn default_provider() -> Provider {
    Provider::OpenaiCompatible
}

const fn default_timeout_ms() -> u64 {
    30_000
}

const fn default_max_tool_rounds() -> u32 {
    4
}

const fn default_max_tokens() -> u32 {
    800
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chatops config: {field}: {problem}")]
pub struct ConfigError {
    /// The offending field, dotted.
    pub field: &'static str,
    /// What was expected.
    pub problem: String,
}

impl ChatopsConfig {
    /// Checks the values without IO and returns the config unchanged when it can work.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.max_field_chars < 16 {
            return Err(ConfigError {
                field: "max_field_chars",
                problem: format!("expected at least 16, got {}", self.max_field_chars),
            });
        }
        if self.max_items_per_tool == 0 {
            return Err(ConfigError {
                field: "max_items_per_tool",
                problem: "expected at least 1".into(),
            });
        }
        let version_ok = !self.prompt_version.is_empty()
            && self
                .prompt_version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
            && !self.prompt_version.contains("..");
        if !version_ok {
            return Err(ConfigError {
                field: "prompt_version",
                problem: format!(
                    "expected letters, digits, '.', '-' or '_' such as v1, got {:?}",
                    self.prompt_version
                ),
            });
        }
        if let Some(llm) = &self.llm {
            llm.check()?;
        }
        Ok(self)
    }

    /// Every field name to mask: the built-in list plus `sensitive_fields`, lowercased.
    pub fn sensitive_names(&self) -> Vec<String> {
        BUILTIN_SENSITIVE_FIELDS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.sensitive_fields.iter().map(|s| s.to_lowercase()))
            .filter(|s| !s.is_empty())
            .collect()
    }
}

impl LlmConfig {
    fn check(&self) -> Result<(), ConfigError> {
        match url::Url::parse(&self.base_url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(ConfigError {
                    field: "llm.base_url",
                    problem: format!("expected an http or https URL, got scheme {:?}", u.scheme()),
                })
            }
            Err(e) => {
                return Err(ConfigError {
                    field: "llm.base_url",
                    problem: format!("expected a URL such as http://127.0.0.1:8088/v1: {e}"),
                })
            }
        }
        if self.model.trim().is_empty() && matches!(self.provider, Provider::OpenaiCompatible) {
            return Err(ConfigError {
                field: "llm.model",
                problem: "expected a model name".into(),
            });
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError {
                field: "llm.timeout_ms",
                problem: "expected a positive number of milliseconds".into(),
            });
        }
        if !(1..=16).contains(&self.max_tool_rounds) {
            return Err(ConfigError {
                field: "llm.max_tool_rounds",
                problem: format!("expected 1 to 16, got {}", self.max_tool_rounds),
            });
        }
        if let Provider::Azure {
            api_version,
            deployment,
        } = &self.provider
        {
            if api_version.trim().is_empty() || deployment.trim().is_empty() {
                return Err(ConfigError {
                    field: "llm.provider",
                    problem: "azure needs both api_version and deployment".into(),
                });
            }
        }
        Ok(())
    }

    /// Reads the API key from `api_key_env`; `none` when unset. The value is never logged.
    pub fn api_key(&self) -> Result<String, ConfigError> {
        match &self.api_key_env {
            None => Ok("none".to_owned()),
            Some(var) => {
                let key = std::env::var(var).map_err(|_| ConfigError {
                    field: "llm.api_key_env",
                    problem: format!("environment variable {var} is not set or not unicode"),
                })?;
                // The key becomes an HTTP header; anything else would make the client fail later.
                if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError {
                        field: "llm.api_key_env",
                        problem: format!(
                            "environment variable {var} must hold a non-empty key of visible ASCII"
                        ),
                    });
                }
                Ok(key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ChatopsConfig, String> {
        toml::from_str::<ChatopsConfig>(toml_text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string()))
    }

    #[test]
    fn empty_config_means_templated_answers() {
        let c = parse("").expect("empty config is valid");
        assert!(c.llm.is_none());
        assert_eq!(c.max_field_chars, 200);
        assert!(c.sensitive_names().iter().any(|n| n == "password"));
    }

    #[test]
    fn azure_and_openai_parse() {
        let c = parse(
            "[llm]\nbase_url = \"https://x.openai.azure.com\"\nmodel = \"\"\n\
             provider = { kind = \"azure\", api_version = \"2024-10-21\", deployment = \"gpt4o\" }\n",
        )
        .expect("azure config");
        assert!(matches!(c.llm.unwrap().provider, Provider::Azure { .. }));
        let c = parse("[llm]\nbase_url = \"http://127.0.0.1:8088/v1\"\nmodel = \"smollm2\"\n")
            .expect("openai");
        assert_eq!(c.llm.unwrap().timeout_ms, 30_000);
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                "[llm]\nbase_url = \"ftp://x\"\nmodel = \"m\"\n",
                "llm.base_url",
            ),
            (
                "[llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\ntimeout_ms = 0\n",
                "llm.timeout_ms",
            ),
            (
                "[llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nmax_tool_rounds = 99\n",
                "llm.max_tool_rounds",
            ),
            ("prompt_version = \"../etc\"\n", "prompt_version"),
            ("max_field_chars = 3\n", "max_field_chars"),
            ("unknown_knob = 1\n", "unknown field"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
