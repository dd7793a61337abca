//! The event writer and trimtab's own tables over the wire against the CQL stand-in, including every fault.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use trimtab::cassandra::schema::AUDIT_BUCKET;
use trimtab::cassandra::{
    AuditRow, CassandraConfig, CassandraError, EventRow, EventWriter, ForecastRow, OwnTables,
    RowOutcome,
};
use trimtab::sim::cql::{CqlServer, CqlServerConfig};

const WAIT: Duration = Duration::from_secs(30);

async fn server_with(max_mutation_bytes: usize) -> CqlServer {
    let config = CqlServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        max_mutation_bytes,
        ..CqlServerConfig::default()
    };
    tokio::time::timeout(WAIT, CqlServer::start(config))
        .await
        .expect("server start timed out")
        .expect("server starts")
}

fn config(server: &CqlServer) -> CassandraConfig {
    CassandraConfig {
        contact_points: vec![server.addr().to_string()],
        initial_backoff_ms: 5,
        max_backoff_ms: 20,
        ..CassandraConfig::default()
    }
}

async fn writer(config: &CassandraConfig) -> EventWriter {
    tokio::time::timeout(WAIT, EventWriter::connect(config))
        .await
        .expect("connect timed out")
        .expect("writer connects")
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_763_769_600 + secs).expect("time")
}

fn rows(n: usize, streams: usize, tag: &str) -> Vec<EventRow> {
    (0..n)
        .map(|i| EventRow {
            stream: format!("stream-{}", i % streams),
            message_id: format!("msg-{i}"),
            event_time: at(i as i64),
            enqueued_at: at(i as i64 + 1),
            payload: format!("{{\"i\":{i},\"tag\":\"{tag}\"}}"),
        })
        .collect()
}

async fn write(w: &EventWriter, rows: Vec<EventRow>) -> Vec<RowOutcome> {
    tokio::time::timeout(WAIT, w.write(rows))
        .await
        .expect("write timed out, likely deadlocked")
}

fn all_ok(outcomes: &[RowOutcome]) {
    for o in outcomes {
        if let Err(e) = o {
            panic!(
                "row failed: {e} ({:?})",
                std::error::Error::source(e).map(|s| s.to_string())
            );
        }
    }
}

#[tokio::test]
async fn writes_group_by_partition_and_redelivery_never_adds_a_row() {
    let server = server_with(16 << 20).await;
    let cfg = CassandraConfig {
        rows_per_batch: 8,
        ..config(&server)
    };
    let w = writer(&cfg).await;
    all_ok(&write(&w, rows(100, 3, "first")).await);
    assert_eq!(server.row_count("trimtab", "events"), 100);
    let snap = w.snapshot();
    // 3 streams with 34, 33 and 33 rows in batches of at most 8: 5 + 5 + 5 batches.
    assert_eq!(snap.total_batches, 15, "{snap:?}");
    assert!(snap.by_size.iter().all(|c| c.max_rows <= 8), "{snap:?}");
    assert_eq!(snap.total_rows_ok, 100);

    // The same messages again (a redelivery) with a new payload: overwritten, not added.
    all_ok(&write(&w, rows(100, 3, "again")).await);
    assert_eq!(server.row_count("trimtab", "events"), 100);
    let tables = OwnTables::new(w.session(), &cfg).await.expect("own tables");
    assert_eq!(tables.count_events().await.expect("count"), 100);
    let stored = tables.load_events("stream-0", at(0)).await.expect("load");
    assert_eq!(stored.len(), 34);
    assert!(
        stored.iter().all(|e| e.payload.contains("again")),
        "redelivery overwrites the payload"
    );
    let first = stored
        .iter()
        .find(|e| e.message_id == "msg-0")
        .expect("msg-0 stored");
    assert_eq!(first.event_time, at(0));
    assert_eq!(first.enqueued_at, at(1));
}

#[tokio::test]
async fn knobs_change_batching_while_running() {
    let server = server_with(16 << 20).await;
    let w = writer(&config(&server)).await;
    let knobs = w.knobs();
    knobs.set_rows_per_batch(4);
    all_ok(&write(&w, rows(40, 1, "a")).await);
    assert_eq!(w.snapshot().total_batches, 10);
    knobs.set_rows_per_batch(32);
    knobs.set_max_batch_bytes(200);
    all_ok(&write(&w, rows(40, 1, "b")).await);
    let recent = w.observations().recent();
    assert!(
        recent[10..].iter().all(|o| o.bytes <= 200 || o.rows == 1),
        "byte cap respected: {recent:?}"
    );
    knobs.set_max_in_flight(1);
    knobs.set_max_batch_bytes(1 << 20);
    all_ok(&write(&w, rows(64, 8, "c")).await);
    assert_eq!(knobs.max_in_flight(), 1);
    // stream-0 already holds msg-0..39; of the 64 new rows, msg-0, 8, .., 32 land on stream-0 again (5 overwrites).
    assert_eq!(server.row_count("trimtab", "events"), 40 + 64 - 5);
}

#[tokio::test]
async fn write_timeouts_are_retriable_and_clear() {
    let server = server_with(16 << 20).await;
    let cfg = CassandraConfig {
        max_attempts: 2,
        ..config(&server)
    };
    let w = writer(&cfg).await;
    let faults = server.faults();

    // One timeout: the writer's own retry absorbs it.
    faults.fail_writes_with_timeout(1);
    all_ok(&write(&w, rows(10, 1, "x")).await);
    assert_eq!(w.snapshot().errors.get("write_timeout"), Some(&1));

    // Persistent timeouts: every row comes back retriable, naming its message.
    faults.fail_writes_with_timeout(1_000);
    let outcomes = write(&w, rows(5, 1, "y")).await;
    for (i, o) in outcomes.iter().enumerate() {
        let e = o
            .as_ref()
            .expect_err("write must fail while timeouts are on");
        assert!(e.is_retriable(), "{e}");
        assert_eq!(e.kind(), "write_timeout");
        assert_eq!(e.message_id(), Some(format!("msg-{i}").as_str()));
    }
    faults.clear();
    all_ok(&write(&w, rows(5, 1, "y")).await);
    assert_eq!(server.row_count("trimtab", "events"), 10);
}

#[tokio::test]
async fn overload_and_unavailable_are_retriable_and_clear() {
    let server = server_with(16 << 20).await;
    let cfg = CassandraConfig {
        max_attempts: 1,
        ..config(&server)
    };
    let w = writer(&cfg).await;
    server.faults().overload_writes(1_000);
    let outcomes = write(&w, rows(3, 1, "o")).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(e) if e.is_retriable() && e.kind() == "overloaded")),
        "{outcomes:?}"
    );
    server.faults().clear();
    all_ok(&write(&w, rows(3, 1, "o")).await);
    server.faults().fail_writes_unavailable(1_000);
    let outcomes = write(&w, rows(3, 1, "u")).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(e) if e.is_retriable() && e.kind() == "unavailable")),
        "{outcomes:?}"
    );
    server.faults().clear();
    all_ok(&write(&w, rows(3, 1, "u")).await);
}

#[tokio::test]
async fn malformed_rows_are_rejected_by_name_and_do_not_sink_their_batch() {
    // The server refuses mutations over 8 KiB; the writer's own cap is 64 KiB.
    let server = server_with(8 * 1024).await;
    let cfg = CassandraConfig {
        max_row_bytes: 64 * 1024,
        ..config(&server)
    };
    let w = writer(&cfg).await;
    let mut batch = rows(6, 1, "ok");
    batch[2].payload = "x".repeat(100 * 1024); // over the writer's cap
    batch[4].payload = "y".repeat(20 * 1024); // under the cap, over the server's mutation limit
    batch[5].message_id = String::new();
    let outcomes = write(&w, batch).await;
    match &outcomes[2] {
        Err(e @ CassandraError::RowTooLarge { message_id, .. }) => {
            assert_eq!(message_id, "msg-2");
            assert!(!e.is_retriable());
        }
        other => panic!("expected RowTooLarge for msg-2, got {other:?}"),
    }
    let e = outcomes[4].as_ref().expect_err("server rejects msg-4");
    assert!(!e.is_retriable(), "{e}");
    assert_eq!(e.message_id(), Some("msg-4"));
    assert!(e.to_string().contains("msg-4"));
    assert!(matches!(
        &outcomes[5],
        Err(CassandraError::InvalidRow { .. })
    ));
    for i in [0, 1, 3] {
        assert!(
            outcomes[i].is_ok(),
            "row {i} must still be written: {:?}",
            outcomes[i]
        );
    }
    assert_eq!(server.row_count("trimtab", "events"), 3);
}

#[tokio::test]
async fn writer_recovers_from_refused_connections_and_a_restart_mid_run() {
    let server = Arc::new(server_with(16 << 20).await);
    let cfg = CassandraConfig {
        max_attempts: 2,
        request_timeout_ms: 2_000,
        ..config(&server)
    };
    let w = Arc::new(writer(&cfg).await);
    all_ok(&write(&w, rows(10, 2, "before")).await);

    // Stop the node and refuse connections when it comes back.
    server.faults().set_refuse_connections(true);
    tokio::time::timeout(WAIT, server.restart())
        .await
        .expect("restart timed out")
        .expect("restart");
    let outcomes = write(&w, rows(20, 2, "during")).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(e) if e.is_retriable())),
        "writes while connections are refused fail retriably: {outcomes:?}"
    );

    // Let connections in again: the driver reconnects and the same rows land (the caller retries them).
    server.faults().set_refuse_connections(false);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let outcomes = write(&w, rows(20, 2, "after")).await;
        if outcomes.iter().all(Result::is_ok) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writer never recovered: {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.row_count("trimtab", "events"), 20);

    // A plain stop and restart in the middle of a stream of writes.
    let writing = {
        let w = w.clone();
        tokio::spawn(async move {
            let mut failed = 0;
            for round in 0..30 {
                let batch: Vec<EventRow> = rows(10, 2, "loop")
                    .into_iter()
                    .map(|mut r| {
                        r.message_id = format!("loop-{round}-{}", r.message_id);
                        r
                    })
                    .collect();
                // Retry each round until it lands, as the pipeline would by redelivery.
                loop {
                    let outcomes = w.write(batch.clone()).await;
                    if outcomes.iter().all(Result::is_ok) {
                        break;
                    }
                    assert!(outcomes
                        .iter()
                        .all(|o| o.as_ref().err().is_none_or(CassandraError::is_retriable)));
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            failed
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(WAIT, server.restart())
        .await
        .expect("restart timed out")
        .expect("restart");
    let _failed_rounds = tokio::time::timeout(Duration::from_secs(60), writing)
        .await
        .expect("writes never finished")
        .expect("task");
    assert_eq!(server.row_count("trimtab", "events"), 20 + 300);
}

#[tokio::test]
async fn own_tables_round_trip() {
    let server = server_with(16 << 20).await;
    let cfg = config(&server);
    let w = writer(&cfg).await;
    let t = OwnTables::new(w.session(), &cfg).await.expect("own tables");

    let samples: Vec<(String, OffsetDateTime, f64)> = (0..48)
        .map(|h| ("depth".to_string(), at(h * 3600), h as f64))
        .collect();
    t.insert_metric_samples(&samples)
        .await
        .expect("insert samples");
    let got = t
        .load_metric_samples("depth", at(10 * 3600), at(30 * 3600))
        .await
        .expect("load samples");
    assert_eq!(
        got.iter().map(|(_, v)| *v as i64).collect::<Vec<_>>(),
        (10..30).collect::<Vec<_>>()
    );
    assert_eq!(
        t.metric_buckets().await.expect("buckets").len(),
        48,
        "one partition per hour"
    );

    let row = |seq: u64| AuditRow {
        seq,
        prev_hash: format!("h{}", seq.wrapping_sub(1)),
        hash: format!("h{seq}"),
        record: format!("{{\"seq\":{seq}}}"),
    };
    // One record, then four in one call, the last of them in the next bucket.
    t.append_audit(&[row(0)]).await.expect("append audit");
    let more = [row(1), row(2), row(3), row(AUDIT_BUCKET)];
    t.append_audit(&more).await.expect("append audit");
    let audit = t.load_audit().await.expect("load audit");
    assert_eq!(
        audit.iter().map(|a| a.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, AUDIT_BUCKET]
    );
    assert_eq!(audit[3].hash, "h3");

    t.upsert_proposal("p1", "proposed", "{}")
        .await
        .expect("upsert");
    t.upsert_proposal("p1", "approved", "{\"by\":\"op\"}")
        .await
        .expect("upsert again");
    t.upsert_proposal("p2", "proposed", "{}")
        .await
        .expect("upsert p2");
    let mut proposals = t.load_proposals().await.expect("load proposals");
    proposals.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(proposals.len(), 2);
    assert_eq!(
        (proposals[0].state.as_str(), proposals[0].json.as_str()),
        ("approved", "{\"by\":\"op\"}")
    );

    let f = ForecastRow {
        series: "depth".into(),
        made_at: at(0),
        step: 1,
        target_ts: at(60),
        point: 10.0,
        lo: 8.0,
        hi: 12.0,
        actual: None,
        score: None,
    };
    t.insert_forecasts(&[
        f.clone(),
        ForecastRow {
            step: 2,
            target_ts: at(120),
            ..f.clone()
        },
    ])
    .await
    .expect("insert forecast");
    t.score_forecasts("depth", &[(at(0), 1, 11.0, 0.1)])
        .await
        .expect("score");
    let fs = t.load_forecasts("depth").await.expect("load forecasts");
    assert_eq!(fs.len(), 2);
    assert_eq!(
        (fs[0].point, fs[0].actual, fs[0].score),
        (10.0, Some(11.0), Some(0.1)),
        "scoring keeps the forecast"
    );
    assert_eq!(fs[1].actual, None);
}
