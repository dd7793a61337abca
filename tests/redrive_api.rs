//! The dead-letter routes over HTTP against the stand-ins: list with filters, show, a dry run that changes
//! nothing, a re-drive that moves exactly the selected messages, and bad input refused with a reason.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::api::dlq::{router, DlqApi};
use trimtab::app::App;
use trimtab::executor::StateDir;
use trimtab::redrive::{DlqService, REDRIVE_COUNT_PROPERTY};
use trimtab::servicebus::azure::AzureServiceBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_routes_list_show_and_redrive() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let bad = harness::malformed("api", 4);
    h.send(bad).await;
    let app = App::build(&h.config).await.expect("build");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    harness::wait_until("4 dead letters", Duration::from_secs(60), || {
        let n = h.dead_letters().len();
        async move { n == 4 }
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("drained within 30 s")
        .expect("pipeline task");

    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let bus = Arc::new(
        AzureServiceBus::connect(&h.config.servicebus)
            .await
            .expect("connect"),
    );
    let service = DlqService::new(
        bus.clone(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        state.audit_log(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router(DlqApi {
                service,
                default_entity: trimtab::servicebus::Entity::Queue("events".into()),
            }),
        )
        .await
    });
    let client = reqwest::Client::new();
    let within = |what: &'static str| move |r| r_or_panic(what, r);

    let listed: Vec<serde_json::Value> = within("list")(
        tokio::time::timeout(
            Duration::from_secs(30),
            client
                .get(format!("{base}/v1/dlq?reason=UnknownKind"))
                .send(),
        )
        .await,
    )
    .json()
    .await
    .unwrap();
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert!(listed
        .iter()
        .all(|e| e["reason"] == "UnknownKind" && e["kind"] == "gossip"));
    let seq = listed[0]["sequence_number"].as_i64().unwrap();
    let shown: serde_json::Value = within("show")(
        tokio::time::timeout(
            Duration::from_secs(30),
            client.get(format!("{base}/v1/dlq/messages/{seq}")).send(),
        )
        .await,
    )
    .json()
    .await
    .unwrap();
    assert!(
        shown["body"]
            .as_str()
            .unwrap()
            .contains("\"kind\":\"gossip\""),
        "{shown}"
    );

    let dry = within("dry run")(
        tokio::time::timeout(
            Duration::from_secs(30),
            client
                .post(format!("{base}/v1/dlq/redrive"))
                .json(&serde_json::json!({"filter": ["reason=UnknownKind"], "dry_run": true, "by": "api-test"}))
                .send(),
        )
        .await,
    );
    assert_eq!(dry.status(), 200);
    let dry: serde_json::Value = dry.json().await.unwrap();
    assert_eq!(dry["selected"].as_array().unwrap().len(), 2);
    assert_eq!(h.dead_letters().len(), 4, "a dry run moves nothing");

    let done = within("redrive")(
        tokio::time::timeout(
            Duration::from_secs(30),
            client
                .post(format!("{base}/v1/dlq/redrive"))
                .json(&serde_json::json!({"filter": ["reason=UnknownKind"], "rate": 50, "by": "api-test"}))
                .send(),
        )
        .await,
    );
    assert_eq!(done.status(), 200);
    let done: serde_json::Value = done.json().await.unwrap();
    assert_eq!(done["redriven"].as_array().unwrap().len(), 2, "{done:#}");
    // Completions are settled asynchronously by the client: wait for the broker to have them.
    harness::wait_until(
        "the re-driven originals completed",
        Duration::from_secs(10),
        || {
            let n = h.dead_letters().len();
            async move { n == 2 }
        },
    )
    .await;
    let copies = bus
        .receiver(&h.events)
        .await
        .unwrap()
        .peek(0, 10)
        .await
        .unwrap();
    assert_eq!(copies.len(), 2);
    assert!(copies.iter().all(|m| m
        .application_properties
        .get(REDRIVE_COUNT_PROPERTY)
        .map(String::as_str)
        == Some("1")));

    let refused = within("bad filter")(
        tokio::time::timeout(
            Duration::from_secs(30),
            client.get(format!("{base}/v1/dlq?age_gt=soon")).send(),
        )
        .await,
    );
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("expected a duration"));

    server.abort();
    h.sim.shutdown().await;
}

fn r_or_panic(
    what: &str,
    r: Result<Result<reqwest::Response, reqwest::Error>, tokio::time::error::Elapsed>,
) -> reqwest::Response {
    r.unwrap_or_else(|_| panic!("{what} took over 30 s, likely deadlocked"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}
