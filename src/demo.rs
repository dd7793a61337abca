//! The embedded default: the whole pipeline on this machine, on a real arrival trace, ending with a summary.
//!
//! `trimtab demo` starts the three stand-ins in-process, builds the pipeline exactly as `trimtab run` does
//! (real `azservicebus`, `scylla` and LINSTOR REST clients), replays the Azure LLM-inference code trace
//! time-compressed, shows progress every second, waits until every message is settled, and then counts
//! what happened by reading the stores back.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::{App, AppError};
use crate::replay::generate::{self, Expect, ReplayOptions};
use crate::replay::report::ReplaySummary;
use crate::replay::send::send_paced;
use crate::replay::trace::{self, TraceError};
use crate::servicebus::{Entity, MessageSender, ServiceBusError};
use crate::sim::cluster::{SimCluster, SimError, SimOptions};

/// The queue events and volume requests arrive on.
pub const EVENTS_QUEUE: &str = "events";
/// The queue volume replies go to.
pub const REPLIES_QUEUE: &str = "volume-replies";

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How the trace becomes messages (speed-up, shares of volume requests and malformed bodies, limit).
    pub replay: ReplayOptions,
    /// Keep the stand-ins serving after the summary, until Ctrl-C.
    pub serve: bool,
    /// Print progress lines while running.
    pub progress: bool,
    /// Longest wait for the queue to drain after the last send.
    pub drain_timeout: Duration,
    /// Serve the operator page and API on this address (with the agent recommending), printing its address.
    pub api_bind: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            replay: ReplayOptions::default(),
            serve: false,
            progress: true,
            drain_timeout: Duration::from_secs(120),
            api_bind: None,
        }
    }
}

/// The demo could not run to its summary.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A stand-in did not start.
    #[error("starting the stand-ins: {0}")]
    Sim(#[from] SimError),
    /// The pipeline could not be built against them.
    #[error("building the pipeline: {0}")]
    App(#[from] AppError),
    /// The trace did not load.
    #[error("loading the trace: {0}")]
    Trace(#[from] TraceError),
    /// Sending failed for good.
    #[error("sending: {0}")]
    Send(#[from] ServiceBusError),
    /// Reading the stores back failed.
    #[error("counting results: {0}")]
    Count(String),
    /// The operator page and its agent did not start.
    #[error("starting the operator page: {0}")]
    Surface(#[from] crate::api::launch::LaunchError),
    /// The queue did not drain in time.
    #[error("the queue did not drain within {0:?}: {1}")]
    Drain(Duration, String),
}

/// Runs the demo to its summary (and keeps serving if asked, until `stop`).
pub async fn run(
    options: DemoOptions,
    stop: CancellationToken,
) -> Result<ReplaySummary, DemoError> {
    let sim = SimCluster::start(SimOptions::local(&[EVENTS_QUEUE, REPLIES_QUEUE])).await?;
    let events = Entity::Queue(EVENTS_QUEUE.into());
    let config = sim.config(vec![events.clone()]);
    let app = App::build(&config).await?;
    let stats = app.stats();
    let lag = app.lag.clone();
    let tables = app.tables.clone();
    let depth = app.depth.clone();
    let reader = app.linstor_reader.clone();
    let sender = app.servicebus.sender(&events).await?;
    let surface = match &options.api_bind {
        Some(bind) => {
            Some(crate::api::launch::start_demo(&app, &config, bind, stop.child_token()).await?)
        }
        None => None,
    };
    if let Some(surface) = &surface {
        let mut line = format!(
            "operator page: {} (live while the demo runs)",
            surface.url()
        );
        if let Some(token) = surface.generated_token() {
            line.push_str(&format!("; write token for approve and pause: {token}"));
        }
        if options.progress || options.serve {
            say(true, &line);
        } else {
            // Stdout carries only the JSON summary here; the address goes to the log, the token nowhere.
            tracing::info!(url = %surface.url(), "operator page serving");
        }
    }

    let arrivals =
        trace::parse_azure_llm("AzureLLMInferenceTrace_code.csv", trace::AZURE_CODE_TRACE)?;
    let planned = generate::plan(&arrivals, &options.replay);
    let count = |e: Expect| planned.iter().filter(|p| p.expect == e).count() as u64;
    let mut summary = ReplaySummary {
        sent: planned.len() as u64,
        sent_events: count(Expect::Row),
        sent_volume_requests: count(Expect::VolumeOk) + count(Expect::VolumeRefused),
        sent_malformed: count(Expect::Malformed),
        ..ReplaySummary::default()
    };
    let span = planned.last().map(|p| p.at).unwrap_or_default();
    say(
        options.progress,
        &format!(
            "replaying {} requests of the Azure LLM code trace ({} events, {} volume requests, {} malformed) over {:.0} s (speed-up {}x)",
            summary.sent, summary.sent_events, summary.sent_volume_requests, summary.sent_malformed,
            span.as_secs_f64(), options.replay.speedup
        ),
    );

    let pipeline_stop = stop.child_token();
    let pipeline = tokio::spawn(app.run(pipeline_stop.clone()));
    let started = Instant::now();
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = {
        let sent = sent.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let sender: &dyn MessageSender = &sender;
            send_paced(sender, &planned, &stop, |n| {
                sent.store(n, std::sync::atomic::Ordering::Relaxed)
            })
            .await
        })
    };

    let total = summary.sent;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut drained_since: Option<Instant> = None;
    let mut send_done = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if !send_done && sending.is_finished() {
            send_done = true;
        }
        let s = stats.snapshot();
        let snapshot = lag.snapshot();
        let queue = depth.depth(&events).await.ok();
        let active = queue.as_ref().map(|d| d.counts.active);
        if options.progress {
            let oldest = snapshot.overall.oldest_age_ms;
            say(
                true,
                &format!(
                    "[{:>5.1}s] sent {:>5}/{total}  written {:>5}  volume ops {:>3}  dead-lettered {:>3}  queue depth {:>5}  in flight {:>4}  oldest lag {:>5} ms",
                    started.elapsed().as_secs_f64(),
                    sent.load(std::sync::atomic::Ordering::Relaxed),
                    s.events_written,
                    s.volume_ops_done,
                    s.dead_lettered,
                    active.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    s.in_flight,
                    oldest
                ),
            );
        }
        if send_done {
            let settled_all = s.completed + s.dead_lettered >= total && s.in_flight == 0;
            if settled_all && active == Some(0) {
                break;
            }
            let since = *drained_since.get_or_insert_with(Instant::now);
            if since.elapsed() > options.drain_timeout {
                pipeline_stop.cancel();
                return Err(DemoError::Drain(
                    options.drain_timeout,
                    format!(
                        "{} settled of {total}, queue depth {active:?}",
                        s.completed + s.dead_lettered
                    ),
                ));
            }
        }
    }
    match sending.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(DemoError::Send(error)),
        Err(join) => return Err(DemoError::Count(format!("the sender task failed: {join}"))),
    }
    summary.elapsed = started.elapsed();
    pipeline_stop.cancel();
    let final_stats = pipeline
        .await
        .map_err(|e| DemoError::Count(format!("the pipeline task failed: {e}")))?;

    let lag = lag.snapshot();
    summary.e2e_p50_ms = lag.overall.latency_p50_ms.unwrap_or(0) as f64;
    summary.e2e_p99_ms = lag.overall.latency_p99_ms.unwrap_or(0) as f64;
    summary.volume_ops_done = final_stats.volume_ops_done;
    summary.rows_in_cassandra = tables
        .count_events()
        .await
        .map_err(|e| DemoError::Count(format!("counting rows in cassandra: {e}")))?;
    let dead = sim.servicebus.peek_dead_letters(EVENTS_QUEUE);
    summary.dead_lettered = dead.len() as u64;
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    for letter in &dead {
        let reason = letter.1.clone().unwrap_or_else(|| "(no reason)".into());
        *reasons.entry(reason).or_default() += 1;
    }
    summary.dead_letter_reasons = reasons.into_iter().collect();
    summary.replies = sim
        .servicebus
        .counts(REPLIES_QUEUE)
        .map(|c| c.active)
        .unwrap_or(0);
    summary.left_on_queue = sim
        .servicebus
        .counts(EVENTS_QUEUE)
        .map(|c| c.active)
        .unwrap_or(0);
    summary.linstor_resources = reader
        .resource_definitions()
        .await
        .map(|r| r.len() as u64)
        .map_err(|e| DemoError::Count(format!("listing linstor resources: {e}")))?;
    summary.locations = vec![
        (
            "cassandra".into(),
            format!("{} rows in trimtab.events at {} (CQL v4)", summary.rows_in_cassandra, sim.cql.addr()),
        ),
        (
            "service bus".into(),
            format!(
                "{} dead letters in {EVENTS_QUEUE}/$DeadLetterQueue, {} replies in {REPLIES_QUEUE}, at {}",
                summary.dead_lettered,
                summary.replies,
                sim.servicebus.management_base_url()
            ),
        ),
        (
            "linstor".into(),
            format!("{} resource definitions at {}", summary.linstor_resources, sim.linstor.base_url()),
        ),
    ];

    // Close the driver's connections before the CQL server goes away, so its control connection does not
    // log reconnect failures after the summary.
    drop(tables);
    drop(reader);
    tokio::time::sleep(Duration::from_millis(100)).await;

    if options.serve {
        say(true, &summary.to_string());
        say(true, "serving the stand-ins until Ctrl-C:");
        for (name, address) in sim.addresses() {
            say(true, &format!("  {name:<40} {address}"));
        }
        if let Some(surface) = &surface {
            say(
                true,
                &format!("  {:<40} {}", "operator page", surface.url()),
            );
        }
        stop.cancelled().await;
    }
    if let Some(surface) = surface {
        surface.shutdown().await;
    }
    sim.shutdown().await;
    Ok(summary)
}

fn say(enabled: bool, line: &str) {
    if enabled {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}
