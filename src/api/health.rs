//! `/healthz` says the process answers; `/readyz` says whether Service Bus, Cassandra and LINSTOR answer now.
//!
//! Each [`Probe`] asks its system one cheap read through trimtab's own client (the depth endpoint, a
//! `system.local` query, the controller's version), all at once, each bounded by [`PROBE_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use scylla::client::session::Session;
use serde_json::json;

use super::Shared;
use crate::linstor::LinstorReader;
use crate::servicebus::depth::DepthCollector;
use crate::servicebus::Entity;

/// The longest one readiness probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// One outside system's readiness check.
#[async_trait]
pub trait Probe: Send + Sync {
    /// The system's name in the `/readyz` body, such as `cassandra`.
    fn name(&self) -> &'static str;
    /// `Ok` when the system answered; otherwise why not, without secrets.
    async fn check(&self) -> Result<(), String>;
}

/// Service Bus answers when the management endpoint gives an entity's depth.
pub struct ServiceBusProbe {
    /// The depth collector the pipeline uses.
    pub depth: DepthCollector,
    /// The entity to ask about.
    pub entity: Entity,
}

#[async_trait]
impl Probe for ServiceBusProbe {
    fn name(&self) -> &'static str {
        "servicebus"
    }
    async fn check(&self) -> Result<(), String> {
        self.depth
            .depth(&self.entity)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Cassandra answers when the session can read `system.local`.
pub struct CassandraProbe {
    /// The writer's session.
    pub session: Arc<Session>,
}

#[async_trait]
impl Probe for CassandraProbe {
    fn name(&self) -> &'static str {
        "cassandra"
    }
    async fn check(&self) -> Result<(), String> {
        self.session
            .query_unpaged(
                "SELECT release_version FROM system.local WHERE key='local'",
                &[],
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// LINSTOR answers when the controller gives its version.
pub struct LinstorProbe {
    /// The read-credential client.
    pub reader: LinstorReader,
}

#[async_trait]
impl Probe for LinstorProbe {
    fn name(&self) -> &'static str {
        "linstor"
    }
    async fn check(&self) -> Result<(), String> {
        self.reader
            .version()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `GET /healthz` (and the older `/health`): the process answers.
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// Runs every probe at once; each answer is `ok` or why not.
pub async fn probe_all(probes: &[Arc<dyn Probe>]) -> BTreeMap<&'static str, Result<(), String>> {
    let runs = probes.iter().map(|p| async move {
        let answer = match tokio::time::timeout(PROBE_TIMEOUT, p.check()).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        (p.name(), answer)
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// `GET /readyz`: 200 when every system answers, else 503 naming the ones that do not.
pub(crate) async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.extras.probes.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "error": "not ready: no readiness probes are configured for this server",
                "checks": {},
            })),
        );
    }
    let answers = probe_all(&s.extras.probes).await;
    let failing: Vec<&str> = answers
        .iter()
        .filter(|(_, a)| a.is_err())
        .map(|(n, _)| *n)
        .collect();
    let checks: BTreeMap<&str, String> = answers
        .iter()
        .map(|(n, a)| {
            (
                *n,
                match a {
                    Ok(()) => "ok".to_string(),
                    Err(why) => why.clone(),
                },
            )
        })
        .collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "ready": true, "checks": checks })),
        )
    } else {
        tracing::info!(?failing, "not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "error": format!("not ready: {} do not answer", failing.join(", ")),
                "checks": checks,
            })),
        )
    }
}
