//! Loads the versioned system prompt and tool descriptions from `prompts/`, built in or from an override directory.

use std::path::{Path, PathBuf};

use async_openai::types::chat::FunctionObject;
use time::OffsetDateTime;

use super::tools::TOOL_NAMES;

const BUILTIN_VERSION: &str = "v1";
const BUILTIN_SYSTEM: &str = include_str!("../../prompts/system.v1.md");
const BUILTIN_TOOLS: &str = include_str!("../../prompts/tools.v1.json");

/// A prompt set that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A file could not be read.
    #[error("cannot read prompt file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The tools file is not a JSON array of function descriptions.
    #[error("prompt file {} is not a JSON array of {{name, description, parameters}} objects", path.display())]
    ToolsJson {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The tools file names a tool trimtab does not have, or leaves one out.
    #[error("prompt file {} must describe exactly the read-only tools {}: {problem}", path.display(), TOOL_NAMES.join(", "))]
    ToolSet {
        /// The file.
        path: PathBuf,
        /// What differs.
        problem: String,
    },
    /// The built-in set has only [`BUILTIN_VERSION`].
    #[error("no built-in prompts for version {version:?} (built in: v1); set prompts_dir")]
    UnknownVersion {
        /// The version asked for.
        version: String,
    },
    /// The system prompt lacks the placeholder that tells the model where data starts and ends.
    #[error("system prompt {} must contain {{{{nonce}}}} so the model knows the data fence", path.display())]
    MissingFence {
        /// The file.
        path: PathBuf,
    },
}

/// The system prompt template and the tool descriptions.
#[derive(Debug, Clone)]
pub struct Prompts {
    /// The version, such as `v1`.
    pub version: String,
    system_template: String,
    /// The tool descriptions sent with every request.
    pub tools: Vec<FunctionObject>,
}

impl Prompts {
    /// Loads `system.<version>.md` and `tools.<version>.json` from `dir`, or the built-in set when `dir` is `None`.
    pub fn load(dir: Option<&Path>, version: &str) -> Result<Self, PromptError> {
        let (system, tools, system_path, tools_path) = match dir {
            None => {
                if version != BUILTIN_VERSION {
                    return Err(PromptError::UnknownVersion {
                        version: version.to_owned(),
                    });
                }
                (
                    BUILTIN_SYSTEM.to_owned(),
                    BUILTIN_TOOLS.to_owned(),
                    PathBuf::from("prompts/system.v1.md (built in)"),
                    PathBuf::from("prompts/tools.v1.json (built in)"),
                )
            }
            Some(dir) => {
                let sp = dir.join(format!("system.{version}.md"));
                let tp = dir.join(format!("tools.{version}.json"));
                let read = |p: &Path| {
                    std::fs::read_to_string(p).map_err(|source| PromptError::Read {
                        path: p.to_owned(),
                        source,
                    })
                };
                (read(&sp)?, read(&tp)?, sp, tp)
            }
        };
        if !system.contains("{{nonce}}") {
            return Err(PromptError::MissingFence { path: system_path });
        }
        let tools: Vec<FunctionObject> =
            serde_json::from_str(&tools).map_err(|source| PromptError::ToolsJson {
                path: tools_path.clone(),
                source,
            })?;
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        let mut expected = TOOL_NAMES.to_vec();
        expected.sort_unstable();
        if names != expected {
            let extra: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| !expected.contains(n))
                .collect();
            let missing: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|n| !names.contains(n))
                .collect();
            return Err(PromptError::ToolSet {
                path: tools_path,
                problem: format!("unknown or repeated {extra:?}, missing {missing:?}"),
            });
        }
        Ok(Self {
            version: version.to_owned(),
            system_template: system,
            tools,
        })
    }

    /// The system prompt for one request.
    pub fn system(&self, nonce: &str, now: OffsetDateTime) -> String {
        let now = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| now.unix_timestamp().to_string());
        self.system_template
            .replace("{{nonce}}", nonce)
            .replace("{{now}}", &now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prompts_load_and_fill_placeholders() {
        let p = Prompts::load(None, "v1").expect("built-in prompts are valid");
        assert_eq!(p.tools.len(), TOOL_NAMES.len());
        let s = p.system("n0nce", time::macros::datetime!(2026-11-22 03:00 UTC));
        assert!(
            s.contains("BEGIN UNTRUSTED DATA n0nce") && s.contains("2026-11-22T03:00:00Z"),
            "{s}"
        );
        assert!(!s.contains("{{"));
    }

    #[test]
    fn a_prompt_dir_cannot_add_a_tool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("system.v2.md"), "data fence {{nonce}}").unwrap();
        let mut tools: Vec<serde_json::Value> = serde_json::from_str(BUILTIN_TOOLS).unwrap();
        tools.push(serde_json::json!({"name": "approve_proposal", "description": "approve", "parameters": {}}));
        std::fs::write(
            dir.path().join("tools.v2.json"),
            serde_json::to_string(&tools).unwrap(),
        )
        .unwrap();
        let err = Prompts::load(Some(dir.path()), "v2").unwrap_err();
        assert!(err.to_string().contains("approve_proposal"), "{err}");
        tools.pop();
        std::fs::write(
            dir.path().join("tools.v2.json"),
            serde_json::to_string(&tools).unwrap(),
        )
        .unwrap();
        assert_eq!(Prompts::load(Some(dir.path()), "v2").unwrap().version, "v2");
        assert!(matches!(
            Prompts::load(None, "v9"),
            Err(PromptError::UnknownVersion { .. })
        ));
    }
}
