//! Re-drive over the wire: messages dead-lettered while Cassandra refused writes are re-driven after the fix and
//! written exactly once; the re-drive keeps message ids, counts re-drives, filters, is gated, audited, paced, and
//! a dry run changes nothing.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::app::App;
use trimtab::audit::{tail, verify, AuditKind};
use trimtab::executor::StateDir;
use trimtab::policy::Verdict;
use trimtab::redrive::{DlqService, Filter, RedriveRequest, REDRIVE_COUNT_PROPERTY};
use trimtab::servicebus::azure::AzureServiceBus;
use trimtab::servicebus::Entity;
use trimtab::sim::cluster::{SimCluster, SimOptions};

const VALID: usize = 40;
const BAD: usize = 6;
const REASON: &str = "MaxDeliveryCountExceeded";

async fn start() -> Harness {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut options = SimOptions::local(&["events", "volume-replies"]);
    options.servicebus.lock_duration = Duration::from_secs(4);
    options.servicebus.max_delivery_count = 2;
    let sim = tokio::time::timeout(Duration::from_secs(30), SimCluster::start(options))
        .await
        .expect("stand-ins should start within 30 s")
        .expect("stand-ins start");
    let events = Entity::Queue("events".into());
    let mut config = sim.config(vec![events.clone()]);
    config.pipeline.receive_wait_ms = 200;
    config.pipeline.write_attempts = 1;
    config.pipeline.backoff_initial_ms = 10;
    config.pipeline.grace_ms = 10_000;
    Harness {
        sim,
        config,
        events,
    }
}

/// Runs the pipeline until `done` holds, then drains it.
async fn run_pipeline_until<F, Fut>(h: &Harness, what: &str, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let app = App::build(&h.config)
        .await
        .expect("build the pipeline against the stand-ins");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    harness::wait_until(what, Duration::from_secs(120), done).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the pipeline drains within 30 s")
        .expect("pipeline task");
}

fn policies_copy(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
}

fn request(filter: &[&str], dry_run: bool) -> RedriveRequest {
    RedriveRequest {
        filter: Filter::parse(filter).expect("filter"),
        max_messages: 1_000,
        rate_per_second: 100,
        dry_run,
        actor: "test-operator".into(),
    }
}

fn dead_letter_count(h: &Harness) -> usize {
    h.sim.servicebus.peek_dead_letters("events").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_after_the_fix_writes_every_redriven_message_exactly_once() {
    let h = start().await;
    let valid = harness::events("r", VALID);
    let mut all = valid.clone();
    all.extend(harness::malformed("m", BAD));
    // Cassandra times out every write: each event is abandoned, redelivered once, then dead-lettered.
    h.sim.cql.faults().set_write_timeout_fraction(1.0);
    h.send(all).await;
    run_pipeline_until(&h, "every message dead-lettered", || {
        let n = dead_letter_count(&h);
        async move { n == VALID + BAD }
    })
    .await;
    // The fix.
    h.sim.cql.faults().clear();

    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    policies_copy(&policies);
    let state = StateDir::new(dir.path().join("state"));
    let bus = Arc::new(
        AzureServiceBus::connect(&h.config.servicebus)
            .await
            .expect("connect"),
    );
    let service = DlqService::new(bus.clone(), policies.clone(), state.audit_log());
    let events = h.events.clone();

    // Filters by reason, kind and age; listing changes nothing.
    let list = |f: &'static [&'static str]| {
        let service = service.clone();
        let events = events.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                service.list(&events, &Filter::parse(f).unwrap(), 1_000),
            )
            .await
            .expect("listing within 30 s")
            .expect("list")
        }
    };
    assert_eq!(list(&[]).await.len(), VALID + BAD);
    let failed_writes = list(&["reason=MaxDelivery"]).await;
    assert_eq!(failed_writes.len(), VALID);
    assert!(failed_writes
        .iter()
        .all(|e| e.kind == "event" && e.redrive_count == 0));
    assert_eq!(
        list(&["kind=event"]).await.len(),
        VALID,
        "malformed bodies are not events"
    );
    assert_eq!(list(&["age<1h"]).await.len(), VALID + BAD);
    assert_eq!(list(&["age>1h"]).await.len(), 0);
    let (entry, message) = service
        .show(&events, failed_writes[0].sequence_number)
        .await
        .expect("show");
    assert_eq!(entry.reason, REASON);
    assert_eq!(message.body.len(), entry.size);

    // A dry run asks the gate and changes nothing: no message moves, no audit record is written.
    let dry = service
        .redrive(
            &events,
            &request(&["reason=MaxDeliveryCountExceeded"], true),
        )
        .await
        .expect("dry run");
    assert_eq!(dry.selected.len(), VALID);
    assert_eq!(dry.decision.verdict, Verdict::Allow, "{:?}", dry.decision);
    assert!(dry.redriven.is_empty());
    assert_eq!(dead_letter_count(&h), VALID + BAD);
    assert_eq!(h.active(), 0);
    assert!(!state.audit_log().exists() || tail(&state.audit_log(), 10).unwrap().is_empty());

    // Gated: a cap in limits.json, and an open maintenance window on the entity, each refuse it (audited).
    let limits = policies.join("limits.json");
    let original_limits = std::fs::read_to_string(&limits).unwrap();
    std::fs::write(
        &limits,
        original_limits.replace(
            "\"kill_switch\": false,",
            "\"kill_switch\": false,\n  \"max_redrive_messages\": 10,",
        ),
    )
    .unwrap();
    let capped = service
        .redrive(
            &events,
            &request(&["reason=MaxDeliveryCountExceeded"], false),
        )
        .await
        .expect("capped re-drive answers");
    assert_eq!(capped.decision.verdict, Verdict::Deny);
    assert!(
        capped
            .decision
            .reasons
            .iter()
            .any(|r| r.contains("exceeds the limit 10")),
        "{:?}",
        capped.decision.reasons
    );
    std::fs::write(&limits, original_limits).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    std::fs::write(
        policies.join("windows.json"),
        serde_json::json!({"version": 1, "windows": [{"id": "cql-upgrade", "target": {"cassandra": "main"},
            "start": rfc(now - time::Duration::minutes(1)), "end": rfc(now + time::Duration::hours(1)),
            "ingest": "pause", "entities": ["events"], "reason": "upgrade"}]})
        .to_string(),
    )
    .unwrap();
    let frozen = service
        .redrive(
            &events,
            &request(&["reason=MaxDeliveryCountExceeded"], false),
        )
        .await
        .expect("frozen re-drive answers");
    assert_eq!(frozen.decision.verdict, Verdict::Deny);
    assert!(
        frozen
            .decision
            .reasons
            .iter()
            .any(|r| r.contains("maintenance window cql-upgrade")),
        "{:?}",
        frozen.decision.reasons
    );
    assert!(frozen.redriven.is_empty());
    assert_eq!(
        dead_letter_count(&h),
        VALID + BAD,
        "a refused re-drive moves nothing"
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/windows.json"),
        policies.join("windows.json"),
    )
    .unwrap();

    // The re-drive: paced at 100 per second, so 40 messages take at least 0.39 s.
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        service.redrive(
            &events,
            &request(&["reason=MaxDeliveryCountExceeded"], false),
        ),
    )
    .await
    .expect("re-drive within 60 s")
    .expect("re-drive");
    let took = started.elapsed();
    assert_eq!(report.decision.verdict, Verdict::Allow);
    assert_eq!(report.redriven.len(), VALID, "missed: {:?}", report.missed);
    assert!(report.missed.is_empty());
    assert!(
        took >= Duration::from_millis(390),
        "40 messages at 100/s took only {took:?}"
    );
    // Completions are settled asynchronously by the client: wait for the broker to have them.
    harness::wait_until(
        "only the malformed messages stay dead-lettered",
        Duration::from_secs(10),
        || {
            let n = dead_letter_count(&h);
            async move { n == BAD }
        },
    )
    .await;

    // The copies keep their message ids and carry the re-drive count, without the dead-letter marks.
    let main = bus.receiver(&events).await.expect("receiver");
    let copies = main.peek(0, 1_000).await.expect("peek the entity");
    let mut ids: Vec<String> = copies.iter().filter_map(|m| m.message_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, harness::ids(&valid));
    for m in &copies {
        assert_eq!(
            m.application_properties
                .get(REDRIVE_COUNT_PROPERTY)
                .map(String::as_str),
            Some("1")
        );
        assert!(!m.application_properties.contains_key("DeadLetterReason"));
    }
    drop(main);

    // Processed again after the fix: every re-driven message is written, once.
    let tables = h.tables().await;
    run_pipeline_until(
        &h,
        "every re-driven row written and the queue empty",
        || {
            let tables = &tables;
            let h = &h;
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n as usize == VALID)
                    .unwrap_or(false)
                    && h.active() == 0
            }
        },
    )
    .await;
    assert_eq!(
        h.stored_ids(&tables).await,
        harness::ids(&valid),
        "each re-driven message has its row"
    );
    assert_eq!(
        tables.count_events().await.unwrap() as usize,
        VALID,
        "and only one"
    );

    // Audited: the refusals, the decision, the start and the outcome, in an intact chain.
    let records = tail(&state.audit_log(), 100).unwrap();
    let kinds: Vec<AuditKind> = records.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AuditKind::Refused,
            AuditKind::Refused,
            AuditKind::Decision,
            AuditKind::ApplyStart,
            AuditKind::ApplyOutcome
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.subject.starts_with("redrive-events-")));
    assert_eq!(records[4].detail["redriven"], serde_json::json!(VALID));
    assert_eq!(records[0].actor, "test-operator");
    assert!(
        verify(&state.audit_log()).unwrap().is_ok(),
        "audit chain intact"
    );
    drop(tables);
    h.sim.shutdown().await;
}
