//! The CQL stand-in's capacity model over the wire with the real `scylla` driver: latency grows with concurrency
//! past the worker limit, write timeouts and Overloaded appear where the model puts them, and a batch spread over
//! many partitions costs more than the same rows in one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use trimtab::sim::cql::{CapacityModel, CqlServer, CqlServerConfig};

const WAIT: Duration = Duration::from_secs(30);

async fn server(model: CapacityModel) -> CqlServer {
    let config = CqlServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        capacity: Some(model),
        ..CqlServerConfig::default()
    };
    tokio::time::timeout(WAIT, CqlServer::start(config))
        .await
        .expect("server start timed out")
        .expect("server starts")
}

/// A session with the default settings, a table, and the prepared INSERT.
async fn connect(server: &CqlServer) -> (Arc<Session>, PreparedStatement) {
    let session = tokio::time::timeout(
        WAIT,
        SessionBuilder::new()
            .known_node(server.addr().to_string())
            .build(),
    )
    .await
    .expect("session build timed out")
    .expect("session builds");
    for cql in [
        "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE IF NOT EXISTS ks.ev (stream text, id text, payload text, PRIMARY KEY (stream, id))",
    ] {
        tokio::time::timeout(WAIT, session.query_unpaged(cql, &[]))
            .await
            .expect("ddl timed out")
            .expect("ddl");
    }
    let mut insert = tokio::time::timeout(
        WAIT,
        session.prepare("INSERT INTO ks.ev (stream, id, payload) VALUES (?, ?, ?)"),
    )
    .await
    .expect("prepare timed out")
    .expect("prepare");
    // Generous, so the client never gives up before the server answers.
    insert.set_request_timeout(Some(Duration::from_secs(20)));
    (Arc::new(session), insert)
}

fn model(workers: u32, per_request_ms: u64) -> CapacityModel {
    CapacityModel {
        workers,
        per_request_us: per_request_ms * 1_000,
        per_kib_us: 0,
        per_extra_partition_us: 0,
        write_timeout_ms: 60_000,
        max_backlog: 100_000,
    }
}

fn db_error(e: &ExecutionError) -> Option<&DbError> {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => Some(db),
        _ => None,
    }
}

/// `clients` tasks each write `per_client` rows one after another; returns the mean latency and rows per second.
async fn closed_loop(
    session: &Arc<Session>,
    insert: &PreparedStatement,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> (Duration, f64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (session, insert, tag) = (session.clone(), insert.clone(), tag.to_string());
            tokio::spawn(async move {
                let mut total = Duration::ZERO;
                for i in 0..per_client {
                    let t = Instant::now();
                    session
                        .execute_unpaged(&insert, (format!("s{c}"), format!("{tag}-{c}-{i}"), "x"))
                        .await
                        .expect("write within the model's limits succeeds");
                    total += t.elapsed();
                }
                total
            })
        })
        .collect();
    let mut total = Duration::ZERO;
    for t in tasks {
        total += tokio::time::timeout(WAIT, t)
            .await
            .expect("closed loop timed out")
            .expect("client task");
    }
    let n = (clients * per_client) as u32;
    (total / n, f64::from(n) / started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_flat_up_to_the_workers_and_grows_with_the_queue_past_them() {
    // 4 workers at 8 ms a write: at most 500 writes/s, and past 4 clients each waits behind the others.
    let server = server(model(4, 8)).await;
    let (session, insert) = connect(&server).await;
    let (at_1, _) = closed_loop(&session, &insert, 1, 15, "c1").await;
    let (at_4, tp_4) = closed_loop(&session, &insert, 4, 15, "c4").await;
    let (at_16, tp_16) = closed_loop(&session, &insert, 16, 15, "c16").await;
    let (at_32, tp_32) = closed_loop(&session, &insert, 32, 10, "c32").await;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let seen = format!(
        "mean latency 1: {:.1} ms, 4: {:.1} ms, 16: {:.1} ms, 32: {:.1} ms; writes/s 4: {tp_4:.0}, 16: {tp_16:.0}, 32: {tp_32:.0}",
        ms(at_1), ms(at_4), ms(at_16), ms(at_32)
    );
    assert!(ms(at_1) >= 8.0, "one write costs its service time: {seen}");
    assert!(
        ms(at_4) < ms(at_1) * 1.6,
        "up to the worker limit latency stays flat: {seen}"
    );
    assert!(
        ms(at_16) > ms(at_4) * 2.5,
        "16 clients on 4 workers queue about 4 deep: {seen}"
    );
    assert!(
        ms(at_32) > ms(at_16) * 1.5,
        "twice the clients, about twice the wait: {seen}"
    );
    assert!(
        tp_32 < 560.0 && tp_16 < 560.0,
        "throughput is capped at 4 workers / 8 ms = 500 writes/s: {seen}"
    );
    let stats = server.capacity_stats().expect("model on");
    assert_eq!(
        (stats.write_timeouts, stats.overloaded),
        (0, 0),
        "{stats:?}"
    );
    assert!(
        stats.peak_backlog >= 20,
        "32 clients on 4 workers: {stats:?}"
    );
    server.shutdown().await.expect("shutdown");
}

/// Sends `n` writes at once; returns how many succeeded, timed out and were refused as overloaded.
async fn burst(
    session: &Arc<Session>,
    insert: &PreparedStatement,
    n: usize,
    tag: &str,
) -> (usize, usize, usize) {
    let writes = (0..n).map(|i| {
        let (session, insert) = (session.clone(), insert.clone());
        let id = format!("{tag}-{i}");
        async move {
            session
                .execute_unpaged(&insert, ("burst", id, "x"))
                .await
                .map(drop)
        }
    });
    let results = tokio::time::timeout(WAIT, futures::future::join_all(writes))
        .await
        .expect("burst timed out");
    let mut counts = (0, 0, 0);
    for r in results {
        match r {
            Ok(()) => counts.0 += 1,
            Err(e) => match db_error(&e) {
                Some(DbError::WriteTimeout { .. }) => counts.1 += 1,
                Some(DbError::Overloaded) => counts.2 += 1,
                _ => panic!("unexpected error: {e}"),
            },
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_past_the_timeout_time_out_and_a_full_backlog_is_overloaded() {
    // One worker at 20 ms a write and a 90 ms timeout: of 20 writes arriving together, those that would wait 0,
    // 20, 40, 60 and 80 ms run and the rest time out (the burst reaches the server over a few ms, which can move
    // the line by one).
    let server = server(CapacityModel {
        write_timeout_ms: 90,
        ..model(1, 20)
    })
    .await;
    let (session, insert) = connect(&server).await;
    let started = Instant::now();
    let (ok, timed_out, overloaded) = burst(&session, &insert, 20, "t").await;
    assert!((5..=6).contains(&ok), "ok {ok}, timed out {timed_out}");
    assert_eq!(ok + timed_out, 20);
    assert_eq!(overloaded, 0);
    assert!(
        started.elapsed() >= Duration::from_millis(90),
        "a timeout is answered only after the timeout"
    );
    let stats = server.capacity_stats().expect("model on");
    assert_eq!(stats.write_timeouts as usize, timed_out, "{stats:?}");
    server.shutdown().await.expect("shutdown");

    // One worker with a long timeout but room for only 4 waiting writes: 1 runs, 4 wait, 15 are refused.
    let server = server_with_backlog(4).await;
    let (session, insert) = connect(&server).await;
    let (ok, timed_out, overloaded) = burst(&session, &insert, 20, "o").await;
    assert_eq!(
        (ok, timed_out, overloaded),
        (5, 0, 15),
        "one running and four waiting fit"
    );
    let stats = server.capacity_stats().expect("model on");
    assert_eq!(stats.overloaded, 15, "{stats:?}");
    assert_eq!(
        stats.writes, 5,
        "schema statements are not charged: {stats:?}"
    );
    server.shutdown().await.expect("shutdown");
}

async fn server_with_backlog(max_backlog: u32) -> CqlServer {
    server(CapacityModel {
        max_backlog,
        ..model(1, 20)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_many_partitions_costs_more_than_one_over_a_single_partition() {
    let server = server(CapacityModel {
        per_extra_partition_us: 5_000,
        ..model(1, 2)
    })
    .await;
    let (session, insert) = connect(&server).await;
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..8 {
        batch.append_statement(insert.clone());
    }
    batch.set_request_timeout(Some(Duration::from_secs(20)));
    let timed = |streams: Vec<String>, tag: &'static str| {
        let (session, batch) = (session.clone(), batch.clone());
        async move {
            let mut best = Duration::MAX;
            for round in 0..5 {
                let values: Vec<(String, String, &str)> = streams
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.clone(), format!("{tag}-{round}-{i}"), "x"))
                    .collect();
                let t = Instant::now();
                tokio::time::timeout(WAIT, session.batch(&batch, &values))
                    .await
                    .expect("batch timed out")
                    .expect("batch");
                best = best.min(t.elapsed());
            }
            best
        }
    };
    let single = timed(vec!["one".to_string(); 8], "single").await;
    let spread = timed((0..8).map(|i| format!("p{i}")).collect(), "spread").await;
    // The model: 2 ms for either, plus 7 extra partitions × 5 ms = 35 ms for the spread one.
    assert!(
        spread >= single + Duration::from_millis(30),
        "single partition {single:?}, eight partitions {spread:?}"
    );
    assert!(
        single < Duration::from_millis(30),
        "single partition {single:?}"
    );
    server.shutdown().await.expect("shutdown");
}
