//! Metric history in Cassandra: samples written through the store survive a restart (a new store over the table),
//! and a collection step's samples reach the node as one write.

use std::sync::Arc;
use std::time::Duration;

use trimtab::cassandra::{connect_session, ensure_schema, CassandraConfig, OwnTables};
use trimtab::metrics::collect::TableHistory;
use trimtab::metrics::series::{Sample, SeriesKey};
use trimtab::metrics::store::{MetricStore, SampleHistory};
use trimtab::sim::cql::{CapacityModel, CqlServer, CqlServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_written_through_the_table_come_back_after_a_restart() {
    let mut server_config = CqlServerConfig::default();
    server_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
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
    let mut server_config = CqlServerConfig::default();
    server_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    server_config.capacity = Some(CapacityModel::default());
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
    let tables = Arc::new(OwnTables::new(session, &config).await.expect("tables"));
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
