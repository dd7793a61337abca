//! `trimtab dlq` as an operator runs it, against the stand-ins: list with a filter, a dry run, a re-drive that
//! is audited in the state directory, and a filter it cannot read refused with a reason.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::app::App;
use trimtab::audit::{tail, AuditKind};

async fn dlq(config: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trimtab"));
    command
        .arg("dlq")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn");
    let what = format!("trimtab dlq {}", args.join(" "));
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output().expect("run trimtab")),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} took over 60 s"))
    .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_dry_runs_and_redrives_from_the_command_line() {
    let h = Harness::start(Duration::from_secs(10)).await;
    h.send(harness::malformed("cli", 6)).await;
    let app = App::build(&h.config).await.expect("build");
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    harness::wait_until("6 dead letters", Duration::from_secs(60), || {
        let n = h.dead_letters().len();
        async move { n == 6 }
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("drained within 30 s")
        .expect("pipeline task");
    let dir = tempfile::tempdir().unwrap();
    let config = h.run_config(dir.path(), "");

    let listed = dlq(
        &config,
        &["--json", "list", "--filter", "reason=UnknownKind"],
    )
    .await;
    assert!(listed.status.success(), "{listed:?}");
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&listed.stdout).expect("json list");
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e["reason"] == "UnknownKind"));

    let dry = dlq(
        &config,
        &["redrive", "--filter", "reason=UnknownKind", "--dry-run"],
    )
    .await;
    assert!(dry.status.success(), "{dry:?}");
    assert!(
        stdout(&dry).contains("dry run: 3 message(s) would be re-driven to events; nothing moved"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(h.dead_letters().len(), 6);

    let done = dlq(
        &config,
        &[
            "redrive",
            "--filter",
            "reason=UnknownKind",
            "--rate",
            "50",
            "--by",
            "cli-test",
        ],
    )
    .await;
    assert!(done.status.success(), "{done:?}");
    assert!(
        stdout(&done).contains("re-drove 3 message(s) to events"),
        "{}",
        stdout(&done)
    );
    assert!(stdout(&done).contains("gate: Allow"), "{}", stdout(&done));
    let state = trimtab::executor::StateDir::new(dir.path().join("state"));
    let audit = tail(&state.audit_log(), 10).expect("audit log");
    let outcome = audit
        .iter()
        .find(|r| r.kind == AuditKind::ApplyOutcome)
        .expect("the re-drive's outcome audited");
    assert_eq!(outcome.actor, "cli-test");
    assert_eq!(outcome.detail["redriven"], 3);

    let bad = dlq(&config, &["list", "--filter", "colour=red"]).await;
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("expected reason=REASON"),
        "{bad:?}"
    );
    h.sim.shutdown().await;
}
