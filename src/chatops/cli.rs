//! `trimtab ask`: the command-line arguments and the run that prints an answer, streamed or as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::config::{ChatopsConfig, LlmConfig, Provider};
use super::{Chatops, ChatopsError, StateSource, StaticState};

/// Ask trimtab a question about the pipeline; answers cite the numbers they use.
///
/// Without a model endpoint (`--llm-url` or `[chatops.llm]` in the config) the common questions get templated
/// answers: is the pipeline healthy, why is lag growing on X, what changed in the last hour, what waits for
/// approval, will pool X fill up this week, what are the current settings.
#[derive(Debug, clap::Args)]
pub struct AskArgs {
    /// The question, in plain language.
    pub question: String,
    /// A state snapshot (the JSON form of `StaticState`) to answer from.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Ask a running agent instead: the base URL of its HTTP API, such as http://127.0.0.1:8080.
    #[arg(long, value_name = "URL", env = "TRIMTAB_API")]
    pub api: Option<String>,
    /// A TOML file with a `[chatops]` table (or the chatops settings at top level).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// OpenAI-compatible base URL, such as http://127.0.0.1:8088/v1; overrides the config.
    #[arg(long, env = "TRIMTAB_LLM_URL")]
    pub llm_url: Option<String>,
    /// Model name to send with `--llm-url`.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Environment variable holding the API key for `--llm-url`.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Stream the model's answer as it is written.
    #[arg(long)]
    pub stream: bool,
    /// Print the whole reply as JSON (answer, citations, tool results).
    #[arg(long)]
    pub json: bool,
    /// Never ask a model, even if one is configured.
    #[arg(long)]
    pub no_llm: bool,
}

/// Why `trimtab ask` failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The config file could not be read or parsed.
    #[error("cannot use config file {}: {message}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The state snapshot could not be read.
    #[error(transparent)]
    State(#[from] super::state::StateError),
    /// No state to answer from.
    #[error(
        "no state to answer from: pass --api URL of a running agent, or --state FILE with a snapshot (the JSON form of StaticState)"
    )]
    NoState,
    /// The running agent's API did not answer.
    #[error("asking the agent at {url}: {message}")]
    Api {
        /// The URL called.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Chat-ops failed.
    #[error(transparent)]
    Chatops(#[from] ChatopsError),
    /// The runtime or the terminal failed.
    #[error("i/o failed")]
    Io(#[from] std::io::Error),
}

fn load_config(args: &AskArgs) -> Result<ChatopsConfig, AskError> {
    let mut config = match &args.config {
        None => ChatopsConfig::default(),
        Some(path) => {
            let bad = |message: String| AskError::ConfigFile {
                path: path.clone(),
                message,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let section = match table.get("chatops") {
                Some(t) => t.clone(),
                None => toml::Value::Table(table),
            };
            section
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("expected chatops settings: {e}")))?
        }
    };
    if let Some(url) = &args.llm_url {
        let base = config.llm.take();
        config.llm = Some(LlmConfig {
            provider: Provider::OpenaiCompatible,
            base_url: url.clone(),
            model: args.model.clone(),
            api_key_env: args
                .api_key_env
                .clone()
                .or_else(|| base.as_ref().and_then(|b| b.api_key_env.clone())),
            timeout_ms: base.as_ref().map_or(30_000, |b| b.timeout_ms),
            max_tool_rounds: base.as_ref().map_or(4, |b| b.max_tool_rounds),
            max_tokens: base.as_ref().map_or(800, |b| b.max_tokens),
        });
    }
    if args.no_llm {
        config.llm = None;
    }
    Ok(config)
}

/// Runs `trimtab ask` on its own small runtime and prints the answer.
pub fn run(args: AskArgs) -> Result<(), AskError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

/// Runs `trimtab ask` inside an existing runtime, reading state from `--state`.
pub async fn run_async(args: AskArgs) -> Result<(), AskError> {
    if let Some(api) = &args.api {
        return ask_api(api, &args).await;
    }
    let path = args.state.as_ref().ok_or(AskError::NoState)?;
    let state = StaticState::from_json_file(path)?;
    run_with_state(args, Arc::new(state)).await
}

/// Asks a running agent through `POST /v1/chat` and prints its answer.
async fn ask_api(api: &str, args: &AskArgs) -> Result<(), AskError> {
    let url = format!("{}/v1/chat", api.trim_end_matches('/'));
    let failed = |message: String| AskError::Api {
        url: url.clone(),
        message,
    };
    let response = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({ "question": args.question, "templated_only": args.no_llm }))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| failed(e.to_string()))?;
    if !status.is_success() {
        return Err(failed(format!("http {status}: {body}")));
    }
    let answer: super::Answer =
        serde_json::from_str(&body).map_err(|e| failed(format!("not an answer: {e}")))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{body}")?;
    } else {
        write!(out, "{}", answer.render_text())?;
    }
    Ok(())
}

/// Runs `trimtab ask` against any state source, such as a running agent's; `--state` is ignored.
pub async fn run_with_state(args: AskArgs, state: Arc<dyn StateSource>) -> Result<(), AskError> {
    let config = load_config(&args)?;
    let chatops = Chatops::new(config, state)?;
    let stdout = std::io::stdout();
    if args.stream && !args.json {
        let mut streamed = false;
        let mut sink = |text: &str| {
            streamed = true;
            let mut out = stdout.lock();
            // A closed terminal must not abort the answer; the final print reports any real failure.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        };
        let answer = chatops.ask_streaming(&args.question, &mut sink).await?;
        let mut out = stdout.lock();
        if streamed {
            writeln!(out, "\n")?;
        }
        if streamed && answer.source == super::AnswerSource::Llm {
            // The text is already on screen; print what follows it.
            let rendered = answer.render_text();
            let tail = rendered
                .split_once(answer.text.trim_end())
                .map_or(rendered.as_str(), |(_, t)| t);
            write!(out, "{}", tail.trim_start_matches('\n'))?;
        } else {
            write!(out, "{}", answer.render_text())?;
        }
        return Ok(());
    }
    let answer = if args.no_llm {
        chatops.ask_templated(&args.question).await?
    } else {
        chatops.ask(&args.question).await?
    };
    let mut out = stdout.lock();
    if args.json {
        let json = serde_json::to_string_pretty(&answer).map_err(std::io::Error::other)?;
        writeln!(out, "{json}")?;
    } else {
        write!(out, "{}", answer.render_text())?;
    }
    Ok(())
}
