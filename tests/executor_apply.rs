//! The executor with in-memory actuators: grants, caps, kill switch, rollback, add-before-remove, approvals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trimtab::audit::{tail, AuditKind, AuditLog, AuditRecord};
use trimtab::executor::{
    ApplyOrigin, ChangeOutcome, Executor, ExecutorConfig, MemoryKnobs, MemoryPlacement,
    ProposalStatus, ReplicaView, StateDir, StepReport, WindowStats,
};
use trimtab::planner::{
    change_id, Action, Change, NodeState, Observed, Plan, PoolState, Reason, ReplicaState,
    ResourceState, Settings,
};
use trimtab::policy::{Gate, Mode, ModeDecision};

const NOW: i64 = 1_800_000_000;
const SETTINGS: Settings = Settings {
    batch_rows: 50,
    batch_bytes: 4096,
    concurrency: 4,
    prefetch: 400,
};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn replica(node: &str, in_use: bool) -> ReplicaState {
    ReplicaState {
        node: node.into(),
        pool: "data".into(),
        diskful: true,
        up_to_date: true,
        in_use,
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    state: StateDir,
    placement: Arc<MemoryPlacement>,
    knobs: Arc<MemoryKnobs>,
    executor: Executor,
    gate: Gate,
}

impl Rig {
    fn new(
        config: ExecutorConfig,
        place_count: u32,
        replicas: Vec<ReplicaState>,
        windows: Vec<WindowStats>,
    ) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::new(dir.path().join("state"));
        let (log, torn) = AuditLog::open(&state.audit_log()).expect("open audit log");
        assert!(torn.is_none());
        let resources = BTreeMap::from([(
            "r1".to_string(),
            ReplicaView {
                place_count,
                replicas,
            },
        )]);
        let placement = Arc::new(MemoryPlacement::new(resources, 2));
        let knobs = Arc::new(MemoryKnobs::new(SETTINGS, windows));
        let executor = Executor::new(
            placement.clone(),
            knobs.clone(),
            Arc::new(Mutex::new(log)),
            state.clone(),
            config,
        );
        Rig {
            _dir: dir,
            state,
            placement,
            knobs,
            executor,
            gate: Gate::load(&shipped()),
        }
    }

    /// One executor step over `plan` in `mode` at `at`, against the rig's observed state and [`SETTINGS`].
    async fn step(&self, mode: &ModeDecision, plan: &Plan, at: i64) -> StepReport {
        within(
            "step",
            self.executor
                .run_step(&self.gate, mode, plan, &self.observed(), &SETTINGS, at),
        )
        .await
        .unwrap()
    }

    fn observed(&self) -> Observed {
        let view = self.placement.snapshot("r1").unwrap_or_default();
        Observed {
            nodes: ["n1", "n2", "n3"]
                .iter()
                .map(|n| NodeState {
                    name: n.to_string(),
                    online: true,
                    ..Default::default()
                })
                .collect(),
            pools: ["n1", "n2", "n3"]
                .iter()
                .map(|n| PoolState {
                    node: n.to_string(),
                    name: "data".into(),
                    total_kib: 1000,
                    free_kib: 500,
                })
                .collect(),
            resources: vec![ResourceState {
                name: "r1".into(),
                place_count: view.place_count,
                size_kib: 100,
                replicas: view.replicas,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn audit(&self) -> Vec<AuditRecord> {
        tail(&self.state.audit_log(), usize::MAX).expect("audit log readable")
    }

    fn kinds(&self) -> Vec<AuditKind> {
        self.audit().iter().map(|r| r.kind).collect()
    }
}

fn fast() -> ExecutorConfig {
    ExecutorConfig {
        verify_window_s: 0,
        poll_interval_s: 1,
        up_to_date_timeout_s: 30,
        ..ExecutorConfig::default()
    }
}

fn change(action: Action) -> Change {
    let target = action
        .resource()
        .map_or("pipeline".to_string(), |r| format!("resource:{r}"));
    Change {
        id: change_id(&target, &action),
        target,
        action,
        reason: Reason::default(),
        expected_effect: String::new(),
        uses_forecast: false,
    }
}

fn knob_change(rows: u32) -> Change {
    change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            batch_rows: rows,
            ..SETTINGS
        },
    })
}

fn move_r1(from: &str, to: &str) -> Change {
    change(Action::MoveReplica {
        resource: "r1".into(),
        from_node: from.into(),
        from_pool: "data".into(),
        to_node: to.into(),
        to_pool: "data".into(),
    })
}

fn mode(m: Mode) -> ModeDecision {
    ModeDecision {
        mode: m,
        configured: m,
        why: None,
        forecast_changes_only: false,
    }
}

/// What a knob window measured: p99, capacity shown, mean rows per batch and the share of failed attempts.
fn window(
    p99_ms: f64,
    throughput_rows_per_s: f64,
    mean_rows: f64,
    error_share: f64,
) -> WindowStats {
    WindowStats {
        p99_ms,
        throughput_rows_per_s,
        mean_rows,
        error_share,
        ..WindowStats::default()
    }
}

/// A window that also says how much of its write-slot time was used and the rows it actually wrote per second.
fn window_used(
    throughput_rows_per_s: f64,
    rows_written_per_s: f64,
    slot_share: f64,
) -> WindowStats {
    WindowStats {
        rows_written_per_s: Some(rows_written_per_s),
        slot_share: Some(slot_share),
        ..window(100.0, throughput_rows_per_s, 10.0, 0.0)
    }
}

/// Autonomous configured, dropped to recommend because the forecast is inaccurate (`why`): only changes planned
/// on the forecast are held back.
fn forecast_drop(why: &str) -> ModeDecision {
    ModeDecision {
        mode: Mode::Recommend,
        configured: Mode::Autonomous,
        why: Some(why.into()),
        forecast_changes_only: true,
    }
}

/// Asserts the change was applied and its outcome says `text`.
#[track_caller]
fn applied(out: &ChangeOutcome, text: &str) {
    assert!(
        matches!(out, ChangeOutcome::Applied { detail } if detail.contains(text)),
        "expected applied with {text:?}, got {out:?}"
    );
}

/// Asserts the change was rolled back and its outcome says `text`.
#[track_caller]
fn rolled_back(out: &ChangeOutcome, text: &str) {
    assert!(
        matches!(out, ChangeOutcome::RolledBack { detail } if detail.contains(text)),
        "expected a rollback with {text:?}, got {out:?}"
    );
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out, likely deadlocked"))
}

/// The same change, planned on a forecast (arrival or pool growth) rather than on measurements alone.
fn on_forecast(mut c: Change) -> Change {
    c.uses_forecast = true;
    c
}

#[tokio::test]
async fn a_verb_policy_does_not_grant_never_reaches_an_actuator() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let delete = change(Action::DeleteResource {
        resource: "r1".into(),
    });
    let out = within(
        "apply",
        rig.executor
            .apply(&delete, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    match out {
        ChangeOutcome::Refused { reason } => assert!(
            reason.contains("verb delete_resource is not granted"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        rig.placement.calls().is_empty(),
        "LINSTOR was called: {:?}",
        rig.placement.calls()
    );
    let last = rig.audit().pop().expect("the refusal is audited");
    assert_eq!(last.kind, AuditKind::Refused);
    assert_eq!(last.subject, delete.id);

    // Through a whole step in autonomous mode, the gate denies it first, and it is still never called.
    let plan = Plan {
        changes: vec![delete.clone()],
        ..Plan::default()
    };
    let report = rig.step(&mode(Mode::Autonomous), &plan, NOW).await;
    assert!(
        matches!(
            report.outcome(&delete.id),
            Some(ChangeOutcome::Denied { .. })
        ),
        "{report:?}"
    );
    assert!(rig.placement.calls().is_empty());
}

#[tokio::test]
async fn a_verb_removed_from_the_grants_is_refused_before_any_side_effect() {
    let mut rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["gate.rego", "limits.json"] {
        std::fs::copy(shipped().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("grants.json"),
        r#"{"version": 1, "auto": ["set_knobs"], "approval": [], "never": ["delete_resource"]}"#,
    )
    .unwrap();
    rig.gate = Gate::load(dir.path());
    assert_eq!(rig.gate.load_error(), None);
    let add = change(Action::AddReplica {
        resource: "r1".into(),
        node: "n3".into(),
        pool: "data".into(),
    });
    // Even an approved proposal cannot call a verb that is not granted.
    let origin = ApplyOrigin::Approved {
        proposal: "p1".into(),
        by: "alice".into(),
    };
    let out = within("apply", rig.executor.apply(&add, &rig.gate, origin, NOW))
        .await
        .unwrap();
    assert!(
        matches!(out, ChangeOutcome::Refused { ref reason } if reason.contains("add_replica is not granted")),
        "{out:?}"
    );
    assert!(rig.placement.calls().is_empty());
}

#[tokio::test]
async fn pause_stops_applying_and_resume_lets_it_continue() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    rig.state.pause("ops", "incident 42", NOW).unwrap();
    let c = knob_change(60);
    let out = within(
        "apply",
        rig.executor
            .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    assert!(
        matches!(out, ChangeOutcome::Refused { ref reason } if reason.contains("paused by ops") && reason.contains("incident 42")),
        "{out:?}"
    );
    assert!(rig.knobs.calls().is_empty(), "a knob was set while paused");
    assert!(rig.state.resume().unwrap());
    let out = within(
        "apply",
        rig.executor
            .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    assert_eq!(rig.knobs.settings().batch_rows, 60);
}

#[tokio::test]
async fn changes_per_hour_cap_refuses_the_next_change() {
    let config = ExecutorConfig {
        max_changes_per_hour: 2,
        ..fast()
    };
    let rig = Rig::new(
        config,
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    for rows in [60, 70] {
        let out = within(
            "apply",
            rig.executor
                .apply(&knob_change(rows), &rig.gate, ApplyOrigin::Automatic, NOW),
        )
        .await
        .unwrap();
        assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    }
    let out = within(
        "apply",
        rig.executor.apply(
            &knob_change(80),
            &rig.gate,
            ApplyOrigin::Automatic,
            NOW + 10,
        ),
    )
    .await
    .unwrap();
    assert!(
        matches!(out, ChangeOutcome::Refused { ref reason } if reason == "changes in the last hour 3 exceed limit 2"),
        "{out:?}"
    );
    assert_eq!(rig.knobs.settings().batch_rows, 70);
    // An hour later the window has moved on.
    let out = within(
        "apply",
        rig.executor.apply(
            &knob_change(80),
            &rig.gate,
            ApplyOrigin::Automatic,
            NOW + 3601,
        ),
    )
    .await
    .unwrap();
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
}

#[tokio::test]
async fn concurrent_moves_cap_refuses_a_second_move_while_one_runs() {
    let config = ExecutorConfig {
        max_concurrent_moves: 1,
        ..fast()
    };
    let rig = Rig::new(
        config,
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let first = move_r1("n1", "n3");
    let second = move_r1("n2", "n3");
    let origin = ApplyOrigin::Approved {
        proposal: "p".into(),
        by: "alice".into(),
    };
    let (a, b) = within("two moves", async {
        tokio::join!(
            rig.executor.apply(&first, &rig.gate, origin.clone(), NOW),
            async {
                // Start once the first move is waiting for its new replica to sync.
                tokio::time::sleep(Duration::from_millis(300)).await;
                rig.executor
                    .apply(&second, &rig.gate, origin.clone(), NOW)
                    .await
            }
        )
    })
    .await;
    assert!(matches!(a.unwrap(), ChangeOutcome::Applied { .. }));
    let b = b.unwrap();
    assert!(
        matches!(b, ChangeOutcome::Refused { ref reason } if reason == "concurrent moves 2 exceed limit 1"),
        "{b:?}"
    );
}

/// Applies `change` automatically on a rig whose knob windows measure `windows` (before, after).
async fn apply_over(windows: Vec<WindowStats>, change: &Change) -> (ChangeOutcome, Rig) {
    let rig = Rig::new(fast(), 2, vec![], windows);
    let out = within(
        "apply",
        rig.executor
            .apply(change, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    (out, rig)
}

#[tokio::test]
async fn relief_for_a_queueing_node_is_judged_on_p99_and_tolerates_a_throughput_wobble() {
    // p99 halves while throughput, following the load of the moment, reads 30 % lower.
    let windows = || {
        vec![
            window(500.0, 400.0, 0.0, 0.0),
            window(250.0, 280.0, 0.0, 0.0),
        ]
    };
    let fewer_in_flight = |relief: bool| {
        let mut c = change(Action::SetKnobs {
            from: SETTINGS,
            to: Settings {
                concurrency: SETTINGS.concurrency / 2,
                ..SETTINGS
            },
        });
        if relief {
            c.reason.figures.insert("relief_of_p99_ms".into(), 500.0);
        }
        c
    };
    // The window before the change caught a lull (p99 200 ms) while the plan measured 500 ms over many batches:
    // relief is judged against the plan's figure, so 250 ms after the change is better, not worse.
    let lull_before = || {
        vec![
            window(200.0, 400.0, 0.0, 0.0),
            window(250.0, 400.0, 0.0, 0.0),
        ]
    };
    let (out, _) = apply_over(lull_before(), &fewer_in_flight(true)).await;
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    let (out, _) = apply_over(lull_before(), &fewer_in_flight(false)).await;
    assert!(
        matches!(&out, ChangeOutcome::RolledBack { detail } if detail.contains("p99 250.0 ms worse than 200.0 ms")),
        "without the plan's figure the lull is the baseline: {out:?}"
    );
    for (relief, expect_applied) in [(true, true), (false, false)] {
        let (out, rig) = apply_over(windows(), &fewer_in_flight(relief)).await;
        if expect_applied {
            assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
            assert_eq!(rig.knobs.settings().concurrency, SETTINGS.concurrency / 2);
        } else {
            assert!(
                matches!(&out, ChangeOutcome::RolledBack { detail } if detail.contains("throughput 280 rows/s worse")),
                "without the relief figure the 5 % tolerance applies: {out:?}"
            );
            assert_eq!(rig.knobs.settings(), SETTINGS);
        }
    }
}

/// Fewer writes in flight on a node that was timing writes out: the writes that used to time out now succeed,
/// slowly, so the p99 of the successes rises while the error share falls from 30 % to 2 %. That is relief working.
#[tokio::test]
async fn relief_that_turns_timeouts_into_successes_is_kept_although_p99_rose() {
    let windows = |after_errors: f64| {
        vec![
            window(500.0, 300.0, 10.0, 0.30),
            WindowStats {
                p99_ms: 560.0,
                throughput_rows_per_s: 300.0,
                mean_rows: 10.0,
                error_share: after_errors,
                ..WindowStats::default()
            },
        ]
    };
    let mut relief = change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            concurrency: SETTINGS.concurrency / 2,
            ..SETTINGS
        },
    });
    relief
        .reason
        .figures
        .insert("relief_of_p99_ms".into(), 500.0);
    let (out, rig) = apply_over(windows(0.02), &relief).await;
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    assert_eq!(rig.knobs.settings().concurrency, SETTINGS.concurrency / 2);
    // Errors barely moved: the higher p99 is the change's doing.
    let (out, _) = apply_over(windows(0.25), &relief).await;
    rolled_back(&out, "p99 560.0 ms worse");
}

/// A burst ends while a change is verified: batches go from 14 rows to 4, and the capacity they show falls with
/// them. Fewer writes in flight is then judged on p99 alone; a smaller batch cap, which changes the fill on
/// purpose, is still judged on throughput.
#[tokio::test]
async fn throughput_is_compared_only_when_the_load_held() {
    let burst_ended = || {
        vec![
            window(500.0, 500.0, 14.0, 0.0),
            window(180.0, 160.0, 4.0, 0.0),
        ]
    };
    let fewer_in_flight = change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            concurrency: SETTINGS.concurrency / 2,
            ..SETTINGS
        },
    });
    let (out, rig) = apply_over(burst_ended(), &fewer_in_flight).await;
    applied(
        &out,
        "throughput not compared, the load changed: 14.0 rows per batch before, 4.0 after",
    );
    assert_eq!(rig.knobs.settings().concurrency, SETTINGS.concurrency / 2);

    let smaller_batches = change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            batch_rows: SETTINGS.batch_rows / 4,
            ..SETTINGS
        },
    });
    let (out, rig) = apply_over(burst_ended(), &smaller_batches).await;
    rolled_back(&out, "throughput 160 rows/s worse than 500 rows/s");
    assert_eq!(rig.knobs.settings(), SETTINGS);

    // The same fall in throughput at the same fill is the setting's doing.
    let same_load = vec![
        window(500.0, 500.0, 14.0, 0.0),
        window(180.0, 160.0, 13.0, 0.0),
    ];
    let (out, _) = apply_over(same_load, &fewer_in_flight).await;
    rolled_back(&out, "throughput 160 rows/s worse");
}

#[tokio::test]
async fn capacity_is_judged_only_where_the_write_slots_were_in_use() {
    let fewer_in_flight = change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            concurrency: SETTINGS.concurrency / 4,
            ..SETTINGS
        },
    });
    // Before: 32 writes allowed, 2 running, 300 rows/s written; its "capacity" of 900 rows/s counts slots it never
    // used. After: a quarter of the slots, half of them used, the same 300 rows/s: it kept up, nothing is lost.
    let kept_up = vec![
        window_used(900.0, 300.0, 0.1),
        window_used(320.0, 300.0, 0.5),
    ];
    let (out, rig) = apply_over(kept_up, &fewer_in_flight).await;
    applied(&out, "kept up with write slots to spare (50 % used)");
    assert_eq!(rig.knobs.settings().concurrency, SETTINGS.concurrency / 4);

    // After: every slot busy and only 200 rows/s of capacity against the 300 rows/s written before: the setting
    // cannot carry the load it replaced.
    let short = vec![
        window_used(900.0, 300.0, 0.1),
        window_used(200.0, 200.0, 0.95),
    ];
    let (out, rig) = apply_over(short, &fewer_in_flight).await;
    rolled_back(
        &out,
        "throughput 200 rows/s worse than 300 rows/s written before",
    );
    assert_eq!(rig.knobs.settings(), SETTINGS);

    // Both ran full: capacity against capacity, as before.
    let both_full = vec![
        window_used(900.0, 880.0, 0.97),
        window_used(400.0, 400.0, 0.97),
    ];
    let (out, _) = apply_over(both_full, &fewer_in_flight).await;
    rolled_back(&out, "throughput 400 rows/s worse than 900 rows/s before");
}

#[tokio::test]
async fn more_writes_in_flight_that_kept_up_pay_for_a_p99_rise_within_the_objective() {
    // A probe for a capacity shortfall: twice the writes in flight, planned under a p99 objective of 250 ms.
    let mut more_in_flight = change(Action::SetKnobs {
        from: SETTINGS,
        to: Settings {
            concurrency: SETTINGS.concurrency * 2,
            ..SETTINGS
        },
    });
    more_in_flight.reason.figures = BTreeMap::from([("p99_objective_ms".to_string(), 250.0)]);
    let at = |p99_ms: f64, w: WindowStats| WindowStats { p99_ms, ..w };
    // Before: every slot busy at 50 ms. After: p99 86 ms, a quarter of the slots idle, the same rows written,
    // so its capacity figure cannot show the gain. It kept up within the objective: applied.
    let kept_up = vec![
        at(50.0, window_used(280.0, 275.0, 0.97)),
        at(86.0, window_used(290.0, 280.0, 0.76)),
    ];
    let (out, rig) = apply_over(kept_up, &more_in_flight).await;
    applied(&out, "p99 50.0 → 86.0 ms");
    assert_eq!(rig.knobs.settings().concurrency, SETTINGS.concurrency * 2);

    // The same rise past the objective is not paid for.
    let past_objective = vec![
        at(50.0, window_used(280.0, 275.0, 0.97)),
        at(260.0, window_used(290.0, 280.0, 0.76)),
    ];
    let (out, rig) = apply_over(past_objective, &more_in_flight).await;
    rolled_back(&out, "p99 260.0 ms worse than 50.0 ms");
    assert_eq!(rig.knobs.settings(), SETTINGS);

    // Nor is it when the new setting ran full without writing more: it bought nothing.
    let ran_full = vec![
        at(50.0, window_used(280.0, 275.0, 0.97)),
        at(86.0, window_used(285.0, 280.0, 0.97)),
    ];
    let (out, _) = apply_over(ran_full, &more_in_flight).await;
    rolled_back(&out, "p99 86.0 ms worse than 50.0 ms");
}

#[tokio::test]
async fn a_knob_change_that_worsens_p99_is_rolled_back_and_audited() {
    let windows = vec![
        window(20.0, 1000.0, 0.0, 0.0),
        window(35.0, 1010.0, 0.0, 0.0),
    ];
    let rig = Rig::new(fast(), 2, vec![], windows);
    let c = knob_change(200);
    let out = within(
        "apply",
        rig.executor
            .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    match &out {
        ChangeOutcome::RolledBack { detail } => assert!(
            detail.contains("p99 35.0 ms worse than 20.0 ms"),
            "{detail}"
        ),
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(rig.knobs.settings(), SETTINGS, "the old knobs must be back");
    assert_eq!(
        rig.knobs.calls().first().map(String::as_str),
        Some("batch_rows=200")
    );
    assert!(
        rig.knobs.calls().contains(&"batch_rows=50".to_string()),
        "{:?}",
        rig.knobs.calls()
    );
    let kinds = rig.kinds();
    let start = kinds
        .iter()
        .position(|k| *k == AuditKind::ApplyStart)
        .expect("apply start audited");
    let rollback = kinds
        .iter()
        .position(|k| *k == AuditKind::Rollback)
        .expect("rollback audited");
    let outcome = kinds
        .iter()
        .position(|k| *k == AuditKind::ApplyOutcome)
        .expect("outcome audited");
    assert!(start < rollback && rollback < outcome, "{kinds:?}");
}

#[tokio::test]
async fn a_knob_change_that_helps_stays() {
    let windows = vec![
        window(20.0, 1000.0, 0.0, 0.0),
        window(18.0, 1400.0, 0.0, 0.0),
    ];
    let rig = Rig::new(fast(), 2, vec![], windows);
    let out = within(
        "apply",
        rig.executor
            .apply(&knob_change(100), &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    applied(&out, "1000 → 1400");
    assert_eq!(rig.knobs.settings().batch_rows, 100);
    assert!(!rig.kinds().contains(&AuditKind::Rollback));
}

#[tokio::test]
async fn a_move_adds_first_waits_for_up_to_date_then_removes_the_source() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let m = move_r1("n1", "n3");
    let origin = ApplyOrigin::Approved {
        proposal: "p".into(),
        by: "alice".into(),
    };
    let out = within("move", rig.executor.apply(&m, &rig.gate, origin, NOW))
        .await
        .unwrap();
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    let calls = rig.placement.calls();
    let add = calls
        .iter()
        .position(|c| c == "add_replica r1 n3 data")
        .expect("added on the target");
    let remove = calls
        .iter()
        .position(|c| c == "remove_replica r1 n1")
        .expect("removed from the source");
    assert!(add < remove, "{calls:?}");
    // The replica state was read until the new replica was UpToDate (it syncs after two reads).
    assert!(
        calls[add..remove]
            .iter()
            .filter(|c| c.starts_with("replicas"))
            .count()
            >= 2,
        "{calls:?}"
    );
    let nodes: Vec<String> = rig
        .placement
        .snapshot("r1")
        .unwrap()
        .replicas
        .into_iter()
        .map(|r| r.node)
        .collect();
    assert_eq!(nodes, vec!["n2", "n3"]);
    let phases: Vec<String> = rig
        .audit()
        .into_iter()
        .filter(|r| r.kind == AuditKind::ApplyStart)
        .map(|r| r.detail["phase"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(phases, vec!["add_target", "remove_source"]);
}

#[tokio::test]
async fn a_move_never_goes_below_the_place_count_nor_removes_a_replica_in_use() {
    // Place count 3 with two replicas: after adding n3, removing n1 would leave 2 < 3.
    let rig = Rig::new(
        fast(),
        3,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let origin = ApplyOrigin::Approved {
        proposal: "p".into(),
        by: "alice".into(),
    };
    let out = within(
        "move",
        rig.executor
            .apply(&move_r1("n1", "n3"), &rig.gate, origin.clone(), NOW),
    )
    .await
    .unwrap();
    assert!(
        matches!(out, ChangeOutcome::Failed { ref error } if error.contains("below place count 3")),
        "{out:?}"
    );
    assert!(!rig
        .placement
        .calls()
        .iter()
        .any(|c| c.starts_with("remove_replica")));

    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", true), replica("n2", false)],
        vec![],
    );
    let out = within(
        "move",
        rig.executor
            .apply(&move_r1("n1", "n3"), &rig.gate, origin, NOW),
    )
    .await
    .unwrap();
    assert!(
        matches!(out, ChangeOutcome::Failed { ref error } if error.contains("in use")),
        "{out:?}"
    );
    assert!(!rig
        .placement
        .calls()
        .iter()
        .any(|c| c.starts_with("remove_replica")));
}

#[tokio::test]
async fn an_inaccurate_forecast_holds_back_only_the_changes_planned_on_it() {
    let rig = Rig::new(fast(), 2, vec![], vec![]);
    let measured = knob_change(60);
    let add = on_forecast(change(Action::AddReplica {
        resource: "r1".into(),
        node: "n3".into(),
        pool: "data".into(),
    }));
    let plan = Plan {
        changes: vec![measured.clone(), add.clone()],
        ..Plan::default()
    };
    let dropped = forecast_drop("dropped to recommend: rolling MASE 1.40");
    let report = rig.step(&dropped, &plan, NOW).await;
    assert!(
        matches!(
            report.outcome(&measured.id),
            Some(ChangeOutcome::Applied { .. })
        ),
        "a knob change made on measured lag and latency needs no forecast: {report:?}"
    );
    assert!(
        matches!(
            report.outcome(&add.id),
            Some(ChangeOutcome::Recommended { .. })
        ),
        "a change planned on the forecast waits while the forecast is inaccurate: {report:?}"
    );
    assert_eq!(rig.knobs.settings().batch_rows, 60);
    assert!(
        !rig.placement
            .calls()
            .iter()
            .any(|c| c.starts_with("add_replica")),
        "{:?}",
        rig.placement.calls()
    );
}

#[tokio::test]
async fn recommend_mode_records_proposals_and_applies_nothing() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let add = change(Action::AddReplica {
        resource: "r1".into(),
        node: "n3".into(),
        pool: "data".into(),
    });
    // Changes planned on a forecast: the drop to recommend holds them back.
    let plan = Plan {
        changes: vec![
            on_forecast(knob_change(60)),
            on_forecast(add.clone()),
            on_forecast(move_r1("n1", "n3")),
        ],
        ..Plan::default()
    };
    let m = forecast_drop("dropped to recommend: rolling MASE 1.20");
    let report = rig.step(&m, &plan, NOW).await;
    assert!(
        report
            .outcomes
            .iter()
            .all(|(_, o)| matches!(o, ChangeOutcome::Recommended { .. })),
        "{report:?}"
    );
    assert!(
        rig.placement.calls().is_empty() && rig.knobs.calls().is_empty(),
        "recommend mode applied something"
    );
    assert_eq!(rig.executor.proposals().list().unwrap().len(), 3);
    let audit = rig.audit();
    let mode_record = audit
        .iter()
        .find(|r| r.kind == AuditKind::Mode)
        .expect("the mode drop is audited");
    assert_eq!(
        mode_record.detail["why"],
        "dropped to recommend: rolling MASE 1.20"
    );
    assert!(!audit.iter().any(|r| r.kind == AuditKind::ApplyStart));
}

#[tokio::test]
async fn an_approved_move_runs_exactly_as_approved_and_a_drifted_one_expires() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let m = move_r1("n1", "n3");
    let plan = Plan {
        changes: vec![m.clone()],
        ..Plan::default()
    };
    let auto = mode(Mode::Autonomous);
    let report = rig.step(&auto, &plan, NOW).await;
    let Some(ChangeOutcome::Queued { proposal }) = report.outcome(&m.id).cloned() else {
        panic!("the default policy should queue a move: {report:?}")
    };
    assert!(rig.placement.calls().is_empty());
    let in_flight = rig.executor.proposals().in_flight_targets().unwrap();
    assert!(in_flight.contains("resource:r1"), "{in_flight:?}");
    // Planning the same change again does not queue it twice.
    let again = rig.step(&auto, &plan, NOW + 60).await;
    assert_eq!(
        again.outcome(&m.id),
        Some(&ChangeOutcome::Queued {
            proposal: proposal.clone()
        })
    );

    let store = rig.executor.proposals();
    let (mut log, _) = AuditLog::open(&rig.state.audit_log()).unwrap();
    store
        .approve(&proposal, "alice", &mut log, NOW + 100)
        .unwrap();
    let approval = rig
        .audit()
        .into_iter()
        .find(|r| r.kind == AuditKind::Approval)
        .expect("approval audited");
    assert_eq!(approval.actor, "alice");

    let ran = within(
        "approved",
        rig.executor
            .run_approved(&rig.gate, &auto, &rig.observed(), &SETTINGS, NOW + 200),
    )
    .await
    .unwrap();
    assert!(
        matches!(ran.outcome(&m.id), Some(ChangeOutcome::Applied { .. })),
        "{ran:?}"
    );
    let calls = rig.placement.calls();
    assert!(
        calls.iter().position(|c| c == "add_replica r1 n3 data")
            < calls.iter().position(|c| c == "remove_replica r1 n1")
    );
    assert!(matches!(
        store.get(&proposal).unwrap().status,
        ProposalStatus::Applied { .. }
    ));

    // A second move, approved, but the resource changed under it before it ran: it expires, nothing is called.
    let m2 = move_r1("n2", "n1");
    let plan = Plan {
        changes: vec![m2.clone()],
        ..Plan::default()
    };
    let report = rig.step(&auto, &plan, NOW + 300).await;
    let Some(ChangeOutcome::Queued { proposal: p2 }) = report.outcome(&m2.id).cloned() else {
        panic!("{report:?}")
    };
    store.approve(&p2, "bob", &mut log, NOW + 310).unwrap();
    let mut drifted = rig.observed();
    drifted.resources[0].replicas.push(replica("n4", false));
    let before = rig.placement.calls().len();
    let ran = within(
        "approved",
        rig.executor
            .run_approved(&rig.gate, &auto, &drifted, &SETTINGS, NOW + 320),
    )
    .await
    .unwrap();
    assert!(
        matches!(ran.outcome(&m2.id), Some(ChangeOutcome::Expired { .. })),
        "{ran:?}"
    );
    assert_eq!(
        rig.placement.calls().len(),
        before,
        "an expired proposal must not run"
    );
    assert!(rig.kinds().contains(&AuditKind::Expired));
}

#[tokio::test]
async fn a_proposal_edited_after_approval_is_refused() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let m = move_r1("n1", "n3");
    let auto = mode(Mode::Autonomous);
    let plan = Plan {
        changes: vec![m.clone()],
        ..Plan::default()
    };
    let report = rig.step(&auto, &plan, NOW).await;
    let Some(ChangeOutcome::Queued { proposal }) = report.outcome(&m.id).cloned() else {
        panic!("{report:?}")
    };
    let (mut log, _) = AuditLog::open(&rig.state.audit_log()).unwrap();
    rig.executor
        .proposals()
        .approve(&proposal, "alice", &mut log, NOW + 1)
        .unwrap();
    let file = rig.state.proposals_dir().join(format!("{proposal}.json"));
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("\"to_node\": \"n3\"", "\"to_node\": \"n9\"");
    std::fs::write(&file, text).unwrap();
    let ran = within(
        "approved",
        rig.executor
            .run_approved(&rig.gate, &auto, &rig.observed(), &SETTINGS, NOW + 2),
    )
    .await
    .unwrap();
    let outcome = ran.outcomes.first().map(|(_, o)| o.clone());
    assert!(
        matches!(outcome, Some(ChangeOutcome::Refused { ref reason }) if reason.contains("changed after it was proposed")),
        "{ran:?}"
    );
    assert!(
        rig.placement.calls().is_empty(),
        "a tampered proposal reached LINSTOR"
    );
}

#[tokio::test]
async fn p99_is_judged_against_what_the_plan_expected_as_well_as_before() {
    let windows = |after: f64| {
        vec![
            window(10.0, 1000.0, 0.0, 0.0),
            WindowStats {
                p99_ms: after,
                throughput_rows_per_s: 2500.0,
                ..Default::default()
            },
        ]
    };
    let mut c = knob_change(100);
    c.reason.figures.insert("chosen_p99_ms".into(), 25.0);
    // Up to the p99 the plan measured for the new setting, a rise is the price of the throughput it buys.
    let rig = Rig::new(fast(), 2, vec![], windows(24.0));
    let out = within(
        "apply",
        rig.executor
            .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    // Beyond it, the change is rolled back.
    let rig = Rig::new(fast(), 2, vec![], windows(40.0));
    let out = within(
        "apply",
        rig.executor
            .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    rolled_back(
        &out,
        "p99 40.0 ms worse than 10.0 ms before and 25.0 ms expected",
    );
    assert_eq!(rig.knobs.settings(), SETTINGS);
}

#[tokio::test]
async fn a_recommendation_is_superseded_by_a_newer_plan_and_applied_once_autonomous() {
    let rig = Rig::new(fast(), 2, vec![], vec![]);
    let recommend = ModeDecision {
        mode: Mode::Recommend,
        configured: Mode::Autonomous,
        why: Some("dropped to recommend: 3 observations of history, fewer than 48".into()),
        forecast_changes_only: false,
    };
    let rig = &rig;
    let step = |c: &Change, m: &ModeDecision, at: i64| {
        let plan = Plan {
            changes: vec![c.clone()],
            ..Plan::default()
        };
        let observed = rig.observed();
        let m = m.clone();
        async move {
            within(
                "step",
                rig.executor
                    .run_step(&rig.gate, &m, &plan, &observed, &SETTINGS, at),
            )
            .await
            .unwrap()
        }
    };
    let first = on_forecast(knob_change(60));
    let second = on_forecast(knob_change(70));
    step(&first, &recommend, NOW).await;
    // Open recommendations are advice: they do not hold the target back from planning.
    assert!(rig
        .executor
        .proposals()
        .in_flight_targets()
        .unwrap()
        .is_empty());
    step(&second, &recommend, NOW + 2).await;
    let status_of = |c: &Change| {
        rig.executor
            .proposals()
            .list()
            .unwrap()
            .into_iter()
            .find(|p| p.change.id == c.id)
            .map(|p| p.status)
            .unwrap()
    };
    assert!(
        matches!(status_of(&first), ProposalStatus::Expired { ref reason, .. } if reason.contains(&second.id)),
        "{:?}",
        status_of(&first)
    );
    assert_eq!(status_of(&second), ProposalStatus::Recommended);
    assert!(rig.knobs.calls().is_empty());

    // Autonomous now: the same change is gated again and, allowed, applied; its recommendation says so.
    let report = step(&second, &mode(Mode::Autonomous), NOW + 4).await;
    assert!(
        matches!(
            report.outcome(&second.id),
            Some(ChangeOutcome::Applied { .. })
        ),
        "{report:?}"
    );
    assert_eq!(rig.knobs.settings().batch_rows, 70);
    assert!(matches!(status_of(&second), ProposalStatus::Applied { .. }));
    let kinds = rig.kinds();
    assert!(kinds.contains(&AuditKind::Expired) && kinds.contains(&AuditKind::ApplyStart));
}

#[tokio::test]
async fn a_start_without_an_outcome_is_reconciled_once_from_what_the_actuators_report() {
    let rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    // A previous process audited the start of two changes and stopped before either outcome.
    let add = change(Action::AddReplica {
        resource: "r1".into(),
        node: "n3".into(),
        pool: "data".into(),
    });
    let knobs = knob_change(80);
    for c in [&add, &knobs] {
        rig.executor
            .audit(
                AuditKind::ApplyStart,
                "executor",
                &c.id,
                serde_json::json!({ "change": c, "phase": "apply" }),
            )
            .unwrap();
    }
    let found = within("reconcile", rig.executor.reconcile_interrupted())
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let text = |id: &str| match found.iter().find(|(c, _)| c == id) {
        Some((_, ChangeOutcome::Interrupted { found })) => found.clone(),
        other => panic!("no interrupted outcome for {id}: {other:?}"),
    };
    assert!(
        text(&add.id).contains("replica of r1 on n3 is absent"),
        "{}",
        text(&add.id)
    );
    assert!(
        text(&knobs.id).contains("old setting: not applied"),
        "{}",
        text(&knobs.id)
    );
    assert!(
        rig.placement
            .calls()
            .iter()
            .all(|c| c.starts_with("replicas "))
            && rig.knobs.calls().is_empty(),
        "reconciling must only read: {:?} {:?}",
        rig.placement.calls(),
        rig.knobs.calls()
    );
    let outcomes: Vec<_> = rig
        .audit()
        .into_iter()
        .filter(|r| r.kind == AuditKind::ApplyOutcome)
        .collect();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes
        .iter()
        .all(|r| r.detail["outcome"] == "interrupted"));
    // Reconciled once: a second start of the process finds nothing left.
    let again = within("reconcile again", rig.executor.reconcile_interrupted())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test]
async fn a_p99_rise_within_the_objective_that_bought_throughput_is_kept() {
    let windows = |after_p99: f64, after_rows: f64| {
        vec![
            window(31.0, 500.0, 0.0, 0.0),
            WindowStats {
                p99_ms: after_p99,
                throughput_rows_per_s: after_rows,
                ..Default::default()
            },
        ]
    };
    let mut c = knob_change(100);
    c.reason.figures.insert("chosen_p99_ms".into(), 20.0);
    c.reason.figures.insert("p99_objective_ms".into(), 50.0);
    let run = |w| {
        let rig = Rig::new(fast(), 2, vec![], w);
        let c = c.clone();
        async move {
            let out = within(
                "apply",
                rig.executor
                    .apply(&c, &rig.gate, ApplyOrigin::Automatic, NOW),
            )
            .await
            .unwrap();
            (out, rig.knobs.settings())
        }
    };
    // 31 → 35 ms under the 50 ms objective, for four times the capacity: kept.
    let (out, now) = run(windows(35.0, 2000.0)).await;
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
    assert_eq!(now.batch_rows, 100);
    // The same rise without more throughput: rolled back.
    let (out, now) = run(windows(35.0, 505.0)).await;
    assert!(matches!(out, ChangeOutcome::RolledBack { .. }), "{out:?}");
    assert_eq!(now, SETTINGS);
    // More throughput, but p99 over the objective: rolled back.
    let (out, now) = run(windows(60.0, 2000.0)).await;
    rolled_back(&out, "p99 60.0 ms worse than 31.0 ms");
    assert_eq!(now, SETTINGS);
}

#[tokio::test]
async fn a_failed_policy_reload_is_audited_and_the_old_policy_keeps_deciding() {
    let mut rig = Rig::new(
        fast(),
        2,
        vec![replica("n1", false), replica("n2", false)],
        vec![],
    );
    let dir = tempfile::tempdir().unwrap();
    for f in ["gate.rego", "grants.json", "limits.json"] {
        std::fs::copy(shipped().join(f), dir.path().join(f)).unwrap();
    }
    rig.gate = Gate::load(dir.path());
    let digest = rig.gate.digest().unwrap().to_string();
    std::fs::write(dir.path().join("grants.json"), "{ not json").unwrap();
    let result = rig.executor.reload_policy(&mut rig.gate).unwrap();
    assert!(result.is_err());
    let record = rig.audit().pop().unwrap();
    assert_eq!(record.kind, AuditKind::Policy);
    assert_eq!(record.detail["reloaded"], false);
    assert_eq!(record.detail["kept_digest"], digest.as_str());
    assert!(
        record.detail["error"]
            .as_str()
            .unwrap()
            .contains("grants.json"),
        "{}",
        record.detail
    );
    let out = within(
        "apply",
        rig.executor
            .apply(&knob_change(60), &rig.gate, ApplyOrigin::Automatic, NOW),
    )
    .await
    .unwrap();
    assert!(matches!(out, ChangeOutcome::Applied { .. }), "{out:?}");
}
