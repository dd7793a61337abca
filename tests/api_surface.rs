//! The HTTP API over a running agent on the stand-ins: reads, approve and reject, pause and resume, tokens, JSON
//! errors, the OpenAPI document against the routes, `/metrics` against the API's own numbers, and readiness.

mod web_support;

use std::time::Duration;

use serde_json::{json, Value};
use trimtab::api::Tokens;
use trimtab::policy::Mode;
use web_support::*;

/// Waits until the agent has sampled and an open proposal exists; returns its id.
async fn open_proposal(stand: &Stand) -> String {
    until!(
        Duration::from_secs(90),
        "no open proposal appeared after the pool went full",
        {
            let list = stand.proposals().await;
            list.iter()
                .find(|p| {
                    matches!(
                        p["status"]["state"].as_str(),
                        Some("recommended" | "pending")
                    )
                })
                .and_then(|p| p["id"].as_str().map(str::to_string))
                .ok_or_else(|| format!("proposals: {list:?}"))
        }
    )
}

fn error_of(body: &Value) -> String {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("error responses are JSON with an error field, got {body}"))
        .to_string()
}

/// The value of the sample `name{labels...}` in a Prometheus text body.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_reads_state_and_decides_proposals_over_http_with_the_write_token() {
    let mut stand = Stand::start(Mode::Recommend, Tokens::fixed(Some(WRITE_TOKEN), None)).await;
    stand.start_traffic();
    stand.force_placement_proposal().await;

    let (status, body) = stand.get("/healthz").await;
    assert_eq!((status, body), (200, Value::String("ok".into())));
    let (status, body) = until!(Duration::from_secs(30), "readyz never became ready", {
        let (s, b) = stand.get("/readyz").await;
        if s == 200 {
            Ok((s, b))
        } else {
            Err(format!("{s} {b}"))
        }
    });
    assert_eq!(status, 200);
    for system in ["servicebus", "cassandra", "linstor"] {
        assert_eq!(body["checks"][system], "ok", "{body}");
    }

    let id = open_proposal(&stand).await;

    // Without the token, or with a wrong one, nothing changes and the error says what is missing.
    let (status, body) = stand
        .post(&format!("/v1/proposals/{id}/approve"), json!({}), None)
        .await;
    assert_eq!(status, 401, "{body}");
    assert!(error_of(&body).contains("Authorization: Bearer"), "{body}");
    let (status, _) = stand
        .post(
            &format!("/v1/proposals/{id}/approve"),
            json!({}),
            Some("not-the-token"),
        )
        .await;
    assert_eq!(status, 401);
    let (_, p) = stand.get(&format!("/v1/proposals/{id}")).await;
    assert!(
        matches!(
            p["status"]["state"].as_str(),
            Some("recommended" | "pending")
        ),
        "a refused approval changed the proposal: {p}"
    );

    // A malformed body is refused, naming what was expected.
    let (status, body) = stand
        .post(
            &format!("/v1/proposals/{id}/approve"),
            json!({"who": "alice"}),
            Some(WRITE_TOKEN),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error_of(&body).contains("unknown field `who`"), "{body}");

    // With the token the proposal is approved, by the name given, and the audit log says so first.
    let (status, body) = stand
        .post(
            &format!("/v1/proposals/{id}/approve"),
            json!({"by": "alice"}),
            Some(WRITE_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"]["state"], "approved", "{body}");
    let (_, p) = stand.get(&format!("/v1/proposals/{id}")).await;
    assert_eq!(p["status"]["state"], "approved");
    assert_eq!(p["status"]["by"], "alice");
    let (status, audit) = stand.get("/v1/audit?limit=200").await;
    assert_eq!(status, 200);
    let records = audit["records"].as_array().unwrap();
    assert!(
        records.iter().any(|r| r["kind"] == "approval"
            && r["actor"] == "alice"
            && r["subject"] == id.as_str()),
        "no approval record by alice for {id}: {audit}"
    );

    // Deciding twice, or on a proposal that does not exist, is refused with the reason.
    let (status, body) = stand
        .post(
            &format!("/v1/proposals/{id}/reject"),
            json!({}),
            Some(WRITE_TOKEN),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("not open"), "{body}");
    let (status, body) = stand
        .post("/v1/proposals/p-none/approve", json!({}), Some(WRITE_TOKEN))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(error_of(&body).contains("p-none"), "{body}");

    // The kill switch: pause is audited and shows in the mode; resume clears it.
    let (status, body) = stand
        .post(
            "/v1/pause",
            json!({"by": "bob", "reason": "maintenance"}),
            Some(WRITE_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, mode) = stand.get("/v1/mode").await;
    assert_eq!(mode["paused"]["by"], "bob", "{mode}");
    assert_eq!(mode["paused"]["reason"], "maintenance", "{mode}");
    assert_eq!(mode["configured"], "recommend", "{mode}");
    let metrics = stand
        .http
        .get(format!("{}/metrics", stand.url))
        .send()
        .await
        .unwrap();
    assert!(metrics
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text().await.unwrap();
    assert_eq!(
        sample(&text, "trimtab_paused_bool", &[]),
        Some(1.0),
        "{text}"
    );
    let (status, _) = stand
        .post("/v1/resume", json!({"by": "bob"}), Some(WRITE_TOKEN))
        .await;
    assert_eq!(status, 200);
    let (_, mode) = stand.get("/v1/mode").await;
    assert!(mode["paused"].is_null(), "{mode}");
    let (_, audit) = stand.get("/v1/audit?limit=200").await;
    let kinds: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "bob")
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["paused", "resumed"], "{audit}");

    // Errors name the input.
    let (status, body) = stand.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert!(error_of(&body).contains("/v1/nothing-here"), "{body}");
    let (status, body) = stand.get("/v1/audit?limit=0").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("limit"), "{body}");
    let (status, body) = stand.get("/v1/metrics/series?since=yesterday").await;
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("since"), "{body}");

    // /metrics agrees with the API's own JSON and with the stand-ins.
    let (_, placement) = stand.get("/v1/placement").await;
    let (_, queues) = stand.get("/v1/queues").await;
    let text = stand
        .http
        .get(format!("{}/metrics", stand.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let pools = placement["placement"]["pools"]
        .as_array()
        .expect("placement read");
    let n1_ssd = pools
        .iter()
        .find(|p| p["node"] == "n1" && p["pool"] == "pool-ssd")
        .expect("n1/pool-ssd in placement");
    assert_eq!(
        sample(
            &text,
            "trimtab_linstor_pool_replicas",
            &[("node", "n1"), ("pool", "pool-ssd")]
        ),
        n1_ssd["replicas"].as_f64(),
        "{text}"
    );
    assert!(
        n1_ssd["replicas"].as_u64().unwrap() >= 1,
        "our volume has a replica on n1"
    );
    assert_eq!(
        sample(&text, "trimtab_stored_proposals", &[("state", "approved")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "trimtab_mode_info",
            &[("which", "configured"), ("mode", "recommend")]
        ),
        Some(1.0)
    );
    let received = sample(&text, "trimtab_messages_received_total", &[]).unwrap();
    assert!(received > 0.0, "traffic was received: {text}");
    assert!(queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["entity"] == QUEUE));
    assert!(
        sample(
            &text,
            "trimtab_queue_depth_messages",
            &[("entity", QUEUE), ("kind", "active")]
        )
        .is_some(),
        "{text}"
    );
    for name in [
        "trimtab_lag_oldest_age_seconds",
        "trimtab_write_latency_seconds",
        "trimtab_write_batches_total",
        "trimtab_knob_batch_rows",
        "trimtab_linstor_pool_free_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics:\n{text}"
        );
    }

    // Every documented operation is served (no fallback, no wrong method).
    let (status, doc) = stand.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "p-none");
            let url = format!("{}{concrete}", stand.url);
            let req = match method.as_str() {
                "get" => stand.http.get(&url),
                "post" => stand
                    .http
                    .post(&url)
                    .json(&json!({"question": "is the pipeline healthy?"})),
                other => panic!("unexpected method {other}"),
            };
            let resp = req.bearer_auth(WRITE_TOKEN).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}: {text}");
            assert!(
                !text.contains("no route"),
                "{method} {path} is documented but not served: {text}"
            );
        }
    }

    stand.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_names_cassandra_while_it_is_down_and_recovers() {
    let stand = Stand::start(Mode::Recommend, Tokens::default()).await;
    until!(Duration::from_secs(30), "readyz never became ready", {
        let (s, b) = stand.get("/readyz").await;
        (s == 200).then_some(()).ok_or(format!("{s} {b}"))
    });
    stand.sim.cql.stop().await.expect("stop the CQL server");
    let body = until!(
        Duration::from_secs(30),
        "readyz kept saying ready with Cassandra down",
        {
            let (s, b) = stand.get("/readyz").await;
            (s == 503).then_some(b.clone()).ok_or(format!("{s} {b}"))
        }
    );
    assert_eq!(body["ready"], false);
    assert!(error_of(&body).contains("cassandra"), "{body}");
    assert!(!error_of(&body).contains("linstor"), "{body}");
    assert_eq!(body["checks"]["linstor"], "ok", "{body}");
    stand
        .sim
        .cql
        .restart()
        .await
        .expect("restart the CQL server");
    until!(
        Duration::from_secs(60),
        "readyz did not recover after Cassandra came back",
        {
            let (s, b) = stand.get("/readyz").await;
            (s == 200).then_some(()).ok_or(format!("{s} {b}"))
        }
    );
    // Nobody configured a write token: every change is refused, saying which variable to set.
    let (status, body) = stand.post("/v1/pause", json!({}), Some("anything")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        error_of(&body).contains("TRIMTAB_API_TOKEN") || error_of(&body).contains("write token"),
        "{body}"
    );
    stand.stop().await;
}

#[tokio::test]
async fn a_read_token_closes_the_api_but_not_health_metrics_the_page_or_the_document() {
    let state = trimtab::api::ApiState {
        stats: std::sync::Arc::new(trimtab::pipeline::PipelineStats::default()),
        lag: std::sync::Arc::new(trimtab::servicebus::lag::LagTracker::new(
            Duration::from_secs(60),
            100,
        )),
        knobs: trimtab::pipeline::LiveKnobs::new(trimtab::pipeline::Knobs::default()).unwrap(),
        agent: None,
        proposals: None,
    };
    let extras = trimtab::api::Extras {
        tokens: Tokens::fixed(Some("w-token"), Some("r-token")),
        ..Default::default()
    };
    let router = trimtab::api::surface(state, extras, None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(trimtab::api::serve_on(listener, router, stop.clone()));
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(format!("{url}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
                .await
                .expect("request timed out")
                .expect("request");
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let (status, body) = get("/v1/state", None).await;
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON error body");
    assert!(error_of(&body).contains("needs a bearer token"), "{body}");
    assert_eq!(get("/v1/state", Some("wrong")).await.0, 401);
    let (status, body) = get("/v1/state", Some("r-token")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get("/v1/state", Some("w-token")).await.0, 200);
    for open in [
        "/healthz",
        "/metrics",
        "/",
        "/assets/app.js",
        "/v1/openapi.json",
    ] {
        let (status, body) = get(open, None).await;
        assert_eq!(status, 200, "{open}: {body}");
    }
    let (_, page) = get("/", None).await;
    assert!(page.contains("<canvas id=\"chart-depth\""), "{page}");
    // No agent here: the parts it serves say so instead of pretending.
    let (status, body) = get("/v1/forecasts", Some("r-token")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("control loop is not running"), "{body}");
    // No probes configured: not ready, and the body says why.
    let (status, body) = get("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}
