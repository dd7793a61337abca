//! One replay of a trace under one strategy: fresh stand-ins with the capacity model on, the pipeline built by
//! `App`, the strategy's controller, paced sending, a timeline sampled while it runs, and the results read back
//! from the stores once every message is settled.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::app::{App, AppError};
use crate::audit::{AuditKind, AuditRecord};
use crate::config::AgentConfig;
use crate::executor::ExecutorConfig;
use crate::forecast::live::LiveConfig;
use crate::forecast::ForecastConfig;
use crate::planner::Limits;
use crate::policy::Mode;
use crate::servicebus::{Entity, MessageSender, ServiceBusError};
use crate::sim::cluster::{SimCluster, SimError, SimOptions};
use crate::sim::cql::capacity::TableWork;
use crate::sim::cql::{CapacityModel, CapacityStats};

use super::generate::{Expect, PlannedMessage};
use super::send::send_paced;
use super::strategy::{run_reactive, Strategy};

/// The queue events and volume requests arrive on.
pub const EVENTS_QUEUE: &str = "events";
/// The queue volume replies go to.
pub const REPLIES_QUEUE: &str = "volume-replies";

/// How one run is set up (shared by every strategy of a comparison, so they see the same load and node).
#[derive(Debug, Clone)]
pub struct RunSetup {
    /// The CQL node's capacity model.
    pub capacity: CapacityModel,
    /// The lag objective, wall time (the trace is compressed by `speedup`).
    pub lag_objective: Duration,
    /// The p99 batch write latency the agent's planner aims under, milliseconds.
    pub write_p99_objective_ms: f64,
    /// The trace's time compression.
    pub speedup: f64,
    /// How often the timeline is sampled.
    pub sample_every: Duration,
    /// Longest wait for the queue to drain after the last send.
    pub drain_timeout: Duration,
    /// The Rego policy directory the agent's gate loads.
    pub policies_dir: PathBuf,
    /// A scratch directory for the agent's state (audit log, proposals).
    pub scratch: PathBuf,
}

/// A run that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A stand-in did not start.
    #[error("starting the stand-ins")]
    Sim(#[from] SimError),
    /// The pipeline could not be built against them.
    #[error("building the pipeline")]
    App(#[from] AppError),
    /// Sending failed for good.
    #[error("sending the trace")]
    Send(#[from] ServiceBusError),
    /// The agent could not start.
    #[error("starting the agent")]
    Agent(#[from] crate::agent::AgentError),
    /// The queue did not drain in time.
    #[error("the queue did not drain within {timeout:?}: {detail}")]
    Drain {
        /// The wait.
        timeout: Duration,
        /// How far it got.
        detail: String,
    },
    /// Reading the stores back failed.
    #[error("reading the results back: {0}")]
    ReadBack(String),
    /// Stopped (Ctrl-C) before every message was settled: no results.
    #[error("interrupted before the replay finished")]
    Interrupted,
    /// The scratch directory could not be prepared.
    #[error("scratch directory {path}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RunError {
    /// Whether running again may work (a port race, a slow machine), as opposed to bad input.
    pub fn is_retriable(&self) -> bool {
        match self {
            RunError::Sim(_) | RunError::Drain { .. } | RunError::Scratch { .. } => true,
            RunError::App(e) => e.is_retriable(),
            RunError::Send(e) => e.is_retriable(),
            RunError::Agent(e) => e.is_retriable(),
            RunError::ReadBack(_) => true,
            RunError::Interrupted => false,
        }
    }
}

/// One point of the timeline, sampled while the replay runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the first send (wall).
    pub at_s: f64,
    /// The batch rows knob in force.
    pub batch_rows: u32,
    /// The write concurrency knob in force.
    pub concurrency: u32,
    /// Mean rows per batch written since the previous point (0 when none was written).
    pub rows_per_batch: f64,
    /// Age of the oldest received, unsettled message, milliseconds.
    pub oldest_lag_ms: u64,
    /// Messages waiting in the queue.
    pub queue_depth: u64,
}

/// One event row read back from Cassandra.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// The Service Bus message id.
    pub message_id: String,
    /// When Service Bus enqueued it, milliseconds since the epoch.
    pub enqueued_ms: i64,
    /// When the writer wrote it, milliseconds since the epoch.
    pub written_ms: i64,
}

/// What one run left behind, read back from the stores, plus what was seen while it ran.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The strategy's label.
    pub label: String,
    /// Whether the strategy holds its knobs fixed for the whole run (`static`).
    pub fixed: bool,
    /// Every event row in Cassandra.
    pub rows: Vec<StoredRow>,
    /// Dead-lettered bodies with their reasons.
    pub dead_letters: Vec<(Vec<u8>, Option<String>)>,
    /// Resource definitions LINSTOR holds afterwards.
    pub linstor_resources: HashSet<String>,
    /// The capacity model's counters.
    pub capacity: CapacityStats,
    /// Knob changes seen on the live knobs during the run.
    pub knob_changes: u64,
    /// Placement changes the agent applied (from its audit log).
    pub placement_changes: u64,
    /// Gate decisions by verdict (`allow`, `needs_approval`, `deny`), from the agent's audit log.
    pub decisions: BTreeMap<String, u64>,
    /// What the agent would have done, one line per proposal (recommend mode), from its audit log.
    pub proposals: Vec<String>,
    /// Why the agent ran in recommend mode when configured autonomous, if it did (the latest reason).
    pub mode_notes: Vec<String>,
    /// What became of each knob change the agent started (applied, rolled back, failed), from its audit log.
    pub knob_outcomes: Vec<String>,
    /// Messages still on the queue at the end.
    pub left_on_queue: u64,
    /// Wall time from the first send to the last settlement.
    pub elapsed: Duration,
    /// The timeline.
    pub timeline: Vec<TimelinePoint>,
    /// Wall-clock milliseconds since the epoch of the first send.
    pub started_ms: i64,
    /// Median end-to-end latency (settled minus enqueued) of every message settled, milliseconds.
    pub settle_p50_ms: f64,
    /// 99th percentile of the same, milliseconds.
    pub settle_p99_ms: f64,
    /// Where an event's end-to-end time went, mean milliseconds per stage over the whole run
    /// (`queued`, `batch_wait`, `work`, `settle`; see `pipeline::stages`).
    pub event_stages_ms: Vec<(&'static str, f64)>,
    /// Write requests the CQL node saw that were not the pipeline's batches: the agent's own tables (metric
    /// history and series, forecasts, audit mirror), which take capacity from the node it tunes.
    pub other_node_writes: u64,
    /// The pipeline's event writes the CQL node applied, and the worker time they took.
    pub events_node_work: TableWork,
    /// The other writes per table (`keyspace.table`), with the worker time they took.
    pub other_node_work: Vec<(String, TableWork)>,
}

fn unix_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The agent's planner limits for a replay: the lag objective in wall time, the write p99 objective of the
/// fixture's slowed-down node, the cooldowns compressed like the trace, ten samples of history before the forecast
/// may be trusted (the default 48 would leave nothing of a one-minute replay), and prefetch within what the
/// pipeline accepts.
pub fn agent_limits(setup: &RunSetup) -> Limits {
    let defaults = Limits::default();
    let compress = |s: i64| ((s as f64 / setup.speedup.max(1.0)).round() as i64).max(2);
    // Three trace minutes, like the executor's verification window: the default minute of wall time is an hour
    // of trace here.
    let measure_window_s = 3.0;
    Limits {
        lag_objective_s: setup.lag_objective.as_secs_f64(),
        p99_objective_ms: setup.write_p99_objective_ms,
        cooldown_s: compress(defaults.cooldown_s),
        relief_cooldown_s: compress(defaults.relief_cooldown_s),
        min_history_points: 10,
        measure_window_s,
        // The default 300 s compressed like the trace, at least the measure window: uncompressed it spans the
        // whole replay and keeps a peak's lag in the planner's figure for the rest of the run.
        lag_window_s: (defaults.lag_window_s / setup.speedup.max(1.0)).max(measure_window_s),
        // The pipeline refuses a prefetch above 1024 (`pipeline::knobs`); planning past it only plans a failure.
        max_prefetch: defaults.max_prefetch.min(1_024),
        ..defaults
    }
}

/// How the agent forecasts in a replay: one sample per second is one trace minute at 60×, so a horizon of 3 looks
/// three trace minutes ahead and the first fit needs 13 samples (`3 × horizon + 4`), not the 40 of the default
/// horizon of 12, which would leave a one-minute replay without a forecast. The season is given (5 samples):
/// detection fails on a minute of bursty samples and then falls back to one day of 1 s steps (86,400 samples),
/// which no replay can fit.
pub fn agent_forecast() -> ForecastConfig {
    ForecastConfig {
        horizon: 3,
        season: Some(5),
        ..ForecastConfig::default()
    }
}

/// Runs `planned` through fresh stand-ins under `strategy`. `progress` gets a line every second.
pub async fn run_one(
    planned: &[PlannedMessage],
    strategy: &Strategy,
    setup: &RunSetup,
    stop: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RunOutcome, RunError> {
    let mut options = SimOptions::local(&[EVENTS_QUEUE, REPLIES_QUEUE]);
    options.cql.capacity = Some(setup.capacity);
    let sim = SimCluster::start(options).await?;
    let result = drive(&sim, planned, strategy, setup, stop, progress).await;
    sim.shutdown().await;
    result
}

async fn drive(
    sim: &SimCluster,
    planned: &[PlannedMessage],
    strategy: &Strategy,
    setup: &RunSetup,
    stop: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RunOutcome, RunError> {
    let label = strategy.label();
    let events = Entity::Queue(EVENTS_QUEUE.into());
    let mut config = sim.config(vec![events.clone()]);
    config.pipeline.knobs = strategy.initial_knobs();
    let state_dir = setup.scratch.join(label.replace([' ', '(', ')'], "_"));
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir).map_err(|source| RunError::Scratch {
            path: state_dir.clone(),
            source,
        })?;
    }
    config.agent = AgentConfig {
        mode: match strategy {
            Strategy::Agent {
                autonomous: true, ..
            } => Mode::Autonomous,
            _ => Mode::Recommend,
        },
        state_dir: state_dir.clone(),
        policies_dir: setup.policies_dir.clone(),
        models_dir: state_dir.join("models"),
        sample_interval_ms: 1_000,
        // A plan step at every sample: the production default plans every 60 s, which is one trace minute of
        // the Azure trace at 57× (a second of wall time), and a plan step between samples would see no new one.
        plan_interval_ms: 1_000,
        // A replay compares strategies on the same load: no maintenance window may hold one of them back.
        maintenance_windows: false,
    };
    let app = App::build(&config).await?;
    let stats = app.stats();
    let lag = app.lag.clone();
    let depth = app.depth.clone();
    let knobs = app.knobs.clone();
    let writes = app.writer.observations();
    let tables = app.tables.clone();
    let session = app.writer.session();
    let reader = app.linstor_reader.clone();
    let sender = app.servicebus.sender(&events).await?;

    let run_stop = stop.child_token();
    let controller_stop = run_stop.child_token();
    let mut agent = None;
    let mut reactive = None;
    match strategy {
        Strategy::Static { .. } => {}
        Strategy::Reactive(reactive_config) => {
            reactive = Some(tokio::spawn(run_reactive(
                *reactive_config,
                knobs.clone(),
                lag.clone(),
                writes.clone(),
                controller_stop.clone(),
            )));
        }
        Strategy::Agent { .. } => {
            if let Some(mut parts) = app.agent_parts(&config).await {
                parts.limits = agent_limits(setup);
                parts.executor = ExecutorConfig {
                    // Three trace minutes: a window of one or two catches a single burst or lull.
                    verify_window_s: 3,
                    poll_interval_s: 1,
                    up_to_date_timeout_s: 30,
                    ..ExecutorConfig::default()
                };
                parts.forecast = agent_forecast();
                parts.live = LiveConfig {
                    min_scored: 4,
                    ..LiveConfig::default()
                };
                parts.refit_every = 10;
                parts.models_dir = None;
                agent = Some(Agent::start(parts, controller_stop.clone())?);
            }
        }
    }

    // Every change of the live knobs, whoever makes it.
    let knob_changes = Arc::new(AtomicU64::new(0));
    let watcher = {
        let mut rx = knobs.subscribe();
        let count = knob_changes.clone();
        let stop = run_stop.clone();
        tokio::spawn(async move {
            let mut last = *rx.borrow_and_update();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                }
                let now = *rx.borrow_and_update();
                if now != last {
                    count.fetch_add(1, Ordering::Relaxed);
                    last = now;
                }
            }
        })
    };

    let pipeline_stop = run_stop.child_token();
    let pipeline = tokio::spawn(app.run(pipeline_stop.clone()));
    let started = Instant::now();
    let started_ms = unix_ms();
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (timeline, knobs, lag, writes, depth) = (
            timeline.clone(),
            knobs.clone(),
            lag.clone(),
            writes.clone(),
            depth.clone(),
        );
        let (stop, every, events) = (run_stop.clone(), setup.sample_every, events.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut rows_before, mut batches_before) = (0u64, 0u64);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let w = writes.snapshot();
                let (rows, batches) = (w.total_rows_ok, w.total_batches - w.total_errors);
                let rows_per_batch = if batches > batches_before {
                    (rows - rows_before) as f64 / (batches - batches_before) as f64
                } else {
                    0.0
                };
                (rows_before, batches_before) = (rows, batches);
                let k = knobs.get();
                let queue_depth = depth
                    .depth(&events)
                    .await
                    .map(|d| d.counts.active)
                    .unwrap_or(0);
                let point = TimelinePoint {
                    at_s: started.elapsed().as_secs_f64(),
                    batch_rows: k.batch_rows,
                    concurrency: k.write_concurrency,
                    rows_per_batch,
                    oldest_lag_ms: lag.snapshot().overall.oldest_age_ms,
                    queue_depth,
                };
                if let Ok(mut t) = timeline.lock() {
                    t.push(point);
                }
            }
        })
    };

    let sent = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (sent, stop, planned) = (sent.clone(), run_stop.clone(), planned.to_vec());
        tokio::spawn(async move {
            let sender: &dyn MessageSender = &sender;
            send_paced(sender, &planned, &stop, |n| {
                sent.store(n, Ordering::Relaxed)
            })
            .await
        })
    };

    let total = planned.len() as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut drained_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let s = stats.snapshot();
        let active = depth.depth(&events).await.ok().map(|d| d.counts.active);
        let k = knobs.get();
        progress(&format!(
            "[{label:<24} {:>5.1}s] sent {:>5}/{total}  written {:>5}  queue {:>5}  lag {:>6} ms  batch {:>3} rows × {:>2}",
            started.elapsed().as_secs_f64(),
            sent.load(Ordering::Relaxed),
            s.events_written,
            active.map_or_else(|| "?".to_string(), |a| a.to_string()),
            lag.snapshot().overall.oldest_age_ms,
            k.batch_rows,
            k.write_concurrency,
        ));
        if sending.is_finished() {
            let settled = s.completed + s.dead_lettered >= total && s.in_flight == 0;
            if settled && active == Some(0) {
                break;
            }
            let since = *drained_since.get_or_insert_with(Instant::now);
            if since.elapsed() > setup.drain_timeout {
                run_stop.cancel();
                let _ = pipeline.await;
                return Err(RunError::Drain {
                    timeout: setup.drain_timeout,
                    detail: format!(
                        "{} settled of {total}, queue depth {active:?}",
                        s.completed + s.dead_lettered
                    ),
                });
            }
        }
    }
    let elapsed = started.elapsed();
    if stop.is_cancelled() {
        controller_stop.cancel();
        pipeline_stop.cancel();
        let _ = pipeline.await;
        return Err(RunError::Interrupted);
    }
    match sending.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(RunError::Send(error)),
        Err(join) => {
            return Err(RunError::ReadBack(format!(
                "the sender task failed: {join}"
            )))
        }
    }
    controller_stop.cancel();
    let reactive_changes = match reactive {
        Some(task) => task.await.unwrap_or(0),
        None => 0,
    };
    let agent_state = match agent {
        Some(agent) => {
            let dir = agent.state_dir().audit_log();
            if tokio::time::timeout(Duration::from_secs(30), agent.join())
                .await
                .is_err()
            {
                tracing::warn!("the agent did not stop within 30 s");
            }
            Some(dir)
        }
        None => None,
    };
    pipeline_stop.cancel();
    let _ = pipeline.await;
    run_stop.cancel();
    let _ = sampler.await;
    let _ = watcher.await;
    let knob_changes = knob_changes.load(Ordering::Relaxed);
    // The lag window holds every settlement of a replay of a few minutes (and the last 20,000 per key).
    let settled = lag.snapshot().overall;
    if reactive_changes != 0 && reactive_changes != knob_changes {
        tracing::warn!(
            reactive_changes,
            knob_changes,
            "the reactive controller's count differs from the knob changes seen"
        );
    }

    let rows = read_rows(&session, &config.cassandra.keyspace).await?;
    let dead_letters = sim
        .servicebus
        .peek_dead_letters(EVENTS_QUEUE)
        .into_iter()
        .map(|(body, reason, _)| (body, reason))
        .collect();
    let linstor_resources = reader
        .resource_definitions()
        .await
        .map_err(|e| RunError::ReadBack(format!("listing linstor resources: {e}")))?
        .into_iter()
        .map(|d| d.name)
        .collect();
    let left_on_queue = sim
        .servicebus
        .counts(EVENTS_QUEUE)
        .map(|c| c.active)
        .unwrap_or(0);
    let capacity = sim.cql.capacity_stats().unwrap_or_default();
    let pipeline_attempts = writes.snapshot().total_batches;
    let node_writes = capacity.writes + capacity.write_timeouts + capacity.overloaded;
    let events_table = format!("{}.events", config.cassandra.keyspace);
    let mut by_table = sim.cql.capacity_busy_by_table();
    let events_node_work = by_table.remove(&events_table).unwrap_or_default();
    let other_node_work: Vec<(String, TableWork)> = by_table.into_iter().collect();
    let event_stages_ms = stats
        .stages()
        .snapshot()
        .path("event")
        .map(|p| {
            p.stages
                .iter()
                .map(|s| (s.stage, s.total_s * 1e3 / p.settled.max(1) as f64))
                .collect()
        })
        .unwrap_or_default();
    let audit = match &agent_state {
        Some(path) if path.exists() => crate::audit::tail(path, 1_000_000)
            .map_err(|e| RunError::ReadBack(format!("reading the audit log: {e}")))?,
        _ => Vec::new(),
    };
    let AuditSummary {
        placement: placement_changes,
        decisions,
        proposals,
        modes: mode_notes,
        knob_outcomes,
    } = read_audit(&audit, started_ms, setup.speedup);
    // Close the driver's connections before the CQL server goes away.
    drop(tables);
    drop(session);
    drop(reader);
    Ok(RunOutcome {
        label,
        fixed: matches!(strategy, Strategy::Static { .. }),
        rows,
        dead_letters,
        linstor_resources,
        capacity,
        knob_changes,
        placement_changes,
        decisions,
        proposals,
        mode_notes,
        knob_outcomes,
        left_on_queue,
        elapsed,
        timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
        started_ms,
        settle_p50_ms: settled.latency_p50_ms.unwrap_or(0) as f64,
        settle_p99_ms: settled.latency_p99_ms.unwrap_or(0) as f64,
        event_stages_ms,
        other_node_writes: node_writes.saturating_sub(pipeline_attempts),
        events_node_work,
        other_node_work,
    })
}

/// Every event row, paged through the driver as any client would read them.
async fn read_rows(
    session: &Arc<scylla::client::session::Session>,
    keyspace: &str,
) -> Result<Vec<StoredRow>, RunError> {
    let query = format!("SELECT message_id, enqueued_at, written_at FROM {keyspace}.events");
    let pager = session
        .query_iter(query, &[])
        .await
        .map_err(|e| RunError::ReadBack(format!("reading events: {e}")))?;
    let mut stream = pager
        .rows_stream::<(
            String,
            scylla::value::CqlTimestamp,
            scylla::value::CqlTimestamp,
        )>()
        .map_err(|e| RunError::ReadBack(format!("decoding events: {e}")))?;
    let mut rows = Vec::new();
    while let Some((message_id, enqueued, written)) = stream
        .try_next()
        .await
        .map_err(|e| RunError::ReadBack(format!("reading events: {e}")))?
    {
        rows.push(StoredRow {
            message_id,
            enqueued_ms: enqueued.0,
            written_ms: written.0,
        });
    }
    Ok(rows)
}

/// What the agent's audit log says about one run.
#[derive(Debug, Default)]
struct AuditSummary {
    /// Placement changes applied.
    placement: u64,
    /// Gate decisions by verdict.
    decisions: BTreeMap<String, u64>,
    /// Proposals as sentences.
    proposals: Vec<String>,
    /// Mode notes.
    modes: Vec<String>,
    /// Knob changes' outcomes as sentences (applied, rolled back, failed, refused, with why).
    knob_outcomes: Vec<String>,
}

/// Placement changes applied, gate decisions by verdict, proposals as sentences, mode notes and knob outcomes.
/// What the audit log says, each mode change and knob outcome prefixed with its time in trace minutes since the
/// first send (`started_ms`, compressed by `speedup`); a knob outcome with the time its change was proposed and
/// applied, and the time it was judged.
fn read_audit(records: &[AuditRecord], started_ms: i64, speedup: f64) -> AuditSummary {
    let mut out = AuditSummary::default();
    let minute = |r: &AuditRecord| {
        let wall_s = (r.at_unix_ms - started_ms) as f64 / 1e3;
        format!("trace minute {:.1}", wall_s * speedup / 60.0)
    };
    let mut verbs: HashMap<&str, String> = HashMap::new();
    let mut settings: HashMap<&str, String> = HashMap::new();
    let mut proposed: HashMap<&str, String> = HashMap::new();
    for r in records {
        match r.kind {
            AuditKind::Proposal => {
                let verb = r.detail["action"]["verb"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string();
                let summary = r.detail["reason"]["summary"].as_str().unwrap_or_default();
                out.proposals.push(format!("{verb}: {summary}"));
                if verb == "set_knobs" {
                    let knobs = |s: &serde_json::Value| {
                        format!(
                            "{}x{} prefetch {}",
                            s["batch_rows"], s["concurrency"], s["prefetch"]
                        )
                    };
                    let action = &r.detail["action"];
                    settings.insert(
                        r.subject.as_str(),
                        format!("{} → {}", knobs(&action["from"]), knobs(&action["to"])),
                    );
                }
                verbs.insert(r.subject.as_str(), verb);
                proposed.insert(r.subject.as_str(), minute(r));
            }
            AuditKind::Decision => {
                let verdict = r.detail["verdict"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string();
                *out.decisions.entry(verdict).or_default() += 1;
            }
            AuditKind::ApplyOutcome => {
                let outcome = r.detail["outcome"].as_str().unwrap_or("unknown");
                let applied = matches!(outcome, "applied" | "rolled_back");
                let knob = verbs.get(r.subject.as_str()).map(String::as_str) == Some("set_knobs");
                if applied && !knob {
                    out.placement += 1;
                }
                if knob {
                    let why = ["detail", "error", "reason"]
                        .iter()
                        .find_map(|k| r.detail[*k].as_str())
                        .unwrap_or_default();
                    let what = settings.get(r.subject.as_str()).map_or("", String::as_str);
                    let started = proposed.get(r.subject.as_str()).map_or("", String::as_str);
                    // Judged after the verification window, which is several trace minutes on a fast replay.
                    let judged = minute(r);
                    let judged = judged.trim_start_matches("trace ");
                    out.knob_outcomes.push(format!(
                        "{started} ({judged} when judged): {what}: {outcome}: {why}"
                    ));
                }
            }
            AuditKind::Mode => {
                let what = match r.detail["why"].as_str() {
                    Some(why) => why.to_string(),
                    None => format!(
                        "{} as configured",
                        r.detail["mode"].as_str().unwrap_or("unknown")
                    ),
                };
                out.modes.push(format!("{}: {what}", minute(r)));
            }
            _ => {}
        }
    }
    out
}

/// How the planned messages' expectations split, for the report header.
pub fn expectations(planned: &[PlannedMessage]) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for p in planned {
        let key = match p.expect {
            Expect::Row => "events",
            Expect::VolumeOk | Expect::VolumeRefused => "volume requests",
            Expect::Malformed => "malformed",
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_unix_ms: i64, kind: AuditKind, detail: serde_json::Value) -> AuditRecord {
        AuditRecord {
            version: 1,
            seq: 0,
            at_unix_ms,
            kind,
            actor: "executor".to_string(),
            subject: "c1".to_string(),
            detail,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_knob_outcome_is_dated_when_its_change_was_proposed_and_when_it_was_judged() {
        let knobs =
            |c: u32| serde_json::json!({"batch_rows": 32, "concurrency": c, "prefetch": 256});
        let proposal = serde_json::json!({
            "action": {"verb": "set_knobs", "from": knobs(8), "to": knobs(4)},
            "reason": {"summary": "p99 over"},
        });
        // At 60× one wall second is one trace minute: proposed 10 s after the first send, judged 3 s later.
        let summary = read_audit(
            &[
                record(10_000, AuditKind::Proposal, proposal),
                record(
                    13_000,
                    AuditKind::ApplyOutcome,
                    serde_json::json!({"outcome": "applied", "detail": "knobs set"}),
                ),
            ],
            0,
            60.0,
        );
        assert_eq!(
            summary.knob_outcomes,
            vec![
                "trace minute 10.0 (minute 13.0 when judged): 32x8 prefetch 256 → 32x4 prefetch 256: applied: knobs set"
                    .to_string()
            ]
        );
        assert_eq!(summary.placement, 0);
    }
}
