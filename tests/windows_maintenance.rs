//! Maintenance windows over the wire: a window on the Cassandra path pauses ingest and resumes it without loss;
//! a window on a LINSTOR node blocks a placement change that touches it; both decisions are in the audit log and
//! the state.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::agent::actuators::LinstorPlacement;
use trimtab::agent::state::{AgentState, InsightSources, WithInsights};
use trimtab::agent::AgentSnapshot;
use trimtab::audit::{tail, AuditKind, AuditLog};
use trimtab::cassandra::{connect_session, ensure_schema, EventWriter};
use trimtab::chatops::state::StateSource;
use trimtab::executor::{ChangeOutcome, Executor, ExecutorConfig, MemoryKnobs, StateDir};
use trimtab::linstor::ops::VolumeExecutor;
use trimtab::linstor::LinstorWriter;
use trimtab::message::VolumeRequest;
use trimtab::pipeline::adapters::{CassandraEvents, LinstorVolumes, ReplySenders, SenderFactory};
use trimtab::pipeline::{LiveKnobs, Pipeline};
use trimtab::planner::{change_id, Action, Change, Observed, Plan, Reason, Settings};
use trimtab::policy::{Gate, Mode, ModeDecision, Verdict};
use trimtab::servicebus::azure::AzureServiceBus;
use trimtab::servicebus::{MessageSender, ServiceBusError};
use trimtab::windows::WindowHold;

const EVENTS: usize = 60;
const WINDOW: time::Duration = time::Duration::seconds(4);

struct BusSenders(Arc<AzureServiceBus>);

#[async_trait]
impl SenderFactory for BusSenders {
    async fn open_sender(&self, entity: &str) -> Result<Arc<dyn MessageSender>, ServiceBusError> {
        let entity = trimtab::servicebus::Entity::Queue(entity.to_string());
        Ok(Arc::new(self.0.sender(&entity).await?))
    }
}

fn rfc(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn policies_with(dir: &Path, windows: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    std::fs::write(dir.join("windows.json"), windows.to_string()).unwrap();
}

/// The pipeline as `App` builds it, plus the window hold.
async fn pipeline(h: &Harness, hold: Arc<WindowHold>) -> Pipeline {
    let config = &h.config;
    let session = connect_session(&config.cassandra)
        .await
        .expect("cql session");
    ensure_schema(&session, &config.cassandra)
        .await
        .expect("schema");
    let writer = Arc::new(
        EventWriter::new(session, &config.cassandra)
            .await
            .expect("writer"),
    );
    let bus = Arc::new(
        AzureServiceBus::connect(&config.servicebus)
            .await
            .expect("connect"),
    );
    let receiver = Arc::new(bus.receiver(&h.events).await.expect("receiver"));
    let linstor = config.linstor.validate().expect("linstor config");
    let volumes = LinstorVolumes::new(VolumeExecutor::new(
        LinstorWriter::new(&linstor).expect("writer"),
    ));
    Pipeline::new(
        vec![receiver],
        Arc::new(CassandraEvents::new(writer)),
        Arc::new(volumes),
        Arc::new(ReplySenders::new(Arc::new(BusSenders(bus)))),
        LiveKnobs::new(config.pipeline.knobs).expect("knobs"),
        config.pipeline.clone(),
    )
    .with_ingest_hold(hold)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_pauses_ingest_then_drains_it_and_freezes_placement_on_its_node() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    std::fs::create_dir_all(state.root()).unwrap();
    let (log, _) = AuditLog::open(&state.audit_log()).expect("audit log");
    let audit = Arc::new(Mutex::new(log));

    // A volume to place, and the node it is not on: that node goes under maintenance.
    let linstor = h.config.linstor.validate().unwrap();
    let writer = LinstorWriter::new(&linstor).unwrap();
    VolumeExecutor::new(writer.clone())
        .execute(&VolumeRequest::Create {
            resource: "win-vol".into(),
            size_kib: 1024 * 1024,
            place_count: 1,
            storage_pool: Some("pool-ssd".into()),
            replicas_on_different: vec![],
            replicas_on_same: vec![],
            resource_group: None,
        })
        .await
        .expect("create win-vol");
    let placed = |name: &str| {
        let mut nodes: Vec<String> = h
            .sim
            .linstor
            .resources()
            .into_iter()
            .filter(|p| p.resource == name)
            .map(|p| p.node)
            .collect();
        nodes.sort();
        nodes
    };
    let before = placed("win-vol");
    let node = ["n1", "n3", "n5"]
        .into_iter()
        .find(|n| !before.iter().any(|b| b == n))
        .expect("a pool-ssd node without win-vol");

    let now = time::OffsetDateTime::now_utc();
    let end = now + WINDOW;
    let policies = dir.path().join("policies");
    policies_with(
        &policies,
        serde_json::json!({"version": 1, "windows": [
            {"id": "cql-upgrade", "target": {"cassandra": "main"}, "start": rfc(now - time::Duration::seconds(1)),
             "end": rfc(end), "ingest": "pause", "entities": ["events"], "reason": "rolling upgrade"},
            {"id": "node-firmware", "target": {"linstor_node": node}, "start": rfc(now - time::Duration::seconds(1)),
             "end": rfc(now + time::Duration::hours(1)), "ingest": "none", "reason": "firmware"}
        ]}),
    );
    let hold = Arc::new(WindowHold::from_file(
        policies.join("windows.json"),
        Some(audit.clone()),
    ));

    // Ingest: messages sent during the window wait in Service Bus, unlocked, and nothing is written.
    let messages = harness::events("w", EVENTS);
    h.send(messages.clone()).await;
    let pipeline = pipeline(&h, hold.clone()).await;
    let stats = pipeline.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(pipeline.run(stop.clone()));
    let tables = h.tables().await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        time::OffsetDateTime::now_utc() < end,
        "the test machine is too slow for a 4 s window"
    );
    assert_eq!(
        tables.count_events().await.unwrap(),
        0,
        "nothing written during the pause"
    );
    assert_eq!(
        stats.snapshot().received,
        0,
        "nothing received during the pause"
    );
    assert_eq!(
        h.active() as usize,
        EVENTS,
        "the messages wait in Service Bus"
    );
    let during = hold.snapshot();
    assert_eq!(during.holds.len(), 1, "{during:?}");
    assert_eq!(during.holds[0].entity, "events");

    // In the state while it holds: chat-ops' insights show the window and what it holds back.
    let agent_state = AgentState::new(
        Arc::new(RwLock::new(AgentSnapshot::default())),
        state.clone(),
    );
    let with = WithInsights::new(
        agent_state,
        InsightSources {
            stats: stats.clone(),
            windows: Some(hold.clone()),
        },
    );
    let insights = with.insights().await.unwrap();
    let cql = insights
        .windows
        .iter()
        .find(|w| w.id == "cql-upgrade")
        .expect("cql window in the state");
    assert_eq!(cql.holding, vec!["events".to_string()]);
    assert_eq!(cql.target, "cassandra main");

    // Placement: a change that touches the node under maintenance is denied; the same change elsewhere is not.
    let gate = Gate::load(&policies);
    let add = |node: &str| {
        let action = Action::AddReplica {
            resource: "win-vol".into(),
            node: node.into(),
            pool: "pool-ssd".into(),
        };
        Change {
            id: change_id("resource:win-vol", &action),
            target: "resource:win-vol".into(),
            action,
            reason: Reason::default(),
            expected_effect: String::new(),
            uses_forecast: false,
        }
    };
    let executor = Executor::new(
        Arc::new(LinstorPlacement::new(writer)),
        Arc::new(MemoryKnobs::new(Settings::default(), vec![])),
        audit.clone(),
        state.clone(),
        ExecutorConfig::default(),
    );
    let plan = Plan {
        changes: vec![add(node)],
        ..Plan::default()
    };
    let autonomous = ModeDecision {
        mode: Mode::Autonomous,
        configured: Mode::Autonomous,
        why: None,
        forecast_changes_only: false,
    };
    let step = executor
        .run_step(
            &gate,
            &autonomous,
            &plan,
            &Observed::default(),
            &Settings::default(),
            now.unix_timestamp(),
        )
        .await
        .expect("executor step");
    match &step.outcomes[0].1 {
        ChangeOutcome::Denied { reasons } => assert!(
            reasons
                .iter()
                .any(|r| r.contains("maintenance window node-firmware") && r.contains(node)),
            "{reasons:?}"
        ),
        other => panic!("a placement change on {node} during its window was not denied: {other:?}"),
    }
    assert_eq!(placed("win-vol"), before, "nothing placed on {node}");
    let elsewhere = before.first().cloned().unwrap_or_default();
    let outside = ["n1", "n3", "n5"]
        .into_iter()
        .find(|n| *n != node && *n != elsewhere)
        .unwrap();
    let control = gate.evaluate(
        &add(outside),
        &trimtab::policy::GateContext {
            mode: Mode::Autonomous,
            concurrent_moves: 0,
            changes_last_hour: 0,
        },
    );
    assert_eq!(
        control.verdict,
        Verdict::Allow,
        "the window freezes only its node: {control:?}"
    );

    // After the window: everything drains, once each.
    harness::wait_until(
        "every event written after the window",
        Duration::from_secs(60),
        || {
            let (tables, h) = (&tables, &h);
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n as usize == EVENTS)
                    .unwrap_or(false)
                    && h.active() == 0
            }
        },
    )
    .await;
    assert_eq!(
        h.stored_ids(&tables).await,
        harness::ids(&messages),
        "no message lost"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the pipeline drains within 30 s")
        .expect("pipeline task");

    // The decisions are in the audit log (and so in the state chat-ops reads).
    let records = tail(&state.audit_log(), 100).unwrap();
    let windows: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.actor == "windows")
        .map(|r| {
            (
                r.subject.clone(),
                r.detail["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        windows,
        vec![
            ("cql-upgrade".to_string(), "ingest paused".to_string()),
            ("cql-upgrade".to_string(), "ingest resumed".to_string())
        ]
    );
    let resumed = records
        .iter()
        .find(|r| r.detail["outcome"] == "ingest resumed")
        .unwrap();
    assert!(
        resumed.at_unix_ms >= (end.unix_timestamp_nanos() / 1_000_000) as i64,
        "resumed before the window ended"
    );
    let denial = records
        .iter()
        .find(|r| r.kind == AuditKind::Decision && r.actor == "gate")
        .expect("the gate's decision audited");
    assert_eq!(denial.detail["verdict"], "deny");
    let since = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let audit_view = with.recent_audit(since).await.unwrap();
    assert!(
        audit_view
            .iter()
            .any(|e| e.actor == "windows" && e.outcome == "ingest resumed"),
        "{audit_view:#?}"
    );
    assert!(
        audit_view.iter().any(|e| e.actor == "gate"
            && e.outcome == "deny"
            && e.reason.contains("node-firmware")),
        "{audit_view:#?}"
    );
    drop(tables);
    h.sim.shutdown().await;
}
