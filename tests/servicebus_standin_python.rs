//! The Service Bus stand-in checked by a client nobody on the team wrote: Python `azure-servicebus` 7.15.0.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use trimtab::sim::servicebus::{Faults, StandIn, StandInConfig};

async fn start(queue: &str) -> StandIn {
    // Python keeps the port of an emulator connection string, so any free port on loopback works.
    let config = StandInConfig {
        amqp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        lock_duration: Duration::from_secs(10),
        queues: vec![queue.into()],
        ..StandInConfig::default()
    };
    tokio::time::timeout(Duration::from_secs(10), StandIn::start(config))
        .await
        .expect("stand-in start timed out")
        .expect("stand-in starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_receives_renews_and_settles_against_the_standin() {
    let standin = start("conformance").await;
    let connection_string = standin.python_connection_string();
    let stdout = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || {
            common::run_script(
                "servicebus_conformance.py",
                &[&connection_string, "conformance"],
            )
        }),
    )
    .await
    .expect("python conformance script timed out: likely a stand-in hang")
    .expect("python script task");
    let line = stdout
        .lines()
        .last()
        .expect("the script prints a summary line");
    let summary: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));

    assert_eq!(
        summary["batch_max_size"], 262_144,
        "the batch limit comes from the link's max-message-size"
    );
    assert_eq!(
        summary["bodies"],
        serde_json::json!(["single", "batch-0", "batch-1", "batch-2"])
    );
    assert_eq!(summary["sequence_numbers"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(
        summary["first_delivery_counts"],
        serde_json::json!([0, 0, 0, 0])
    );
    assert_eq!(summary["lock_tokens_parse"], true);
    assert_eq!(summary["renew_moved_lock"], true);
    assert_eq!(summary["redelivered_body"], "batch-0");
    assert_eq!(summary["redelivered_delivery_count"], 1);
    assert_eq!(summary["dead_letter"]["body"], "batch-1");
    assert_eq!(summary["dead_letter"]["reason"], "BadSchema");
    assert_eq!(
        summary["dead_letter"]["description"],
        "field volume missing"
    );

    let counts = standin.counts("conformance").expect("queue exists");
    assert_eq!(
        (counts.active, counts.dead_letter, counts.locked),
        (0, 0, 0),
        "everything was settled: {counts:?}"
    );
    standin.shutdown().await;
}

/// Runs `servicebus_faults.py`, flipping a fault each time the script reports it is ready for the next step.
fn drive_fault_script(connection_string: &str, faults: Faults) -> serde_json::Value {
    let mut child = Command::new(common::python())
        .arg(common::script("servicebus_faults.py"))
        .args([connection_string, "faults"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut summary = None;
    for line in stdout.lines() {
        let line = line.expect("read script output");
        match line.as_str() {
            "READY lost" => faults.lose_next_settlements(1),
            "READY slow" => faults.slow_settlement(Some(Duration::from_millis(800))),
            _ => {
                summary = Some(line);
                continue;
            }
        }
        writeln!(stdin, "go").expect("release the script");
    }
    let output = child.wait_with_output().expect("script exits");
    assert!(
        output.status.success(),
        "python servicebus_faults.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = summary.expect("the script prints a summary line");
    serde_json::from_str(&summary)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sees_lost_locks_and_slow_settlements_from_the_fault_switches() {
    let standin = start("faults").await;
    let (connection_string, faults) = (standin.python_connection_string(), standin.faults());
    let summary = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || drive_fault_script(&connection_string, faults)),
    )
    .await
    .expect("python fault script timed out: likely a stand-in hang")
    .expect("python script task");

    let lost = summary["lost_error"]
        .as_str()
        .expect("completing under the lock-loss fault must fail");
    assert!(
        lost.contains("MessageLockLostError") || lost.contains("lock"),
        "{lost}"
    );
    let slow = summary["slow_complete_seconds"].as_f64().expect("seconds");
    assert!(
        slow >= 0.75,
        "the settlement reply was delayed by the fault: took {slow}s"
    );
    assert_eq!(
        summary["lost_redelivered"]["body"], "lost",
        "a lost lock puts the message back"
    );
    assert_eq!(summary["lost_redelivered"]["delivery_count"], 1);
    let counts = standin.counts("faults").expect("queue exists");
    assert_eq!((counts.active, counts.locked), (0, 0), "{counts:?}");
    standin.shutdown().await;
}
