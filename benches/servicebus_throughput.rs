//! Whether the Service Bus stand-in can be the pipeline's bottleneck: the real client's send and
//! receive + complete rates through it, each beside the CQL stand-in's insert rate measured in the same run,
//! with the CPU time the stand-in and the client each spent.
//!
//! Run: `cargo bench --bench servicebus_throughput -- [messages] [body_bytes]` (defaults 20000 and 256).
//!
//! The stand-in runs on a thread and runtime of its own and the client on the main thread, each on a
//! single-threaded runtime, so the CPU time of each is read from its own thread (`/proc/thread-self/stat`).
//! "Stand-in capacity" is messages per CPU-second the stand-in spent: the rate it could serve if it had a core
//! to itself, whatever the client's own cost. The CQL rates are a `scylla` session against the in-process CQL
//! stand-in on a thread of its own, one row per request (what one message costs when written alone) and the
//! batched ceiling of `benches/cql_insert.rs`'s best cell (1 in flight × 128 rows).

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use tokio::sync::oneshot;
use trimtab::servicebus::azure::{AzureServiceBus, ServiceBusConfig};
use trimtab::servicebus::sas::SecretString;
use trimtab::servicebus::{Entity, MessageReceiver, MessageSender, OutgoingMessage};
use trimtab::sim::cql::{CqlServer, CqlServerConfig};
use trimtab::sim::servicebus::{StandIn, StandInConfig};

/// How long each CQL insert cell runs.
const CQL_CELL: Duration = Duration::from_secs(3);
/// Concurrent senders in the concurrent single-send row.
const SENDERS: usize = 32;

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn messages(count: usize, body_bytes: usize, tag: &str) -> Vec<OutgoingMessage> {
    (0..count)
        .map(|i| OutgoingMessage {
            message_id: Some(format!("{tag}-{i}")),
            body: Bytes::from(vec![b'x'; body_bytes]),
            ..OutgoingMessage::default()
        })
        .collect()
}

/// CPU time (user + system) the calling thread has used so far, from `/proc/thread-self/stat`.
fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/thread-self/stat: {stat:?}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture Rust targets here.
    Ok(Duration::from_millis(ticks * 10))
}

/// A server running on a thread and single-threaded runtime of its own, whose CPU time can be read.
struct ServerThread<A> {
    addresses: A,
    cpu: std_mpsc::Receiver<Duration>,
    ask_cpu: tokio::sync::mpsc::UnboundedSender<()>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<A: Send + 'static> ServerThread<A> {
    /// Starts `start` on its own thread; it returns the server's addresses and a future that shuts it down.
    fn spawn<S, F, D>(name: &str, start: S) -> anyhow::Result<ServerThread<A>>
    where
        S: FnOnce() -> F + Send + 'static,
        F: std::future::Future<Output = anyhow::Result<(A, D)>>,
        D: std::future::Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = std_mpsc::channel();
        let (cpu_tx, cpu_rx) = std_mpsc::channel();
        let (ask_tx, mut ask_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(16 * 1024 * 1024)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let (addresses, shutdown) = match start().await {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(addresses));
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            Some(()) = ask_rx.recv() => {
                                let _ = cpu_tx.send(thread_cpu().unwrap_or_default());
                            }
                        }
                    }
                    shutdown.await;
                });
            })?;
        let addresses = ready_rx.recv()??;
        Ok(ServerThread {
            addresses,
            cpu: cpu_rx,
            ask_cpu: ask_tx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The server thread's CPU time so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        self.ask_cpu.send(())?;
        Ok(self.cpu.recv_timeout(Duration::from_secs(10))?)
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One measured phase: wall time and the CPU time of the stand-in and of the client.
struct Phase {
    name: String,
    count: usize,
    wall: Duration,
    standin_cpu: Duration,
    client_cpu: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        rate(self.count, self.wall)
    }

    /// Messages per CPU-second of the stand-in: what it serves with a core to itself.
    fn standin_capacity(&self) -> f64 {
        self.count as f64 / self.standin_cpu.as_secs_f64().max(0.01)
    }
}

/// Times `work`, reading both threads' CPU before and after.
async fn measure<F, Fut>(
    name: &str,
    count: usize,
    standin: &ServerThread<(String, String)>,
    work: F,
) -> anyhow::Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (s0, c0) = (standin.cpu()?, thread_cpu()?);
    let started = Instant::now();
    work().await?;
    let wall = started.elapsed();
    let (s1, c1) = (standin.cpu()?, thread_cpu()?);
    let phase = Phase {
        name: name.to_string(),
        count,
        wall,
        standin_cpu: s1.saturating_sub(s0),
        client_cpu: c1.saturating_sub(c0),
    };
    println!("  {:<34} done in {:?}", phase.name, phase.wall);
    Ok(phase)
}

/// Receives and completes `count` messages.
async fn drain(
    bus: &AzureServiceBus,
    entity: &Entity,
    count: usize,
    prefetch: u32,
) -> anyhow::Result<()> {
    let receiver = bus.receiver(entity).await?;
    receiver.set_prefetch(prefetch);
    let mut done = 0;
    while done < count {
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            receiver.receive(prefetch.max(200), Duration::from_secs(2)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("receive hung after {done} of {count} messages"))??;
        anyhow::ensure!(
            !got.is_empty(),
            "no message arrived after {done} of {count}"
        );
        for m in &got {
            receiver.complete(m).await?;
        }
        done += got.len();
    }
    Ok(())
}

/// Rows per second into the CQL stand-in for `duration`, `rows` rows per request, one request in flight.
async fn cql_rate(
    session: &Session,
    insert: &PreparedStatement,
    rows: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let payload = format!("{{\"payload\":\"{}\"}}", "x".repeat(180));
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..rows {
        batch.append_statement(insert.clone());
    }
    let started = Instant::now();
    let mut written = 0usize;
    let mut seq = 0i64;
    while started.elapsed() < duration {
        let values: Vec<_> = (0..rows)
            .map(|i| {
                (
                    format!("bench-{rows}"),
                    "2026-11-22",
                    format!("{seq}-{i}"),
                    CqlTimestamp(seq),
                    payload.as_str(),
                )
            })
            .collect();
        if rows == 1 {
            session.execute_unpaged(insert, &values[0]).await?;
        } else {
            session.batch(&batch, &values).await?;
        }
        written += rows;
        seq += 1;
    }
    Ok(rate(written, started.elapsed()))
}

/// The CQL stand-in's insert rates: one row per request, and 128-row batches.
async fn cql_rates() -> anyhow::Result<(f64, f64)> {
    let server = ServerThread::spawn("cql-standin", || async {
        let config = CqlServerConfig {
            bind: "127.0.0.1:0".parse()?,
            ..CqlServerConfig::default()
        };
        let server = CqlServer::start(config).await?;
        let addr = server.addr().to_string();
        Ok((addr, async move {
            let _ = server.shutdown().await;
        }))
    })?;
    let session = SessionBuilder::new()
        .known_node(server.addresses.clone())
        .build()
        .await?;
    for ddl in [
        "CREATE KEYSPACE IF NOT EXISTS bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        "CREATE TABLE IF NOT EXISTS bench.events (stream text, day text, message_id text, event_time timestamp, \
         payload text, PRIMARY KEY ((stream, day), message_id))",
    ] {
        session.query_unpaged(ddl, &[]).await?;
    }
    let mut insert = session
        .prepare("INSERT INTO bench.events (stream, day, message_id, event_time, payload) VALUES (?, ?, ?, ?, ?)")
        .await?;
    insert.set_is_idempotent(true);
    let single = cql_rate(&session, &insert, 1, CQL_CELL).await?;
    let batched = cql_rate(&session, &insert, 128, CQL_CELL).await?;
    drop(session);
    server.stop();
    Ok((single, batched))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let count: usize = args
        .first()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let body_bytes: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(256);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // azservicebus's futures are deep; the main thread's default stack is enough in release only.
    let main = std::thread::Builder::new()
        .name("client".into())
        .stack_size(16 * 1024 * 1024)
        .spawn(move || runtime.block_on(run(count, body_bytes)))?;
    main.join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?
}

async fn run(count: usize, body_bytes: usize) -> anyhow::Result<()> {
    let queues = ["batched", "single", "concurrent"];
    let standin = ServerThread::spawn("sb-standin", move || async move {
        let standin = StandIn::start_on_free_loopback(StandInConfig {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            lock_duration: Duration::from_secs(300),
            ..StandInConfig::default()
        })
        .await?;
        let addresses = (standin.connection_string(), standin.management_base_url());
        Ok((addresses, standin.shutdown()))
    })?;
    let (connection_string, management) = standin.addresses.clone();
    let mut config = ServiceBusConfig::from_connection_string(SecretString::new(connection_string));
    config.tls = false;
    config.management_base_url = Some(management);
    config.retry.max_retries = 0;
    let bus = AzureServiceBus::connect(&config).await?;
    let depth = bus.depth_collector()?;
    let active = |queue: &'static str| {
        let depth = &depth;
        async move {
            depth
                .depth(&Entity::Queue(queue.into()))
                .await
                .map(|d| d.counts.active)
        }
    };
    println!("servicebus_throughput: {count} messages of {body_bytes} body bytes per phase");

    let batched = Entity::Queue("batched".into());
    let sender = bus.sender(&batched).await?;
    let batch_send = measure("send_batch", count, &standin, || async {
        sender
            .send_batch(messages(count, body_bytes, "b"))
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;
    anyhow::ensure!(
        active("batched").await? == count as u64,
        "not every batched message arrived"
    );

    let single_count = (count / 10).max(100);
    let single = Entity::Queue("single".into());
    let sender = bus.sender(&single).await?;
    let single_send = measure("send, one at a time", single_count, &standin, || async {
        for m in messages(single_count, body_bytes, "s") {
            sender.send(m).await?;
        }
        Ok(())
    })
    .await?;

    let concurrent = Entity::Queue("concurrent".into());
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(bus.sender(&concurrent).await?);
    }
    let concurrent_send = measure(
        &format!("send, {SENDERS} senders at once"),
        count,
        &standin,
        || async {
            let per = count / SENDERS;
            let mut tasks = futures::stream::FuturesUnordered::new();
            for (i, sender) in senders.iter().enumerate() {
                let n = if i + 1 == SENDERS {
                    count - per * (SENDERS - 1)
                } else {
                    per
                };
                tasks.push(async move {
                    for m in messages(n, body_bytes, &format!("c{i}")) {
                        sender.send(m).await?;
                    }
                    anyhow::Ok(())
                });
            }
            use futures::StreamExt;
            while let Some(done) = tasks.next().await {
                done?;
            }
            Ok(())
        },
    )
    .await?;
    anyhow::ensure!(
        active("concurrent").await? == count as u64,
        "not every concurrently sent message arrived"
    );

    let receive_200 = measure("receive+complete, prefetch 200", count, &standin, || {
        drain(&bus, &batched, count, 200)
    })
    .await?;
    let receive_1000 = measure("receive+complete, prefetch 1000", count, &standin, || {
        drain(&bus, &concurrent, count, 1000)
    })
    .await?;
    let receive_single = measure(
        "receive+complete, prefetch 0",
        single_count,
        &standin,
        || drain(&bus, &single, single_count, 0),
    )
    .await?;
    drop(bus);
    standin.stop();

    println!(
        "  CQL stand-in insert rates ({} s per cell)",
        CQL_CELL.as_secs()
    );
    let (cql_single, cql_batched) = cql_rates().await?;

    println!();
    println!(
        "{:<34} {:>10} {:>12} {:>12} {:>16} {:>10} {:>10}",
        "phase",
        "msg/s",
        "stand-in cpu",
        "client cpu",
        "stand-in msg/cpu-s",
        "vs CQL 1",
        "vs CQL 128"
    );
    for phase in [
        &batch_send,
        &single_send,
        &concurrent_send,
        &receive_single,
        &receive_200,
        &receive_1000,
    ] {
        println!(
            "{:<34} {:>10.0} {:>11.0}% {:>11.0}% {:>18.0} {:>9.2}x {:>9.2}x",
            phase.name,
            phase.rate(),
            100.0 * phase.standin_cpu.as_secs_f64() / phase.wall.as_secs_f64(),
            100.0 * phase.client_cpu.as_secs_f64() / phase.wall.as_secs_f64(),
            phase.standin_capacity(),
            phase.rate() / cql_single,
            phase.rate() / cql_batched,
        );
    }
    println!();
    println!("CQL stand-in, 1 row per request, 1 in flight : {cql_single:>10.0} rows/s");
    println!("CQL stand-in, 128-row batches, 1 in flight   : {cql_batched:>10.0} rows/s");
    println!(
        "send_batch / one-at-a-time send              : {:>10.1}x",
        batch_send.rate() / single_send.rate()
    );
    println!(
        "receive+complete prefetch 1000 / prefetch 0  : {:>10.1}x",
        receive_1000.rate() / receive_single.rate()
    );
    Ok(())
}
