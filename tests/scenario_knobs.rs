//! Knob scenarios over the wire: a replayed burst through the real pipeline makes lag spike past its objective;
//! autonomous mode applies and audits the capacity change it calls for, recommend mode records it and changes
//! nothing.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use trimtab::audit::{AuditKind, AuditRecord};
use trimtab::executor::ProposalStatus;
use trimtab::pipeline::Knobs;
use trimtab::planner::{Action, Change};
use trimtab::policy::Mode;

/// The setting the pipeline runs with: 8-row batches, two in flight, at most 256 messages held. Enough for the
/// steady traffic, not for the burst with Cassandra 20 ms away.
fn small() -> Knobs {
    Knobs {
        batch_rows: 8,
        batch_bytes: 5120,
        write_concurrency: 2,
        prefetch: 128,
        max_in_flight: 256,
    }
}

/// The larger setting an operator tried for a few seconds, so the agent has measured it: a quarter step up in
/// each knob, the largest that policy allows without a person (`max_knob_step_ratio` 4 in `policies/limits.json`).
fn large() -> Knobs {
    Knobs {
        batch_rows: 32,
        write_concurrency: 8,
        ..small()
    }
}

/// Every CQL request reaches the server this much later: a batch costs about this long whatever its size, so
/// 8-row batches two at a time carry about 800 rows a second.
const CQL_LATENCY_MS: u64 = 20;

/// Limits under which only a shortfall of capacity moves the knobs: a switch for throughput alone would need
/// more than a thousandfold gain, so the change the burst produces is the burst's doing.
///
/// The p99 objective is where the stand-ins meet it on a shared two-core machine under the burst (a 32-row batch
/// takes 30 to 90 ms there), so the rollback judges the control loop, not the machine.
fn limits() -> trimtab::planner::Limits {
    trimtab::planner::Limits {
        lag_objective_s: 2.0,
        switch_gain: 1000.0,
        p99_objective_ms: 250.0,
        ..test_limits()
    }
}

/// The two scenarios each load the machine with a burst; run together they would measure each other.
static ONE_BURST_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the agent in `mode` on `small()`, runs steady periodic traffic with a short excursion to `large()` so
/// both settings are measured, and waits until the agent has the history autonomy needs. The steady traffic goes
/// on until the returned token is cancelled.
async fn warmed_up(
    mode: Mode,
    stream: &'static str,
) -> (
    Harness,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let h = Harness::start(Options {
        mode,
        knobs: small(),
        limits: limits(),
        cql_latency_ms: CQL_LATENCY_MS,
        ..Options::default()
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = h.periodic_traffic(stream, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.knobs.set(large()).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.knobs.set(small()).unwrap();
    match mode {
        Mode::Autonomous => h.until_autonomous(Duration::from_secs(120)).await,
        // Recommend mode never turns autonomous: wait for as much history as autonomy would have needed.
        Mode::Recommend => {
            let agent = h.agent();
            tokio::time::timeout(Duration::from_secs(120), async {
                while !agent.snapshot().forecasts.iter().any(|f| {
                    f.key.name == "arrival_rate"
                        && f.history_points >= limits().min_history_points as usize
                        && f.accuracy
                            .as_ref()
                            .is_some_and(|a| a.rolling_mase.is_some())
                }) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
            .await
            .expect("the agent never scored a forecast in recommend mode");
        }
    }
    let measured = h
        .agent()
        .snapshot()
        .collected
        .map(|c| c.batches.keys().copied().collect::<Vec<_>>())
        .unwrap_or_default();
    assert!(
        measured.contains(&(8, 2)) && measured.contains(&(32, 8)),
        "both settings must be measured before the burst: {measured:?}"
    );
    (h, stop, traffic)
}

/// The replayed burst: 30 rounds of 750 events, one every 500 ms (1,500 a second for 15 s, against about 20 a
/// second before).
async fn burst(h: &Harness, stream: &str) {
    for round in 0..30 {
        h.send_events(750, stream, &format!("burst{round}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_lag_change(change: &Change) -> bool {
    matches!(change.action, Action::SetKnobs { from, .. } if (from.batch_rows, from.concurrency) == (8, 2))
        && change.reason.summary.contains("below required")
}

fn change_of(r: &AuditRecord) -> Option<Change> {
    let value = match r.kind {
        AuditKind::ApplyStart => r.detail.get("change")?.clone(),
        AuditKind::Proposal => r.detail.clone(),
        _ => return None,
    };
    serde_json::from_value(value).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_makes_autonomous_mode_apply_and_audit_a_capacity_change() {
    let _alone = ONE_BURST_AT_A_TIME.lock().await;
    let (h, steady, traffic) = warmed_up(Mode::Autonomous, "orders-b").await;
    assert_eq!(
        h.knobs.get(),
        small(),
        "the steady traffic alone moved the knobs"
    );
    let sender = {
        let h = &h;
        async move { burst(h, "orders-b").await }
    };
    let watch = h.until_audit(Duration::from_secs(90), "an applied knob change", |rs| {
        rs.iter().any(|start| {
            start.kind == AuditKind::ApplyStart
                && change_of(start).is_some_and(|c| is_lag_change(&c))
                && rs
                    .iter()
                    .any(|o| o.kind == AuditKind::ApplyOutcome && o.subject == start.subject)
        })
    });
    let ((), records) = tokio::join!(sender, watch);

    let start = records
        .iter()
        .find(|r| {
            r.kind == AuditKind::ApplyStart && change_of(r).is_some_and(|c| is_lag_change(&c))
        })
        .unwrap();
    let outcome = records
        .iter()
        .find(|r| r.kind == AuditKind::ApplyOutcome && r.subject == start.subject)
        .unwrap();
    let proposal = records
        .iter()
        .rfind(|r| r.kind == AuditKind::Proposal && r.subject == start.subject && r.seq < start.seq)
        .expect("the change was audited as a proposal before it started");
    let decision = records
        .iter()
        .rfind(|r| r.kind == AuditKind::Decision && r.subject == start.subject && r.seq < start.seq)
        .expect("the gate's decision was audited before the change started");
    assert_eq!(decision.detail["verdict"], "allow", "{}", decision.detail);
    assert!(proposal.seq < decision.seq && decision.seq < start.seq && start.seq < outcome.seq);
    assert_eq!(outcome.detail["outcome"], "applied", "{}", outcome.detail);

    let change = change_of(start).unwrap();
    let Action::SetKnobs { to, .. } = change.action else {
        unreachable!()
    };
    assert!(
        u64::from(to.batch_rows) * u64::from(to.concurrency) > 16,
        "no more capacity: {to:?}"
    );
    let figures = &change.reason.figures;
    assert!(
        figures["required_rows_per_s"] > figures["current_rows_per_s"],
        "the change must answer a capacity shortfall: {figures:?}"
    );
    // The pipeline runs the new knobs, or a later step from them: while the burst lasts and capacity is still
    // short, the planner may probe further up (more in flight) once the cooldown has passed.
    let now = h.knobs.get();
    assert!(
        (now.batch_rows, now.write_concurrency) == (to.batch_rows, to.concurrency)
            || u64::from(now.batch_rows) * u64::from(now.write_concurrency)
                > u64::from(to.batch_rows) * u64::from(to.concurrency),
        "the pipeline runs {now:?}, neither the applied {to:?} nor a step up from it"
    );
    steady.cancel();
    traffic.await.ok();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_burst_in_recommend_mode_applies_nothing() {
    let _alone = ONE_BURST_AT_A_TIME.lock().await;
    let (h, steady, traffic) = warmed_up(Mode::Recommend, "orders-c").await;
    let before = h.knobs.get();
    assert_eq!(before, small());
    let sender = {
        let h = &h;
        async move { burst(h, "orders-c").await }
    };
    let watch = h.until_audit(Duration::from_secs(90), "a recommended knob change", |rs| {
        rs.iter().any(|r| {
            r.kind == AuditKind::Proposal && change_of(r).is_some_and(|c| is_lag_change(&c))
        })
    });
    let ((), records) = tokio::join!(sender, watch);
    // Two more plan steps: still nothing applied.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.knobs.get(), before, "recommend mode changed a knob");
    let records_now = trimtab::audit::tail(&h.agent().state_dir().audit_log(), 100_000).unwrap();
    assert!(
        of_kind(&records_now, AuditKind::ApplyStart).is_empty(),
        "recommend mode started an apply"
    );
    assert!(records
        .iter()
        .any(|r| r.kind == AuditKind::Mode && r.detail["mode"] == "recommend"));
    let recommended: Vec<_> = h
        .agent()
        .proposals()
        .list()
        .unwrap()
        .into_iter()
        .filter(|p| p.status == ProposalStatus::Recommended && is_lag_change(&p.change))
        .collect();
    assert_eq!(
        recommended.len(),
        1,
        "one open recommendation for the knobs"
    );
    steady.cancel();
    traffic.await.ok();
    h.stop().await;
}
