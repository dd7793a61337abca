//! The audit log: hash chain verification, tampering named by seq, torn tails, the mirror, and a process
//! killed between audit and apply.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use trimtab::audit::{tail, verify, AuditKind, AuditLog, MemoryMirror};
use trimtab::executor::{
    ActuatorError, ApplyOrigin, Executor, ExecutorConfig, MemoryKnobs, PlacementActuator,
    ReplicaView, StateDir,
};
use trimtab::planner::{change_id, Action, Change, Reason, Settings};
use trimtab::policy::Gate;

fn write_records(path: &Path, n: usize) {
    let (mut log, _) = AuditLog::open(path).expect("open");
    for i in 0..n {
        log.append(
            AuditKind::Proposal,
            "planner",
            &format!("c{i}"),
            serde_json::json!({ "i": i }),
        )
        .expect("append");
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn an_untouched_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_records(&path, 5);
    let report = verify(&path).unwrap().expect("chain should verify");
    assert_eq!(report.records, 5);
    let last = tail(&path, 2).unwrap();
    assert_eq!(last.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(last[1].hash, report.head_hash);
}

#[test]
fn editing_a_record_breaks_the_chain_at_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_records(&path, 5);
    let mut l = lines(&path);
    l[2] = l[2].replace("\"i\":2", "\"i\":99");
    std::fs::write(&path, l.join("\n") + "\n").unwrap();
    let failure = verify(&path)
        .unwrap()
        .expect_err("tampering must be detected");
    assert_eq!(failure.seq, 2);
    assert!(
        failure.reason.contains("does not match its content"),
        "{failure}"
    );
    assert!(
        AuditLog::open(&path).is_err(),
        "trimtab must not append to a broken chain"
    );
}

#[test]
fn removing_a_record_breaks_the_chain_at_the_missing_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_records(&path, 5);
    let mut l = lines(&path);
    l.remove(3);
    std::fs::write(&path, l.join("\n") + "\n").unwrap();
    let failure = verify(&path)
        .unwrap()
        .expect_err("a missing record must be detected");
    assert_eq!(failure.seq, 3);
    assert!(failure.reason.contains("seq is 4, expected 3"), "{failure}");
}

#[test]
fn a_torn_last_line_is_reported_saved_and_cut_never_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    write_records(&path, 3);
    let torn = b"{\"version\":1,\"seq\":3,\"at_unix_ms\":17";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let failure = verify(&path)
        .unwrap()
        .expect_err("verify must report the torn line");
    assert_eq!(failure.seq, 3);
    assert!(failure.reason.contains("torn last line"), "{failure}");

    let (mut log, report) = AuditLog::open(&path).expect("open recovers");
    let report = report.expect("the torn tail must be reported");
    assert_eq!(report.bytes, torn.len() as u64);
    assert_eq!(
        std::fs::read(&report.saved_to).unwrap(),
        torn,
        "the torn bytes are kept aside"
    );
    let records = tail(&path, 10).unwrap();
    let last = records.last().unwrap();
    assert_eq!(
        (last.seq, last.kind),
        (3, AuditKind::TornTail),
        "the recovery itself is recorded"
    );
    log.append(
        AuditKind::Proposal,
        "planner",
        "next",
        serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(
        verify(&path)
            .unwrap()
            .expect("chain verifies after recovery")
            .records,
        5
    );
}

#[test]
fn two_writers_on_one_file_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let (mut agent, _) = AuditLog::open(&path).unwrap();
    let (mut cli, _) = AuditLog::open(&path).unwrap();
    for i in 0..4 {
        agent
            .append(
                AuditKind::Proposal,
                "planner",
                &format!("a{i}"),
                serde_json::json!({}),
            )
            .unwrap();
        cli.append(
            AuditKind::Approval,
            "alice",
            &format!("b{i}"),
            serde_json::json!({}),
        )
        .unwrap();
    }
    assert_eq!(verify(&path).unwrap().expect("one chain").records, 8);
}

#[test]
fn every_record_reaches_the_mirror_even_after_it_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mirror = Arc::new(MemoryMirror::new());
    let (log, _) = AuditLog::open(&path).unwrap();
    let mut log = log.with_mirror(mirror.clone());
    log.append(AuditKind::Proposal, "planner", "a", serde_json::json!({}))
        .unwrap();
    mirror.set_failing(true);
    log.append(AuditKind::Decision, "gate", "a", serde_json::json!({}))
        .unwrap();
    assert_eq!(
        log.mirror_backlog(),
        1,
        "a record the mirror missed is kept"
    );
    mirror.set_failing(false);
    log.append(
        AuditKind::ApplyStart,
        "executor",
        "a",
        serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(log.mirror_backlog(), 0);
    assert_eq!(
        mirror.records(),
        tail(&path, 10).unwrap(),
        "the mirror holds the same chain as the file"
    );
}

/// A placement actuator that signals it was reached, then never returns: the child is killed inside it.
struct Hang {
    marker: PathBuf,
}

#[async_trait]
impl PlacementActuator for Hang {
    async fn add_replica(&self, _: &str, _: &str, _: &str) -> Result<(), ActuatorError> {
        std::fs::write(&self.marker, b"reached").expect("marker");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
    async fn remove_replica(&self, _: &str, _: &str) -> Result<(), ActuatorError> {
        Ok(())
    }
    async fn set_place_count(&self, _: &str, _: u32) -> Result<(), ActuatorError> {
        Ok(())
    }
    async fn replicas(&self, _: &str) -> Result<ReplicaView, ActuatorError> {
        Ok(ReplicaView::default())
    }
}

fn add_change() -> Change {
    let action = Action::AddReplica {
        resource: "r1".into(),
        node: "n3".into(),
        pool: "data".into(),
    };
    Change {
        id: change_id("resource:r1", &action),
        target: "resource:r1".into(),
        action,
        reason: Reason::default(),
        expected_effect: String::new(),
        uses_forecast: false,
    }
}

/// Runs only inside the child process started by the test below.
#[test]
fn child_applies_and_hangs_in_the_actuator() {
    let Ok(state) = std::env::var("TRIMTAB_TEST_CHILD_STATE") else {
        return;
    };
    let state = StateDir::new(state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (log, _) = AuditLog::open(&state.audit_log()).unwrap();
        let executor = Executor::new(
            Arc::new(Hang {
                marker: state.root().join("reached"),
            }),
            Arc::new(MemoryKnobs::new(Settings::default(), vec![])),
            Arc::new(Mutex::new(log)),
            state.clone(),
            ExecutorConfig::default(),
        );
        let gate = Gate::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
        let out = executor
            .apply(&add_change(), &gate, ApplyOrigin::Automatic, 1_800_000_000)
            .await
            .unwrap();
        panic!("the child should have been killed inside the actuator, got {out:?}");
    });
}

#[test]
fn killing_trimtab_between_audit_and_apply_loses_no_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_applies_and_hangs_in_the_actuator",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TRIMTAB_TEST_CHILD_STATE", &state)
        .spawn()
        .expect("spawn child");
    let marker = state.join("reached");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the child never reached the actuator within 60 s, likely stuck before applying"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("kill the child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must have been killed");

    let log = StateDir::new(&state).audit_log();
    let report = verify(&log)
        .unwrap()
        .expect("the chain must verify after the kill");
    let records = tail(&log, 10).unwrap();
    assert_eq!(report.records as usize, records.len());
    let last = records.last().expect("records were written");
    assert_eq!(
        last.kind,
        AuditKind::ApplyStart,
        "the intent was on disk before the actuator was called"
    );
    assert_eq!(last.subject, add_change().id);
    assert_eq!(last.detail["change"]["action"]["verb"], "add_replica");
    assert!(!records.iter().any(|r| r.kind == AuditKind::ApplyOutcome));
    // The next process continues the same chain.
    let (mut next, torn) = AuditLog::open(&log).unwrap();
    assert!(torn.is_none());
    let r = next
        .append(
            AuditKind::Policy,
            "executor",
            "",
            serde_json::json!({ "note": "restarted" }),
        )
        .unwrap();
    assert_eq!(r.seq, report.records);
}
