//! The read endpoints: state, queues, metric windows, forecasts, placement, proposals, mode, the audit tail and
//! `/metrics`. Each copies a snapshot; file reads (proposals, audit) run on the blocking pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use super::{ApiError, Shared};
use crate::executor::ProposalStatus;
use crate::metrics::prometheus::{self, ForecastGauge, Scrape};
use crate::metrics::series::Sample;

/// Audit records returned when `limit` is not given.
pub const DEFAULT_AUDIT_LIMIT: usize = 50;
/// The most audit records one request returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// The query string as name → value; a name given twice keeps the last value.
fn query(raw: Option<String>) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Parses query parameter `name` with `parse`, naming the parameter and what was expected on failure.
fn param<T: std::str::FromStr>(
    q: &BTreeMap<String, String>,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!(
                "query parameter {name}={v:?} is not valid: expected {expected}"
            ))
        }),
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("the request's file work failed: {e}")))?
}

fn state_name(status: &ProposalStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v["state"].as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// `GET /v1/state`: the pipeline's counters, lag, knobs, writer window and the agent's snapshot.
pub(crate) async fn state(State(s): State<Arc<Shared>>) -> Json<Value> {
    let paused = s.state_dir().and_then(|d| d.paused().ok()).flatten();
    Json(json!({
        "pipeline": s.state.stats.snapshot(),
        "lag": s.state.lag.snapshot(),
        "knobs": s.state.knobs.get(),
        "writer": s.extras.writes.as_ref().map(|w| w.snapshot()),
        "agent": s.state.agent.as_ref().map(|a| a.snapshot()),
        "paused": paused,
        "stages": s.state.stats.stages().snapshot(),
        "drift": s.state.stats.drift().snapshot(),
    }))
}

/// `GET /v1/queues`: depth per entity as the agent last sampled it.
pub(crate) async fn queues(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let agent = s.state.agent.as_ref().ok_or(ApiError::Unavailable(
        "the control loop is not running: queue depth is sampled by it",
    ))?;
    let snapshot = agent.snapshot();
    let collected = snapshot.collected.as_ref();
    Ok(Json(json!({
        "sampled_at": collected.map(|c| c.at),
        "queues": collected.map(|c| c.depth.clone()).unwrap_or_default(),
    })))
}

/// One series' recent window.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesWindow {
    /// Metric name, such as `queue_active`.
    pub name: String,
    /// Its labels, such as `entity` or `key`.
    pub labels: BTreeMap<String, String>,
    /// Samples, oldest first.
    pub samples: Vec<Sample>,
}

/// `GET /v1/metrics/series?name=NAME&since=UNIX`: the metric store's recent windows.
pub(crate) async fn series(
    State(s): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw);
    let since: Option<i64> = param(&q, "since", "unix seconds")?;
    let name = q.get("name").cloned();
    let store = s.extras.store.as_ref().ok_or(ApiError::Unavailable(
        "the control loop is not running: no metric store to read",
    ))?;
    let series: Vec<SeriesWindow> = store
        .keys()
        .into_iter()
        .filter(|k| name.as_ref().is_none_or(|n| &k.name == n))
        .map(|k| SeriesWindow {
            samples: store
                .window(&k)
                .into_iter()
                .filter(|x| since.is_none_or(|t| x.at >= t))
                .collect(),
            name: k.name.clone(),
            labels: k.labels.clone(),
        })
        .collect();
    Ok(Json(json!({ "series": series })))
}

/// `GET /v1/forecasts`: the latest forecast per series, its points with intervals, its accuracy, and the
/// series' recent actual values to draw it against.
pub(crate) async fn forecasts(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let agent = s.state.agent.as_ref().ok_or(ApiError::Unavailable(
        "the control loop is not running: nothing is forecast",
    ))?;
    let snapshot = agent.snapshot();
    let out: Vec<Value> = snapshot
        .forecasts
        .iter()
        .map(|f| {
            let points: Vec<Value> = f
                .point
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    json!({
                        "at": f.made_at + f.step_s * (i as i64 + 1),
                        "value": p,
                        "lower": f.lower.get(i),
                        "upper": f.upper.get(i),
                    })
                })
                .collect();
            let actual = s
                .extras
                .store
                .as_ref()
                .map(|store| store.window(&f.key))
                .unwrap_or_default();
            json!({
                "name": f.key.name,
                "labels": f.key.labels,
                "made_at": f.made_at,
                "step_s": f.step_s,
                "model": f.model,
                "coverage": f.coverage,
                "points": points,
                "accuracy": f.accuracy,
                "actual": actual,
            })
        })
        .collect();
    Ok(Json(json!({ "forecasts": out })))
}

/// `GET /v1/placement`: replicas and capacity per node and pool, as the agent last read them from LINSTOR.
pub(crate) async fn placement(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let agent = s.state.agent.as_ref().ok_or(ApiError::Unavailable(
        "the control loop is not running: placement is read by it",
    ))?;
    let snapshot = agent.snapshot();
    let collected = snapshot.collected.as_ref();
    Ok(Json(json!({
        "sampled_at": collected.map(|c| c.at),
        "placement": collected.and_then(|c| c.placement.as_ref().map(|p| p.1.clone())),
    })))
}

/// `GET /v1/proposals?open=true`: every proposal, newest first (only open ones with `open=true`).
pub(crate) async fn list_proposals(
    State(s): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw);
    let open: bool = param(&q, "open", "true or false")?.unwrap_or(false);
    let store = s.proposals()?;
    let mut list = blocking(move || {
        store
            .list()
            .map_err(ApiError::executor("listing proposals"))
    })
    .await?;
    list.retain(|p| !open || p.status.is_open());
    list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    Ok(Json(json!(list)))
}

/// `GET /v1/proposals/{id}`: one proposal in full.
pub(crate) async fn show_proposal(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let store = s.proposals()?;
    let p = blocking(move || {
        store
            .get(&id)
            .map_err(ApiError::executor(format!("reading proposal {id}")))
    })
    .await?;
    Ok(Json(json!(p)))
}

/// `GET /v1/mode`: the configured mode, the mode the latest step ran in and why, and the kill switch.
pub(crate) async fn mode(State(s): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let dir = s.state_dir();
    let paused = match dir {
        Some(dir) => {
            blocking(move || {
                dir.paused()
                    .map_err(ApiError::executor("reading the pause flag"))
            })
            .await?
        }
        None => None,
    };
    let snapshot = s.state.agent.as_ref().map(|a| a.snapshot());
    let decision = snapshot.as_ref().and_then(|a| a.mode.clone());
    Ok(Json(json!({
        "agent_running": snapshot.is_some(),
        "configured": snapshot.as_ref().and_then(|a| a.configured_mode),
        "effective": decision.as_ref().map(|d| d.mode),
        "why": decision.and_then(|d| d.why),
        "paused": paused,
    })))
}

/// `GET /v1/audit?limit=N`: the newest audit records, oldest first.
pub(crate) async fn audit(
    State(s): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = query(raw);
    let limit: usize =
        param(&q, "limit", "a whole number of records")?.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "query parameter limit={limit} is out of range: expected 1 to {MAX_AUDIT_LIMIT}"
        )));
    }
    let dir = s.state_dir().ok_or(ApiError::Unavailable(
        "the control loop is not running: no audit log",
    ))?;
    let records = blocking(move || {
        let path = dir.audit_log();
        if !path.exists() {
            return Ok(Vec::new());
        }
        crate::audit::tail(&path, limit)
            .map_err(|e| ApiError::Internal(format!("reading the audit log: {e}")))
    })
    .await?;
    Ok(Json(json!({ "records": records })))
}

/// `GET /metrics`: everything above in the Prometheus text format.
pub(crate) async fn prometheus(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let stats = s.state.stats.snapshot();
    let lag = s.state.lag.snapshot();
    let knobs = s.state.knobs.get();
    let writer = s.extras.writes.as_ref().map(|w| w.snapshot());
    let snapshot = s.state.agent.as_ref().map(|a| a.snapshot());
    let collected = snapshot.as_ref().and_then(|a| a.collected.as_ref());
    let depth = collected.map(|c| c.depth.clone()).unwrap_or_default();
    let placement = collected.and_then(|c| c.placement.as_ref().map(|p| p.1.clone()));
    let forecasts: Vec<ForecastGauge> = snapshot
        .as_ref()
        .map(|a| {
            a.forecasts
                .iter()
                .filter_map(|f| {
                    Some(ForecastGauge {
                        series: f.key.name.clone(),
                        labels: f.key.labels.clone(),
                        point: *f.point.first()?,
                        lower: *f.lower.first()?,
                        upper: *f.upper.first()?,
                        rolling_mase: f.accuracy.as_ref().and_then(|a| a.rolling_mase),
                        trusted: f.accuracy.as_ref().is_some_and(|a| a.trusted),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut proposals = BTreeMap::new();
    let mut paused = None;
    if let Some(dir) = s.state_dir() {
        let store = crate::executor::ProposalStore::new(dir.clone());
        let read = blocking(move || {
            let list = store
                .list()
                .map_err(ApiError::executor("listing proposals"))?;
            let paused = dir
                .paused()
                .map_err(ApiError::executor("reading the pause flag"))?;
            Ok((list, paused))
        })
        .await;
        match read {
            Ok((list, flag)) => {
                for p in list {
                    *proposals.entry(state_name(&p.status)).or_insert(0) += 1;
                }
                paused = Some(flag.is_some());
            }
            Err(error) => tracing::warn!(%error, "metrics scrape without proposals"),
        }
    }
    let mode = snapshot
        .as_ref()
        .and_then(|a| a.mode.as_ref())
        .map(|d| mode_name(d.mode));
    let configured = snapshot
        .as_ref()
        .and_then(|a| a.configured_mode)
        .map(mode_name);
    let text = prometheus::render(&Scrape {
        pipeline: Some(&stats),
        lag: Some(&lag),
        writer: writer.as_ref(),
        knobs: Some(&knobs),
        depth: &depth,
        forecasts: &forecasts,
        placement: placement.as_ref(),
        proposals,
        mode: mode.as_deref(),
        configured_mode: configured.as_deref(),
        paused,
        agent_samples: snapshot.as_ref().map(|a| a.samples),
        agent_steps: snapshot.as_ref().map(|a| a.steps),
    });
    // Where the time goes per stage, and schema drift: samples the pipeline's own monitors name.
    let mut text = text;
    let extra = s
        .state
        .stats
        .stages()
        .snapshot()
        .metric_samples()
        .into_iter()
        .chain(s.state.stats.drift().snapshot().metric_samples());
    for (name, value) in extra {
        text.push_str(&format!("{name} {value}\n"));
    }
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text)
}

fn mode_name(mode: crate::policy::Mode) -> String {
    serde_json::to_value(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{mode:?}").to_lowercase())
}
