//! The fake controller's HTTP surface: REST routes, status codes derived from return codes, bearer-token
//! enforcement and the injected faults.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use super::cluster::Reply;
use super::Shared;
use crate::linstor::retcode::{self, ApiCallRc, RetCode};
use crate::linstor::types::*;

type Params = Query<Vec<(String, String)>>;
type AppState = State<Arc<Shared>>;

fn values(params: &[(String, String)], key: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The HTTP status the controller derives from a reply (`ApiCallRcRestUtils.toResponse`).
pub fn status_for(reply: &Reply, success: StatusCode) -> StatusCode {
    match reply {
        Ok(_) => success,
        Err(entries) => match entries
            .iter()
            .find(|e| e.ret_code.is_error())
            .map(|e| e.ret_code.code())
        {
            Some(300..=399) => StatusCode::NOT_FOUND,
            Some(retcode::FAIL_SIGN_IN_MISSING_CREDENTIALS) => StatusCode::UNAUTHORIZED,
            Some(400..=499 | retcode::FAIL_SIGN_IN) => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

fn respond(reply: Reply, success: StatusCode) -> Response {
    let status = status_for(&reply, success);
    let body = match reply {
        Ok(entries) | Err(entries) => entries,
    };
    (status, Json(body)).into_response()
}

fn not_found(code: u32, message: String) -> Response {
    respond(
        Err(vec![ApiCallRc::new(RetCode::error(code, 0), message)]),
        StatusCode::OK,
    )
}

/// Parses a request body; the error is the finished 400 reply, which is why it is large.
#[allow(clippy::result_large_err)]
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        let entry = ApiCallRc::new(
            RetCode::error(retcode::FAIL_INVLD_REQUEST, 0),
            format!("Unable to parse the request body: {e}"),
        );
        (StatusCode::BAD_REQUEST, Json(vec![entry])).into_response()
    })
}

/// All routes, with the gate (auth and faults) in front.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { "LINSTOR fake controller (trimtab)\n" }))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/metrics", get(metrics))
        .route("/v1/controller/version", get(version))
        .route("/v1/controller/properties", get(controller_props))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{node}", get(node))
        .route("/v1/nodes/{node}/storage-pools", get(node_pools))
        .route("/v1/view/storage-pools", get(pools))
        .route("/v1/resource-groups", get(groups).post(create_group))
        .route("/v1/resource-groups/{rg}", get(group).put(modify_group))
        .route(
            "/v1/resource-definitions",
            get(definitions).post(create_definition),
        )
        .route(
            "/v1/resource-definitions/{rsc}",
            get(definition).delete(delete_definition),
        )
        .route(
            "/v1/resource-definitions/{rsc}/volume-definitions",
            get(volume_definitions).post(create_volume_definition),
        )
        .route(
            "/v1/resource-definitions/{rsc}/volume-definitions/{nr}",
            put(modify_volume_definition),
        )
        .route(
            "/v1/resource-definitions/{rsc}/resources",
            get(definition_resources).post(create_resources),
        )
        .route(
            "/v1/resource-definitions/{rsc}/resources/{node}",
            get(definition_resource).delete(delete_resource),
        )
        .route(
            "/v1/resource-definitions/{rsc}/resources/{node}/toggle-disk",
            put(toggle_disk),
        )
        .route("/v1/resource-definitions/{rsc}/autoplace", post(autoplace))
        .route(
            "/v1/resource-definitions/{rsc}/snapshots",
            get(snapshots).post(create_snapshot),
        )
        .route(
            "/v1/resource-definitions/{rsc}/snapshots/{snap}",
            delete(delete_snapshot),
        )
        .route("/v1/view/resources", get(view_resources))
        .route("/v1/view/snapshots", get(view_snapshots))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Bearer-token enforcement (all paths but `/` and `/health`), then the injected delay and failures.
async fn gate(State(shared): AppState, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path == "/" || path == "/health" {
        return next.run(request).await;
    }
    if let Some(token) = &shared.token {
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
        match sent {
            None => {
                let entry = ApiCallRc::new(
                    RetCode::error(retcode::FAIL_SIGN_IN_MISSING_CREDENTIALS, 0),
                    "Authentication required: no credentials were sent",
                );
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"LINSTOR\"")],
                    Json(vec![entry]),
                )
                    .into_response();
            }
            Some(sent) if sent != *token => {
                let entry = ApiCallRc::new(
                    RetCode::error(retcode::FAIL_SIGN_IN, 0),
                    "Sign in failed: the token is not valid",
                );
                return (StatusCode::FORBIDDEN, Json(vec![entry])).into_response();
            }
            Some(_) => {}
        }
    }
    let (delay, fail) = shared.faults.decide();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail {
        let count = shared.injected_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entry = ApiCallRc::new(
            RetCode::error(retcode::FAIL_UNKNOWN_ERROR, 0),
            "An unknown error occurred while processing the request (injected fault)",
        );
        entry.error_report_ids.push(format!("FAKE-{count:06}"));
        tracing::debug!(path, count, "fake linstor injected a failure");
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(vec![entry])).into_response();
    }
    next.run(request).await
}

async fn metrics(State(shared): AppState) -> Response {
    let scrapes = shared.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
    let text = shared.cluster().metrics_text(scrapes, Instant::now());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn version() -> Json<ControllerVersion> {
    Json(ControllerVersion {
        version: "1.31.0".into(),
        git_hash: "trimtab-fake".into(),
        build_time: "2026-06-01T00:00:00+00:00".into(),
        rest_api_version: "1.28.0".into(),
        extra: Default::default(),
    })
}

async fn controller_props(State(shared): AppState) -> Response {
    Json(shared.cluster().controller_props()).into_response()
}

async fn nodes(State(shared): AppState, Query(params): Params) -> Response {
    Json(shared.cluster().nodes_view(&values(&params, "nodes"))).into_response()
}

async fn node(State(shared): AppState, Path(node): Path<String>) -> Response {
    match shared.cluster().node_view(&node) {
        Some(n) => Json(n).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_NODE,
            format!("Node '{node}' not found."),
        ),
    }
}

async fn node_pools(State(shared): AppState, Path(node): Path<String>) -> Response {
    let cluster = shared.cluster();
    if cluster.node_view(&node).is_none() {
        return not_found(
            retcode::FAIL_NOT_FOUND_NODE,
            format!("Node '{node}' not found."),
        );
    }
    Json(cluster.pools_view(&[node], &[])).into_response()
}

async fn pools(State(shared): AppState, Query(params): Params) -> Response {
    Json(
        shared
            .cluster()
            .pools_view(&values(&params, "nodes"), &values(&params, "storage_pools")),
    )
    .into_response()
}

async fn groups(State(shared): AppState) -> Response {
    Json(shared.cluster().groups_view()).into_response()
}

async fn group(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.cluster().group_view(&name) {
        Some(g) => Json(g).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_GRP,
            format!("Resource group '{name}' not found."),
        ),
    }
}

async fn create_group(State(shared): AppState, body: Bytes) -> Response {
    match parse::<ResourceGroup>(&body) {
        Ok(group) => respond(shared.cluster().create_group(group), StatusCode::CREATED),
        Err(r) => r,
    }
}

async fn modify_group(State(shared): AppState, Path(name): Path<String>, body: Bytes) -> Response {
    match parse::<ResourceGroupModify>(&body) {
        Ok(modify) => respond(
            shared.cluster().modify_group(&name, modify, Instant::now()),
            StatusCode::OK,
        ),
        Err(r) => r,
    }
}

async fn definitions(State(shared): AppState, Query(params): Params) -> Response {
    let with_volumes = values(&params, "with_volume_definitions")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("true"));
    Json(
        shared
            .cluster()
            .definitions_view(&values(&params, "resource_definitions"), with_volumes),
    )
    .into_response()
}

async fn definition(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.cluster().definition_view(&name, true) {
        Some(d) => Json(d).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{name}' not found."),
        ),
    }
}

async fn create_definition(State(shared): AppState, body: Bytes) -> Response {
    match parse::<ResourceDefinitionCreate>(&body) {
        Ok(create) => respond(
            shared.cluster().create_definition(create),
            StatusCode::CREATED,
        ),
        Err(r) => r,
    }
}

async fn delete_definition(State(shared): AppState, Path(name): Path<String>) -> Response {
    respond(shared.cluster().delete_definition(&name), StatusCode::OK)
}

async fn volume_definitions(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.cluster().volume_definitions_view(&name) {
        Some(v) => Json(v).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{name}' not found."),
        ),
    }
}

async fn create_volume_definition(
    State(shared): AppState,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<VolumeDefinitionCreate>(&body) {
        Ok(create) => respond(
            shared.cluster().create_volume_definition(&name, create),
            StatusCode::CREATED,
        ),
        Err(r) => r,
    }
}

async fn modify_volume_definition(
    State(shared): AppState,
    Path((name, nr)): Path<(String, u32)>,
    body: Bytes,
) -> Response {
    match parse::<VolumeDefinitionModify>(&body) {
        Ok(modify) => respond(
            shared.cluster().modify_volume_definition(&name, nr, modify),
            StatusCode::OK,
        ),
        Err(r) => r,
    }
}

async fn definition_resources(State(shared): AppState, Path(name): Path<String>) -> Response {
    let mut cluster = shared.cluster();
    let now = Instant::now();
    cluster.tick(now);
    match cluster.definition_resources(&name, now) {
        Some(list) => Json(list).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{name}' not found."),
        ),
    }
}

async fn definition_resource(
    State(shared): AppState,
    Path((name, node)): Path<(String, String)>,
) -> Response {
    let mut cluster = shared.cluster();
    let now = Instant::now();
    cluster.tick(now);
    match cluster.definition_resources(&name, now) {
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{name}' not found."),
        ),
        Some(list) => match list.into_iter().find(|r| r.node_name == node) {
            Some(r) => Json(r).into_response(),
            None => not_found(
                retcode::FAIL_NOT_FOUND_RSC,
                format!("Resource '{name}' not found on node '{node}'."),
            ),
        },
    }
}

async fn create_resources(
    State(shared): AppState,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<Vec<ResourceCreate>>(&body) {
        Ok(creates) => respond(
            shared
                .cluster()
                .create_resources(&name, creates, Instant::now()),
            StatusCode::CREATED,
        ),
        Err(r) => r,
    }
}

async fn delete_resource(
    State(shared): AppState,
    Path((name, node)): Path<(String, String)>,
) -> Response {
    respond(
        shared.cluster().delete_resource(&name, &node),
        StatusCode::OK,
    )
}

async fn toggle_disk(
    State(shared): AppState,
    Path((name, node)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match parse::<ToggleDisk>(&body) {
        Ok(toggle) => respond(
            shared
                .cluster()
                .toggle_disk(&name, &node, toggle, Instant::now()),
            StatusCode::OK,
        ),
        Err(r) => r,
    }
}

async fn autoplace(State(shared): AppState, Path(name): Path<String>, body: Bytes) -> Response {
    match parse::<AutoPlaceRequest>(&body) {
        Ok(request) => respond(
            shared.cluster().autoplace(&name, request, Instant::now()),
            StatusCode::CREATED,
        ),
        Err(r) => r,
    }
}

async fn snapshots(State(shared): AppState, Path(name): Path<String>) -> Response {
    match shared.cluster().snapshots_view(Some(&name)) {
        Some(list) => Json(list).into_response(),
        None => not_found(
            retcode::FAIL_NOT_FOUND_RSC_DFN,
            format!("Resource definition '{name}' not found."),
        ),
    }
}

async fn create_snapshot(
    State(shared): AppState,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    match parse::<Snapshot>(&body) {
        Ok(snapshot) => respond(
            shared.cluster().create_snapshot(&name, snapshot),
            StatusCode::CREATED,
        ),
        Err(r) => r,
    }
}

async fn delete_snapshot(
    State(shared): AppState,
    Path((name, snap)): Path<(String, String)>,
) -> Response {
    respond(
        shared.cluster().delete_snapshot(&name, &snap),
        StatusCode::OK,
    )
}

async fn view_resources(State(shared): AppState, Query(params): Params) -> Response {
    let mut cluster = shared.cluster();
    let now = Instant::now();
    cluster.tick(now);
    Json(cluster.resources_view(
        &values(&params, "nodes"),
        &values(&params, "resources"),
        &values(&params, "storage_pools"),
        now,
    ))
    .into_response()
}

async fn view_snapshots(State(shared): AppState, Query(params): Params) -> Response {
    let resources = values(&params, "resources");
    let nodes = values(&params, "nodes");
    let list: Vec<Snapshot> = shared
        .cluster()
        .snapshots_view(None)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| resources.is_empty() || resources.contains(&s.resource_name))
        .filter(|s| nodes.is_empty() || s.nodes.iter().any(|n| nodes.contains(n)))
        .collect();
    Json(list).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(code: u32, expected: StatusCode) {
        let reply: Reply = Err(vec![ApiCallRc::new(
            RetCode::error(code, retcode::MASK_CRT),
            "x",
        )]);
        assert_eq!(
            status_for(&reply, StatusCode::CREATED),
            expected,
            "code {code}"
        );
    }

    #[test]
    fn statuses_follow_the_controller_mapping() {
        check(retcode::FAIL_NOT_FOUND_RSC_DFN, StatusCode::NOT_FOUND);
        check(retcode::FAIL_NOT_FOUND_NODE, StatusCode::NOT_FOUND);
        check(412, StatusCode::FORBIDDEN);
        check(retcode::FAIL_SIGN_IN, StatusCode::FORBIDDEN);
        check(
            retcode::FAIL_SIGN_IN_MISSING_CREDENTIALS,
            StatusCode::UNAUTHORIZED,
        );
        check(
            retcode::FAIL_EXISTS_RSC_DFN,
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        check(
            retcode::FAIL_NOT_ENOUGH_NODES,
            StatusCode::INTERNAL_SERVER_ERROR,
        );
        let warn_only: Reply = Ok(vec![ApiCallRc::new(
            RetCode::warn(retcode::WARN_RSC_ALREADY_DEPLOYED, 0),
            "x",
        )]);
        assert_eq!(
            status_for(&warn_only, StatusCode::CREATED),
            StatusCode::CREATED
        );
    }
}
