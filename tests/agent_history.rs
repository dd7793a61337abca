//! Metric history in Cassandra: samples written through the store survive a restart (a new store over the table),
//! a collection step's samples reach the node as one write, and the agent's history written behind the collector
//! waits while the pipeline keeps the node busy.

use std::sync::Arc;
use std::time::Duration;

use trimtab::cassandra::{connect_session, ensure_schema, CassandraConfig, OwnTables};
use trimtab::cassandra::{
    BatchObservation, BatchOutcome, GiveWay, GiveWayConfig, ObservationWindow, WriterKnobs,
};
use trimtab::metrics::collect::{TableHistory, WriteBehindHistory};
use trimtab::metrics::series::{Sample, SeriesKey};
use trimtab::metrics::store::{MetricStore, SampleHistory};
use trimtab::sim::cql::{CapacityModel, CqlServer, CqlServerConfig};

/// A CQL stand-in with the replay's capacity model (it counts write requests), and trimtab's tables on it.
async fn node_with_tables() -> (CqlServer, OwnTables) {
    let server_config = CqlServerConfig {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        capacity: Some(CapacityModel::default()),
        ..CqlServerConfig::default()
    };
    let server = CqlServer::start(server_config).await.expect("cql server");
    let config = CassandraConfig {
        contact_points: vec![server.addr().to_string()],
        ..CassandraConfig::default()
    };
    let session = tokio::time::timeout(Duration::from_secs(20), connect_session(&config))
        .await
        .expect("connect timed out")
        .expect("connect");
    ensure_schema(&session, &config).await.expect("schema");
    let tables = OwnTables::new(session, &config).await.expect("tables");
    (server, tables)
}

/// Makes `tables` give way to a pipeline of `slots` write slots, each busy for the `span` just before now.
fn busy_pipeline(tables: &OwnTables, slots: u32, span: Duration, max_hold: Duration) {
    let window = Arc::new(ObservationWindow::new(64));
    tables.give_way_to(GiveWay::new(
        window.clone(),
        WriterKnobs::new(32, 1 << 20, slots as usize),
        GiveWayConfig {
            span,
            busy_share: 0.8,
            max_hold,
            poll: Duration::from_millis(10),
        },
    ));
    for _ in 0..slots {
        window.record(BatchObservation {
            rows: 8,
            call_rows: 8 * slots as usize,
            bytes: 8_000,
            latency: span,
            outcome: BatchOutcome::Ok,
            attempt: 1,
            batch_rows: 32,
            concurrency: slots,
            ended: std::time::Instant::now(),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_written_through_the_table_come_back_after_a_restart() {
    let server_config = CqlServerConfig {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..CqlServerConfig::default()
    };
    let server = CqlServer::start(server_config).await.expect("cql server");
    let config = CassandraConfig {
        contact_points: vec![server.addr().to_string()],
        ..CassandraConfig::default()
    };
    let open = || async {
        let session = tokio::time::timeout(Duration::from_secs(20), connect_session(&config))
            .await
            .expect("connect timed out")
            .expect("connect");
        ensure_schema(&session, &config).await.expect("schema");
        let tables = Arc::new(
            OwnTables::new(session.clone(), &config)
                .await
                .expect("tables"),
        );
        Arc::new(TableHistory::new(tables)) as Arc<dyn SampleHistory>
    };
    let depth = SeriesKey::new("queue_active").with_label("entity", "orders");
    let pool = SeriesKey::new("pool_free_kib")
        .with_label("node", "n1")
        .with_label("pool", "pool \"ssd\", fast");
    // Two days apart, so the samples sit in two day buckets.
    let t0 = 1_763_700_000;
    {
        let store = MetricStore::new(open().await, 4);
        for i in 0..6 {
            store
                .record(
                    &depth,
                    Sample {
                        at: t0 + i * 10,
                        value: i as f64,
                    },
                )
                .await
                .expect("record");
        }
        store
            .record(
                &pool,
                Sample {
                    at: t0,
                    value: 100.0,
                },
            )
            .await
            .expect("record");
        store
            .record(
                &pool,
                Sample {
                    at: t0 + 2 * 86_400,
                    value: 80.0,
                },
            )
            .await
            .expect("record");
        // Rewriting a timestamp keeps the later value.
        store
            .record(
                &pool,
                Sample {
                    at: t0,
                    value: 99.0,
                },
            )
            .await
            .expect("record");
    }
    // The process restarts: a new session, a new history over the same table, a new store.
    let history = open().await;
    let restored = MetricStore::restore(history.clone(), 4, t0 + 3 * 86_400)
        .await
        .expect("restore");
    assert_eq!(restored.keys(), {
        let mut k = vec![depth.clone(), pool.clone()];
        k.sort();
        k
    });
    let values: Vec<f64> = restored.window(&depth).iter().map(|s| s.value).collect();
    assert_eq!(
        values,
        vec![2.0, 3.0, 4.0, 5.0],
        "the latest four samples per series"
    );
    assert_eq!(
        restored.window(&pool),
        vec![
            Sample {
                at: t0,
                value: 99.0
            },
            Sample {
                at: t0 + 2 * 86_400,
                value: 80.0
            }
        ]
    );
    let all = history.range(&depth, t0, t0 + 60).await.expect("range");
    assert_eq!(
        all.len(),
        6,
        "the table keeps every sample, not just the window"
    );
    server.shutdown().await.ok();
}

/// The agent shares the node it tunes: 80 samples of one step are one request (after the series are listed
/// once), not 80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_many_series_is_one_write_to_the_node() {
    let (server, tables) = node_with_tables().await;
    let tables = Arc::new(tables);
    let store = MetricStore::new(Arc::new(TableHistory::new(tables)), 10);
    let keys: Vec<SeriesKey> = (0..80)
        .map(|i| SeriesKey::new("lag_in_flight").with_label("key", format!("tenant-{i:02}")))
        .collect();
    let writes = || server.capacity_stats().expect("capacity model").writes;
    let t0 = 1_763_700_000;
    let mut per_step = Vec::new();
    for step in 0..3 {
        let before = writes();
        let samples = keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    Sample {
                        at: t0 + step,
                        value: step as f64,
                    },
                )
            })
            .collect();
        store.record_all(samples).await.expect("record step");
        per_step.push(writes() - before);
    }
    assert_eq!(
        per_step,
        vec![2, 1, 1],
        "the first step also lists the 80 series (one more batch); later steps are one batch"
    );
    assert_eq!(server.row_count("trimtab", "metric_history"), 240);
    assert_eq!(server.row_count("trimtab", "metric_series"), 80);
    server.shutdown().await.ok();
}

/// The agent's history is written behind the collector and gives way to the pipeline: while the event writer's
/// slots are busy a step's samples reach the window at once and the node not at all; once the pipeline's writes
/// have left the measured span, the held steps go together, one write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_held_while_the_pipeline_is_busy_goes_in_one_write_afterwards() {
    use std::time::Instant;
    let (server, tables) = node_with_tables().await;
    // The pipeline's writes: four slots, each busy for the whole span just before now. As they age out of the
    // span the share falls, below 0.8 a fifth of the span (400 ms) later.
    let recorded = Instant::now();
    busy_pipeline(&tables, 4, Duration::from_secs(2), Duration::from_secs(20));
    let tables = Arc::new(tables);
    let history = Arc::new(WriteBehindHistory::start(tables));
    let store = MetricStore::new(history.clone(), 10);
    let key = SeriesKey::new("queue_active").with_label("entity", "orders");
    let writes = || server.capacity_stats().expect("capacity model").writes;
    let before = writes();
    let t0 = 1_763_700_000;
    for step in 0..3 {
        let sample = Sample {
            at: t0 + step,
            value: step as f64,
        };
        tokio::time::timeout(Duration::from_millis(100), store.record(&key, sample))
            .await
            .expect("a step does not wait for the node")
            .expect("record");
    }
    assert_eq!(store.window(&key).len(), 3, "the window has every step");
    assert_eq!(
        server.row_count("trimtab", "metric_history"),
        0,
        "held while the pipeline is busy"
    );
    assert_eq!(
        history.range(&key, t0, t0 + 10).await.expect("range").len(),
        3,
        "a held sample still reads back"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.row_count("trimtab", "metric_history") < 3 {
        assert!(Instant::now() < deadline, "held samples never written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        recorded.elapsed() >= Duration::from_millis(300),
        "written {:?} after the busy span, while the pipeline's writes still filled it",
        recorded.elapsed()
    );
    assert_eq!(history.queued(), 0);
    assert_eq!(
        writes() - before,
        2,
        "the series listed once, then the three held steps in one batch"
    );
    server.shutdown().await.ok();
}

/// What is queued is written by a flush even while the pipeline is busy: the agent flushes when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_writes_held_history_at_once() {
    let (server, tables) = node_with_tables().await;
    // One slot, busy for the whole minute before now: the share stays above 0.8 for 12 s.
    busy_pipeline(
        &tables,
        1,
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    let history = Arc::new(WriteBehindHistory::start(Arc::new(tables)));
    let key = SeriesKey::new("queue_active").with_label("entity", "orders");
    let t0 = 1_763_700_000;
    let samples: Vec<_> = (0..5)
        .map(|i| {
            (
                key.clone(),
                Sample {
                    at: t0 + i,
                    value: 1.0,
                },
            )
        })
        .collect();
    history.append(&samples).await.expect("append");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.row_count("trimtab", "metric_history"), 0, "held");
    tokio::time::timeout(Duration::from_secs(10), history.flush())
        .await
        .expect("a flush does not give way")
        .expect("flush");
    assert_eq!(server.row_count("trimtab", "metric_history"), 5);
    assert_eq!(history.queued(), 0);
    server.shutdown().await.ok();
}
