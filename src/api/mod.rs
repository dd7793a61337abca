//! The HTTP API: health, the agent's and pipeline's state, pending proposals, and chat-ops (`POST /v1/chat`).
//!
//! Everything here reads; nothing changes the pipeline or LINSTOR. Approving a proposal stays a separate,
//! audited command (`trimtab proposals approve ID --by NAME`), run by a person with access to the state directory.

pub mod dlq;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::agent::AgentHandle;
use crate::executor::ProposalStore;
use crate::pipeline::{LiveKnobs, PipelineStats};
use crate::servicebus::lag::LagTracker;

/// What the API reads.
#[derive(Clone)]
pub struct ApiState {
    /// The pipeline's counters.
    pub stats: Arc<PipelineStats>,
    /// Lag per partition key.
    pub lag: Arc<LagTracker>,
    /// The live knobs (read only here).
    pub knobs: LiveKnobs,
    /// The control loop, when it runs.
    pub agent: Option<Arc<AgentHandle>>,
    /// Proposals in the state directory.
    pub proposals: Option<ProposalStore>,
}

/// The routes; `chat` is the chat-ops router when chat-ops is configured.
pub fn router(state: ApiState, chat: Option<Router>) -> Router {
    let api = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/state", get(state_handler))
        .route("/v1/proposals", get(list_proposals))
        .route("/v1/proposals/{id}", get(show_proposal))
        .with_state(Arc::new(state));
    match chat {
        Some(chat) => api.merge(chat),
        None => api,
    }
}

async fn state_handler(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "pipeline": state.stats.snapshot(),
        "lag": state.lag.snapshot(),
        "knobs": state.knobs.get(),
        "agent": state.agent.as_ref().map(|a| a.snapshot()),
    }))
}

async fn list_proposals(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    match state.proposals.as_ref().map(|p| p.list()) {
        Some(Ok(list)) => Json(serde_json::json!(list)).into_response(),
        Some(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the control loop is not running: no proposals",
        )
            .into_response(),
    }
}

async fn show_proposal(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> impl IntoResponse {
    match state.proposals.as_ref().map(|p| p.get(&id)) {
        Some(Ok(p)) => Json(serde_json::json!(p)).into_response(),
        Some(Err(error)) => (StatusCode::NOT_FOUND, error.to_string()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "the control loop is not running: no proposals",
        )
            .into_response(),
    }
}

/// Serves `router` on `bind` until `stop`.
pub async fn serve(bind: &str, router: Router, stop: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(addr = %listener.local_addr()?, "http api listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
