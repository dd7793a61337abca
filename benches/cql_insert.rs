//! The raw insert ceiling of the CQL stand-in: a direct `scylla` load generator sweeping concurrency × batch size.
//!
//! Run with `cargo bench --bench cql_insert`. Every batch is an unlogged batch of one partition (each
//! worker writes its own stream), of a prepared idempotent INSERT with a ~200-byte payload, which is
//! what trimtab's writer sends. Prints rows/s per cell, each cell's ratio to the single-row,
//! single-request baseline measured in the same run, and the best cell: the raw insert ceiling.
//! Then trimtab's `EventWriter` at its default knobs writes through the same server, as a ratio to that
//! ceiling. Server and load generator share this process (and the machine's cores).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use trimtab::cassandra::{CassandraConfig, EventRow, EventWriter};
use trimtab::sim::cql::{CqlServer, CqlServerConfig};

const CONCURRENCY: [usize; 4] = [1, 4, 16, 64];
const BATCH_ROWS: [usize; 5] = [1, 8, 32, 64, 128];
const CELL_TIME: Duration = Duration::from_millis(1500);

async fn run_cell(
    session: Arc<Session>,
    insert: &PreparedStatement,
    concurrency: usize,
    rows: usize,
    cell: usize,
) -> f64 {
    let written = Arc::new(AtomicU64::new(0));
    let payload = Arc::new(format!("{{\"payload\":\"{}\"}}", "x".repeat(180)));
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..rows {
        batch.append_statement(insert.clone());
    }
    batch.set_is_idempotent(true);
    let batch = Arc::new(batch);
    let start = Instant::now();
    let deadline = start + CELL_TIME;
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (session, insert, batch, written, payload) = (
            session.clone(),
            insert.clone(),
            batch.clone(),
            written.clone(),
            payload.clone(),
        );
        workers.push(tokio::spawn(async move {
            let stream = format!("bench-{cell}-{w}");
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let values: Vec<_> = (0..rows)
                    .map(|i| {
                        (
                            stream.as_str(),
                            "2026-11-22",
                            format!("{seq}-{i}"),
                            CqlTimestamp(seq as i64),
                            payload.as_str(),
                        )
                    })
                    .collect();
                let result = if rows == 1 {
                    session.execute_unpaged(&insert, &values[0]).await.map(drop)
                } else {
                    session.batch(&batch, &values).await.map(drop)
                };
                match result {
                    Ok(()) => {
                        written.fetch_add(rows as u64, Ordering::Relaxed);
                    }
                    Err(e) => eprintln!("write failed: {e}"),
                }
                seq += 1;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    written.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let config = CqlServerConfig { bind: "127.0.0.1:0".parse().expect("addr"), ..CqlServerConfig::default() };
        let server = CqlServer::start(config).await.expect("start the CQL stand-in");
        let session = Arc::new(
            SessionBuilder::new().known_node(server.addr().to_string()).build().await.expect("scylla session with default settings"),
        );
        for ddl in [
            "CREATE KEYSPACE IF NOT EXISTS bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            "CREATE TABLE IF NOT EXISTS bench.events (stream text, day text, message_id text, event_time timestamp, \
             payload text, PRIMARY KEY ((stream, day), message_id))",
        ] {
            session.query_unpaged(ddl, &[]).await.expect("schema");
        }
        let mut insert = session
            .prepare("INSERT INTO bench.events (stream, day, message_id, event_time, payload) VALUES (?, ?, ?, ?, ?)")
            .await
            .expect("prepare");
        insert.set_is_idempotent(true);

        println!("cql_insert: rows/s into trimtab's CQL stand-in ({} ms per cell, ~200-byte payload)", CELL_TIME.as_millis());
        let mut baseline = 0.0;
        let mut best = (0.0, 0, 0);
        let mut cell = 0;
        print!("{:>12}", "in flight");
        for rows in BATCH_ROWS {
            print!("{:>22}", format!("batch={rows}"));
        }
        println!();
        for concurrency in CONCURRENCY {
            print!("{concurrency:>12}");
            for rows in BATCH_ROWS {
                let rate = run_cell(session.clone(), &insert, concurrency, rows, cell).await;
                cell += 1;
                if concurrency == 1 && rows == 1 {
                    baseline = rate;
                }
                if rate > best.0 {
                    best = (rate, concurrency, rows);
                }
                print!("{:>22}", format!("{rate:.0} ({:.1}x)", rate / baseline.max(1.0)));
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
            println!();
        }
        println!("baseline (1 in flight, 1 row per request): {baseline:.0} rows/s");
        println!(
            "raw insert ceiling: {:.0} rows/s at {} in flight x {} rows per batch ({:.1}x baseline)",
            best.0,
            best.1,
            best.2,
            best.0 / baseline.max(1.0)
        );
        println!("rows stored: {}", server.row_count("bench", "events"));

        // trimtab's own writer at its default knobs, against the ceiling just measured.
        let config = CassandraConfig { contact_points: vec![server.addr().to_string()], ..CassandraConfig::default() };
        let writer = EventWriter::connect(&config).await.expect("event writer");
        let payload = format!("{{\"payload\":\"{}\"}}", "x".repeat(180));
        let now = time::OffsetDateTime::now_utc();
        let (calls, per_call, streams) = (40, 4096, 16);
        let start = Instant::now();
        let mut ok = 0usize;
        for call in 0..calls {
            let rows: Vec<EventRow> = (0..per_call)
                .map(|i| EventRow {
                    stream: format!("stream-{}", i % streams),
                    message_id: format!("{call}-{i}"),
                    event_time: now,
                    enqueued_at: now,
                    payload: payload.clone(),
                })
                .collect();
            ok += writer.write(rows).await.iter().filter(|o| o.is_ok()).count();
        }
        let rate = ok as f64 / start.elapsed().as_secs_f64();
        let knobs = writer.knobs();
        println!(
            "EventWriter (rows_per_batch={}, max_in_flight={}, {streams} streams, {per_call} rows per call): {rate:.0} rows/s, {:.2}x the raw ceiling, {ok} of {} rows ok",
            knobs.rows_per_batch(),
            knobs.max_in_flight(),
            rate / best.0.max(1.0),
            calls * per_call
        );
        server.shutdown().await.expect("shutdown");
    });
}
