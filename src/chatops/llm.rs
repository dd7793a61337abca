//! The conversation with an OpenAI-compatible model through `async-openai`: tool rounds, streaming, deadlines.

use std::time::Duration;

use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionMessageToolCall, ChatCompletionMessageToolCalls,
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestToolMessage,
    ChatCompletionRequestUserMessage, ChatCompletionTool, ChatCompletionTools,
    CreateChatCompletionRequest, FunctionCall,
};
use async_openai::Client;
use futures::StreamExt;

use super::config::{LlmConfig, Provider};
use super::prompts::Prompts;
use super::redact::{fence, Redactor};
use super::state::StateSource;
use super::tools::{model_view, Ledger, ToolCall, ToolError};

/// Why the model's answer could not be used. Every variant leads to the templated answer.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// No reply within the deadline.
    #[error("the model did not answer within {timeout_ms} ms")]
    Timeout {
        /// The deadline.
        timeout_ms: u64,
    },
    /// The endpoint answered with an HTTP error.
    #[error("the model endpoint returned HTTP {status}: {message}")]
    Http {
        /// The status code.
        status: u16,
        /// The endpoint's message, capped.
        message: String,
    },
    /// The endpoint could not be reached or spoke something else.
    #[error("the model endpoint failed: {message}")]
    Transport {
        /// What went wrong, capped.
        message: String,
    },
    /// The model asked for a tool that does not exist.
    #[error("the model asked for a tool that does not exist ({name}); trimtab's tools are read-only, the call was refused and nothing was changed")]
    UnknownTool {
        /// The name it asked for, capped.
        name: String,
    },
    /// The model called a tool with arguments that do not parse.
    #[error("the model called {tool} with malformed arguments")]
    BadArguments {
        /// The tool.
        tool: String,
        /// The parse failure.
        #[source]
        source: ToolError,
    },
    /// A tool could not read state.
    #[error("a tool failed while the model was using it")]
    Tool {
        /// The failure.
        #[source]
        source: ToolError,
    },
    /// The model kept asking for tools.
    #[error("the model was still calling tools after {rounds} rounds")]
    TooManyRounds {
        /// The limit.
        rounds: u32,
    },
    /// The model replied with neither text nor tool calls.
    #[error("the model replied with nothing")]
    Empty,
    /// The model answered without calling any tool, so nothing backs its answer.
    #[error(
        "the model answered without reading any of trimtab's state, so nothing backs its answer"
    )]
    Unfounded,
    /// The model's answer uses numbers found in no tool result and cites none.
    #[error("the model's answer cites none of trimtab's data and contains numbers that are not in it ({numbers})")]
    Uncited {
        /// The numbers, joined.
        numbers: String,
    },
}

impl LlmError {
    /// Whether asking again later may work (slowness, rate limits, server errors, network), as opposed to a
    /// model that misbehaves.
    pub fn is_retriable(&self) -> bool {
        match self {
            LlmError::Timeout { .. } | LlmError::Transport { .. } => true,
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Tool { source } => source.is_retriable(),
            _ => false,
        }
    }
}

fn cap(s: &str) -> String {
    let s: String = s.chars().take(300).collect();
    s.replace('\n', " ")
}

fn from_openai(e: OpenAIError) -> LlmError {
    match e {
        OpenAIError::ApiError(api) => LlmError::Http {
            status: api.status_code.as_u16(),
            message: cap(&api.api_error.message),
        },
        OpenAIError::Reqwest(r) if r.is_timeout() => LlmError::Transport {
            message: "request timed out".into(),
        },
        OpenAIError::Reqwest(r) => LlmError::Transport {
            message: match r.status() {
                Some(s) => format!("HTTP {s}"),
                None if r.is_connect() => "cannot connect".into(),
                None => "request failed".into(),
            },
        },
        OpenAIError::JSONDeserialize(err, _) => LlmError::Transport {
            message: format!(
                "reply is not OpenAI chat-completion JSON: {}",
                cap(&err.to_string())
            ),
        },
        OpenAIError::StreamError(err) => LlmError::Transport {
            message: format!("stream broke: {}", cap(&err.to_string())),
        },
        other => LlmError::Transport {
            message: cap(&other.to_string()),
        },
    }
}

/// What one round of the conversation produced.
struct Round {
    content: String,
    tool_calls: Vec<ChatCompletionMessageToolCall>,
}

/// A model behind an OpenAI-compatible endpoint. The API key lives only inside the client.
pub struct LlmClient {
    client: Client<Box<dyn Config>>,
    model: String,
    timeout: Duration,
    timeout_ms: u64,
    max_rounds: u32,
    max_tokens: u32,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("model", &self.model)
            .field("timeout_ms", &self.timeout_ms)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

/// What one question needs besides the client.
pub struct Turn<'a> {
    /// The prompts to send.
    pub prompts: &'a Prompts,
    /// Masks the question and tool data.
    pub redactor: &'a Redactor,
    /// The operator's question.
    pub question: &'a str,
    /// The state the tools read.
    pub state: &'a dyn StateSource,
    /// Most items per tool result shown to the model.
    pub max_items: usize,
}

/// The result of a conversation that ended in text.
pub struct Conversation {
    /// The model's final text.
    pub text: String,
    /// Rounds used.
    pub rounds: u32,
}

impl LlmClient {
    /// Builds the client; `api_key` comes from the environment variable the config names.
    pub fn new(config: &LlmConfig, api_key: String) -> Result<Self, reqwest::Error> {
        let cfg: Box<dyn Config> = match &config.provider {
            Provider::OpenaiCompatible => Box::new(
                OpenAIConfig::new()
                    .with_api_base(config.base_url.trim_end_matches('/'))
                    .with_api_key(api_key),
            ),
            Provider::Azure {
                api_version,
                deployment,
            } => Box::new(
                AzureConfig::new()
                    .with_api_base(config.base_url.trim_end_matches('/'))
                    .with_api_version(api_version)
                    .with_deployment_id(deployment)
                    .with_api_key(api_key),
            ),
        };
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            client: Client::with_config(cfg).with_http_client(http),
            model: config.model.clone(),
            timeout,
            timeout_ms: config.timeout_ms,
            max_rounds: config.max_tool_rounds,
            max_tokens: config.max_tokens,
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Runs the conversation: the model may call read-only tools for up to `max_tool_rounds` rounds, then must
    /// answer in text. With `on_text`, the request is streamed and text is passed on as it arrives.
    pub async fn converse(
        &self,
        turn: Turn<'_>,
        ledger: &mut Ledger,
        mut on_text: Option<&mut (dyn FnMut(&str) + Send)>,
    ) -> Result<Conversation, LlmError> {
        let Turn {
            prompts,
            redactor,
            question,
            state,
            max_items,
        } = turn;
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
        let mut messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(prompts.system(&nonce, state.now())).into(),
            ChatCompletionRequestUserMessage::from(redactor.scrub(question)).into(),
        ];
        let tools: Vec<ChatCompletionTools> = prompts
            .tools
            .iter()
            .map(|f| {
                ChatCompletionTools::Function(ChatCompletionTool {
                    function: f.clone(),
                })
            })
            .collect();
        for round in 0..=self.max_rounds {
            let request = CreateChatCompletionRequest {
                model: self.model.clone(),
                messages: messages.clone(),
                tools: Some(tools.clone()),
                max_completion_tokens: Some(self.max_tokens),
                temperature: Some(0.0),
                ..Default::default()
            };
            let reply = match on_text.as_deref_mut() {
                Some(sink) => self.stream_round(request, sink).await?,
                None => self.round(request).await?,
            };
            if reply.tool_calls.is_empty() {
                if reply.content.trim().is_empty() {
                    return Err(LlmError::Empty);
                }
                return Ok(Conversation {
                    text: reply.content,
                    rounds: round + 1,
                });
            }
            if round == self.max_rounds {
                return Err(LlmError::TooManyRounds {
                    rounds: self.max_rounds,
                });
            }
            tracing::debug!(
                round,
                calls = reply.tool_calls.len(),
                "model asked for tools"
            );
            let mut answers = Vec::with_capacity(reply.tool_calls.len());
            for call in &reply.tool_calls {
                let parsed = ToolCall::parse(&call.function.name, &call.function.arguments).map_err(|e| match e {
                    ToolError::Unknown { name } => {
                        tracing::warn!(tool = %name, "model asked for a tool that does not exist; refused");
                        LlmError::UnknownTool { name }
                    }
                    other => LlmError::BadArguments {
                        tool: cap(&call.function.name),
                        source: other,
                    },
                })?;
                ledger
                    .run(&call.id, &parsed, state)
                    .await
                    .map_err(|source| LlmError::Tool { source })?;
                let record = ledger
                    .records()
                    .last()
                    .map(|r| model_view(r, max_items))
                    .unwrap_or_default();
                answers.push(ChatCompletionRequestToolMessage {
                    content: fence(parsed.name(), &nonce, &record).into(),
                    tool_call_id: call.id.clone(),
                });
            }
            messages.push(
                ChatCompletionRequestAssistantMessage {
                    content: (!reply.content.is_empty()).then(|| reply.content.clone().into()),
                    tool_calls: Some(
                        reply
                            .tool_calls
                            .iter()
                            .cloned()
                            .map(ChatCompletionMessageToolCalls::Function)
                            .collect(),
                    ),
                    ..Default::default()
                }
                .into(),
            );
            messages.extend(answers.into_iter().map(ChatCompletionRequestMessage::from));
        }
        Err(LlmError::TooManyRounds {
            rounds: self.max_rounds,
        })
    }

    async fn round(&self, request: CreateChatCompletionRequest) -> Result<Round, LlmError> {
        let response = tokio::time::timeout(self.timeout, self.client.chat().create(request))
            .await
            .map_err(|_| LlmError::Timeout {
                timeout_ms: self.timeout_ms,
            })?
            .map_err(from_openai)?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(LlmError::Empty);
        };
        let tool_calls = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|c| match c {
                ChatCompletionMessageToolCalls::Function(f) => Ok(f),
                ChatCompletionMessageToolCalls::Custom(c) => Err(LlmError::UnknownTool {
                    name: cap(&c.custom_tool.name),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Round {
            content: choice.message.content.unwrap_or_default(),
            tool_calls,
        })
    }

    async fn stream_round(
        &self,
        request: CreateChatCompletionRequest,
        sink: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Round, LlmError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timeout = || LlmError::Timeout {
            timeout_ms: self.timeout_ms,
        };
        let mut stream =
            tokio::time::timeout_at(deadline, self.client.chat().create_stream(request))
                .await
                .map_err(|_| timeout())?
                .map_err(from_openai)?;
        let mut content = String::new();
        // Tool calls arrive in pieces keyed by index: the first piece has the id and name, later ones append
        // to the arguments.
        let mut calls: Vec<(u32, ChatCompletionMessageToolCall)> = Vec::new();
        while let Some(chunk) = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| timeout())?
        {
            let chunk = chunk.map_err(from_openai)?;
            for choice in chunk.choices {
                if let Some(text) = choice.delta.content {
                    sink(&text);
                    content.push_str(&text);
                }
                for piece in choice.delta.tool_calls.unwrap_or_default() {
                    let slot = match calls.iter_mut().position(|(i, _)| *i == piece.index) {
                        Some(p) => p,
                        None => {
                            calls.push((
                                piece.index,
                                ChatCompletionMessageToolCall {
                                    id: String::new(),
                                    function: FunctionCall {
                                        name: String::new(),
                                        arguments: String::new(),
                                    },
                                },
                            ));
                            calls.len() - 1
                        }
                    };
                    let call = &mut calls[slot].1;
                    if let Some(id) = piece.id {
                        call.id = id;
                    }
                    if let Some(f) = piece.function {
                        if let Some(name) = f.name {
                            call.function.name.push_str(&name);
                        }
                        if let Some(args) = f.arguments {
                            call.function.arguments.push_str(&args);
                        }
                    }
                }
            }
        }
        Ok(Round {
            content,
            tool_calls: calls.into_iter().map(|(_, c)| c).collect(),
        })
    }
}
