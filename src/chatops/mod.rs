//! Chat-ops: answers operators' questions about the pipeline from read-only tools, citing every number.
//!
//! A question goes to the language model when one is configured ([`llm`]), with read-only [`tools`] over a
//! [`state::StateSource`]; otherwise, or when the model is slow, fails or misbehaves, the [`templated`]
//! answers reply from the same tools. Either way the [`answer::Answer`] carries the tool results it was
//! built on and the cited items with their time ranges.
//!
//! Only this module knows prompt and wire formats of the LLM. Nothing here can change state: the tool set
//! is closed and read-only, and [`redact`] masks secrets and quotes pipeline text before it reaches a model.
//!
//! * [`state`]: the `StateSource` trait, snapshot types and `StaticState`.
//! * [`config`]: the `ChatopsConfig` settings.
//! * [`tools`]: the read-only tools and the citation ledger.
//! * [`redact`]: masking, capping and fencing of untrusted data.
//! * [`prompts`]: the versioned prompt files.
//! * [`llm`]: the `async-openai` conversation.
//! * [`templated`]: the answers without a model.
//! * [`answer`]: the reply type.
//! * [`http`]: `POST /v1/chat`.
//! * [`cli`]: `trimtab ask`.

pub mod answer;
pub mod cli;
pub mod config;
pub mod http;
pub mod llm;
pub mod prompts;
pub mod redact;
pub mod state;
pub mod templated;
pub mod tools;

use std::sync::Arc;

pub use answer::{Answer, AnswerSource, Citation};
pub use config::{ChatopsConfig, LlmConfig, Provider};
pub use state::{StateSource, StaticState};

use llm::{LlmClient, LlmError};
use prompts::Prompts;
use redact::Redactor;
use tools::Ledger;

/// Why chat-ops could not be set up or could not answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ChatopsError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The prompt files cannot be used.
    #[error(transparent)]
    Prompts(#[from] prompts::PromptError),
    /// The HTTP client for the model could not be built.
    #[error("cannot build the http client for the model")]
    Client(#[source] reqwest::Error),
    /// Even the templated answer failed, because state could not be read.
    #[error("cannot answer: state could not be read")]
    State(#[source] tools::ToolError),
}

impl ChatopsError {
    /// Whether asking again may work (only a failed state read can).
    pub fn is_retriable(&self) -> bool {
        matches!(self, ChatopsError::State(e) if e.is_retriable())
    }
}

/// The chat-ops service: configuration, prompts, the state it reads and the model client.
pub struct Chatops {
    config: ChatopsConfig,
    prompts: Prompts,
    redactor: Redactor,
    state: Arc<dyn StateSource>,
    llm: Option<LlmClient>,
}

impl std::fmt::Debug for Chatops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chatops")
            .field("prompt_version", &self.prompts.version)
            .field("llm", &self.llm)
            .finish_non_exhaustive()
    }
}

impl Chatops {
    /// Validates `config`, loads the prompts, reads the API key from the environment and builds the client.
    pub fn new(config: ChatopsConfig, state: Arc<dyn StateSource>) -> Result<Self, ChatopsError> {
        let config = config.validate()?;
        let prompts = Prompts::load(config.prompts_dir.as_deref(), &config.prompt_version)?;
        let (llm, literals) = match &config.llm {
            None => (None, Vec::new()),
            Some(l) => {
                let key = l.api_key()?;
                let client = LlmClient::new(l, key.clone()).map_err(ChatopsError::Client)?;
                (Some(client), vec![key])
            }
        };
        let redactor = Redactor::new(config.sensitive_names(), literals, config.max_field_chars);
        Ok(Self {
            config,
            prompts,
            redactor,
            state,
            llm,
        })
    }

    /// Answers a question: through the model when configured, else (or on any model failure) from templates.
    pub async fn ask(&self, question: &str) -> Result<Answer, ChatopsError> {
        self.ask_inner(question, None).await
    }

    /// Like [`Chatops::ask`], streaming the model's text to `on_text` as it arrives.
    pub async fn ask_streaming(
        &self,
        question: &str,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Answer, ChatopsError> {
        self.ask_inner(question, Some(on_text)).await
    }

    /// Answers from templates only, never calling a model.
    pub async fn ask_templated(&self, question: &str) -> Result<Answer, ChatopsError> {
        self.templated(question, None, AnswerSource::Templated)
            .await
    }

    async fn ask_inner(
        &self,
        question: &str,
        on_text: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<Answer, ChatopsError> {
        let Some(llm) = &self.llm else {
            return self.ask_templated(question).await;
        };
        let mut ledger = Ledger::new(self.redactor.clone());
        let turn = llm::Turn {
            prompts: &self.prompts,
            redactor: &self.redactor,
            question,
            state: self.state.as_ref(),
            max_items: self.config.max_items_per_tool,
        };
        let outcome = llm
            .converse(turn, &mut ledger, on_text)
            .await
            .and_then(|c| {
                let citations = answer::citations_for(&c.text, &ledger);
                let unverified = answer::unverified_numbers(&c.text, &ledger, question);
                if citations.is_empty() && !unverified.is_empty() {
                    return Err(LlmError::Uncited {
                        numbers: unverified.join(", "),
                    });
                }
                if ledger.records().is_empty() {
                    return Err(LlmError::Unfounded);
                }
                Ok((c, citations, unverified))
            });
        match outcome {
            Ok((conversation, citations, unverified_numbers)) => {
                tracing::info!(
                    model = llm.model(),
                    rounds = conversation.rounds,
                    citations = citations.len(),
                    unverified = unverified_numbers.len(),
                    "model answered"
                );
                Ok(Answer {
                    text: self.redactor.scrub(&conversation.text),
                    source: AnswerSource::Llm,
                    understood: None,
                    llm_failure: None,
                    model: Some(llm.model().to_owned()),
                    citations,
                    unverified_numbers,
                    tool_results: ledger.into_records(),
                    prompt_version: self.prompts.version.clone(),
                })
            }
            Err(e) => {
                // The endpoint's own error text is included, so it is scrubbed like everything else.
                let reason = self.redactor.scrub(&e.to_string());
                tracing::warn!(error = %reason, retriable = e.is_retriable(), "model answer not used; falling back to templates");
                let mut answer = self
                    .templated(question, Some(reason), AnswerSource::Fallback)
                    .await?;
                answer.model = Some(llm.model().to_owned());
                Ok(answer)
            }
        }
    }

    async fn templated(
        &self,
        question: &str,
        llm_failure: Option<String>,
        source: AnswerSource,
    ) -> Result<Answer, ChatopsError> {
        let mut ledger = Ledger::new(self.redactor.clone());
        let t = templated::answer(question, self.state.as_ref(), &mut ledger)
            .await
            .map_err(ChatopsError::State)?;
        let text = self.redactor.scrub(&t.text);
        Ok(Answer {
            citations: answer::citations_for(&text, &ledger),
            text,
            source,
            understood: t.understood,
            llm_failure,
            model: None,
            unverified_numbers: Vec::new(),
            tool_results: ledger.into_records(),
            prompt_version: self.prompts.version.clone(),
        })
    }
}
