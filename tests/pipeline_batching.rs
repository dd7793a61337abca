//! Natural batching over the wire: when every write slot is busy the pipeline keeps filling the next batch
//! instead of queueing small ones behind the writes in flight, so a slow Cassandra node gets fewer, fuller
//! requests; when the node keeps up, nothing waits for a batch to fill.

mod common;

use std::time::Duration;

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::app::App;
use trimtab::pipeline::Knobs;
use trimtab::servicebus::MessageSender;
use trimtab::sim::cql::CapacityModel;

/// A node with one worker and 50 ms per request whatever its size: 20 requests per second.
fn slow_node() -> CapacityModel {
    CapacityModel {
        workers: 1,
        per_request_us: 50_000,
        per_kib_us: 0,
        per_extra_partition_us: 0,
        write_timeout_ms: 5_000,
        max_backlog: 1_000,
    }
}

/// Sends `n` events one at a time, one every `every`, then waits until the pipeline has completed them all and
/// every one is in Cassandra. Returns the write requests the node ran.
async fn trickle(n: usize, every: Duration) -> u64 {
    let mut h = Harness::start_with(Duration::from_secs(30), |o| {
        o.cql.capacity = Some(slow_node())
    })
    .await;
    h.config.pipeline.linger_ms = 5;
    h.config.pipeline.knobs = Knobs {
        batch_rows: 64,
        write_concurrency: 1,
        ..Knobs::default()
    };
    let app = App::build(&h.config).await.expect("build the pipeline");
    let stats = app.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));

    let sender = h.sender().await;
    let mut tick = tokio::time::interval(every);
    for message in harness::events("t", n) {
        tick.tick().await;
        sender.send_batch(vec![message]).await.expect("send");
    }
    harness::wait_until(&format!("{n} completed"), Duration::from_secs(60), || {
        let done = stats.snapshot().completed;
        async move { done == n as u64 }
    })
    .await;
    let tables = h.tables().await;
    assert_eq!(
        h.stored_ids(&tables).await.len(),
        n,
        "every event is in Cassandra"
    );
    let writes = h
        .sim
        .cql
        .capacity_stats()
        .expect("the capacity model is on")
        .writes;
    h.stop_pipeline(stop, running).await;
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_faster_than_the_node_fill_fuller_batches() {
    // 300 events sent one by one as fast as the sender goes (about 100 a second here), over four streams (four
    // partitions), against a node that runs 20 requests a second, so keeping up takes 5 rows per request. Chunks
    // cut at the 5 ms linger and queued behind the write in flight carried about 3.6 rows per request on this
    // machine (the receive loop delivers a few messages at a time); chunks that keep filling while the writes in
    // flight take the one slot carried about 6.2 (8 to 9 when the slot was also held through settlement).
    let n = 300;
    let writes = trickle(n, Duration::from_millis(2)).await;
    let rows_per_request = n as f64 / writes as f64;
    assert!(
        rows_per_request >= 5.0,
        "{writes} write requests for {n} rows ({rows_per_request:.1} rows each): batches did not grow while the node was busy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arrivals_the_node_keeps_up_with_go_out_one_by_one() {
    // One event every 150 ms against 50 ms per request: the write job has finished when the next arrives, so
    // each is written on its own after the linger, not held back to fill a batch.
    let n = 16;
    let writes = trickle(n, Duration::from_millis(150)).await;
    assert!(
        writes >= (n as u64) * 9 / 10,
        "{writes} write requests for {n} rows spaced 150 ms apart: rows were held back waiting for a batch"
    );
}
