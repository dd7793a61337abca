//! The operator's HTTP surface: the JSON API, `/metrics`, health and readiness, and the web page at `/`.
//!
//! * [`auth`]: bearer tokens from the config (a write token for every change, an optional read token).
//! * [`read`]: state, queues, metric windows, forecasts, placement, proposals, mode and the audit tail.
//! * [`act`]: approve and reject proposals, pause and resume; each audited first, exactly as the command line does.
//! * [`health`]: `/healthz` (the process answers) and `/readyz` (Service Bus, Cassandra and LINSTOR answer).
//! * [`openapi`]: the OpenAPI 3 document at `/v1/openapi.json`, written as data next to the route table.
//! * [`launch`]: builds the surface (and, for the demo, the agent) from a running [`crate::app::App`].
//!
//! The API changes nothing but proposals' states and the pause flag, through the executor's own store and state
//! directory; it never calls LINSTOR or sets a knob. Errors are JSON `{"error": "..."}` naming the problem.
//!
//! To add routes (the dead-letter routes, for example), give [`Mount::at`] each one in [`routes`] with its entry in
//! [`openapi::OPERATIONS`]; a unit test fails when a route and the document disagree.

pub mod act;
pub mod auth;
pub mod health;
pub mod launch;
pub mod openapi;
pub mod read;

pub mod dlq;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::agent::AgentHandle;
use crate::cassandra::ObservationWindow;
use crate::executor::{ExecutorError, ProposalStore, StateDir};
use crate::metrics::store::MetricStore;
use crate::pipeline::{LiveKnobs, PipelineStats};
use crate::servicebus::lag::LagTracker;

pub use auth::{Access, Tokens};
pub use health::Probe;

/// What the API reads: the pipeline's handles and, when it runs, the control loop.
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

/// What the full surface needs beyond [`ApiState`]; the default serves reads only, with no readiness probes.
#[derive(Clone, Default)]
pub struct Extras {
    /// The bearer tokens; without a write token every change is refused.
    pub tokens: Tokens,
    /// The Cassandra writer's observations (write latency, errors) for `/metrics`.
    pub writes: Option<Arc<ObservationWindow>>,
    /// The agent's metric store: the windows the charts draw.
    pub store: Option<Arc<MetricStore>>,
    /// The state directory (audit log, pause flag) when there is no agent to ask.
    pub state_dir: Option<StateDir>,
    /// What `/readyz` asks; each outside system once.
    pub probes: Vec<Arc<dyn Probe>>,
}

/// Everything a handler reads, shared.
pub(crate) struct Shared {
    pub(crate) state: ApiState,
    pub(crate) extras: Extras,
}

impl Shared {
    /// The state directory: the configured one, else the agent's.
    pub(crate) fn state_dir(&self) -> Option<StateDir> {
        self.extras
            .state_dir
            .clone()
            .or_else(|| self.state.agent.as_ref().map(|a| a.state_dir().clone()))
    }

    /// The proposal store: the configured one, else the state directory's.
    pub(crate) fn proposals(&self) -> Result<ProposalStore, ApiError> {
        if let Some(p) = &self.state.proposals {
            return Ok(p.clone());
        }
        self.state_dir()
            .map(ProposalStore::new)
            .ok_or(ApiError::Unavailable(
                "the control loop is not running: no proposals",
            ))
    }
}

/// What went wrong with a request; each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The server has no token for this kind of request, so nobody may make it.
    #[error("{0}")]
    Forbidden(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed: names the input and what was expected.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the current state (a proposal that is no longer open).
    #[error("{0}")]
    Conflict(String),
    /// This part of trimtab is not running here.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The executor's bookkeeping failed.
    #[error("{context}: {source}")]
    Executor {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: ExecutorError,
    },
    /// Reading trimtab's state failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// Whether the same request may succeed later (IO trouble, a part still starting), as opposed to bad input.
    pub fn is_retriable(&self) -> bool {
        match self {
            ApiError::Unavailable(_) | ApiError::Internal(_) => true,
            ApiError::Executor { source, .. } => source.is_retriable(),
            _ => false,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Executor { source, .. } => match source {
                ExecutorError::NoSuchProposal { .. } => StatusCode::NOT_FOUND,
                ExecutorError::BadProposalId { .. } => StatusCode::BAD_REQUEST,
                ExecutorError::NotOpen { .. } | ExecutorError::PlanHashMismatch { .. } => {
                    StatusCode::CONFLICT
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn executor(context: impl Into<String>) -> impl FnOnce(ExecutorError) -> ApiError {
        let context = context.into();
        move |source| ApiError::Executor { context, source }
    }
}

/// The error body every endpoint returns.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What went wrong, naming the input or the part that failed.
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "api request failed");
        }
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

/// A router that records each (method, path) it mounts, so the OpenAPI document can be checked against it.
pub struct Mount {
    router: Router<Arc<Shared>>,
    mounted: Vec<(Method, &'static str)>,
}

impl Mount {
    fn new() -> Self {
        Mount {
            router: Router::new(),
            mounted: Vec::new(),
        }
    }

    /// Mounts `handler` (built with `get(..)`, `post(..)`) for `method` at `path`.
    pub(crate) fn at(
        mut self,
        method: Method,
        path: &'static str,
        handler: MethodRouter<Arc<Shared>>,
    ) -> Self {
        self.mounted.push((method, path));
        self.router = self.router.route(path, handler);
        self
    }

    /// The routes mounted so far.
    pub fn mounted(&self) -> &[(Method, &'static str)] {
        &self.mounted
    }
}

/// Every route of the surface except chat, recorded.
pub fn routes() -> Mount {
    use axum::routing::{get, post};
    Mount::new()
        .at(Method::GET, "/", get(crate::web::page))
        .at(Method::GET, "/assets/app.js", get(crate::web::script))
        .at(Method::GET, "/assets/app.css", get(crate::web::style))
        .at(Method::GET, "/health", get(health::healthz))
        .at(Method::GET, "/healthz", get(health::healthz))
        .at(Method::GET, "/readyz", get(health::readyz))
        .at(Method::GET, "/metrics", get(read::prometheus))
        .at(
            Method::GET,
            "/v1/openapi.json",
            get(openapi::document_handler),
        )
        .at(Method::GET, "/v1/state", get(read::state))
        .at(Method::GET, "/v1/queues", get(read::queues))
        .at(Method::GET, "/v1/metrics/series", get(read::series))
        .at(Method::GET, "/v1/forecasts", get(read::forecasts))
        .at(Method::GET, "/v1/placement", get(read::placement))
        .at(Method::GET, "/v1/proposals", get(read::list_proposals))
        .at(Method::GET, "/v1/proposals/{id}", get(read::show_proposal))
        .at(
            Method::POST,
            "/v1/proposals/{id}/approve",
            post(act::approve),
        )
        .at(Method::POST, "/v1/proposals/{id}/reject", post(act::reject))
        .at(Method::GET, "/v1/mode", get(read::mode))
        .at(Method::POST, "/v1/pause", post(act::pause))
        .at(Method::POST, "/v1/resume", post(act::resume))
        .at(Method::GET, "/v1/audit", get(read::audit))
}

/// The read-only API of earlier versions: reads open, every change refused, no readiness probes.
pub fn router(state: ApiState, chat: Option<Router>) -> Router {
    surface(state, Extras::default(), chat)
}

/// The whole surface; `chat` is the chat-ops router (`POST /v1/chat`) when chat-ops is configured.
pub fn surface(state: ApiState, extras: Extras, chat: Option<Router>) -> Router {
    let shared = Arc::new(Shared { state, extras });
    let api = routes()
        .router
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::require,
        ))
        .with_state(shared.clone());
    let chat =
        chat.map(|chat| chat.layer(axum::middleware::from_fn_with_state(shared, auth::require)));
    match chat {
        Some(chat) => api.merge(chat),
        None => api,
    }
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}: the routes are listed at /v1/openapi.json",
        request.method(),
        request.uri().path()
    ))
}

/// Serves `router` on `bind` until `stop`.
pub async fn serve(bind: &str, router: Router, stop: CancellationToken) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    serve_on(listener, router, stop).await
}

/// Serves `router` on an already bound listener until `stop` (so a caller can learn the port first).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "http api listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}
