//! Plan, gate, apply and audit together, with in-memory actuators: the control loop's decision half end to end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trimtab::audit::{tail, verify, AuditKind, AuditLog};
use trimtab::executor::{
    ChangeOutcome, Executor, ExecutorConfig, MemoryKnobs, MemoryPlacement, ReplicaView, StateDir,
    WindowStats,
};
use trimtab::planner::{
    plan, Action, ArrivalForecast, Automation, BatchSample, ForecastTrust, ForecastView, History,
    Limits, NodeState, Observed, PipelineObservation, PoolForecast, PoolState, ReplicaState,
    ResourceState, Settings,
};
use trimtab::policy::{effective_mode, Gate, Mode};

const NOW: i64 = 1_800_000_000;

fn replica(node: &str) -> ReplicaState {
    ReplicaState {
        node: node.into(),
        pool: "data".into(),
        diskful: true,
        up_to_date: true,
        in_use: false,
    }
}

fn observed(placement: &MemoryPlacement, lag_s: f64, backlog: f64) -> Observed {
    let view = placement.snapshot("pvc-1").unwrap_or_default();
    let mut batches = Vec::new();
    for rows in [10u32, 50, 100] {
        for conc in [1u32, 4] {
            let work = f64::from(rows * conc);
            batches.push(BatchSample {
                rows,
                concurrency: conc,
                throughput_rows_per_s: 40.0 * work / (1.0 + work / 400.0),
                p99_ms: 5.0 + work * 0.07,
                ..Default::default()
            });
        }
    }
    Observed {
        nodes: ["n1", "n2", "n3"]
            .iter()
            .zip(["a", "b", "c"])
            .map(|(n, z)| NodeState {
                name: n.to_string(),
                online: true,
                evicted: false,
                aux: BTreeMap::from([("zone".to_string(), z.to_string())]),
            })
            .collect(),
        pools: vec![
            PoolState {
                node: "n1".into(),
                name: "data".into(),
                total_kib: 1_000_000,
                free_kib: 250_000,
            },
            PoolState {
                node: "n2".into(),
                name: "data".into(),
                total_kib: 1_000_000,
                free_kib: 600_000,
            },
            PoolState {
                node: "n3".into(),
                name: "data".into(),
                total_kib: 1_000_000,
                free_kib: 800_000,
            },
        ],
        resources: vec![ResourceState {
            name: "pvc-1".into(),
            place_count: view.place_count,
            size_kib: 100_000,
            replicas_on_different: vec!["Aux/zone".into()],
            replicas: view.replicas,
            balance_resources: None,
            under_replicated_since: None,
        }],
        automation: Automation::default(),
        pipeline: PipelineObservation {
            lag_s,
            backlog_messages: backlog,
            arrival_per_s: 300.0,
            avg_row_bytes: 40.0,
            batches,
            service: None,
        },
    }
}

fn forecast() -> ForecastView {
    ForecastView {
        horizon_s: 6 * 3600,
        arrival: Some(ArrivalForecast {
            mean_per_s: 300.0,
            upper_per_s: 400.0,
        }),
        // n1 is 75 % full and forecast to grow by 15 %: 90 % at the horizon.
        pools: vec![PoolForecast {
            node: "n1".into(),
            pool: "data".into(),
            growth_kib_upper: 150_000,
        }],
        trust: ForecastTrust {
            history_points: 500,
            rolling_mase: Some(0.6),
        },
    }
}

struct Loop {
    _dir: tempfile::TempDir,
    state: StateDir,
    placement: Arc<MemoryPlacement>,
    knobs: Arc<MemoryKnobs>,
    executor: Executor,
    gate: Gate,
}

// Within the default policy's 4× step per knob from what the planner will choose (100 rows × 4), so it is allowed.
const START: Settings = Settings {
    batch_rows: 50,
    batch_bytes: 2048,
    concurrency: 1,
    prefetch: 300,
};

fn rig() -> Loop {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    let (log, _) = AuditLog::open(&state.audit_log()).unwrap();
    let placement = Arc::new(MemoryPlacement::new(
        BTreeMap::from([(
            "pvc-1".to_string(),
            ReplicaView {
                place_count: 2,
                replicas: vec![replica("n1"), replica("n2")],
            },
        )]),
        2,
    ));
    // Knob verification: the window after the change is better than the one before.
    let knobs = Arc::new(MemoryKnobs::new(
        START,
        vec![
            WindowStats {
                p99_ms: 6.0,
                throughput_rows_per_s: 300.0,
                ..Default::default()
            },
            WindowStats {
                p99_ms: 30.0,
                throughput_rows_per_s: 2_000.0,
                ..Default::default()
            },
        ],
    ));
    let config = ExecutorConfig {
        verify_window_s: 0,
        poll_interval_s: 1,
        up_to_date_timeout_s: 30,
        ..ExecutorConfig::default()
    };
    let executor = Executor::new(
        placement.clone(),
        knobs.clone(),
        Arc::new(Mutex::new(log)),
        state.clone(),
        config,
    );
    let gate = Gate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
    Loop {
        _dir: dir,
        state,
        placement,
        knobs,
        executor,
        gate,
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out, likely deadlocked"))
}

#[tokio::test]
async fn a_filling_pool_is_moved_only_after_approval_and_a_lag_spike_tunes_the_knobs_at_once() {
    let l = rig();
    let limits = Limits::default();
    let mode = effective_mode(Mode::Autonomous, &forecast().trust, &limits);
    assert_eq!(mode.mode, Mode::Autonomous);
    let obs = observed(&l.placement, 90.0, 30_000.0);
    let p = plan(&obs, &forecast(), &START, &History::default(), &limits, NOW);
    let knob = p
        .changes
        .iter()
        .find(|c| matches!(c.action, Action::SetKnobs { .. }))
        .expect("a knob change");
    let mv = p
        .changes
        .iter()
        .find(|c| matches!(c.action, Action::MoveReplica { .. }))
        .expect("a move off n1");

    let report = within(
        "step",
        l.executor.run_step(&l.gate, &mode, &p, &obs, &START, NOW),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            report.outcome(&knob.id),
            Some(ChangeOutcome::Applied { .. })
        ),
        "{report:?}"
    );
    let Some(ChangeOutcome::Queued { proposal }) = report.outcome(&mv.id).cloned() else {
        panic!("{report:?}")
    };
    assert_ne!(l.knobs.settings(), START, "the knob change was applied");
    assert!(
        l.placement.calls().is_empty(),
        "a move ran without approval"
    );

    let (mut log, _) = AuditLog::open(&l.state.audit_log()).unwrap();
    l.executor
        .proposals()
        .approve(&proposal, "alice", &mut log, NOW + 60)
        .unwrap();
    let obs = observed(&l.placement, 5.0, 100.0);
    let ran = within(
        "approved",
        l.executor
            .run_approved(&l.gate, &mode, &obs, &l.knobs.settings(), NOW + 120),
    )
    .await
    .unwrap();
    assert!(
        matches!(ran.outcome(&mv.id), Some(ChangeOutcome::Applied { .. })),
        "{ran:?}"
    );
    let calls = l.placement.calls();
    let add = calls
        .iter()
        .position(|c| c.starts_with("add_replica pvc-1 n3"))
        .expect("added on n3");
    let remove = calls
        .iter()
        .position(|c| c == "remove_replica pvc-1 n1")
        .expect("removed from n1");
    assert!(add < remove, "add before remove: {calls:?}");

    let kinds: Vec<AuditKind> = tail(&l.state.audit_log(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    for k in [
        AuditKind::Proposal,
        AuditKind::Decision,
        AuditKind::ApplyStart,
        AuditKind::ApplyOutcome,
        AuditKind::Approval,
    ] {
        assert!(kinds.contains(&k), "{k:?} missing from {kinds:?}");
    }
    assert!(verify(&l.state.audit_log()).unwrap().is_ok());
}

#[tokio::test]
async fn a_bad_forecast_holds_back_what_was_planned_on_it_but_not_the_reaction_to_measured_lag() {
    let l = rig();
    let limits = Limits::default();
    let mut f = forecast();
    f.trust.rolling_mase = Some(1.25);
    let mode = effective_mode(Mode::Autonomous, &f.trust, &limits);
    assert_eq!(mode.mode, Mode::Recommend);
    let obs = observed(&l.placement, 90.0, 30_000.0);
    let p = plan(&obs, &f, &START, &History::default(), &limits, NOW);
    assert!(!p.changes.is_empty());
    let report = within(
        "step",
        l.executor.run_step(&l.gate, &mode, &p, &obs, &START, NOW),
    )
    .await
    .unwrap();
    // What rests on the forecast (moving replicas off a pool forecast to fill) only becomes a recommendation;
    // the knob change reacting to the measured lag does not need the forecast and still goes through the gate.
    for (id, outcome) in &report.outcomes {
        let change = p.changes.iter().find(|c| &c.id == id).unwrap();
        if change.uses_forecast {
            assert!(
                matches!(outcome, ChangeOutcome::Recommended { .. }),
                "{change:?} → {outcome:?}"
            );
        } else {
            assert!(
                matches!(change.action, Action::SetKnobs { .. })
                    && change.reason.summary.contains("measured lag")
                    && matches!(outcome, ChangeOutcome::Applied { .. }),
                "{change:?} → {outcome:?}"
            );
        }
    }
    assert!(
        p.changes.iter().any(|c| c.uses_forecast),
        "the pool forecast plans a move: {p:#?}"
    );
    assert!(
        l.placement.calls().is_empty(),
        "nothing planned on the inaccurate forecast ran: {:?}",
        l.placement.calls()
    );
    let records = tail(&l.state.audit_log(), usize::MAX).unwrap();
    let m = records
        .iter()
        .find(|r| r.kind == AuditKind::Mode)
        .expect("the drop to recommend is audited");
    assert!(
        m.detail["why"].as_str().unwrap_or("").contains("MASE 1.25"),
        "{}",
        m.detail
    );
    // Approved while the forecast is inaccurate, a change planned on it still does not run.
    let (mut log, _) = AuditLog::open(&l.state.audit_log()).unwrap();
    let first = l.executor.proposals().list().unwrap().remove(0);
    let knobs_before = l.knobs.calls().len();
    l.executor
        .proposals()
        .approve(&first.id, "alice", &mut log, NOW + 1)
        .unwrap();
    let ran = within(
        "approved",
        l.executor
            .run_approved(&l.gate, &mode, &obs, &START, NOW + 2),
    )
    .await
    .unwrap();
    assert!(ran.outcomes.is_empty());
    assert!(l.placement.calls().is_empty() && l.knobs.calls().len() == knobs_before);
}
