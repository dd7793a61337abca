//! The dead-letter routes: `GET /v1/dlq`, `GET /v1/dlq/messages/{seq}` and `POST /v1/dlq/redrive`.
//!
//! Listing and showing peek (they change nothing). Re-driving goes through the same [`DlqService`] as
//! `trimtab dlq redrive`: the policy gate, the audit log and the rate limit apply to both alike.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::redrive::{DlqService, Filter, RedriveError, RedriveRequest};
use crate::servicebus::Entity;

/// What the dead-letter routes need.
#[derive(Clone, Debug)]
pub struct DlqApi {
    /// The operations.
    pub service: DlqService,
    /// The entity used when a request names none (the first pipeline entity).
    pub default_entity: Entity,
}

/// The routes, to merge into the API router.
pub fn router(api: DlqApi) -> Router {
    Router::new()
        .route("/v1/dlq", get(list))
        .route("/v1/dlq/messages/{seq}", get(show))
        .route("/v1/dlq/redrive", post(redrive))
        .with_state(Arc::new(api))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    entity: Option<String>,
    reason: Option<String>,
    kind: Option<String>,
    age_gt: Option<String>,
    age_lt: Option<String>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityQuery {
    entity: Option<String>,
}

/// The body of `POST /v1/dlq/redrive`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveBody {
    /// The entity; the default one when absent.
    #[serde(default)]
    entity: Option<String>,
    /// Filter expressions as on the command line: `reason=R`, `kind=K`, `age>15m`, `age<2h`.
    #[serde(default)]
    filter: Vec<String>,
    /// Plan and ask the gate only.
    #[serde(default)]
    dry_run: bool,
    /// At most this many messages.
    #[serde(default = "default_max")]
    max: usize,
    /// Messages per second at most.
    #[serde(default = "default_rate")]
    rate: u32,
    /// Who asks (the audit records' actor).
    by: String,
}

const fn default_max() -> usize {
    1_000
}
const fn default_rate() -> u32 {
    100
}

impl DlqApi {
    fn entity(&self, given: Option<&str>) -> Entity {
        match given {
            Some(text) => match text.split_once("/Subscriptions/") {
                Some((topic, subscription)) => Entity::Subscription {
                    topic: topic.to_string(),
                    subscription: subscription.to_string(),
                },
                None => Entity::Queue(text.to_string()),
            },
            None => self.default_entity.clone(),
        }
    }
}

fn failure(error: RedriveError) -> Response {
    let status = match &error {
        RedriveError::NotFound(..) => StatusCode::NOT_FOUND,
        e if e.is_retriable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    let text = crate::pipeline::adapters::error_chain(&error);
    (status, text).into_response()
}

async fn list(State(api): State<Arc<DlqApi>>, Query(q): Query<ListQuery>) -> Response {
    let expressions: Vec<String> = [
        q.reason.map(|v| format!("reason={v}")),
        q.kind.map(|v| format!("kind={v}")),
        q.age_gt.map(|v| format!("age>{v}")),
        q.age_lt.map(|v| format!("age<{v}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let filter = match Filter::parse(&expressions) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let entity = api.entity(q.entity.as_deref());
    match api
        .service
        .list(&entity, &filter, q.limit.unwrap_or(100))
        .await
    {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => failure(e),
    }
}

async fn show(
    State(api): State<Arc<DlqApi>>,
    Path(seq): Path<i64>,
    Query(q): Query<EntityQuery>,
) -> Response {
    let entity = api.entity(q.entity.as_deref());
    match api.service.show(&entity, seq).await {
        Ok((entry, message)) => Json(serde_json::json!({
            "entry": entry,
            "body": String::from_utf8_lossy(&message.body),
            "properties": message.application_properties,
        }))
        .into_response(),
        Err(e) => failure(e),
    }
}

async fn redrive(State(api): State<Arc<DlqApi>>, Json(body): Json<RedriveBody>) -> Response {
    let filter = match Filter::parse(&body.filter) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let entity = api.entity(body.entity.as_deref());
    let request = RedriveRequest {
        filter,
        max_messages: body.max,
        rate_per_second: body.rate,
        dry_run: body.dry_run,
        actor: body.by,
    };
    match api.service.redrive(&entity, &request).await {
        Ok(report) => {
            let refused =
                !report.dry_run && report.decision.verdict != crate::policy::Verdict::Allow;
            let status = if refused {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::OK
            };
            (status, Json(report)).into_response()
        }
        Err(e) => failure(e),
    }
}
