//! The CQL stand-in over the wire with the real `scylla` 1.9 driver at its default settings.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::CqlTimestamp;
use trimtab::sim::cql::{CqlServer, CqlServerConfig};

const WAIT: Duration = Duration::from_secs(20);

async fn server() -> CqlServer {
    let config = CqlServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..CqlServerConfig::default()
    };
    tokio::time::timeout(WAIT, CqlServer::start(config))
        .await
        .expect("server start timed out")
        .expect("server starts")
}

async fn connect(server: &CqlServer) -> Session {
    tokio::time::timeout(
        WAIT,
        SessionBuilder::new()
            .known_node(server.addr().to_string())
            .build(),
    )
    .await
    .expect("session build timed out")
    .expect("session builds with default settings")
}

async fn run(session: &Session, cql: &str) {
    tokio::time::timeout(WAIT, session.query_unpaged(cql, &[]))
        .await
        .unwrap_or_else(|_| panic!("{cql} timed out"))
        .unwrap_or_else(|e| panic!("{cql} failed: {e}"));
}

/// Runs an unprepared `cql` and decodes every row as `R`.
async fn select_all<R>(session: &Session, cql: &str) -> Vec<R>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    tokio::time::timeout(WAIT, session.query_unpaged(cql, &[]))
        .await
        .unwrap_or_else(|_| panic!("{cql} timed out"))
        .unwrap_or_else(|e| panic!("{cql} failed: {e}"))
        .into_rows_result()
        .expect("rows")
        .rows::<R>()
        .expect("typed")
        .collect::<Result<_, _>>()
        .expect("decode")
}

fn db_error(e: &ExecutionError) -> Option<(&DbError, &str)> {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => {
            Some((db, msg.as_str()))
        }
        _ => None,
    }
}

async fn with_table(session: &Session) {
    run(session, "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}").await;
    run(
        session,
        "CREATE TABLE IF NOT EXISTS ks.ev (stream text, day text, id text, at timestamp, n bigint, payload text, \
         PRIMARY KEY ((stream, day), id))",
    )
    .await;
}

#[tokio::test]
async fn prepared_inserts_batches_and_reads_round_trip() {
    let server = server().await;
    let session = connect(&server).await;
    with_table(&session).await;
    let insert = session
        .prepare("INSERT INTO ks.ev (stream, day, id, at, n, payload) VALUES (?, ?, ?, ?, ?, ?)")
        .await
        .expect("prepare insert");
    session
        .execute_unpaged(&insert, ("s", "d1", "m1", CqlTimestamp(1_000), 7i64, "{}"))
        .await
        .expect("execute insert");
    let mut batch = Batch::new(BatchType::Unlogged);
    let mut values = Vec::new();
    for i in 0..10 {
        batch.append_statement(insert.clone());
        values.push(("s", "d1", format!("b{i}"), CqlTimestamp(i), i, "{\"k\":1}"));
    }
    session.batch(&batch, &values).await.expect("batch");
    // Same primary key again: overwrites, never a second row.
    session
        .execute_unpaged(
            &insert,
            (
                "s",
                "d1",
                "m1",
                CqlTimestamp(2_000),
                8i64,
                "{\"again\":true}",
            ),
        )
        .await
        .expect("re-insert");
    assert_eq!(server.row_count("ks", "ev"), 11);

    let select = session
        .prepare("SELECT id, n, payload FROM ks.ev WHERE stream = ? AND day = ? AND id = ?")
        .await
        .expect("prepare select");
    let rows = session
        .execute_unpaged(&select, ("s", "d1", "m1"))
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows");
    let got: Vec<(String, i64, String)> = rows
        .rows()
        .expect("typed")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(
        got,
        vec![("m1".to_string(), 8, "{\"again\":true}".to_string())]
    );

    let ids: Vec<(String,)> = select_all(
        &session,
        "SELECT id FROM ks.ev WHERE stream = 's' AND day IN ('d1', 'd2') AND id >= 'b3' AND id < 'b6'",
    )
    .await;
    assert_eq!(ids, vec![("b3".into(),), ("b4".into(),), ("b5".into(),)]);

    // DISTINCT answers one row per partition, and only over the partition key, as Cassandra does.
    session
        .execute_unpaged(&insert, ("s", "d2", "m9", CqlTimestamp(3_000), 9i64, "{}"))
        .await
        .expect("insert in a second partition");
    let partitions: Vec<(String, String)> =
        select_all(&session, "SELECT DISTINCT stream, day FROM ks.ev").await;
    assert_eq!(partitions.len(), 2, "{partitions:?}");
    let e = session
        .query_unpaged("SELECT DISTINCT stream, id FROM ks.ev", &[])
        .await
        .expect_err("DISTINCT over a clustering column");
    assert!(
        matches!(db_error(&e), Some((DbError::Invalid, m)) if m.contains("partition key")),
        "{e}"
    );
}

#[tokio::test]
async fn paging_returns_every_row_once() {
    let server = server().await;
    let session = connect(&server).await;
    with_table(&session).await;
    let insert = session
        .prepare("INSERT INTO ks.ev (stream, day, id, n) VALUES ('p', 'd', ?, ?)")
        .await
        .expect("prepare");
    for i in 0..250i64 {
        session
            .execute_unpaged(&insert, (format!("{i:04}"), i))
            .await
            .expect("insert");
    }
    let mut select = session
        .prepare("SELECT n FROM ks.ev WHERE stream = 'p' AND day = 'd'")
        .await
        .expect("prepare");
    select.set_page_size(100);
    let (first, state) = session
        .execute_single_page(&select, (), scylla::response::PagingState::start())
        .await
        .expect("first page");
    assert_eq!(first.into_rows_result().expect("rows").rows_num(), 100);
    assert!(
        matches!(
            state,
            scylla::response::PagingStateResponse::HasMorePages { .. }
        ),
        "server must say there are more pages"
    );
    use futures::TryStreamExt;
    let all: Vec<(i64,)> = session
        .execute_iter(select, ())
        .await
        .expect("pager")
        .rows_stream::<(i64,)>()
        .expect("typed")
        .try_collect()
        .await
        .expect("all pages");
    assert_eq!(all.len(), 250);
    assert_eq!(
        all.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..250).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn errors_look_like_cassandra() {
    let server = server().await;
    let session = connect(&server).await;
    with_table(&session).await;
    let e = session
        .query_unpaged("SELECT * FROM ks.nope", &[])
        .await
        .expect_err("unknown table");
    assert!(
        matches!(db_error(&e), Some((DbError::Invalid, m)) if m.contains("nope")),
        "{e}"
    );
    let e = session
        .query_unpaged("INSERT INTO ks.ev (stream) VALUS ('x')", &[])
        .await
        .expect_err("syntax");
    assert!(
        matches!(db_error(&e), Some((DbError::SyntaxError, m)) if m.contains("INSERT INTO ks.ev")),
        "{e}"
    );
    let e = session
        .query_unpaged("SELECT * FROM system_schema.scylla_tables", &[])
        .await
        .expect_err("scylla table");
    assert!(matches!(db_error(&e), Some((DbError::Invalid, _))), "{e}");
    // A literal of the wrong type for the column.
    let e = session
        .query_unpaged(
            "INSERT INTO ks.ev (stream, day, id, n) VALUES ('s', 'd', 'i', 'not a number')",
            &[],
        )
        .await
        .expect_err("type mismatch");
    assert!(
        matches!(db_error(&e), Some((DbError::Invalid, m)) if m.contains("bigint")),
        "{e}"
    );
}

#[tokio::test]
async fn multi_partition_batches_warn_then_fail_but_single_partition_ones_do_not() {
    let server = server().await;
    let session = connect(&server).await;
    with_table(&session).await;
    let insert = session
        .prepare("INSERT INTO ks.ev (stream, day, id, payload) VALUES (?, ?, ?, ?)")
        .await
        .expect("prepare");
    let big = "x".repeat(1024);
    let batch_of = |n: usize, partitions: usize| {
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values = Vec::new();
        for i in 0..n {
            batch.append_statement(insert.clone());
            values.push((
                format!("s{}", i % partitions),
                "d".to_string(),
                format!("m{n}-{i}"),
                big.clone(),
            ));
        }
        (batch, values)
    };
    let (batch, values) = batch_of(10, 2);
    let result = session
        .batch(&batch, &values)
        .await
        .expect("10 KiB multi-partition batch only warns");
    assert!(
        result
            .warnings()
            .any(|w| w.contains("exceeding specified threshold")),
        "expected a size warning"
    );
    let (batch, values) = batch_of(60, 2);
    let e = session
        .batch(&batch, &values)
        .await
        .expect_err("60 KiB multi-partition batch fails");
    assert!(
        matches!(db_error(&e), Some((DbError::Invalid, m)) if m.contains("Batch too large")),
        "{e}"
    );
    let (batch, values) = batch_of(60, 1);
    let result = session
        .batch(&batch, &values)
        .await
        .expect("single-partition batch is not size-checked");
    assert_eq!(result.warnings().count(), 0);
    assert_eq!(server.row_count("ks", "ev"), 70);
}

#[tokio::test]
async fn restart_forgets_prepared_ids_and_the_driver_reprepares() {
    let server = server().await;
    let session = connect(&server).await;
    with_table(&session).await;
    let insert = session
        .prepare("INSERT INTO ks.ev (stream, day, id) VALUES (?, ?, ?)")
        .await
        .expect("prepare");
    session
        .execute_unpaged(&insert, ("s", "d", "1"))
        .await
        .expect("insert before restart");
    tokio::time::timeout(WAIT, server.restart())
        .await
        .expect("restart timed out")
        .expect("restart");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match session.execute_unpaged(&insert, ("s", "d", "2")).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "waiting for reconnect");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("driver never recovered after restart: {e}"),
        }
    }
    assert_eq!(
        server.row_count("ks", "ev"),
        2,
        "data survives a restart and the re-prepared insert lands"
    );
}

#[tokio::test]
async fn data_survives_stop_and_start_with_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cql.json");
    let config = CqlServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        persist_path: Some(path.clone()),
        ..CqlServerConfig::default()
    };
    let server = CqlServer::start(config.clone()).await.expect("start");
    {
        let session = connect(&server).await;
        with_table(&session).await;
        run(
            &session,
            "INSERT INTO ks.ev (stream, day, id, n) VALUES ('s', 'd', 'kept', 42)",
        )
        .await;
    }
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown timed out")
        .expect("shutdown");
    let server = CqlServer::start(config).await.expect("start again");
    assert_eq!(server.row_count("ks", "ev"), 1);
    let session = connect(&server).await;
    let rows = session
        .query_unpaged("SELECT n FROM ks.ev WHERE stream = 's' AND day = 'd'", &[])
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows");
    assert_eq!(rows.single_row::<(i64,)>().expect("one row"), (42,));
}
