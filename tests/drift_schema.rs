//! Schema drift over the wire: a producer that adds a field and changes a type is reported as drift (metric, state,
//! chat-ops answer) while its messages still fit and are written; a message that no longer fits the Cassandra
//! schema is dead-lettered with a reason naming the field.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{self, Harness, EVENT_DAY, STREAMS};
use tokio_util::sync::CancellationToken;
use trimtab::agent::state::{InsightSources, WithInsights};
use trimtab::app::App;
use trimtab::chatops::redact::Redactor;
use trimtab::chatops::state::StaticState;
use trimtab::chatops::templated;
use trimtab::chatops::tools::Ledger;
use trimtab::servicebus::OutgoingMessage;

const BASELINE: usize = 200;
const DRIFTED: usize = 20;
const UNFIT: usize = 5;

/// Events whose payload gained `region` and whose `i` became a string: still valid rows (payload is free JSON).
fn drifted(n: usize) -> Vec<OutgoingMessage> {
    (0..n)
        .map(|i| {
            let body = serde_json::json!({
                "version": 1, "kind": "event", "stream": STREAMS[i % STREAMS.len()],
                "ts": "2026-01-01T12:00:00Z",
                "payload": {"i": format!("n{i}"), "text": "x".repeat(120), "region": "eu-west"},
            });
            OutgoingMessage {
                message_id: Some(format!("d-{i}")),
                body: Bytes::from(body.to_string()),
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// Events whose `ts` became epoch seconds: no longer a timestamp column value.
fn unfit(n: usize) -> Vec<OutgoingMessage> {
    (0..n)
        .map(|i| {
            let body = serde_json::json!({
                "version": 1, "kind": "event", "stream": "s0", "ts": 1_767_268_800 + i,
                "payload": {"i": i, "text": "x"},
            });
            OutgoingMessage {
                message_id: Some(format!("u-{i}")),
                body: Bytes::from(body.to_string()),
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// A state source with nothing in it but the time: the insights come from the pipeline.
fn empty_state() -> StaticState {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::from_value(serde_json::json!({
        "as_of": now, "queues": [], "lag": [], "forecasts": [],
        "placement": {"sampled_at": now, "pools": [], "replicas_per_node": [], "under_replicated": [], "degraded": []},
        "pending_proposals": [], "audit": [], "settings": {"mode": "recommend", "settings": [], "as_of": now},
    }))
    .expect("an empty state snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_adds_a_field_and_changes_a_type_is_reported_as_drift() {
    assert_eq!(EVENT_DAY, time::macros::datetime!(2026-01-01 12:00 UTC));
    let h = Harness::start(Duration::from_secs(10)).await;
    let app = App::build(&h.config).await.expect("build the pipeline");
    let stats = app.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    let tables = h.tables().await;

    let baseline = harness::events("b", BASELINE);
    h.send(baseline).await;
    harness::wait_until("the baseline written", Duration::from_secs(60), || {
        let tables = &tables;
        async move {
            tables
                .count_events()
                .await
                .map(|n| n as usize == BASELINE)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(
        stats.drift().snapshot().events.is_empty(),
        "no drift while the producer is unchanged"
    );

    let changed = drifted(DRIFTED);
    h.send(changed.clone()).await;
    h.send(unfit(UNFIT)).await;
    harness::wait_until(
        "drifted rows written and unfit messages dead-lettered",
        Duration::from_secs(60),
        || {
            let (tables, h) = (&tables, &h);
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n as usize == BASELINE + DRIFTED)
                    .unwrap_or(false)
                    && h.dead_letters().len() == UNFIT
                    && h.active() == 0
            }
        },
    )
    .await;
    // The drift task runs behind the receive loop: give it a moment to catch up.
    harness::wait_until("drift compared", Duration::from_secs(10), || {
        let n = stats.drift().snapshot().observed;
        async move { n as usize == BASELINE + DRIFTED + UNFIT }
    })
    .await;

    // Reported as drift events with examples.
    let snapshot = stats.drift().snapshot();
    let find = |field: &str, change: &str| {
        snapshot
            .events
            .iter()
            .find(|e| e.kind == "event" && e.field == field && e.change.name() == change)
            .unwrap_or_else(|| panic!("no {change} drift on {field} in {:#?}", snapshot.events))
    };
    let added = find("payload.region", "field_added");
    assert_eq!(added.count as usize, DRIFTED);
    assert_eq!(added.examples[0].message_id, "d-0");
    assert_eq!(added.examples[0].value, "\"eu-west\"");
    let retyped = find("payload.i", "type_changed");
    assert_eq!(retyped.count as usize, DRIFTED);
    assert_eq!(
        serde_json::to_value(&retyped.change).unwrap(),
        serde_json::json!({"change": "type_changed", "from": ["integer"], "to": "string"})
    );
    let ts = find("ts", "type_changed");
    assert_eq!(ts.count as usize, UNFIT);

    // As a metric.
    let samples = snapshot.metric_samples();
    let metric = |name: &str| samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(
        metric("trimtab_schema_drift_events_total{kind=\"event\",field=\"payload.region\",change=\"field_added\"}"),
        Some(DRIFTED as f64)
    );
    assert_eq!(
        metric("trimtab_schema_drift_open{kind=\"event\"}"),
        Some(3.0)
    );

    // In the state and as a chat-ops answer with citations.
    let state = WithInsights::new(
        empty_state(),
        InsightSources {
            stats: stats.clone(),
            windows: None,
        },
    );
    let mut ledger = Ledger::new(Redactor::new(vec![], vec![], 4_000));
    let answer = templated::answer("is there schema drift?", &state, &mut ledger)
        .await
        .expect("an answer");
    assert!(answer.text.contains("3 drift(s)"), "{}", answer.text);
    assert!(
        answer
            .text
            .contains("field payload.region added (20 messages, e.g. d-0 = \"eu-west\")"),
        "{}",
        answer.text
    );
    assert!(
        answer
            .text
            .contains("field payload.i changed type from integer to string"),
        "{}",
        answer.text
    );
    let (record, item) = ledger.find("R1").expect("the answer cites R1");
    assert_eq!(record.tool, "pipeline_insights");
    assert_eq!(item.data["kind"], "event");

    // A message that no longer fits the Cassandra schema is dead-lettered, naming the field.
    for (body, reason) in h.dead_letters() {
        assert_eq!(reason, "SchemaMismatch: ts", "{body}");
    }
    let mut stored = h.stored_ids(&tables).await;
    stored.retain(|id| id.starts_with("d-"));
    assert_eq!(
        stored,
        harness::ids(&changed),
        "drifted messages that still fit are written"
    );

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the pipeline drains within 30 s")
        .expect("pipeline task");
    drop(tables);
    h.sim.shutdown().await;
}
