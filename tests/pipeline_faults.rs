//! The reliability suite: messages (some malformed) through the whole pipeline over the wire while one fault at
//! a time is injected; afterwards the stores are read back: one row per valid message, no duplicates, nothing
//! lost, every malformed message dead-lettered with a reason.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::app::App;

const VALID: usize = 240;
const BAD: usize = 8;

/// What to break, and when.
#[derive(Clone, Copy, Debug)]
enum Fault {
    CqlStopRestart,
    WriteTimeouts,
    Overloaded,
    Throttling,
    LockLoss,
    LinstorErrors,
    LinstorSlow,
}

async fn run_with(fault: Fault) {
    let h = Harness::start(Duration::from_secs(4)).await;
    let valid = harness::events("ok", VALID);
    let bad = harness::malformed("m", BAD);
    let volumes = harness::volume_creates("v", 4);
    let mut all = valid.clone();
    all.extend(bad.clone());
    all.extend(volumes.clone());
    h.send(all).await;

    let app = App::build(&h.config)
        .await
        .expect("build the pipeline against the stand-ins");
    let stats = app.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));

    if matches!(fault, Fault::LinstorErrors) {
        h.sim.linstor.faults().fail_next(6);
    }
    if matches!(fault, Fault::LinstorSlow) {
        h.sim
            .linstor
            .faults()
            .slow_replies(Duration::from_millis(700));
    }
    // Inject the fault once the run is under way.
    harness::wait_until("the first rows", Duration::from_secs(60), || {
        let s = stats.snapshot();
        async move { s.events_written >= 40 }
    })
    .await;
    match fault {
        Fault::CqlStopRestart => {
            h.sim.cql.stop().await.expect("stop the cql server");
            tokio::time::sleep(Duration::from_secs(2)).await;
            h.sim.cql.restart().await.expect("restart the cql server");
        }
        Fault::WriteTimeouts => h.sim.cql.faults().fail_writes_with_timeout(25),
        Fault::Overloaded => h.sim.cql.faults().overload_writes(25),
        Fault::Throttling => {
            h.sim.servicebus.faults().throttle_receives(Some(3));
        }
        Fault::LockLoss => {
            h.sim.servicebus.faults().expire_locks_now();
            h.sim.servicebus.faults().lose_next_settlements(10);
        }
        Fault::LinstorErrors | Fault::LinstorSlow => {}
    }

    let tables = h.tables().await;
    harness::wait_until(
        "every valid row, every dead letter and an empty queue",
        Duration::from_secs(120),
        || {
            let h = &h;
            let tables = &tables;
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n as usize == VALID)
                    .unwrap_or(false)
                    && h.dead_letters().len() == BAD
                    && h.active() == 0
            }
        },
    )
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the pipeline drains within 30 s")
        .expect("pipeline task");

    assert_eq!(
        h.stored_ids(&tables).await,
        harness::ids(&valid),
        "{fault:?}: exactly the valid messages, once each"
    );
    assert_eq!(
        tables.count_events().await.unwrap() as usize,
        VALID,
        "{fault:?}: no duplicate rows"
    );
    let dead = h.dead_letters();
    let dead_bodies: std::collections::BTreeSet<String> =
        dead.iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(
        dead_bodies,
        harness::bodies(&bad),
        "{fault:?}: every malformed message, and only those, dead-lettered"
    );
    for (body, reason) in &dead {
        assert!(
            reason == "MalformedJson" || reason == "UnknownKind",
            "{fault:?}: dead letter {body} has reason {reason:?}"
        );
    }
    // Replies are at-least-once like everything else: a lost lock can make a finished request run again
    // (idempotently) and answer twice, but every request is answered.
    let mut replied = h.reply_ids().await;
    replied.dedup();
    assert_eq!(
        replied,
        harness::ids(&volumes),
        "{fault:?}: every volume request answered"
    );
    let placed = h.sim.linstor.resources();
    for i in 0..4 {
        let on = placed
            .iter()
            .filter(|p| p.resource == format!("v-vol-{i}"))
            .count();
        assert_eq!(on, 2, "{fault:?}: v-vol-{i} has its two replicas");
    }
    drop(tables);
    h.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_server_stopped_and_restarted_mid_run() {
    run_with(Fault::CqlStopRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeouts() {
    run_with(Fault::WriteTimeouts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_writes() {
    run_with(Fault::Overloaded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_bus_throttling() {
    run_with(Fault::Throttling).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_bus_lock_loss() {
    run_with(Fault::LockLoss).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linstor_500s() {
    run_with(Fault::LinstorErrors).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linstor_slow_replies() {
    run_with(Fault::LinstorSlow).await;
}

fn start_trimtab(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start trimtab run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimtab_killed_and_restarted() {
    let h = Harness::start(Duration::from_secs(3)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = h.run_config(
        dir.path(),
        "receive_wait_ms = 200\n\n# Slow enough that the kill lands mid-run.\n[pipeline.knobs]\nbatch_rows = 4\nwrite_concurrency = 1\nprefetch = 8\nmax_in_flight = 8",
    );
    let valid = harness::events("k", 600);
    let bad = harness::malformed("km", BAD);
    let mut all = valid.clone();
    all.extend(bad.clone());
    h.send(all).await;
    let tables = h.tables().await;

    let mut first = start_trimtab(&config);
    harness::wait_until(
        "the first instance to write some rows",
        Duration::from_secs(60),
        || {
            let tables = &tables;
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n >= 100)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    first.kill().expect("SIGKILL the first instance");
    first.wait().expect("reap the first instance");
    let after_kill = tables.count_events().await.unwrap();
    assert!(
        (after_kill as usize) < valid.len(),
        "the kill landed mid-run ({after_kill} rows already)"
    );

    let mut second = start_trimtab(&config);
    let expected = valid.len();
    harness::wait_until(
        "the restarted instance to finish the queue",
        Duration::from_secs(120),
        || {
            let h = &h;
            let tables = &tables;
            async move {
                tables
                    .count_events()
                    .await
                    .map(|n| n as usize == expected)
                    .unwrap_or(false)
                    && h.dead_letters().len() == BAD
                    && h.active() == 0
            }
        },
    )
    .await;
    let _ = Command::new("kill").arg(second.id().to_string()).status();
    let _ = tokio::task::spawn_blocking(move || second.wait()).await;

    assert_eq!(
        h.stored_ids(&tables).await,
        harness::ids(&valid),
        "every message once, none lost to the kill"
    );
    let dead_bodies: std::collections::BTreeSet<String> =
        h.dead_letters().into_iter().map(|(b, _)| b).collect();
    assert_eq!(dead_bodies, harness::bodies(&bad));
    drop(tables);
    h.sim.shutdown().await;
}
