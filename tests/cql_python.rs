//! The CQL stand-in against Python's `cassandra-driver` 3.30.1 (pure Python) with its default settings.

mod common;

use std::time::Duration;

use trimtab::sim::cql::{CqlServer, CqlServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_driver_connects_creates_inserts_batches_and_reads() {
    let config = CqlServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..CqlServerConfig::default()
    };
    let server = CqlServer::start(config).await.expect("server starts");
    let (host, port) = (
        server.addr().ip().to_string(),
        server.addr().port().to_string(),
    );
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || {
            common::run_script("cql_conformance.py", &[&host, &port])
        }),
    )
    .await
    .expect("python client timed out (venv creation included)")
    .expect("python task");
    let line = out.lines().last().expect("the script prints a json line");
    let seen: serde_json::Value = serde_json::from_str(line).expect("json from the script");
    assert_eq!(seen["rows"], 22, "{seen}");
    assert_eq!(seen["count"], 22, "{seen}");
    assert_eq!(
        seen["prepared_n"], 3,
        "a re-insert of the same key overwrites: {seen}"
    );
    assert_eq!(
        seen["protocol_version"], 4,
        "the driver steps down to v4: {seen}"
    );
    assert_eq!(seen["release_version"], "4.1.0");
    assert!(
        seen["keyspaces"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "py")),
        "system_schema describes the created keyspace after a refresh: {seen}"
    );
    assert_eq!(
        seen["partition_key"],
        serde_json::json!(["stream", "day"]),
        "{seen}"
    );
    assert_eq!(server.row_count("py", "events"), 22);
}
