//! The `trimtab proposals | pause | resume | audit` commands, run as the real binary against a state directory.

use std::path::Path;
use std::process::{Command, Output};

use trimtab::audit::{tail, AuditKind, AuditLog};
use trimtab::executor::{ProposalStatus, ProposalStore, StateDir};
use trimtab::planner::{change_id, Action, Change, Reason};
use trimtab::policy::{Decision, Verdict};

fn trimtab(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env_remove("TRIMTAB_STATE_DIR")
        .output()
        .expect("run trimtab")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn queued_move(state: &StateDir) -> String {
    let action = Action::MoveReplica {
        resource: "pvc-7".into(),
        from_node: "n1".into(),
        from_pool: "data".into(),
        to_node: "n4".into(),
        to_pool: "data".into(),
    };
    let change = Change {
        id: change_id("resource:pvc-7", &action),
        target: "resource:pvc-7".into(),
        action,
        reason: Reason {
            summary: "pool n1/data forecast at 91.0 %".into(),
            ..Reason::default()
        },
        expected_effect: String::new(),
        uses_forecast: false,
    };
    let decision = Decision {
        verdict: Verdict::NeedsApproval,
        reasons: vec!["move_replica needs a person's approval".into()],
        policy_digest: String::new(),
    };
    let (p, created) = ProposalStore::new(state.clone())
        .create(
            &change,
            ProposalStatus::Pending,
            "fp".into(),
            decision,
            1_800_000_000,
        )
        .unwrap();
    assert!(created);
    p.id
}

#[test]
fn proposals_can_be_listed_shown_approved_and_not_approved_twice() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    let id = queued_move(&state);

    let list = trimtab(dir.path(), &["proposals", "list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        text(&list).contains(&id)
            && text(&list).contains("move_replica")
            && text(&list).contains("91.0 %"),
        "{}",
        text(&list)
    );

    let show = trimtab(dir.path(), &["proposals", "show", &id]);
    assert!(text(&show).contains("\"plan_hash\""), "{}", text(&show));

    let approve = trimtab(dir.path(), &["proposals", "approve", &id, "--by", "carol"]);
    assert!(approve.status.success(), "{}", text(&approve));
    assert!(text(&approve).contains("approved") && text(&approve).contains("carol"));
    let p = ProposalStore::new(state.clone()).get(&id).unwrap();
    assert!(
        matches!(p.status, ProposalStatus::Approved { ref by, .. } if by == "carol"),
        "{:?}",
        p.status
    );
    let approval = tail(&state.audit_log(), 10)
        .unwrap()
        .into_iter()
        .find(|r| r.kind == AuditKind::Approval)
        .expect("audited");
    assert_eq!(
        (approval.actor.as_str(), approval.subject.as_str()),
        ("carol", id.as_str())
    );

    let again = trimtab(dir.path(), &["proposals", "reject", &id, "--by", "dave"]);
    assert!(
        !again.status.success(),
        "a decided proposal cannot be rejected"
    );
    assert!(text(&again).contains("not open"), "{}", text(&again));

    let missing = trimtab(dir.path(), &["proposals", "show", "p-nope"]);
    assert!(
        !missing.status.success() && text(&missing).contains("no proposal with id p-nope"),
        "{}",
        text(&missing)
    );
}

#[test]
fn pause_and_resume_set_the_flag_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    let out = trimtab(
        dir.path(),
        &["pause", "--by", "ops", "--reason", "storage maintenance"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let flag = state.paused().unwrap().expect("paused");
    assert_eq!(
        (flag.by.as_str(), flag.reason.as_str()),
        ("ops", "storage maintenance")
    );
    let out = trimtab(dir.path(), &["resume", "--by", "ops"]);
    assert!(
        out.status.success() && text(&out).contains("resumed"),
        "{}",
        text(&out)
    );
    assert!(state.paused().unwrap().is_none());
    let kinds: Vec<AuditKind> = tail(&state.audit_log(), 10)
        .unwrap()
        .into_iter()
        .map(|r| r.kind)
        .collect();
    assert_eq!(kinds, vec![AuditKind::Paused, AuditKind::Resumed]);
}

#[test]
fn audit_verify_fails_and_names_the_seq_of_a_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path());
    let (mut log, _) = AuditLog::open(&state.audit_log()).unwrap();
    for who in ["a", "b", "c"] {
        log.append(AuditKind::Approval, who, "p1", serde_json::json!({}))
            .unwrap();
    }
    let ok = trimtab(dir.path(), &["audit", "verify"]);
    assert!(
        ok.status.success() && text(&ok).contains("3 records"),
        "{}",
        text(&ok)
    );
    let shown = trimtab(dir.path(), &["audit", "tail", "-n", "2"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).lines().count(), 2);

    let path = state.audit_log();
    let body = std::fs::read_to_string(&path).unwrap().replacen(
        "\"actor\":\"b\"",
        "\"actor\":\"mallory\"",
        1,
    );
    std::fs::write(&path, body).unwrap();
    let bad = trimtab(dir.path(), &["audit", "verify"]);
    assert!(!bad.status.success(), "verify must fail on a tampered log");
    assert!(text(&bad).contains("first bad seq 1"), "{}", text(&bad));
}
