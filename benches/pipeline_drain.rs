//! The pipeline's drain rate: one-at-a-time consumer, trimtab at its defaults and at the best swept knobs, beside the raw insert ceiling.
//!
//! Run with `cargo bench --bench pipeline_drain -- [--messages N] [--sweep ROWSxCONC,...] [--raw-grid CONCxROWS,...]`.
//!
//! Every way drains the same N event messages (the demo's: the Azure LLM code trace, one payload byte per
//! token, spread over 16 streams), pre-filled into a queue of the in-process Service Bus stand-in before the
//! clock starts, into trimtab's `events` table on the in-process CQL stand-in:
//!
//! * **raw ceiling**: no Service Bus at all; a direct `scylla` generator writes the same rows with the
//!   writer's prepared INSERT in unlogged single-partition batches, at each cell of a concurrency × batch
//!   grid (a fresh CQL server per cell), and keeps the best cell, as `benches/cql_insert.rs` does;
//! * **one at a time**: trimtab's `AzureServiceBus` receiver and a `scylla` session; receive one message,
//!   write its row with one prepared INSERT, complete it, repeat;
//! * **trimtab defaults**: `App::build` + `App::run` with the configuration `SimCluster::config` gives,
//!   stopped once all N messages are completed;
//! * **trimtab swept**: the same at several `Knobs` (batch rows × write concurrency), each on a fresh queue;
//!   the best cell is then run once more and that confirming run is what the table reports.
//!
//! Each way (and each sweep cell) runs in a child process (this binary re-executed with `--child`), so the
//! peak resident memory (`VmHWM`) printed beside it is that way's alone. The figure includes the stand-ins
//! running in the same process (the queue holds all N bodies before the clock starts), so the resident size
//! just before the clock starts is printed too. Server and clients share this machine's cores.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Parser;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::CqlTimestamp;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use trimtab::app::App;
use trimtab::cassandra::{ensure_schema, CassandraConfig, EventRow};
use trimtab::message::{self, Envelope};
use trimtab::pipeline::Knobs;
use trimtab::replay::generate::{plan, ReplayOptions};
use trimtab::replay::trace;
use trimtab::servicebus::azure::{AzureServiceBus, ServiceBusConfig};
use trimtab::servicebus::{Entity, MessageReceiver, MessageSender, OutgoingMessage};
use trimtab::sim::cluster::{SimCluster, SimOptions};
use trimtab::sim::cql::{CqlServer, CqlServerConfig};

/// The queue every way drains.
const QUEUE: &str = "events";
/// The keyspace `CassandraConfig::default()` names, where trimtab's `events` table lives.
const KEYSPACE: &str = "trimtab";
/// How long a way may go without one more message settled before it counts as stuck.
const STALL: Duration = Duration::from_secs(60);
/// Bytes of byte cap per row of `batch_rows` in the sweep: the demo's rows average about 2.1 KiB, so the
/// default 48 KiB cap would stop any batch at ~22 rows and make larger `batch_rows` meaningless.
const SWEEP_BYTES_PER_ROW: u32 = 4 * 1024;
/// The result line a child prints for its parent.
const RESULT_TAG: &str = "RESULT ";

#[derive(Parser, Debug, Clone)]
#[command(
    about = "drain the same messages one at a time, through trimtab at its defaults and at swept knobs, beside the raw insert ceiling"
)]
struct Args {
    /// Messages drained by each way.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Sweep cells for trimtab, `ROWSxCONC` (batch rows × write concurrency), optionally `xPREFETCH` and
    /// `xINFLIGHT` (prefetch, then the in-flight bound; defaults otherwise), comma-separated.
    #[arg(
        long,
        default_value = "8x8,32x32,128x64,32x32x1024x512,64x64x1024x512,32x32x512x128,128x32x1024x256"
    )]
    sweep: String,
    /// Cells of the raw insert generator, `CONCxROWS` (requests in flight × rows per batch), comma-separated.
    #[arg(long, default_value = "1x1,8x16,16x32,32x32,64x32,32x64,64x64,16x128")]
    raw_grid: String,
    /// Run each way this many times and report the median rate (and the largest peak memory).
    #[arg(long, default_value_t = 1)]
    repeats: usize,
    /// Skip the one-at-a-time consumer (it is the slowest way).
    #[arg(long)]
    skip_one_at_a_time: bool,
    /// Extra rows: trimtab at its defaults but with the Service Bus `receive_slice_ms` set to each of these
    /// values (comma-separated; empty for none). The experiment behind the recommended fix.
    #[arg(long, default_value = "5")]
    slice_experiment: String,
    /// Internal: run one way in this process and print its result (`raw`, `one`, `trimtab`).
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the trimtab knobs of a child, `ROWSxCONC[xPREFETCH[xINFLIGHT]]`; absent for the defaults.
    #[arg(long, hide = true)]
    knobs: Option<String>,
    /// Internal: the Service Bus `receive_slice_ms` of a trimtab child; absent for the default.
    #[arg(long, hide = true)]
    slice_ms: Option<u64>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What a child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measured {
    /// Messages (rows) per second over the timed part.
    rate: f64,
    /// The timed part, in seconds.
    seconds: f64,
    /// Resident memory just before the clock started, KiB.
    rss_start_kib: u64,
    /// Peak resident memory of the process, KiB.
    hwm_kib: u64,
    /// What the way ran with, for the table.
    setting: String,
    /// Extra figures from the run (batches, retries, latencies).
    detail: String,
}

/// A sweep cell of trimtab's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KnobCell {
    rows: u32,
    concurrency: u32,
    prefetch: Option<u32>,
    max_in_flight: Option<u32>,
}

impl KnobCell {
    fn parse(text: &str) -> anyhow::Result<KnobCell> {
        let parts: Vec<u32> = text
            .split('x')
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("sweep cell {text:?}: expected ROWSxCONC[xPREFETCH[xINFLIGHT]] with positive integers"))?;
        let cell = |prefetch, max_in_flight| KnobCell {
            rows: parts[0],
            concurrency: parts[1],
            prefetch,
            max_in_flight,
        };
        match parts[..] {
            [_, _] => Ok(cell(None, None)),
            [_, _, prefetch] => Ok(cell(Some(prefetch), None)),
            [_, _, prefetch, in_flight] => Ok(cell(Some(prefetch), Some(in_flight))),
            _ => bail!("sweep cell {text:?}: expected ROWSxCONC[xPREFETCH[xINFLIGHT]]"),
        }
    }

    fn text(&self) -> String {
        let mut text = format!("{}x{}", self.rows, self.concurrency);
        for extra in [self.prefetch, self.max_in_flight].into_iter().flatten() {
            text.push_str(&format!("x{extra}"));
        }
        text
    }

    /// The defaults with this cell's batch rows, concurrency and (if given) prefetch; the byte cap grows with
    /// the rows so that it does not cut batches short.
    fn knobs(&self) -> Knobs {
        let defaults = Knobs::default();
        Knobs {
            batch_rows: self.rows,
            batch_bytes: defaults
                .batch_bytes
                .max(self.rows.saturating_mul(SWEEP_BYTES_PER_ROW)),
            write_concurrency: self.concurrency,
            prefetch: self.prefetch.unwrap_or(defaults.prefetch),
            max_in_flight: self.max_in_flight.unwrap_or(defaults.max_in_flight),
        }
    }
}

fn describe(knobs: &Knobs) -> String {
    format!(
        "rows {} / {} KiB, conc {}, prefetch {}, in flight {}",
        knobs.batch_rows,
        knobs.batch_bytes / 1024,
        knobs.write_concurrency,
        knobs.prefetch,
        knobs.max_in_flight
    )
}

/// A cell of the raw generator: requests in flight × rows per batch.
fn parse_raw_cell(text: &str) -> anyhow::Result<(usize, usize)> {
    let parts: Vec<usize> = text
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("raw grid cell {text:?}: expected CONCxROWS with positive integers")
        })?;
    match parts[..] {
        [c, r] if c > 0 && r > 0 => Ok((c, r)),
        _ => bail!("raw grid cell {text:?}: expected CONCxROWS with positive integers"),
    }
}

/// The demo's event messages: the code trace cycled to `count` arrivals, no volume requests, nothing malformed.
fn messages(count: usize) -> anyhow::Result<Vec<OutgoingMessage>> {
    let arrivals =
        trace::parse_azure_llm("AzureLLMInferenceTrace_code.csv", trace::AZURE_CODE_TRACE)?;
    let cycled: Vec<_> = arrivals.iter().cycle().take(count).copied().collect();
    let options = ReplayOptions {
        volume_share: 0.0,
        malformed_share: 0.0,
        ..ReplayOptions::default()
    };
    Ok(plan(&cycled, &options)
        .into_iter()
        .map(|p| p.message)
        .collect())
}

/// The rows the pipeline would write for the messages, for the raw generator.
fn rows_of(messages: &[OutgoingMessage]) -> anyhow::Result<Vec<EventRow>> {
    let now = OffsetDateTime::now_utc();
    messages
        .iter()
        .map(|m| match message::parse(&m.body, usize::MAX)? {
            Envelope::Event(event) => Ok(EventRow {
                stream: event.stream,
                message_id: m.message_id.clone().unwrap_or_default(),
                event_time: event.ts.unwrap_or(now),
                enqueued_at: now,
                payload: event.payload.to_string(),
            }),
            Envelope::Volume(_) => bail!("the benchmark plans events only"),
        })
        .collect()
}

/// `VmRSS` and `VmHWM` of this process, KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn cql_timestamp(t: OffsetDateTime) -> CqlTimestamp {
    CqlTimestamp((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The writer's INSERT, prepared as the writer prepares it.
async fn prepare_insert(session: &Session) -> anyhow::Result<PreparedStatement> {
    let mut insert = session
        .prepare(format!(
            "INSERT INTO {KEYSPACE}.events (stream, day, message_id, event_time, enqueued_at, written_at, payload) \
             VALUES (?, ?, ?, ?, ?, ?, ?)"
        ))
        .await
        .context("preparing the events insert")?;
    insert.set_is_idempotent(true);
    insert.set_consistency(Consistency::LocalQuorum);
    Ok(insert)
}

fn values(
    row: &EventRow,
    now: CqlTimestamp,
) -> (
    String,
    String,
    String,
    CqlTimestamp,
    CqlTimestamp,
    CqlTimestamp,
    String,
) {
    (
        row.stream.clone(),
        row.day(),
        row.message_id.clone(),
        cql_timestamp(row.event_time),
        cql_timestamp(row.enqueued_at),
        now,
        row.payload.clone(),
    )
}

/// Sends the messages in batch transfers and checks the queue holds them all.
async fn prefill(
    sim: &SimCluster,
    config: &ServiceBusConfig,
    messages: Vec<OutgoingMessage>,
) -> anyhow::Result<()> {
    let count = messages.len() as u64;
    let bus = AzureServiceBus::connect(config).await?;
    let sender = bus.sender(&Entity::Queue(QUEUE.into())).await?;
    sender
        .send_batch(messages)
        .await
        .context("pre-filling the queue")?;
    let active = sim.servicebus.counts(QUEUE).map(|c| c.active);
    ensure!(
        active == Some(count),
        "the queue holds {active:?} messages after pre-filling, expected {count}"
    );
    Ok(())
}

/// Waits until the queue holds no message (settlements are fire-and-forget on the client side).
async fn queue_emptied(sim: &SimCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = sim.servicebus.counts(QUEUE).unwrap_or_default();
        if counts.active == 0 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the queue still holds {} messages 10 s after the last settlement",
            counts.active
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One raw cell on a fresh CQL server: every row written once, `concurrency` requests in flight.
async fn raw_cell(rows: &[EventRow], concurrency: usize, batch_rows: usize) -> anyhow::Result<f64> {
    let server = CqlServer::start(CqlServerConfig {
        bind: "127.0.0.1:0".parse()?,
        ..CqlServerConfig::default()
    })
    .await?;
    let session = Arc::new(
        SessionBuilder::new()
            .known_node(server.addr().to_string())
            .build()
            .await?,
    );
    let config = CassandraConfig {
        contact_points: vec![server.addr().to_string()],
        ..CassandraConfig::default()
    };
    ensure_schema(&session, &config).await?;
    let insert = prepare_insert(&session).await?;

    // Pre-built single-partition batches of row indices, in stream order, as the writer forms them.
    let mut by_partition: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_partition
            .entry((row.stream.clone(), row.day()))
            .or_default()
            .push(i);
    }
    let chunks: Arc<Vec<Vec<usize>>> = Arc::new(
        by_partition
            .into_values()
            .flat_map(|ids| {
                ids.chunks(batch_rows)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect(),
    );
    let rows: Arc<Vec<EventRow>> = Arc::new(rows.to_vec());
    let mut batch = Batch::new(BatchType::Unlogged);
    for _ in 0..batch_rows {
        batch.append_statement(insert.clone());
    }
    batch.set_is_idempotent(true);
    batch.set_consistency(Consistency::LocalQuorum);
    let batch = Arc::new(batch);
    let next = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (session, insert, batch, chunks, rows, next) = (
            session.clone(),
            insert.clone(),
            batch.clone(),
            chunks.clone(),
            rows.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(chunk) = chunks.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return Ok::<(), anyhow::Error>(());
                };
                let now = cql_timestamp(OffsetDateTime::now_utc());
                let values: Vec<_> = chunk.iter().map(|&i| values(&rows[i], now)).collect();
                if values.len() == 1 {
                    session.execute_unpaged(&insert, &values[0]).await?;
                } else if values.len() == batch_rows {
                    session.batch(&batch, &values).await?;
                } else {
                    let mut short = Batch::new(BatchType::Unlogged);
                    for _ in 0..values.len() {
                        short.append_statement(insert.clone());
                    }
                    short.set_is_idempotent(true);
                    short.set_consistency(Consistency::LocalQuorum);
                    session.batch(&short, &values).await?;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.context("raw writer task")??;
    }
    let elapsed = started.elapsed();
    let stored = server.row_count(KEYSPACE, "events");
    ensure!(
        stored == rows.len(),
        "raw cell {concurrency}x{batch_rows} stored {stored} rows, expected {}",
        rows.len()
    );
    drop(session);
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.shutdown().await?;
    Ok(rows.len() as f64 / elapsed.as_secs_f64())
}

/// The raw insert ceiling: the best cell of the grid.
async fn raw_child(args: &Args) -> anyhow::Result<Measured> {
    let rows = rows_of(&messages(args.messages)?)?;
    let cells: Vec<(usize, usize)> = args
        .raw_grid
        .split(',')
        .map(parse_raw_cell)
        .collect::<Result<_, _>>()?;
    let (rss_start_kib, _) = memory_kib();
    let mut best = (0.0, 0, 0);
    let mut detail = Vec::new();
    for (concurrency, batch_rows) in cells {
        let rate = raw_cell(&rows, concurrency, batch_rows).await?;
        println!("    raw {concurrency:>3} in flight x {batch_rows:>3} rows: {rate:>9.0} rows/s");
        let _ = std::io::stdout().flush();
        detail.push(format!("{concurrency}x{batch_rows}={rate:.0}"));
        if rate > best.0 {
            best = (rate, concurrency, batch_rows);
        }
    }
    Ok(Measured {
        rate: best.0,
        seconds: args.messages as f64 / best.0,
        rss_start_kib,
        hwm_kib: memory_kib().1,
        setting: format!("{} in flight x {} rows per batch", best.1, best.2),
        detail: detail.join(" "),
    })
}

/// Receive one, insert its row, complete it, repeat.
async fn one_child(args: &Args) -> anyhow::Result<Measured> {
    let sim = SimCluster::start(SimOptions::local(&[QUEUE])).await?;
    let entity = Entity::Queue(QUEUE.into());
    let config = sim.config(vec![entity.clone()]);
    prefill(&sim, &config.servicebus, messages(args.messages)?).await?;
    let bus = AzureServiceBus::connect(&config.servicebus).await?;
    let receiver = bus.receiver(&entity).await?;
    let session = SessionBuilder::new()
        .known_nodes(&config.cassandra.contact_points)
        .build()
        .await?;
    ensure_schema(&session, &config.cassandra).await?;
    let insert = prepare_insert(&session).await?;

    let (rss_start_kib, _) = memory_kib();
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done = 0;
    while done < args.messages {
        let got = receiver.receive(1, Duration::from_secs(1)).await?;
        let Some(m) = got.into_iter().next() else {
            ensure!(
                last_progress.elapsed() < STALL,
                "no message for {STALL:?} after {done} of {}",
                args.messages
            );
            continue;
        };
        let Envelope::Event(event) = message::parse(&m.body, usize::MAX)? else {
            bail!("message {:?} is not an event", m.message_id);
        };
        let row = EventRow {
            stream: event.stream,
            message_id: trimtab::pipeline::router::row_id(&m),
            event_time: event.ts.unwrap_or(m.enqueued_at),
            enqueued_at: m.enqueued_at,
            payload: event.payload.to_string(),
        };
        session
            .execute_unpaged(
                &insert,
                values(&row, cql_timestamp(OffsetDateTime::now_utc())),
            )
            .await?;
        receiver.complete(&m).await?;
        done += 1;
        last_progress = Instant::now();
    }
    let elapsed = started.elapsed();
    queue_emptied(&sim).await?;
    let stored = sim.cql.row_count(KEYSPACE, "events");
    ensure!(
        stored == args.messages,
        "one-at-a-time stored {stored} rows, expected {}",
        args.messages
    );
    drop((receiver, bus, session));
    Ok(Measured {
        rate: args.messages as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        rss_start_kib,
        hwm_kib: memory_kib().1,
        setting: format!(
            "receive 1, insert 1, complete 1 (prefetch {})",
            config.servicebus.prefetch
        ),
        detail: String::new(),
    })
}

/// trimtab as `trimtab run` builds it, at the given knobs (or its defaults), until all messages are completed.
async fn trimtab_child(args: &Args) -> anyhow::Result<Measured> {
    let sim = SimCluster::start(SimOptions::local(&[QUEUE])).await?;
    let mut config = sim.config(vec![Entity::Queue(QUEUE.into())]);
    if let Some(cell) = &args.knobs {
        config.pipeline.knobs = KnobCell::parse(cell)?.knobs();
    }
    if let Some(slice) = args.slice_ms {
        config.servicebus.receive_slice_ms = slice;
    }
    let knobs = config.pipeline.knobs;
    prefill(&sim, &config.servicebus, messages(args.messages)?).await?;
    let app = App::build(&config).await?;
    let stats = app.stats();
    let writer = app.writer.clone();
    let lag = app.lag.clone();
    let token = CancellationToken::new();

    let (rss_start_kib, _) = memory_kib();
    let started = Instant::now();
    let running = tokio::spawn(app.run(token.clone()));
    let total = args.messages as u64;
    let (mut seen, mut last_progress) = (0, Instant::now());
    loop {
        let s = stats.snapshot();
        if s.completed >= total {
            break;
        }
        if s.completed + s.dead_lettered + s.abandoned > seen {
            seen = s.completed + s.dead_lettered + s.abandoned;
            last_progress = Instant::now();
        }
        if last_progress.elapsed() > STALL || running.is_finished() {
            token.cancel();
            bail!("trimtab stalled at {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    token.cancel();
    let end = running.await.context("the pipeline task")?;
    queue_emptied(&sim).await?;
    let stored = sim.cql.row_count(KEYSPACE, "events");
    ensure!(
        stored == args.messages,
        "trimtab stored {stored} rows, expected {}",
        args.messages
    );
    ensure!(
        end.dead_lettered == 0 && end.abandoned == 0,
        "trimtab settled messages other than by completing: {end:?}"
    );
    let w = writer.snapshot();
    let l = lag.snapshot();
    Ok(Measured {
        rate: args.messages as f64 / elapsed.as_secs_f64(),
        seconds: elapsed.as_secs_f64(),
        rss_start_kib,
        hwm_kib: memory_kib().1,
        setting: format!("{}, receive slice {} ms", describe(&knobs), config.servicebus.receive_slice_ms),
        detail: format!(
            "write jobs {}, cql batches {} ({:.1} rows each), batch p50 {:.1} ms p99 {:.1} ms, write retries {}, e2e p50 {} ms p99 {} ms",
            end.write_batches,
            w.total_batches,
            w.total_rows_ok as f64 / w.total_batches.max(1) as f64,
            w.p50_ms,
            w.p99_ms,
            end.write_retries,
            l.overall.latency_p50_ms.unwrap_or(0),
            l.overall.latency_p99_ms.unwrap_or(0),
        ),
    })
}

/// Runs one way in a child process and reads its result line; other lines are passed through.
fn run_child(
    args: &Args,
    way: &str,
    knobs: Option<&KnobCell>,
    slice_ms: Option<u64>,
) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("locating this benchmark's binary")?;
    let mut command = Command::new(exe);
    command
        .arg("--messages")
        .arg(args.messages.to_string())
        .arg("--raw-grid")
        .arg(&args.raw_grid)
        .arg("--child")
        .arg(way);
    if let Some(cell) = knobs {
        command.arg("--knobs").arg(cell.text());
    }
    if let Some(slice) = slice_ms {
        command.arg("--slice-ms").arg(slice.to_string());
    }
    let output = command
        .output()
        .with_context(|| format!("running the {way} child"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut result = None;
    for line in stdout.lines() {
        match line.strip_prefix(RESULT_TAG) {
            Some(json) => result = Some(serde_json::from_str::<Measured>(json)?),
            None => println!("{line}"),
        }
    }
    match result {
        Some(measured) if output.status.success() => Ok(measured),
        _ => bail!(
            "the {way} child failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Runs a way `repeats` times: the median rate, and the largest peak memory.
fn run_way(
    args: &Args,
    way: &str,
    knobs: Option<&KnobCell>,
    slice_ms: Option<u64>,
) -> anyhow::Result<Measured> {
    let mut runs = Vec::new();
    for _ in 0..args.repeats.max(1) {
        runs.push(run_child(args, way, knobs, slice_ms)?);
    }
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let hwm = runs.iter().map(|r| r.hwm_kib).max().unwrap_or(0);
    let mut median = runs.swap_remove(runs.len() / 2);
    if args.repeats > 1 {
        median.detail = format!("median of {} runs; {}", args.repeats, median.detail);
    }
    median.hwm_kib = hwm;
    Ok(median)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn parent(args: &Args) -> anyhow::Result<()> {
    let sweep: Vec<KnobCell> = args
        .sweep
        .split(',')
        .map(KnobCell::parse)
        .collect::<Result<_, _>>()?;
    let slices: Vec<u64> = args
        .slice_experiment
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--slice-experiment {s:?}: expected milliseconds"))
        })
        .collect::<Result<_, _>>()?;
    for cell in &sweep {
        cell.knobs()
            .validate()
            .with_context(|| format!("sweep cell {}", cell.text()))?;
    }
    let bodies = messages(args.messages)?;
    let body_bytes: usize = bodies.iter().map(|m| m.body.len()).sum();
    println!(
        "pipeline_drain: {} event messages (mean body {:.0} bytes, 16 streams), pre-filled before timing; stand-ins in-process; {} cores",
        args.messages,
        body_bytes as f64 / args.messages.max(1) as f64,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let overall = Instant::now();
    let step = |name: &str| {
        println!("[{:>6.1}s] {name}", overall.elapsed().as_secs_f64());
        let _ = std::io::stdout().flush();
    };

    step("raw insert ceiling (direct scylla generator, grid of in flight x rows per batch)");
    let raw = run_way(args, "raw", None, None)?;
    let one = if args.skip_one_at_a_time {
        None
    } else {
        step("one message at a time");
        Some(run_way(args, "one", None, None)?)
    };
    step("trimtab at its default settings");
    let defaults = run_way(args, "trimtab", None, None)?;

    step("trimtab sweep (batch rows x write concurrency[x prefetch], each on a fresh queue)");
    let mut best: Option<(KnobCell, f64)> = None;
    for cell in &sweep {
        let measured = run_child(args, "trimtab", Some(cell), None)?;
        println!(
            "    sweep {:>11}: {:>8.0} msg/s  peak {:>6.0} MiB  [{}] {}",
            cell.text(),
            measured.rate,
            mib(measured.hwm_kib),
            measured.setting,
            measured.detail
        );
        let _ = std::io::stdout().flush();
        if best.is_none_or(|(_, rate)| measured.rate > rate) {
            best = Some((*cell, measured.rate));
        }
    }
    let Some((best_cell, sweep_rate)) = best else {
        bail!("the sweep is empty: expected at least one ROWSxCONC cell");
    };
    step(&format!(
        "trimtab at the best sweep cell {} (confirming run)",
        best_cell.text()
    ));
    let swept = run_way(args, "trimtab", Some(&best_cell), None)?;

    let mut experiments = Vec::new();
    for slice in slices {
        step(&format!("experiment: trimtab defaults with the Service Bus receive slice at {slice} ms instead of its default"));
        experiments.push((slice, run_way(args, "trimtab", None, Some(slice))?));
    }

    println!();
    println!("raw insert ceiling cells (rows/s): {}", raw.detail);
    println!("trimtab defaults: {}", defaults.detail);
    println!(
        "trimtab best:     {} (sweep run {:.0} msg/s)",
        swept.detail, sweep_rate
    );
    println!();
    println!(
        "{:<36} {:>10} {:>8} {:>10} {:>10} {:>10}  setting",
        "way", "msg/s", "vs raw", "vs 1-by-1", "peak MiB", "start MiB"
    );
    let one_rate = one.as_ref().map(|o| o.rate);
    let row = |name: &str, m: &Measured| {
        let vs_one = one_rate.map_or("-".to_string(), |o| format!("{:.1}x", m.rate / o));
        println!(
            "{:<36} {:>10.0} {:>7.0}% {:>10} {:>10.0} {:>10.0}  {}",
            name,
            m.rate,
            100.0 * m.rate / raw.rate,
            vs_one,
            mib(m.hwm_kib),
            mib(m.rss_start_kib),
            m.setting
        );
    };
    row("raw insert ceiling (no bus)", &raw);
    if let Some(one) = &one {
        row("one at a time", one);
    }
    row("trimtab, defaults", &defaults);
    row(&format!("trimtab, best sweep {}", best_cell.text()), &swept);
    for (slice, measured) in &experiments {
        row(&format!("defaults + receive slice {slice} ms"), measured);
    }
    println!();
    println!(
        "goal: defaults >= 80% of the raw ceiling: {} ({:.0}%); several times one-at-a-time: {}",
        if defaults.rate >= 0.8 * raw.rate {
            "met"
        } else {
            "NOT met"
        },
        100.0 * defaults.rate / raw.rate,
        one_rate.map_or("not measured".to_string(), |o| format!(
            "{:.1}x",
            defaults.rate / o
        ))
    );
    println!("total time {:.0} s", overall.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.messages > 0,
        "--messages 0: expected at least one message"
    );
    let Some(way) = args.child.clone() else {
        return parent(&args);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let measured = runtime.block_on(async {
        match way.as_str() {
            "raw" => raw_child(&args).await,
            "one" => one_child(&args).await,
            "trimtab" => trimtab_child(&args).await,
            other => bail!("--child {other:?}: expected raw, one or trimtab"),
        }
    })?;
    println!("{RESULT_TAG}{}", serde_json::to_string(&measured)?);
    // The stand-ins' background tasks and the drivers' connections are not waited for: the process ends here.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}
