//! Placement scenarios over the wire: a filling pool, a denied verb, and a broken policy, against the stand-ins.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use trimtab::audit::AuditKind;
use trimtab::executor::ProposalStatus;
use trimtab::planner::Action;
use trimtab::policy::Mode;

const GIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_filling_pool_queues_a_move_that_runs_add_before_remove_once_approved() {
    let h = Harness::start(Options::default()).await;
    create_volume(&h.writer, "vol-a", GIB, "pool-ssd", &["n1", "n3"]).await;
    let setup = h.linstor_log.all().len();
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = h.periodic_traffic("orders-a", stop.clone());
    h.until_autonomous(Duration::from_secs(120)).await;

    assert!(h.sim.linstor.faults().pool_full("n1", "pool-ssd", true));
    let proposals = h.agent().proposals();
    let pending = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let found = proposals.list().unwrap().into_iter().find(|p| {
                p.status == ProposalStatus::Pending
                    && matches!(&p.change.action, Action::MoveReplica { resource, from_node, .. } if resource == "vol-a" && from_node == "n1")
            });
            if let Some(p) = found {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("no move of vol-a off the full pool was queued for approval");
    let Action::MoveReplica { to_node, .. } = pending.change.action.clone() else {
        unreachable!()
    };
    assert_eq!(
        pending.decision.verdict,
        trimtab::policy::Verdict::NeedsApproval,
        "{:?}",
        pending.decision
    );
    // Queued, not applied: nothing mutating has reached LINSTOR since the volume was created.
    let placement_calls: Vec<String> = h.linstor_log.all()[setup..]
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect();
    assert!(
        placement_calls.is_empty(),
        "a queued move reached linstor: {placement_calls:?}"
    );

    let mut log = h.audit_log();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    proposals
        .approve(&pending.id, "alice", &mut log, now)
        .expect("approve");
    drop(log);

    let change_id = pending.change.id.clone();
    let records = h
        .until_audit(
            Duration::from_secs(60),
            "the approved move's outcome",
            |rs| {
                rs.iter()
                    .any(|r| r.kind == AuditKind::ApplyOutcome && r.subject == change_id)
            },
        )
        .await;
    let outcome = records
        .iter()
        .find(|r| r.kind == AuditKind::ApplyOutcome && r.subject == change_id)
        .unwrap();
    assert_eq!(outcome.detail["outcome"], "applied", "{}", outcome.detail);

    // The fake's state: the replica left n1 and lives on the target, next to the one on n3.
    let nodes: Vec<String> = h
        .sim
        .linstor
        .resources()
        .into_iter()
        .filter(|p| p.resource == "vol-a")
        .map(|p| p.node)
        .collect();
    assert!(!nodes.contains(&"n1".to_string()), "{nodes:?}");
    assert!(
        nodes.contains(&to_node) && nodes.contains(&"n3".to_string()),
        "{nodes:?}"
    );

    // Order at the wire: create on the target, read until UpToDate, and only then delete the source.
    let calls = h.linstor_log.all()[setup..].to_vec();
    let add = calls
        .iter()
        .position(|c| c == "POST /v1/resource-definitions/vol-a/resources")
        .expect("add call");
    let remove = calls
        .iter()
        .position(|c| c == "DELETE /v1/resource-definitions/vol-a/resources/n1")
        .expect("remove call");
    assert!(add < remove, "{calls:?}");
    assert!(
        calls[add..remove]
            .iter()
            .any(|c| c == "GET /v1/view/resources"),
        "no replica read between add and remove: {calls:?}"
    );

    // Order in the audit: approval by alice, then add_target start, then remove_source start naming the UpToDate target.
    let seq_of = |pred: &dyn Fn(&trimtab::audit::AuditRecord) -> bool| {
        records.iter().find(|r| pred(r)).map(|r| r.seq)
    };
    let approval =
        seq_of(&|r| r.kind == AuditKind::Approval && r.actor == "alice").expect("approval audited");
    let add_start = seq_of(&|r| {
        r.kind == AuditKind::ApplyStart
            && r.subject == change_id
            && r.detail["phase"] == "add_target"
    })
    .expect("add_target audited");
    let remove_start = records
        .iter()
        .find(|r| {
            r.kind == AuditKind::ApplyStart
                && r.subject == change_id
                && r.detail["phase"] == "remove_source"
        })
        .expect("remove_source audited");
    assert_eq!(remove_start.detail["target_up_to_date"], to_node.as_str());
    assert!(approval < add_start && add_start < remove_start.seq && remove_start.seq < outcome.seq);

    stop.cancel();
    traffic.await.ok();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_verb_policy_never_grants_does_not_reach_linstor() {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_copy(dir.path());
    let grants = r#"{"version": 1, "auto": ["set_knobs", "add_replica"], "approval": ["remove_replica", "set_place_count"],
                     "never": ["delete_resource", "move_replica"]}"#;
    std::fs::write(policies.join("grants.json"), grants).unwrap();
    let h = Harness::start(Options {
        mode: Mode::Autonomous,
        policies: Some(policies),
        ..Options::default()
    })
    .await;
    create_volume(&h.writer, "vol-d", GIB, "pool-ssd", &["n1", "n3"]).await;
    let setup = h.linstor_log.all().len();
    assert!(h.sim.linstor.faults().pool_full("n1", "pool-ssd", true));

    let records = h
        .until_audit(Duration::from_secs(30), "a denied move", |rs| {
            rs.iter().any(|r| {
                r.kind == AuditKind::Decision
                    && r.detail["verdict"] == "deny"
                    && rs.iter().any(|p| {
                        p.kind == AuditKind::Proposal
                            && p.subject == r.subject
                            && p.detail["action"]["verb"] == "move_replica"
                    })
            })
        })
        .await;
    // Let two more steps run: a denied change must stay denied, never retried into LINSTOR.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mutating: Vec<String> = h.linstor_log.all()[setup..]
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect();
    assert!(
        mutating.is_empty(),
        "a denied verb reached linstor: {mutating:?}"
    );
    let denial = records
        .iter()
        .find(|r| r.kind == AuditKind::Decision && r.detail["verdict"] == "deny")
        .unwrap();
    let reasons = denial.detail["reasons"].to_string();
    assert!(
        reasons.contains("move_replica"),
        "the denial does not name the verb: {reasons}"
    );
    let placed: Vec<String> = h
        .sim
        .linstor
        .resources()
        .into_iter()
        .filter(|p| p.resource == "vol-d")
        .map(|p| p.node)
        .collect();
    assert_eq!(placed, vec!["n1".to_string(), "n3".to_string()]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_policy_file_denies_everything_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_copy(dir.path());
    std::fs::write(
        policies.join("gate.rego"),
        "package trimtab.gate\n\ndecision := {{{ this is not rego\n",
    )
    .unwrap();
    let knobs_before = trimtab::pipeline::Knobs::default();
    let h = Harness::start(Options {
        mode: Mode::Autonomous,
        policies: Some(policies),
        ..Options::default()
    })
    .await;
    create_volume(&h.writer, "vol-e", GIB, "pool-ssd", &["n1", "n3"]).await;
    let setup = h.linstor_log.all().len();
    assert!(h.sim.linstor.faults().pool_full("n1", "pool-ssd", true));
    h.send_events(200, "orders-e", "e").await;

    let records = h
        .until_audit(
            Duration::from_secs(30),
            "the policy error and a denial",
            |rs| {
                rs.iter()
                    .any(|r| r.kind == AuditKind::Policy && r.detail.get("error").is_some())
                    && rs
                        .iter()
                        .any(|r| r.kind == AuditKind::Decision && r.detail["verdict"] == "deny")
            },
        )
        .await;
    let policy = records
        .iter()
        .find(|r| r.kind == AuditKind::Policy && r.detail.get("error").is_some())
        .unwrap();
    assert!(
        policy.detail["error"]
            .as_str()
            .unwrap()
            .contains("gate.rego"),
        "the error does not name the file: {}",
        policy.detail
    );
    assert_eq!(policy.detail["effect"], "denying every change");
    for d in records.iter().filter(|r| r.kind == AuditKind::Decision) {
        assert_eq!(d.detail["verdict"], "deny", "{}", d.detail);
        assert!(!d.detail["reasons"].as_array().unwrap().is_empty());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mutating: Vec<String> = h.linstor_log.all()[setup..]
        .iter()
        .filter(|r| !r.starts_with("GET "))
        .cloned()
        .collect();
    assert!(mutating.is_empty(), "{mutating:?}");
    assert_eq!(
        h.knobs.get(),
        knobs_before,
        "a knob changed under a broken policy"
    );
    h.stop().await;
}
