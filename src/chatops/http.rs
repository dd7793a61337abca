//! `POST /v1/chat`: asks a question over HTTP and returns the answer with its citations and tool results as JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{Answer, Chatops};

/// Longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 2000;

/// The request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The question, in plain language.
    pub question: String,
    /// Skip the model and answer from templates.
    #[serde(default)]
    pub templated_only: bool,
}

/// The error body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatError {
    /// What went wrong.
    pub error: String,
}

/// The chat-ops routes; the caller mounts them (they carry no authentication and change nothing).
pub fn router(chatops: Arc<Chatops>) -> Router {
    Router::new()
        .route("/v1/chat", post(chat))
        .with_state(chatops)
}

async fn chat(
    State(chatops): State<Arc<Chatops>>,
    Json(request): Json<ChatRequest>,
) -> Result<Json<Answer>, (StatusCode, Json<ChatError>)> {
    let question = request.question.trim();
    let length = question.chars().count();
    if length == 0 || length > MAX_QUESTION_CHARS {
        return Err((
            StatusCode::BAD_REQUEST,
            Json(ChatError {
                error: format!(
                    "question must be 1 to {MAX_QUESTION_CHARS} characters, got {length}"
                ),
            }),
        ));
    }
    let answer = if request.templated_only {
        chatops.ask_templated(question).await
    } else {
        chatops.ask(question).await
    };
    answer.map(Json).map_err(|e| {
        let status = if e.is_retriable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        tracing::warn!(error = %e, "chat request failed");
        (
            status,
            Json(ChatError {
                error: e.to_string(),
            }),
        )
    })
}
