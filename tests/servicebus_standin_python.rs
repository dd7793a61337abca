//! The Service Bus stand-in checked by a client nobody on the team wrote: Python `azure-servicebus` 7.15.0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use trimtab::sim::servicebus::{StandIn, StandInConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_receives_renews_and_settles_against_the_standin() {
    // Python keeps the port of an emulator connection string, so any free port on loopback works.
    let config = StandInConfig {
        amqp_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        lock_duration: Duration::from_secs(10),
        queues: vec!["conformance".into()],
        ..StandInConfig::default()
    };
    let standin = tokio::time::timeout(Duration::from_secs(10), StandIn::start(config))
        .await
        .expect("stand-in start timed out")
        .expect("stand-in starts");
    let connection_string = standin.python_connection_string();
    let stdout = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::task::spawn_blocking(move || common::run_script("servicebus_conformance.py", &[&connection_string, "conformance"])),
    )
    .await
    .expect("python conformance script timed out: likely a stand-in hang")
    .expect("python script task");
    let line = stdout.lines().last().expect("the script prints a summary line");
    let summary: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));

    assert_eq!(summary["batch_max_size"], 262_144, "the batch limit comes from the link's max-message-size");
    assert_eq!(summary["bodies"], serde_json::json!(["single", "batch-0", "batch-1", "batch-2"]));
    assert_eq!(summary["sequence_numbers"], serde_json::json!([1, 2, 3, 4]));
    assert_eq!(summary["first_delivery_counts"], serde_json::json!([0, 0, 0, 0]));
    assert_eq!(summary["lock_tokens_parse"], true);
    assert_eq!(summary["renew_moved_lock"], true);
    assert_eq!(summary["redelivered_body"], "batch-0");
    assert_eq!(summary["redelivered_delivery_count"], 1);
    assert_eq!(summary["dead_letter"]["body"], "batch-1");
    assert_eq!(summary["dead_letter"]["reason"], "BadSchema");
    assert_eq!(summary["dead_letter"]["description"], "field volume missing");

    let counts = standin.counts("conformance").expect("queue exists");
    assert_eq!((counts.active, counts.dead_letter, counts.locked), (0, 0, 0), "everything was settled: {counts:?}");
    standin.shutdown().await;
}
