//! `trimtab replay`: replays a trace under each strategy on the same load and node, prints the comparison and
//! writes a Markdown report with PNG charts.
//!
//! The node is the CQL stand-in with its capacity model on (parameters from the fixture, `--fixture FILE`, else
//! the defaults of [`CapacityModel`]). `static` runs twice: with the default knobs, and with the best setting a
//! short sweep finds on the busiest stretch of the same trace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Knobs;
use crate::sim::cql::CapacityModel;

use super::chart::{self, Line, COLOURS};
use super::generate::{self, PlannedMessage, ReplayOptions};
use super::report::{self, StrategyReport};
use super::run::{self, RunError, RunOutcome, RunSetup};
use super::strategy::{static_label, ReactiveConfig, Strategy, StrategySpec};
use super::trace::{self, NabOptions, Trace, TraceError};

/// `trimtab replay`: compare tuning strategies on a real trace.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace: the Azure LLM-inference request log (`TIMESTAMP,ContextTokens,GeneratedTokens`) or a NAB series
    /// (`timestamp,value`, the value read as arrivals per step).
    #[arg(long)]
    pub trace: PathBuf,
    /// Time compression; by default the one that makes each strategy's replay last `--duration` seconds.
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Wall seconds one strategy's replay should last when `--speedup` is not given.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Strategies to compare (repeat the flag): static, static:ROWSxCONCURRENCY, reactive, trimtab, recommend;
    /// trimtab:ROWSxCONCURRENCY and recommend:ROWSxCONCURRENCY start the agent from that setting instead of the
    /// defaults.
    #[arg(long = "strategy", default_values_t = ["static".to_string(), "reactive".to_string(), "trimtab".to_string(), "recommend".to_string()])]
    pub strategies: Vec<String>,
    /// The fixture (TOML): the CQL node's capacity model and the lag objective; defaults when absent.
    #[arg(long)]
    pub fixture: Option<PathBuf>,
    /// Where the Markdown report and its charts go.
    #[arg(long, default_value = "replay-report")]
    pub out: PathBuf,
    /// The policy directory trimtab's gate loads.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// Replay only the first N requests of the trace.
    #[arg(long)]
    pub limit: Option<usize>,
    /// NAB series: replay only the last N rows (0 = all).
    #[arg(long, default_value_t = 576)]
    pub nab_rows: usize,
    /// NAB series: mean arrivals per row the values are scaled to.
    #[arg(long, default_value_t = 16.0)]
    pub nab_mean: f64,
    /// Wall seconds of the busiest stretch each sweep candidate replays.
    #[arg(long, default_value_t = 8.0)]
    pub sweep_seconds: f64,
    /// Runs per strategy; the report keeps the median run (by minutes over the objective, then p99 lag) and
    /// shows every run's minutes over, so run-to-run noise is visible.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Print no progress lines, only the table.
    #[arg(long)]
    pub quiet: bool,
}

/// The replay fixture: how the CQL node behaves and what lag is acceptable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFixture {
    /// The CQL node's capacity model (see `sim::cql::capacity` for the shape of its latency curve).
    #[serde(default)]
    pub capacity: CapacityModel,
    /// The lag objective: longest acceptable end-to-end lag, milliseconds of wall time (the trace is compressed).
    #[serde(default = "default_lag_objective_ms")]
    pub lag_objective_ms: u64,
    /// The p99 batch write latency trimtab's planner aims under, milliseconds. The node is slowed down about as
    /// much as the trace is compressed, so the planner's production default (50 ms) cannot be met by any batched
    /// setting; half the node's write timeout (250 ms by default) is the same kind of margin.
    #[serde(default = "default_write_p99_objective_ms")]
    pub write_p99_objective_ms: f64,
    /// Share of requests that become LINSTOR volume requests (they fill the fixture's pools).
    #[serde(default = "default_volume_share")]
    pub volume_share: f64,
    /// Share of requests sent with a malformed body.
    #[serde(default = "default_malformed_share")]
    pub malformed_share: f64,
    /// Seed for the message plan.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The (rows per batch, concurrency) settings the static sweep tries.
    #[serde(default = "default_sweep")]
    pub sweep: Vec<(u32, u32)>,
}

const fn default_lag_objective_ms() -> u64 {
    1_000
}
const fn default_write_p99_objective_ms() -> f64 {
    250.0
}
const fn default_volume_share() -> f64 {
    0.01
}
const fn default_malformed_share() -> f64 {
    0.002
}
const fn default_seed() -> u64 {
    7
}
fn default_sweep() -> Vec<(u32, u32)> {
    vec![
        (8, 2),
        (8, 8),
        (32, 2),
        (32, 4),
        (32, 8),
        (128, 2),
        (128, 4),
        (128, 16),
    ]
}

impl Default for ReplayFixture {
    fn default() -> Self {
        ReplayFixture {
            capacity: CapacityModel::default(),
            lag_objective_ms: default_lag_objective_ms(),
            write_p99_objective_ms: default_write_p99_objective_ms(),
            volume_share: default_volume_share(),
            malformed_share: default_malformed_share(),
            seed: default_seed(),
            sweep: default_sweep(),
        }
    }
}

/// `trimtab replay` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The trace did not load.
    #[error("loading the trace")]
    Trace(#[from] TraceError),
    /// The fixture did not load or is invalid.
    #[error("fixture {path}: {detail}")]
    Fixture {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// An argument is out of range.
    #[error("{0}")]
    Argument(String),
    /// A strategy name is unknown.
    #[error(transparent)]
    Strategy(#[from] super::strategy::UnknownStrategy),
    /// The `trimtab` or `recommend` strategy was asked for and the policy does not load: its gate would deny
    /// every change, and the comparison would show an agent that cannot act.
    #[error("--policies {dir}: the policy does not load, and the trimtab and recommend strategies need it (run from the repository, or pass --policies with the directory holding gate.rego)")]
    Policy {
        /// The directory given.
        dir: String,
        /// Why it does not load.
        #[source]
        source: crate::policy::PolicyError,
    },
    /// A run failed.
    #[error("replaying under {strategy}")]
    Run {
        /// The strategy.
        strategy: String,
        /// The cause.
        #[source]
        source: RunError,
    },
    /// The report could not be written.
    #[error("writing the report to {path}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
}

impl ReplayError {
    /// Whether trying again may work.
    pub fn is_retriable(&self) -> bool {
        match self {
            ReplayError::Run { source, .. } => source.is_retriable(),
            ReplayError::Write { .. } => true,
            _ => false,
        }
    }
}

/// Everything a comparison needs, resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The trace.
    pub trace: Trace,
    /// The messages, with send times already compressed.
    pub planned: Vec<PlannedMessage>,
    /// The node, objective and scratch space.
    pub setup: RunSetup,
    /// The strategies as asked for.
    pub specs: Vec<StrategySpec>,
    /// The fixture.
    pub fixture: ReplayFixture,
    /// Wall seconds of the busiest stretch for the sweep.
    pub sweep_seconds: f64,
    /// Runs per strategy (the median one is kept).
    pub repeat: usize,
}

/// The result of a comparison.
#[derive(Debug, Clone)]
pub struct ComparisonResult {
    /// One row per strategy run.
    pub rows: Vec<StrategyReport>,
    /// The runs themselves (timelines, stores read back).
    pub runs: Vec<RunOutcome>,
    /// The sweep's candidates with their scores, if `static` was asked for.
    pub sweep: Vec<(Knobs, StrategyReport)>,
}

/// Loads a fixture file, or the defaults.
pub fn load_fixture(path: Option<&Path>) -> Result<ReplayFixture, ReplayError> {
    let Some(path) = path else {
        return Ok(ReplayFixture::default());
    };
    let bad = |detail: String| ReplayError::Fixture {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let fixture: ReplayFixture = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if fixture.capacity.workers == 0 {
        return Err(bad("capacity.workers is 0: expected at least 1".into()));
    }
    for (name, share) in [
        ("volume_share", fixture.volume_share),
        ("malformed_share", fixture.malformed_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return Err(bad(format!("{name} {share} is outside 0..=1")));
        }
    }
    Ok(fixture)
}

impl Comparison {
    /// Resolves the arguments: loads trace and fixture, picks the speed-up, plans the messages.
    pub fn from_args(args: &ReplayArgs, scratch: PathBuf) -> Result<Comparison, ReplayError> {
        let fixture = load_fixture(args.fixture.as_deref())?;
        let nab = NabOptions {
            last_rows: (args.nab_rows > 0).then_some(args.nab_rows),
            scale: None,
            mean_per_step: args.nab_mean,
        };
        let trace = trace::load(&args.trace, &nab)?;
        let specs = args
            .strategies
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<StrategySpec>, _>>()?;
        if specs.iter().any(StrategySpec::runs_agent) {
            crate::policy::check(&args.policies).map_err(|source| ReplayError::Policy {
                dir: args.policies.display().to_string(),
                source,
            })?;
        }
        if args.duration.is_nan() || args.duration <= 0.0 {
            return Err(ReplayError::Argument(format!(
                "--duration {} is not positive: expected seconds such as 60",
                args.duration
            )));
        }
        let speedup = match args.speedup {
            Some(s) if s > 0.0 => s,
            Some(s) => {
                return Err(ReplayError::Argument(format!(
                    "--speedup {s} is not positive: expected a factor such as 60"
                )))
            }
            None => (trace.span.as_secs_f64() / args.duration).max(1.0),
        };
        let options = ReplayOptions {
            speedup,
            volume_share: fixture.volume_share,
            malformed_share: fixture.malformed_share,
            seed: fixture.seed,
            limit: args.limit,
            reply_to: run::REPLIES_QUEUE.into(),
            ..ReplayOptions::default()
        };
        let planned = generate::plan(&trace.arrivals, &options);
        Ok(Comparison {
            trace,
            planned,
            setup: RunSetup {
                capacity: fixture.capacity,
                lag_objective: Duration::from_millis(fixture.lag_objective_ms),
                write_p99_objective_ms: fixture.write_p99_objective_ms,
                speedup,
                sample_every: Duration::from_millis(100),
                drain_timeout: Duration::from_secs(120),
                policies_dir: args.policies.clone(),
                scratch,
            },
            specs,
            sweep_seconds: args.sweep_seconds,
            repeat: args.repeat.max(1),
            fixture,
        })
    }

    /// Runs the sweep (if `static` is asked for) and every strategy, in order.
    pub async fn run(
        &self,
        stop: &CancellationToken,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<ComparisonResult, ReplayError> {
        let mut strategies = Vec::new();
        let mut sweep = Vec::new();
        for spec in &self.specs {
            match spec {
                StrategySpec::Static => {
                    let defaults = Knobs::default();
                    strategies.push(Strategy::Static {
                        label: static_label(&defaults, "defaults"),
                        knobs: defaults,
                    });
                    sweep = self.sweep(stop, progress).await?;
                    if let Some((best, _)) = sweep.first() {
                        strategies.push(Strategy::Static {
                            label: static_label(best, "best of sweep"),
                            knobs: *best,
                        });
                    }
                }
                StrategySpec::StaticAt {
                    batch_rows,
                    concurrency,
                } => {
                    let knobs = Knobs {
                        batch_rows: *batch_rows,
                        write_concurrency: *concurrency,
                        ..Knobs::default()
                    };
                    strategies.push(Strategy::Static {
                        label: static_label(&knobs, "given"),
                        knobs,
                    });
                }
                StrategySpec::Reactive => strategies.push(Strategy::Reactive(
                    ReactiveConfig::for_replay(self.setup.lag_objective, self.setup.speedup),
                )),
                StrategySpec::Trimtab { start } | StrategySpec::Recommend { start } => strategies
                    .push(Strategy::Agent {
                        autonomous: matches!(spec, StrategySpec::Trimtab { .. }),
                        start: start.map(|(batch_rows, write_concurrency)| Knobs {
                            batch_rows,
                            write_concurrency,
                            ..Knobs::default()
                        }),
                    }),
            }
        }
        let mut rows = Vec::new();
        let mut runs = Vec::new();
        for strategy in &strategies {
            let mut tries = Vec::with_capacity(self.repeat);
            for attempt in 1..=self.repeat {
                progress(&format!("== {strategy} (run {attempt} of {})", self.repeat));
                let outcome = run::run_one(&self.planned, strategy, &self.setup, stop, progress)
                    .await
                    .map_err(|source| ReplayError::Run {
                        strategy: strategy.label(),
                        source,
                    })?;
                let row = report::compare_row(
                    &outcome,
                    &self.planned,
                    self.setup.lag_objective,
                    self.setup.speedup,
                );
                progress(&report::table(std::slice::from_ref(&row)));
                tries.push((row, outcome));
            }
            let (rows_of_tries, mut outcomes): (Vec<_>, Vec<_>) = tries.into_iter().unzip();
            if let Some((median, row)) = report::median_of_runs(&rows_of_tries) {
                rows.push(row);
                runs.push(outcomes.swap_remove(median));
            }
        }
        Ok(ComparisonResult { rows, runs, sweep })
    }

    /// The busiest stretch of `sweep_seconds` (most messages), re-timed to start at zero.
    pub fn busiest_stretch(&self) -> Vec<PlannedMessage> {
        let window = Duration::from_secs_f64(self.sweep_seconds.max(0.5));
        let p = &self.planned;
        let (mut best, mut best_n, mut end) = (0, 0, 0);
        for start in 0..p.len() {
            while end < p.len() && p[end].at < p[start].at + window {
                end += 1;
            }
            if end - start > best_n {
                (best, best_n) = (start, end - start);
            }
        }
        let Some(first) = p.get(best) else {
            return Vec::new();
        };
        let origin = first.at;
        p[best..best + best_n]
            .iter()
            .map(|m| PlannedMessage {
                at: m.at - origin,
                ..m.clone()
            })
            .collect()
    }

    /// Runs every sweep setting on the busiest stretch; best first (fewest minutes over, then lowest p99 lag).
    async fn sweep(
        &self,
        stop: &CancellationToken,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Vec<(Knobs, StrategyReport)>, ReplayError> {
        let stretch = self.busiest_stretch();
        progress(&format!(
            "== sweep: {} settings on the busiest {:.0} s ({} messages)",
            self.fixture.sweep.len(),
            self.sweep_seconds,
            stretch.len()
        ));
        let quiet = |_: &str| {};
        let mut scored = Vec::new();
        for &(batch_rows, concurrency) in &self.fixture.sweep {
            let knobs = Knobs {
                batch_rows,
                write_concurrency: concurrency,
                ..Knobs::default()
            };
            let strategy = Strategy::Static {
                label: static_label(&knobs, "sweep"),
                knobs,
            };
            let outcome = run::run_one(&stretch, &strategy, &self.setup, stop, &quiet)
                .await
                .map_err(|source| ReplayError::Run {
                    strategy: strategy.label(),
                    source,
                })?;
            let row = report::compare_row(
                &outcome,
                &stretch,
                self.setup.lag_objective,
                self.setup.speedup,
            );
            progress(&format!(
                "   {:<28} {:.1} min over, p99 lag {:.0} ms, {} timeouts, {} overloaded",
                strategy.label(),
                row.minutes_over,
                row.lag_p99_ms,
                row.write_timeouts,
                row.overloaded
            ));
            scored.push((knobs, row));
        }
        scored.sort_by(|a, b| {
            a.1.minutes_over
                .total_cmp(&b.1.minutes_over)
                .then(a.1.lag_p99_ms.total_cmp(&b.1.lag_p99_ms))
        });
        Ok(scored)
    }
}

/// Writes `report.md`, `lag.png`, `batch.png` and the charts' data `timeline.csv` into `dir`; returns the report's
/// path.
pub fn write_report(
    dir: &Path,
    comparison: &Comparison,
    result: &ComparisonResult,
) -> Result<PathBuf, ReplayError> {
    let write_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ReplayError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let speedup = comparison.setup.speedup;
    let objective_ms = comparison.setup.lag_objective.as_millis() as f64;
    let lag_lines: Vec<Line<'_>> = result
        .runs
        .iter()
        .map(|r| Line {
            label: &r.label,
            points: report::lag_points(r, speedup),
        })
        .collect();
    chart::lines_png(
        &dir.join("lag.png"),
        "age of the oldest unsettled message",
        "trace minute",
        "lag (ms, wall)",
        &lag_lines,
        Some((objective_ms, "lag objective")),
    )?;
    let batch_lines: Vec<Line<'_>> = result
        .runs
        .iter()
        .map(|r| Line {
            label: &r.label,
            points: smooth(
                r.timeline
                    .iter()
                    .map(|p| (p.at_s * speedup / 60.0, p.rows_per_batch))
                    .collect(),
                4,
            ),
        })
        .collect();
    chart::lines_png(
        &dir.join("batch.png"),
        "rows per batch written",
        "trace minute",
        "rows per batch",
        &batch_lines,
        None,
    )?;

    // The charts' data, for anyone who wants to look closer than a PNG.
    let mut csv = String::from(
        "strategy,wall_s,trace_minute,oldest_lag_ms,queue_depth,batch_rows,concurrency,rows_per_batch\n",
    );
    for r in &result.runs {
        for p in &r.timeline {
            csv.push_str(&format!(
                "{},{:.2},{:.3},{},{},{},{},{:.2}\n",
                r.label.replace(',', ";"),
                p.at_s,
                p.at_s * speedup / 60.0,
                p.oldest_lag_ms,
                p.queue_depth,
                p.batch_rows,
                p.concurrency,
                p.rows_per_batch
            ));
        }
    }
    let timeline_path = dir.join("timeline.csv");
    std::fs::write(&timeline_path, csv).map_err(write_err(&timeline_path))?;

    let s = &comparison.setup;
    let c = &s.capacity;
    let mut md = String::new();
    md.push_str("# Replay: tuning strategies on one trace\n\n");
    md.push_str(&format!(
        "Trace `{}` ({} format): {} messages over {:.0} min, replayed at {:.0}× (one trace minute is {:.2} s of wall time).\n\n",
        comparison.trace.name,
        comparison.trace.format,
        comparison.planned.len(),
        comparison.trace.span.as_secs_f64() / 60.0,
        speedup,
        60.0 / speedup
    ));
    md.push_str(&format!(
        "CQL node: {} workers, {} µs per request + {} µs per KiB + {} µs per extra partition, write timeout {} ms, Overloaded past {} waiting writes. Lag objective {} ms (wall).\n\n",
        c.workers, c.per_request_us, c.per_kib_us, c.per_extra_partition_us, c.write_timeout_ms, c.max_backlog, objective_ms
    ));
    md.push_str("| strategy | minutes over objective | p50 lag (ms) | p99 lag (ms) | rows/s | peak rows/s | write timeouts | overloaded | changes | gate allow / approval / deny | lost | duplicated |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &result.rows {
        let d = |k: &str| r.decisions.get(k).copied().unwrap_or(0);
        md.push_str(&format!(
            "| {} | {:.1} of {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} / {} / {} | {} | {} |\n",
            r.label, r.minutes_over, r.minutes, r.lag_p50_ms, r.lag_p99_ms, r.rows_per_s, r.peak_rows_per_s,
            r.write_timeouts, r.overloaded, r.changes, d("allow"), d("needs_approval"), d("deny"), r.lost, r.duplicated
        ));
    }
    md.push_str("\nWhere an event's time went (mean ms per stage over the run; `pipeline::stages`), and the CQL write requests that were not the pipeline's batches (the agent's own tables, which share the node), and the node's worker seconds that the pipeline's event writes and all other writes took:\n\n");
    md.push_str("| strategy | queued | batch wait | work | settle | other node writes | node work, events / other (worker s) |\n|---|---|---|---|---|---|---|\n");
    for r in &result.rows {
        let stage = |name: &str| {
            r.event_stages_ms
                .iter()
                .find(|(s, _)| *s == name)
                .map_or_else(|| "-".to_string(), |(_, ms)| format!("{ms:.0}"))
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} / {:.1} |\n",
            r.label,
            stage("queued"),
            stage("batch_wait"),
            stage("work"),
            stage("settle"),
            r.other_node_writes,
            r.events_node_work.busy.as_secs_f64(),
            r.other_node_work_s()
        ));
    }
    for r in result.rows.iter().filter(|r| !r.other_node_work.is_empty()) {
        let tables: Vec<String> = r
            .other_node_work
            .iter()
            .map(|(table, w)| {
                format!(
                    "`{table}` {} writes, {:.2} worker s",
                    w.writes,
                    w.busy.as_secs_f64()
                )
            })
            .collect();
        md.push_str(&format!(
            "\nThe other node writes of {} by table: {}.\n",
            r.label,
            tables.join("; ")
        ));
    }
    if comparison.repeat > 1 {
        md.push_str(&format!(
            "\nEach strategy ran {} times; the row is the median run. Minutes over the objective in every run: {}.\n",
            comparison.repeat,
            result
                .rows
                .iter()
                .map(|r| format!("{} {:.1?}", r.label, r.minutes_over_runs))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    md.push_str("\nLost and duplicated are counted by reading Cassandra, the dead-letter queue and LINSTOR back after the queue drained, in every run of a strategy (summed when it ran more than once), not only the median run.\n\n");
    if let Some(note) = report::unstressed(&result.rows) {
        md.push_str(&format!("**{note}**\n\n"));
    }
    if let Some(first) = result.rows.first() {
        let part = first.minutes / report::PARTS as f64;
        md.push_str(&format!(
            "Where the minutes over the objective fell, the trace cut into {} equal parts of {:.1} trace minutes:\n\n| strategy |",
            report::PARTS,
            part
        ));
        for i in 0..report::PARTS {
            md.push_str(&format!(
                " {:.0}–{:.0} |",
                part * i as f64,
                part * (i + 1) as f64
            ));
        }
        md.push_str("\n|---|");
        md.push_str(&"---|".repeat(report::PARTS));
        md.push('\n');
        for r in &result.rows {
            md.push_str(&format!("| {} |", r.label));
            for m in &r.minutes_over_by_part {
                md.push_str(&format!(" {m:.1} |"));
            }
            md.push('\n');
        }
        md.push('\n');
    }
    md.push_str("## Lag over the replay\n\nThe age of the oldest received, unsettled message, sampled every 100 ms of wall time.\n\n![lag](lag.png)\n\n## Batch size over time\n\n![batch size](batch.png)\n\nThe data behind both charts is in `timeline.csv`.\n\n");
    md.push_str("Line colours, in order: ");
    let legend: Vec<String> = result
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} {}", r.label, COLOURS[i % COLOURS.len()].0))
        .collect();
    md.push_str(&legend.join(", "));
    md.push_str(".\n\n");
    if !result.sweep.is_empty() {
        md.push_str("## Static sweep (busiest stretch of the trace)\n\n| setting | minutes over | p99 lag (ms) | timeouts | overloaded |\n|---|---|---|---|---|\n");
        for (k, r) in &result.sweep {
            md.push_str(&format!(
                "| {}x{} | {:.1} | {:.0} | {} | {} |\n",
                k.batch_rows,
                k.write_concurrency,
                r.minutes_over,
                r.lag_p99_ms,
                r.write_timeouts,
                r.overloaded
            ));
        }
        md.push('\n');
    }
    for r in &result.rows {
        if r.proposals.is_empty() && r.mode_notes.is_empty() && r.knob_outcomes.is_empty() {
            continue;
        }
        md.push_str(&format!("## {}\n\n", r.label));
        if !r.mode_notes.is_empty() {
            md.push_str(&format!("Mode changes ({}):\n\n", r.mode_notes.len()));
            for note in &r.mode_notes {
                md.push_str(&format!("- {note}\n"));
            }
            md.push('\n');
        }
        if !r.knob_outcomes.is_empty() {
            md.push_str("Knob changes started, and what became of each:\n\n");
            for o in &r.knob_outcomes {
                md.push_str(&format!("- {o}\n"));
            }
            md.push('\n');
        }
        if !r.proposals.is_empty() {
            md.push_str("Proposals (what it did or would have done):\n\n");
            for p in r.proposals.iter().take(20) {
                md.push_str(&format!("- {p}\n"));
            }
            if r.proposals.len() > 20 {
                md.push_str(&format!("- … and {} more\n", r.proposals.len() - 20));
            }
            md.push('\n');
        }
    }
    let path = dir.join("report.md");
    std::fs::write(&path, md).map_err(write_err(&path))?;
    Ok(path)
}

/// A moving mean over `n` points, so the batch-size lines are readable.
fn smooth(points: Vec<(f64, f64)>, n: usize) -> Vec<(f64, f64)> {
    (0..points.len())
        .map(|i| {
            let from = i.saturating_sub(n.saturating_sub(1));
            let window = &points[from..=i];
            let mean = window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64;
            (points[i].0, mean)
        })
        .collect()
}

/// Runs `trimtab replay`.
pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    crate::commands::init_tracing("warn");
    let scratch = std::env::temp_dir().join(format!("trimtab-replay-{}", std::process::id()));
    let comparison = Comparison::from_args(&args, scratch.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            crate::shutdown::signal().await;
            on_signal.cancel();
        });
        let quiet = args.quiet;
        let progress = move |line: &str| {
            if !quiet {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        };
        progress(&format!(
            "replaying {} ({} messages over {:.0} min of trace) at {:.0}x under {} strateg{}",
            comparison.trace.name,
            comparison.planned.len(),
            comparison.trace.span.as_secs_f64() / 60.0,
            comparison.setup.speedup,
            comparison.specs.len(),
            if comparison.specs.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ));
        let result = comparison.run(&stop, &progress).await?;
        println!("\n{}", report::table(&result.rows));
        if let Some(note) = report::unstressed(&result.rows) {
            println!("{note}\n");
        }
        let path = write_report(&args.out, &comparison, &result)?;
        println!("report: {}", path.display());
        if let Err(error) = std::fs::remove_dir_all(&scratch) {
            tracing::debug!(%error, "scratch directory not removed");
        }
        Ok(())
    })
}
