//! Changing a resource's place count over the wire: the planner's `set_place_count` change goes to a person under
//! the shipped policy and, once approved, the executor sets it on the resource group with
//! `PUT /v1/resource-groups/{rg}`; the fake controller then places the missing replicas.

mod agent_support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_support::counting_proxy;
use trimtab::agent::actuators::LinstorPlacement;
use trimtab::audit::{tail, verify, AuditKind, AuditLog};
use trimtab::executor::{
    ChangeOutcome, Executor, ExecutorConfig, MemoryKnobs, PlacementActuator, StateDir,
};
use trimtab::linstor::config::LinstorConfig;
use trimtab::linstor::types::{AutoPlaceRequest, AutoSelectFilter, ResourceGroup};
use trimtab::linstor::LinstorWriter;
use trimtab::planner::{change_id, Action, Change, Observed, Plan, Reason, Settings};
use trimtab::policy::{Gate, Mode, ModeDecision};
use trimtab::sim::linstor::{FakeLinstor, FakeLinstorConfig};

const TOKEN: &str = "place-count-token";
const GIB: u64 = 1024 * 1024;

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than 30 s; likely deadlocked"))
}

fn diskful_nodes(fake: &FakeLinstor, resource: &str) -> Vec<String> {
    fake.resources()
        .into_iter()
        .filter(|p| p.resource == resource && p.pool.is_some())
        .map(|p| p.node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_place_count_change_reaches_the_group_and_the_controller_places_replicas() {
    let fake = FakeLinstor::start(FakeLinstorConfig {
        token: Some(TOKEN.into()),
        ..FakeLinstorConfig::default()
    })
    .await
    .expect("fake linstor starts");
    let (proxy, requests) = counting_proxy(fake.base_url()).await;
    let config = LinstorConfig::for_controller(&proxy, Some(TOKEN), Some(TOKEN));
    let writer = LinstorWriter::new(&config.validate().unwrap()).unwrap();

    // A group with place count 2 and two resources in it, placed by the controller.
    let group = ResourceGroup {
        name: "rg-web".into(),
        select_filter: AutoSelectFilter {
            place_count: Some(2),
            ..AutoSelectFilter::default()
        },
        ..ResourceGroup::default()
    };
    within("create group", writer.create_resource_group(&group))
        .await
        .expect("create group");
    for name in ["web-1", "web-2"] {
        within(
            "create rd",
            writer.create_resource_definition(name, Some("rg-web")),
        )
        .await
        .expect("create rd");
        within("create vd", writer.create_volume_definition(name, 0, GIB))
            .await
            .expect("create vd");
        within(
            "autoplace",
            writer.autoplace(name, &AutoPlaceRequest::default()),
        )
        .await
        .expect("autoplace");
        assert_eq!(diskful_nodes(&fake, name).len(), 2, "{name}");
    }
    let setup = requests.all().len();

    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("state"));
    let (log, _) = AuditLog::open(&state.audit_log()).unwrap();
    let placement = Arc::new(LinstorPlacement::new(writer.clone()));
    let settings = Settings::default();
    let executor = Executor::new(
        placement.clone(),
        Arc::new(MemoryKnobs::new(settings, vec![])),
        Arc::new(Mutex::new(log)),
        state.clone(),
        ExecutorConfig::default(),
    );
    let gate = Gate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    let action = Action::SetPlaceCount {
        resource: "web-1".into(),
        from: 2,
        to: 3,
    };
    let change = Change {
        id: change_id("resource:web-1", &action),
        target: "resource:web-1".into(),
        action,
        reason: Reason {
            summary: "three copies of web-1 asked for by its owner".into(),
            ..Reason::default()
        },
        expected_effect: "a third replica of every resource in rg-web".into(),
        uses_forecast: false,
    };
    let plan = Plan {
        changes: vec![change.clone()],
        ..Plan::default()
    };
    let auto = ModeDecision {
        mode: Mode::Autonomous,
        configured: Mode::Autonomous,
        why: None,
        forecast_changes_only: false,
    };
    let observed = Observed::default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    let step = within(
        "step",
        executor.run_step(&gate, &auto, &plan, &observed, &settings, now),
    )
    .await
    .unwrap();
    let Some(ChangeOutcome::Queued { proposal }) = step.outcome(&change.id).cloned() else {
        panic!("the shipped policy must send a place count change to a person: {step:?}")
    };
    assert!(
        requests.all()[setup..]
            .iter()
            .all(|r| r.starts_with("GET ")),
        "a queued place count change reached linstor: {:?}",
        &requests.all()[setup..]
    );

    let (mut person, _) = AuditLog::open(&state.audit_log()).unwrap();
    executor
        .proposals()
        .approve(&proposal, "alice", &mut person, now + 1)
        .expect("approve");
    drop(person);
    let ran = within(
        "approved run",
        executor.run_approved(&gate, &auto, &observed, &settings, now + 2),
    )
    .await
    .unwrap();
    assert!(
        matches!(ran.outcome(&change.id), Some(ChangeOutcome::Applied { .. })),
        "{ran:?}"
    );

    let calls: Vec<String> = requests.all()[setup..]
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect();
    assert_eq!(
        calls,
        vec!["PUT /v1/resource-groups/rg-web".to_string()],
        "exactly one mutating call, on the group"
    );
    assert_eq!(
        within("group", writer.reader().resource_group("rg-web"))
            .await
            .unwrap()
            .select_filter
            .place_count,
        Some(3)
    );
    // The count belongs to the group, so both of its resources now have three replicas.
    for name in ["web-1", "web-2"] {
        assert_eq!(diskful_nodes(&fake, name).len(), 3, "{name}");
    }
    let view = within("replicas", placement.replicas("web-1"))
        .await
        .unwrap();
    assert_eq!(view.place_count, 3);

    let records = tail(&state.audit_log(), usize::MAX).unwrap();
    let start = records
        .iter()
        .position(|r| r.kind == AuditKind::ApplyStart && r.subject == change.id)
        .expect("apply start audited");
    let approval = records
        .iter()
        .position(|r| r.kind == AuditKind::Approval && r.subject == proposal)
        .expect("approval audited");
    assert!(approval < start);
    assert!(records[start..]
        .iter()
        .any(|r| r.kind == AuditKind::ApplyOutcome && r.detail["outcome"] == "applied"));
    assert!(verify(&state.audit_log()).unwrap().is_ok());
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_place_count_on_a_missing_group_fails_with_the_controllers_reason() {
    let fake = FakeLinstor::start(FakeLinstorConfig {
        token: Some(TOKEN.into()),
        ..FakeLinstorConfig::default()
    })
    .await
    .expect("fake linstor starts");
    let config = LinstorConfig::for_controller(&fake.base_url(), Some(TOKEN), Some(TOKEN));
    let writer = LinstorWriter::new(&config.validate().unwrap()).unwrap();
    let placement = LinstorPlacement::new(writer);
    let err = within(
        "set place count",
        placement.set_place_count("no-such-rd", 3),
    )
    .await
    .expect_err("a missing resource cannot get a place count");
    assert!(err.reason.contains("no-such-rd"), "{}", err.reason);
    assert!(!err.is_retriable());
    fake.shutdown().await;
}
