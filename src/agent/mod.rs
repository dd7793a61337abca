//! The control loop: samples metrics, forecasts, plans, gates and applies changes, and serves state snapshots.
//!
//! One task runs one `tokio::select!` over a closed [`Event`]: a sample tick (a sample step, run as its own task so
//! a slow source holds a due plan step back by at most one sample interval), a finished sample (score forecasts,
//! issue new ones, and start a control step if one is due), a plan tick (a control step is due; it starts on the
//! next finished sample, see [`cadence`], and runs as its own task so a knob verification window does not stall
//! sampling), a finished fit (models are fitted on the blocking pool and come back as an event), a finished step, a
//! policy reload, and shutdown.
//!
//! * [`cadence`]: when a due control step starts, so that it plans from the newest sample.
//! * [`actuators`]: the executor's actuators over the LINSTOR writer and the pipeline's live knobs.
//! * [`observe`]: the planner's inputs built from what the collectors saw.
//! * [`forecasts`]: forecasts issued per series, kept in [`crate::forecast::live::LiveAccuracy`] and Cassandra.
//! * [`mirror`]: the audit mirror into Cassandra's `audit_log`.
//! * [`state`]: [`crate::chatops::state::StateSource`] over the running agent.
//!
//! The agent holds the actuators only to hand them to the [`Executor`]; everything else it holds reads.

pub mod actuators;
mod cadence;
pub mod forecasts;
pub mod mirror;
pub mod observe;
pub mod state;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, AuditLog};
use crate::cassandra::OwnTables;
use crate::config::AgentConfig;
use crate::executor::{
    ChangeOutcome, Executor, ExecutorConfig, ExecutorError, KnobActuator, PlacementActuator,
    ProposalStore, StateDir, StepReport,
};
use crate::forecast::live::LiveConfig;
use crate::forecast::{ForecastConfig, ForecastError, Forecaster};
use crate::metrics::collect::{Collected, Collector, Sources};
use crate::metrics::series::SeriesKey;
use crate::metrics::store::MetricStore;
use crate::planner::{History, Limits, Plan, Settings};
use crate::policy::{AccuracyGrace, Gate, Mode, ModeDecision};

use forecasts::{ForecastBook, SeriesForecast};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The local audit log could not be opened.
    #[error("opening the audit log")]
    Audit(#[from] AuditError),
    /// The state directory could not be prepared.
    #[error("state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A sampling or planning interval is shorter than one second (samples are stamped in whole seconds).
    #[error("agent {what} interval {ms} ms is too short: expected at least 1000 ms")]
    Interval {
        /// Which interval.
        what: &'static str,
        /// The value given.
        ms: u64,
    },
}

impl AgentError {
    /// Whether starting again may work (IO), as opposed to bad configuration.
    pub fn is_retriable(&self) -> bool {
        match self {
            AgentError::Audit(e) => e.is_retriable(),
            AgentError::StateDir { .. } => true,
            AgentError::Interval { .. } => false,
        }
    }
}

/// Everything the agent runs on. Build it from the lead's `App` (or the stand-ins in tests).
pub struct AgentParts {
    /// Mode, state and policy directories, sample and plan intervals.
    pub config: AgentConfig,
    /// The planner's objectives and thresholds (also the mode's trust thresholds).
    pub limits: Limits,
    /// Executor caps, verification window and move timeouts.
    pub executor: ExecutorConfig,
    /// How forecasters are fitted (horizon in sample steps, season).
    pub forecast: ForecastConfig,
    /// How live forecast accuracy is kept.
    pub live: LiveConfig,
    /// Sample steps between refits of a series' forecaster.
    pub refit_every: u32,
    /// Read handles the collectors sample (depth, lag, writes, counters, knob receiver, LINSTOR reader).
    pub sources: Sources,
    /// The metric store (over a durable history, so a restart loses nothing).
    pub store: Arc<MetricStore>,
    /// Placement verbs with the LINSTOR write credential: handed to the executor and nothing else.
    pub placement: Arc<dyn PlacementActuator>,
    /// The pipeline's live knobs: handed to the executor and nothing else.
    pub knobs: Arc<dyn KnobActuator>,
    /// trimtab's Cassandra tables: forecasts and the audit mirror. `None` keeps both local only.
    pub tables: Option<Arc<OwnTables>>,
    /// Where model cards are written; `None` writes none.
    pub models_dir: Option<PathBuf>,
}

/// Lag snapshots kept in the agent's snapshot.
pub const LAG_HISTORY: usize = 6;

/// A cheap copy of the agent's state, for the API, the tests and chat-ops.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentSnapshot {
    /// Unix seconds of the latest sample step.
    pub sampled_at: i64,
    /// Sample steps done.
    pub samples: u64,
    /// Control steps done.
    pub steps: u64,
    /// Unix seconds of the sample the latest control step planned from.
    pub planned_from: i64,
    /// The mode the latest step ran in, and why if it was dropped to recommend.
    pub mode: Option<ModeDecision>,
    /// The configured mode.
    pub configured_mode: Option<Mode>,
    /// The latest plan.
    pub plan: Option<Plan>,
    /// What the latest step did, approved proposals first.
    pub reports: Vec<StepReport>,
    /// The knobs in force at the latest sample.
    pub settings: Option<Settings>,
    /// The latest forecast per series, with its accuracy.
    pub forecasts: Vec<SeriesForecast>,
    /// The latest lag snapshots, oldest first (at most [`LAG_HISTORY`]), so a trend can be read.
    pub lag_history: Vec<crate::servicebus::lag::LagSnapshot>,
    /// What the collectors saw last.
    #[serde(skip)]
    pub collected: Option<Collected>,
    /// Errors of the latest sample or step, as sentences.
    pub errors: Vec<String>,
}

/// The running agent.
pub struct AgentHandle {
    snapshot: Arc<RwLock<AgentSnapshot>>,
    reload: mpsc::Sender<()>,
    state: StateDir,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    /// A copy of the agent's state now.
    pub fn snapshot(&self) -> AgentSnapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Asks the agent to reload its policy (audited; a failed reload keeps the old policy).
    pub async fn reload_policy(&self) {
        // The loop owns the receiver until it stops; after that there is nothing to reload.
        let _ = self.reload.send(()).await;
    }

    /// The proposals in the agent's state directory (read-only use: list, get).
    pub fn proposals(&self) -> ProposalStore {
        ProposalStore::new(self.state.clone())
    }

    /// The agent's state directory (audit log, proposals, pause flag).
    pub fn state_dir(&self) -> &StateDir {
        &self.state
    }

    /// A [`crate::chatops::state::StateSource`] over this agent.
    pub fn state_source(&self) -> state::AgentState {
        state::AgentState::new(self.snapshot.clone(), self.state.clone())
    }

    /// Waits for the loop to end (after the token is cancelled and any running step finished).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "agent task ended abnormally");
        }
    }
}

/// One thing the loop reacts to.
enum Event {
    /// Time to collect.
    SampleTick,
    /// A sample step finished: its time, what it collected and how long it took.
    SampleFinished(i64, Box<Collected>, Duration),
    /// A control step is due.
    PlanTick,
    /// A forecaster finished fitting on the blocking pool.
    FitFinished(SeriesKey, Result<Forecaster, ForecastError>),
    /// A control step finished.
    StepFinished(Result<StepOutput, ExecutorError>),
    /// Someone asked for the policy to be reloaded.
    PolicyReload,
    /// The token was cancelled.
    Shutdown,
}

/// What a control step hands back to the loop.
struct StepOutput {
    plan: Plan,
    mode: ModeDecision,
    reports: Vec<StepReport>,
    now: i64,
    /// The time of the sample it planned from.
    planned_from: i64,
}

/// The agent.
pub struct Agent;

impl Agent {
    /// Opens the audit log (mirrored to Cassandra when tables are given), loads the policy and starts the loop.
    pub fn start(parts: AgentParts, token: CancellationToken) -> Result<AgentHandle, AgentError> {
        for (what, ms) in [
            ("sample", parts.config.sample_interval_ms),
            ("plan", parts.config.plan_interval_ms),
        ] {
            if ms < 1000 {
                return Err(AgentError::Interval { what, ms });
            }
        }
        let state = StateDir::new(parts.config.state_dir.clone());
        std::fs::create_dir_all(state.root()).map_err(|source| AgentError::StateDir {
            path: state.root().to_path_buf(),
            source,
        })?;
        let (log, torn) = AuditLog::open(&state.audit_log())?;
        if let Some(t) = torn {
            tracing::warn!(?t, "audit log had a torn tail; saved aside and cut");
        }
        let log = match &parts.tables {
            Some(tables) => log.with_mirror(Arc::new(mirror::CassandraMirror::spawn(
                tables.clone(),
                token.clone(),
            ))),
            None => log,
        };
        let executor = Arc::new(Executor::new(
            parts.placement.clone(),
            parts.knobs.clone(),
            Arc::new(Mutex::new(log)),
            state.clone(),
            parts.executor.clone(),
        ));
        let gate = Arc::new(tokio::sync::RwLock::new(Gate::load(
            &parts.config.policies_dir,
        )));
        let snapshot = Arc::new(RwLock::new(AgentSnapshot {
            configured_mode: Some(parts.config.mode),
            ..AgentSnapshot::default()
        }));
        let (reload_tx, reload_rx) = mpsc::channel(4);
        let looped = Loop {
            collector: Arc::new(tokio::sync::Mutex::new(Collector::new(
                parts.sources.clone(),
                parts.store.clone(),
                std::time::Duration::from_secs_f64(parts.limits.lag_window_s.max(0.001)),
            ))),
            latest: Collected::default(),
            sample_running: false,
            book: ForecastBook::new(
                parts.forecast.clone(),
                parts.live.clone(),
                parts.tables.clone(),
                parts.models_dir.clone(),
                step_seconds(parts.config.sample_interval_ms),
            ),
            parts,
            executor,
            gate,
            history: History::default(),
            grace: Arc::new(Mutex::new(AccuracyGrace::default())),
            observe: observe::ObserveState::default(),
            snapshot: snapshot.clone(),
            reload: reload_rx,
            samples: 0,
            step_running: false,
            cadence: cadence::PlanCadence::default(),
        };
        let task = tokio::spawn(looped.run(token));
        Ok(AgentHandle {
            snapshot,
            reload: reload_tx,
            state,
            task,
        })
    }
}

fn step_seconds(interval_ms: u64) -> i64 {
    (interval_ms / 1000).max(1) as i64
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

struct Loop {
    parts: AgentParts,
    /// Sampling runs as its own task (it awaits every source and a durable write per series), so a slow
    /// Cassandra or Service Bus delays samples and holds a due plan step back by at most one sample interval
    /// ([`cadence`]); the loop keeps the latest finished sample.
    collector: Arc<tokio::sync::Mutex<Collector>>,
    latest: Collected,
    sample_running: bool,
    book: ForecastBook,
    executor: Arc<Executor>,
    gate: Arc<tokio::sync::RwLock<Gate>>,
    history: History,
    /// Steps in a row with an inaccurate forecast (one step runs at a time, so the lock is never contended).
    grace: Arc<Mutex<AccuracyGrace>>,
    observe: observe::ObserveState,
    snapshot: Arc<RwLock<AgentSnapshot>>,
    reload: mpsc::Receiver<()>,
    samples: u64,
    step_running: bool,
    cadence: cadence::PlanCadence,
}

impl Loop {
    async fn run(mut self, token: CancellationToken) {
        let mut sample =
            tokio::time::interval(Duration::from_millis(self.parts.config.sample_interval_ms));
        let mut plan =
            tokio::time::interval(Duration::from_millis(self.parts.config.plan_interval_ms));
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        plan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first plan waits one interval, so the first step has samples to plan from.
        plan.reset();
        // A change whose start was audited before the last stop but whose outcome was not gets its outcome now,
        // from what the actuators report, before anything new is planned.
        match self.executor.reconcile_interrupted().await {
            Ok(found) => {
                for (change, outcome) in found {
                    tracing::info!(%change, ?outcome, "interrupted change reconciled");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "interrupted changes could not be reconciled");
                if let Ok(mut snap) = self.snapshot.write() {
                    snap.errors
                        .push(format!("reconciling interrupted changes failed: {e}"));
                }
            }
        }
        let mut fits: JoinSet<(SeriesKey, Result<Forecaster, ForecastError>)> = JoinSet::new();
        let mut steps: JoinSet<Result<StepOutput, ExecutorError>> = JoinSet::new();
        let mut samples: JoinSet<(i64, Box<Collected>, Duration)> = JoinSet::new();
        let mut stopping = false;
        loop {
            let event = tokio::select! {
                _ = token.cancelled(), if !stopping => Event::Shutdown,
                _ = sample.tick(), if !stopping => Event::SampleTick,
                _ = plan.tick(), if !stopping => Event::PlanTick,
                Some(done) = fits.join_next(), if !fits.is_empty() => match done {
                    Ok((key, result)) => Event::FitFinished(key, result),
                    Err(e) => {
                        tracing::warn!(error = %e, "fit task failed");
                        continue;
                    }
                },
                Some(done) = samples.join_next(), if !samples.is_empty() => match done {
                    Ok((at, collected, took)) => Event::SampleFinished(at, collected, took),
                    Err(e) => {
                        tracing::warn!(error = %e, "sample task failed");
                        self.sample_running = false;
                        continue;
                    }
                },
                Some(done) = steps.join_next(), if !steps.is_empty() => match done {
                    Ok(result) => Event::StepFinished(result),
                    Err(e) => {
                        tracing::error!(error = %e, "control step task failed");
                        self.step_running = false;
                        continue;
                    }
                },
                Some(()) = self.reload.recv(), if !stopping => Event::PolicyReload,
                else => break,
            };
            match event {
                Event::SampleTick => {
                    if self.sample_running {
                        tracing::debug!("previous sample step still running; tick skipped");
                        if self.cadence.sample_late(self.step_running) {
                            tracing::debug!("sample late; planning from the latest finished one");
                            self.step_running = true;
                            steps.spawn(self.control_step());
                        }
                    } else {
                        self.sample_running = true;
                        samples.spawn(self.sample_step());
                    }
                }
                Event::SampleFinished(at, collected, took) => {
                    self.sample_running = false;
                    let interval = Duration::from_millis(self.parts.config.sample_interval_ms);
                    if took > interval {
                        tracing::warn!(
                            took_ms = took.as_millis() as u64,
                            interval_ms = interval.as_millis() as u64,
                            "a sample step took longer than the sample interval"
                        );
                    }
                    self.on_sample(at, *collected, &mut fits);
                    // A sample that finished as shutdown began starts nothing: no new step once stopping.
                    if !stopping && self.cadence.sample_finished(self.step_running) {
                        self.step_running = true;
                        steps.spawn(self.control_step());
                    }
                }
                Event::PlanTick => self.cadence.interval_passed(),
                Event::FitFinished(key, result) => self.book.fitted(key, result),
                Event::StepFinished(result) => {
                    self.step_running = false;
                    self.on_step(result);
                }
                Event::PolicyReload => {
                    let mut gate = self.gate.write().await;
                    match self.executor.reload_policy(&mut gate) {
                        Ok(Ok(())) => tracing::info!("policy reloaded"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "policy reload failed; old policy kept")
                        }
                        Err(e) => tracing::error!(error = %e, "policy reload could not be audited"),
                    }
                }
                Event::Shutdown => {
                    // Stop sampling and planning; let a running step finish (it audits its outcome), drop fits.
                    stopping = true;
                    fits.abort_all();
                    samples.abort_all();
                    if steps.is_empty() {
                        break;
                    }
                }
            }
            if stopping && steps.is_empty() {
                break;
            }
        }
        // Samples written behind the collector that were still queued go now, before the process exits.
        if let Err(e) = self.parts.store.history().flush().await {
            tracing::warn!(error = %e, "queued metric history could not be written at stop");
        }
        tracing::info!("agent stopped");
    }

    /// One sample step on the collector, as a task of its own.
    fn sample_step(
        &self,
    ) -> impl std::future::Future<Output = (i64, Box<Collected>, Duration)> + 'static {
        let step = step_seconds(self.parts.config.sample_interval_ms);
        let now = unix_now().div_euclid(step) * step;
        let collector = self.collector.clone();
        async move {
            let started = std::time::Instant::now();
            let mut collector = collector.lock().await;
            let collected = Box::new(collector.step(now).await.clone());
            (now, collected, started.elapsed())
        }
    }

    /// Scores and issues forecasts from a finished sample step and updates the snapshot.
    fn on_sample(
        &mut self,
        now: i64,
        collected: Collected,
        fits: &mut JoinSet<(SeriesKey, Result<Forecaster, ForecastError>)>,
    ) {
        self.samples += 1;
        let store = self.parts.store.clone();
        let forecast_keys = forecasts::forecast_keys(&collected);
        self.book.observe(&store, &forecast_keys, now);
        for key in &forecast_keys {
            let refit = self
                .samples
                .is_multiple_of(u64::from(self.parts.refit_every.max(1)));
            if let Some(job) = self.book.fit_job(&store, key, refit) {
                fits.spawn(job);
            }
        }
        self.book.issue(&store, &forecast_keys, now);
        let settings = self
            .parts
            .sources
            .knobs
            .as_ref()
            .map(|k| actuators::settings_of(&k.borrow()));
        if let Ok(mut snap) = self.snapshot.write() {
            snap.sampled_at = now;
            snap.samples = self.samples;
            snap.settings = settings;
            snap.forecasts = self.book.summaries();
            snap.errors = collected.errors.clone();
            if let Some(lag) = &collected.lag {
                snap.lag_history.push(lag.clone());
                let extra = snap.lag_history.len().saturating_sub(LAG_HISTORY);
                snap.lag_history.drain(..extra);
            }
            snap.collected = Some(collected.clone());
        }
        self.latest = collected;
    }

    /// Builds the inputs, plans, and runs the executor: approved proposals first, then the new plan.
    fn control_step(
        &mut self,
    ) -> impl std::future::Future<Output = Result<StepOutput, ExecutorError>> + 'static {
        let now = unix_now();
        let collected = self.latest.clone();
        let planned_from = collected.at;
        let settings = self
            .parts
            .sources
            .knobs
            .as_ref()
            .map(|k| actuators::settings_of(&k.borrow()))
            .unwrap_or_default();
        let observed = self.observe.observed(&collected, &self.parts.limits, now);
        let forecast = self
            .book
            .view(&self.parts.store, &collected, &self.parts.limits);
        let limits = self.parts.limits.clone();
        let configured = self.parts.config.mode;
        let executor = self.executor.clone();
        let gate = self.gate.clone();
        let grace = self.grace.clone();
        let mut history = self.history.clone();
        async move {
            history.in_flight = executor.proposals().in_flight_targets()?;
            let mode = match grace.lock() {
                Ok(mut g) => g.mode(configured, &forecast.trust, &limits),
                // A panic elsewhere poisoned it: judge this step without the grace.
                Err(poisoned) => poisoned
                    .into_inner()
                    .mode(configured, &forecast.trust, &limits),
            };
            let plan =
                crate::planner::plan(&observed, &forecast, &settings, &history, &limits, now);
            let gate = gate.read().await;
            let approved = executor
                .run_approved(&gate, &mode, &observed, &settings, now)
                .await?;
            let step = executor
                .run_step(&gate, &mode, &plan, &observed, &settings, now)
                .await?;
            Ok(StepOutput {
                plan,
                mode,
                reports: vec![approved, step],
                now,
                planned_from,
            })
        }
    }

    fn on_step(&mut self, result: Result<StepOutput, ExecutorError>) {
        match result {
            Ok(out) => {
                for report in &out.reports {
                    for (id, outcome) in &report.outcomes {
                        let applied = matches!(
                            outcome,
                            ChangeOutcome::Applied { .. } | ChangeOutcome::RolledBack { .. }
                        );
                        if applied {
                            // The change may come from an approved proposal rather than this plan.
                            let target = out
                                .plan
                                .changes
                                .iter()
                                .find(|c| &c.id == id)
                                .map(|c| c.target.clone())
                                .or_else(|| self.target_of_proposal(id));
                            if let Some(target) = target {
                                self.history.last_changed.insert(target, out.now);
                            }
                        }
                        tracing::info!(change = %id, outcome = ?outcome, "change outcome");
                    }
                }
                if let Some(why) = &out.mode.why {
                    tracing::info!(%why, "running in recommend mode");
                }
                if let Ok(mut snap) = self.snapshot.write() {
                    snap.steps += 1;
                    snap.planned_from = out.planned_from;
                    snap.mode = Some(out.mode);
                    snap.plan = Some(out.plan);
                    snap.reports = out.reports;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, retriable = e.is_retriable(), "control step failed; nothing further applied");
                if let Ok(mut snap) = self.snapshot.write() {
                    snap.errors.push(format!("control step failed: {e}"));
                }
            }
        }
    }

    fn target_of_proposal(&self, change_id: &str) -> Option<String> {
        self.executor
            .proposals()
            .list()
            .ok()?
            .into_iter()
            .find(|p| p.change.id == change_id)
            .map(|p| p.change.target)
    }
}
