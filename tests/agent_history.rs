//! Metric history in Cassandra: samples written through the store survive a restart (a new store over the table).

use std::sync::Arc;
use std::time::Duration;

use trimtab::cassandra::{connect_session, ensure_schema, CassandraConfig, OwnTables};
use trimtab::metrics::collect::TableHistory;
use trimtab::metrics::series::{Sample, SeriesKey};
use trimtab::metrics::store::{MetricStore, SampleHistory};
use trimtab::sim::cql::{CqlServer, CqlServerConfig};

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
        Arc::new(TableHistory::new(tables, session, config.keyspace.clone()))
            as Arc<dyn SampleHistory>
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
