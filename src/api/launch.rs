//! Starts the surface over a running [`App`]: the agent (when given its parts), chat-ops, the readiness probes,
//! and the HTTP server; used by `trimtab run`, `trimtab demo` and the tests, so all three serve the same thing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::health::{CassandraProbe, LinstorProbe, ServiceBusProbe};
use super::{ApiState, Extras, Probe, Tokens};
use crate::agent::state::{InsightSources, WithInsights};
use crate::agent::{Agent, AgentError, AgentHandle, AgentParts};
use crate::app::App;
use crate::chatops::{Chatops, ChatopsConfig};
use crate::executor::StateDir;
use crate::forecast::model::Family;
use crate::policy::Mode;
use crate::redrive::DlqService;

/// The shipped policies, written into the demo's own state directory so the demo runs from any directory.
const DEMO_POLICIES: &[(&str, &str)] = &[
    ("gate.rego", include_str!("../../policies/gate.rego")),
    ("grants.json", include_str!("../../policies/grants.json")),
    ("limits.json", include_str!("../../policies/limits.json")),
    ("windows.rego", include_str!("../../policies/windows.rego")),
    ("windows.json", include_str!("../../policies/windows.json")),
];

/// Why the surface did not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The address could not be bound.
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        /// The address asked for.
        bind: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent did not start.
    #[error("starting the control loop: {0}")]
    Agent(#[from] AgentError),
    /// Chat-ops' configuration is not usable.
    #[error("starting chat-ops: {0}")]
    Chatops(#[from] crate::chatops::ChatopsError),
    /// The demo's state directory could not be prepared.
    #[error("preparing the demo state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl LaunchError {
    /// Whether starting again may work (a busy port, a transient file error).
    pub fn is_retriable(&self) -> bool {
        match self {
            LaunchError::Bind { .. } | LaunchError::StateDir { .. } => true,
            LaunchError::Agent(e) => e.is_retriable(),
            LaunchError::Chatops(_) => false,
        }
    }
}

/// How to start the surface.
pub struct Launch {
    /// Address to listen on, such as `127.0.0.1:8080` (`:0` picks a free port).
    pub bind: String,
    /// The bearer tokens.
    pub tokens: Tokens,
    /// Chat-ops' configuration (the templated answers when it has no model); chat needs the agent.
    pub chatops: ChatopsConfig,
}

/// The running surface.
pub struct Surface {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The control loop, when its parts were given.
    pub agent: Option<Arc<AgentHandle>>,
    /// The HTTP server; it ends after the stop token is cancelled.
    pub server: tokio::task::JoinHandle<()>,
}

impl Surface {
    /// The page's address, `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Waits for the server and then the agent to end (after the stop token was cancelled).
    pub async fn join(self) {
        if let Err(error) = self.server.await {
            tracing::warn!(%error, "http server task ended abnormally");
        }
        if let Some(agent) = self.agent.and_then(|a| Arc::try_unwrap(a).ok()) {
            agent.join().await;
        }
    }
}

/// The readiness probes for `app`'s three systems.
pub fn probes(app: &App) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = vec![
        Arc::new(CassandraProbe {
            session: app.writer.session(),
        }),
        Arc::new(LinstorProbe {
            reader: app.linstor_reader.clone(),
        }),
    ];
    if let Some(entity) = app.entities.first() {
        probes.insert(
            0,
            Arc::new(ServiceBusProbe {
                depth: app.depth.clone(),
                entity: entity.clone(),
            }),
        );
    }
    probes
}

/// Starts the agent from `parts` (if any), chat-ops over it, and the HTTP server over `app`'s handles.
pub async fn start(
    app: &App,
    parts: Option<AgentParts>,
    launch: Launch,
    stop: CancellationToken,
) -> Result<Surface, LaunchError> {
    let listener = tokio::net::TcpListener::bind(&launch.bind)
        .await
        .map_err(|source| LaunchError::Bind {
            bind: launch.bind.clone(),
            source,
        })?;
    start_on(app, parts, launch, listener, stop).await
}

/// [`start`] on a listener the caller bound (`launch.bind` only names it in errors).
pub async fn start_on(
    app: &App,
    parts: Option<AgentParts>,
    launch: Launch,
    listener: tokio::net::TcpListener,
    stop: CancellationToken,
) -> Result<Surface, LaunchError> {
    let store = parts.as_ref().map(|p| p.store.clone());
    // Re-driving dead letters goes through the same gate and audit log as the agent's changes.
    let dlq = match (&parts, app.entities.first()) {
        (Some(parts), Some(entity)) => Some(super::dlq::router(super::dlq::DlqApi {
            service: DlqService::new(
                app.servicebus.clone(),
                parts.config.policies_dir.clone(),
                StateDir::new(parts.config.state_dir.clone()).audit_log(),
            ),
            default_entity: entity.clone(),
        })),
        _ => None,
    };
    let agent = match parts {
        Some(parts) => Some(Arc::new(Agent::start(parts, stop.child_token())?)),
        None => None,
    };
    let chat = match &agent {
        Some(agent) => {
            let state = WithInsights::new(
                agent.state_source(),
                InsightSources {
                    stats: app.stats(),
                    windows: app.windows.clone(),
                },
            );
            let chatops = Chatops::new(launch.chatops, Arc::new(state))?;
            Some(crate::chatops::http::router(Arc::new(chatops)))
        }
        None => None,
    };
    // Chat and the dead-letter routes are mounted beside the API's own, behind the same tokens.
    let extra = match (chat, dlq) {
        (Some(chat), Some(dlq)) => Some(chat.merge(dlq)),
        (chat, dlq) => chat.or(dlq),
    };
    let state = ApiState {
        stats: app.stats(),
        lag: app.lag.clone(),
        knobs: app.knobs.clone(),
        agent: agent.clone(),
        proposals: agent.as_ref().map(|a| a.proposals()),
    };
    let extras = Extras {
        tokens: launch.tokens,
        writes: Some(app.writer.observations()),
        store,
        state_dir: None,
        probes: probes(app),
    };
    let router = super::surface(state, extras, extra);
    let addr = listener.local_addr().map_err(|source| LaunchError::Bind {
        bind: launch.bind.clone(),
        source,
    })?;
    let server_stop = stop.child_token();
    let server = tokio::spawn(async move {
        if let Err(error) = super::serve_on(listener, router, server_stop).await {
            tracing::error!(%error, %addr, "http api stopped");
        }
    });
    Ok(Surface {
        addr,
        agent,
        server,
    })
}

/// Tunes agent parts for a run of about a minute on the stand-ins: its own state directory under `dir` with the
/// shipped policies, one-second sampling, planning every three seconds, and forecasts fitted on seconds of history.
pub fn demo_parts(parts: &mut AgentParts, dir: &Path, mode: Mode) -> Result<(), LaunchError> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).map_err(|source| LaunchError::StateDir {
        path: policies.display().to_string(),
        source,
    })?;
    for (name, text) in DEMO_POLICIES {
        let path = policies.join(name);
        std::fs::write(&path, text).map_err(|source| LaunchError::StateDir {
            path: path.display().to_string(),
            source,
        })?;
    }
    parts.config.mode = mode;
    parts.config.state_dir = dir.join("state");
    parts.config.policies_dir = policies;
    parts.config.models_dir = dir.join("models");
    parts.models_dir = None;
    parts.config.sample_interval_ms = 1000;
    parts.config.plan_interval_ms = 3000;
    // A short season and horizon: the fit needs a few seasons of history, and the demo lasts about a minute.
    parts.forecast.horizon = 4;
    parts.forecast.season = Some(4);
    parts.forecast.families = vec![Family::Ridge];
    parts.live.min_scored = 4;
    parts.refit_every = 5;
    // Ten one-second samples stand in for the default history a production agent waits for.
    parts.limits.min_history_points = 10;
    parts.limits.cooldown_s = 5;
    Ok(())
}

/// The demo's surface: the agent recommending over the demo's pipeline, its state in a directory of its own.
pub struct DemoSurface {
    surface: Surface,
    dir: std::path::PathBuf,
    stop: CancellationToken,
    generated_token: Option<String>,
}

impl DemoSurface {
    /// The page's address.
    pub fn url(&self) -> String {
        self.surface.url()
    }

    /// The write token made up for this run when the configured variable was unset, to print for the person
    /// running the demo (it lives as long as the demo).
    pub fn generated_token(&self) -> Option<&str> {
        self.generated_token.as_deref()
    }

    /// The agent, for tests that wait on its snapshot.
    pub fn agent(&self) -> Option<&Arc<AgentHandle>> {
        self.surface.agent.as_ref()
    }

    /// Stops the server and the agent, then removes the demo's state directory.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.surface.join().await;
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(%error, dir = %self.dir.display(), "demo state directory left behind");
        }
    }
}

/// Starts the agent in recommend mode (it plans and records proposals, and applies nothing) and the surface on
/// `bind` over the demo's `app`. Approving on the page is audited and changes the proposal's state; in recommend
/// mode the agent still runs nothing.
pub async fn start_demo(
    app: &App,
    config: &crate::config::Config,
    bind: &str,
    stop: CancellationToken,
) -> Result<DemoSurface, LaunchError> {
    let dir = std::env::temp_dir().join(format!(
        "trimtab-demo-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut parts = app.agent_parts(config).await;
    if let Some(parts) = parts.as_mut() {
        demo_parts(parts, &dir, Mode::Recommend)?;
    }
    let mut tokens = Tokens::from_env(&config.api);
    let mut generated_token = None;
    if tokens.write.is_none() {
        let token = uuid::Uuid::new_v4().simple().to_string();
        tokens.write = Some(super::auth::Secret::new(&token));
        generated_token = Some(token);
    }
    // A busy address (a second demo) falls back to a free port on the same host rather than failing the demo.
    let fallback = match bind.rsplit_once(':') {
        Some((host, _)) => format!("{host}:0"),
        None => "127.0.0.1:0".to_string(),
    };
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::info!(%error, %bind, %fallback, "demo page address busy; using a free port");
            tokio::net::TcpListener::bind(&fallback)
                .await
                .map_err(|source| LaunchError::Bind {
                    bind: fallback.clone(),
                    source,
                })?
        }
    };
    let launch = Launch {
        bind: bind.to_string(),
        tokens,
        chatops: ChatopsConfig::default(),
    };
    let surface = start_on(app, parts, launch, listener, stop.clone()).await?;
    Ok(DemoSurface {
        surface,
        dir,
        stop,
        generated_token,
    })
}
