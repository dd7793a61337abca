//! Knob scenarios over the wire: a replayed burst through the real pipeline makes lag spike; autonomous mode applies
//! and audits the batch-size change, recommend mode records it and changes nothing.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use trimtab::audit::AuditKind;
use trimtab::executor::ProposalStatus;
use trimtab::pipeline::Knobs;
use trimtab::planner::Action;
use trimtab::policy::Mode;

/// The setting the pipeline ran with before an operator lowered it; the agent measured it while it ran.
fn measured_knobs() -> Knobs {
    Knobs {
        batch_rows: 32,
        batch_bytes: 5120,
        write_concurrency: 8,
        prefetch: 512,
        max_in_flight: 2048,
    }
}

/// The lowered setting the burst hits: a quarter of the measured one, the largest step policy allows without a
/// person (`max_knob_step_ratio` 4 in `policies/limits.json`).
fn lowered(k: Knobs) -> Knobs {
    Knobs {
        batch_rows: 8,
        write_concurrency: 2,
        ..k
    }
}

async fn burst_run(mode: Mode) -> (Harness, Vec<trimtab::audit::AuditRecord>) {
    let mut limits = test_limits();
    limits.lag_objective_s = 2.0;
    let h = Harness::start(Options {
        mode: Mode::Autonomous,
        knobs: measured_knobs(),
        limits,
        ..Options::default()
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = h.periodic_traffic("orders-b", stop.clone());
    h.until_autonomous(Duration::from_secs(120)).await;
    stop.cancel();
    traffic.await.ok();
    let _ = mode;
    (h, Vec::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_makes_autonomous_mode_apply_and_audit_a_batch_size_change() {
    let (h, _) = burst_run(Mode::Autonomous).await;
    let before = lowered(h.knobs.get());
    h.knobs.set(before).unwrap();
    let sender = h.sender.clone();
    let burst = tokio::spawn(async move {
        for round in 0..20 {
            let msgs: Vec<_> = (0..500)
                .map(|i| trimtab::servicebus::OutgoingMessage {
                    message_id: Some(format!("burst-{round}-{i}")),
                    body: serde_json::to_vec(
                        &serde_json::json!({"version":1,"kind":"event","stream":"orders-b",
                        "ts":"2026-11-22T04:00:00Z","payload":{"i":i}}),
                    )
                    .unwrap()
                    .into(),
                    partition_key: Some("orders-b".into()),
                    ..Default::default()
                })
                .collect();
            sender.send_batch(msgs).await.expect("burst send");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let records = h
        .until_audit(Duration::from_secs(60), "an applied knob change", |rs| {
            rs.iter().any(|r| {
                r.kind == AuditKind::ApplyOutcome
                    && rs.iter().any(|s| {
                        s.kind == AuditKind::ApplyStart
                            && s.subject == r.subject
                            && s.detail["change"]["action"]["verb"] == "set_knobs"
                    })
            })
        })
        .await;
    burst.await.unwrap();
    let start = records
        .iter()
        .find(|r| {
            r.kind == AuditKind::ApplyStart && r.detail["change"]["action"]["verb"] == "set_knobs"
        })
        .unwrap();
    let outcome = records
        .iter()
        .find(|r| r.kind == AuditKind::ApplyOutcome && r.subject == start.subject)
        .unwrap();
    assert!(
        start.seq < outcome.seq,
        "the start of a change is audited before its outcome"
    );
    let change: trimtab::planner::Change =
        serde_json::from_value(start.detail["change"].clone()).unwrap();
    let Action::SetKnobs { from, to } = change.action else {
        panic!("{:?}", change.action)
    };
    assert_eq!((from.batch_rows, from.concurrency), (8, 2));
    assert!(
        u64::from(to.batch_rows) * u64::from(to.concurrency) > 16,
        "no more capacity: {to:?}"
    );
    assert_eq!(outcome.detail["outcome"], "applied", "{}", outcome.detail);
    let now = h.knobs.get();
    assert_eq!(
        (now.batch_rows, now.write_concurrency),
        (to.batch_rows, to.concurrency),
        "the pipeline runs the new knobs"
    );
    let figures = &change.reason.figures;
    assert!(
        figures.contains_key("lag_s") && figures.contains_key("required_rows_per_s"),
        "{figures:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_burst_in_recommend_mode_applies_nothing() {
    let mut limits = test_limits();
    limits.lag_objective_s = 2.0;
    let h = Harness::start(Options {
        mode: Mode::Recommend,
        knobs: measured_knobs(),
        limits,
        ..Options::default()
    })
    .await;
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = h.periodic_traffic("orders-c", stop.clone());
    // Recommend mode never becomes autonomous; wait until the agent has measured the setting and planned.
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.cancel();
    traffic.await.ok();
    let before = lowered(h.knobs.get());
    h.knobs.set(before).unwrap();
    for round in 0..20 {
        h.send_events(500, "orders-c", &format!("burst{round}"))
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let records = h
        .until_audit(Duration::from_secs(60), "a recommended knob change", |rs| {
            rs.iter().any(|r| {
                r.kind == AuditKind::Proposal
                    && r.detail["action"]["verb"] == "set_knobs"
                    && r.detail["action"]["from"]["batch_rows"] == 8
            })
        })
        .await;
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
        .filter(|p| {
            p.status == ProposalStatus::Recommended
                && matches!(p.change.action, Action::SetKnobs { .. })
        })
        .collect();
    assert!(!recommended.is_empty(), "no recommendation recorded");
    h.stop().await;
}
