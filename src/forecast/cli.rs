//! `trimtab forecast backtest | plot`: reads a series, runs the backtest, prints or draws the outcome.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use super::backtest::{self, Backtest, BacktestConfig, Progress};
use super::card::{self, ModelCard};
use super::features::Calendar;
use super::model::Family;
use super::plot::{self, PlotInput};
use super::ForecastError;
use crate::metrics::series::{self, LoadOptions, LoadReport, Series, SeriesError};

/// Forecasting commands.
#[derive(Debug, clap::Args)]
pub struct ForecastArgs {
    #[command(subcommand)]
    command: ForecastCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ForecastCommand {
    /// Backtest every model on the held-out end of a `timestamp,value` CSV and report MASE and sMAPE.
    Backtest(BacktestArgs),
    /// Run the backtest and draw actual against the chosen model's forecasts and interval as SVG.
    Plot(PlotArgs),
}

/// The series and the backtest protocol's knobs.
#[derive(Debug, clap::Args)]
struct SeriesArgs {
    /// A `timestamp,value` CSV (the NAB format).
    #[arg(long)]
    csv: PathBuf,
    /// Steps per forecast window.
    #[arg(long, default_value_t = 12)]
    horizon: usize,
    /// Share of the points held out at the end.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Season length in steps; detected from the data when absent.
    #[arg(long)]
    season: Option<usize>,
    /// The linfa families to try beside the baselines.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Family::DEFAULT)]
    families: Vec<Family>,
}

#[derive(Debug, clap::Args)]
struct BacktestArgs {
    #[command(flatten)]
    series: SeriesArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the chosen model's card (JSON) into this directory, such as `models/`.
    #[arg(long)]
    card_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PlotArgs {
    #[command(flatten)]
    series: SeriesArgs,
    /// The SVG file to write.
    #[arg(long)]
    out: PathBuf,
}

/// Why a forecast command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The series could not be loaded.
    #[error("cannot load series")]
    Series(#[from] SeriesError),
    /// The backtest failed.
    #[error("backtest failed")]
    Forecast(#[from] ForecastError),
    /// The output could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be encoded.
    #[error("cannot encode the report as json")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// Whether running again could succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            CliError::Series(e) => e.is_retriable(),
            CliError::Forecast(e) => e.is_retriable(),
            CliError::Write { .. } => true,
            CliError::Json(_) => false,
        }
    }
}

/// Runs a forecast command.
pub fn run(args: ForecastArgs) -> Result<(), CliError> {
    match args.command {
        ForecastCommand::Backtest(args) => backtest_command(&args),
        ForecastCommand::Plot(args) => plot_command(&args),
    }
}

fn load(args: &SeriesArgs) -> Result<(Series, LoadReport), CliError> {
    let (series, report) = series::load_csv(&args.csv, &LoadOptions::default())?;
    tracing::info!(
        input = %args.csv.display(),
        rows = report.rows,
        step_seconds = report.step,
        unsorted = report.unsorted,
        duplicates_merged = report.duplicates_merged,
        gaps_filled = report.gaps_filled,
        snapped = report.snapped,
        "loaded series"
    );
    Ok((series, report))
}

fn run_backtest(
    args: &SeriesArgs,
    series: &Series,
    show_progress: bool,
) -> Result<Backtest, CliError> {
    let config = BacktestConfig {
        horizon: args.horizon,
        holdout: args.holdout,
        season: args.season,
        families: args.families.clone(),
        ..Default::default()
    };
    let calendar = Calendar {
        start: series.start,
        step: series.step,
    };
    let bar = if show_progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(format!("fitting and choosing a model for {}", series.key));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut on_progress = |p: Progress| {
        if let Progress::Origins { done, total } = p {
            if done == 1 {
                bar.set_length(total as u64);
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} origins")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_message("forecasting held-out windows");
            }
            bar.set_position(done as u64);
        }
    };
    let outcome = backtest::run(&series.values, calendar, &config, &mut on_progress);
    bar.finish_and_clear();
    Ok(outcome?)
}

fn backtest_command(args: &BacktestArgs) -> Result<(), CliError> {
    let (series, load_report) = load(&args.series)?;
    let outcome = run_backtest(&args.series, &series, !args.json)?;
    let report = &outcome.report;
    if let Some(dir) = &args.card_dir {
        let card = ModelCard::from_backtest(&series, report);
        let path = dir.join(format!("{}.json", series.key.name));
        card::write_card(&path, &card)?;
        if !args.json {
            println!("model card written to {}", path.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!(
        "{}: {} points every {} s ({} gaps filled, {} duplicates merged); trained on {}, held out {}",
        args.series.csv.display(),
        report.points,
        load_report.step,
        load_report.gaps_filled,
        load_report.duplicates_merged,
        report.train_points,
        report.holdout_points
    );
    println!(
        "horizon {} steps, season {} steps ({}), {} origins",
        report.horizon,
        report.season,
        if report.season_detected {
            "detected"
        } else {
            "given"
        },
        report.origins
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "model", "MASE", "sMAPE", "MASE@H", "sMAPE@H", "coverage", "valid MASE"
    );
    for v in &report.validation {
        if let Some(s) = report.models.get(&v.model) {
            let mark = if v.model == report.chosen { " *" } else { "" };
            println!(
                "{:<22} {:>8.3} {:>8.2} {:>8.3} {:>8.2} {:>8.0}% {:>10.3}{}",
                v.model,
                s.mase,
                s.smape,
                s.mase_h,
                s.smape_h,
                s.coverage * 100.0,
                v.mase,
                mark
            );
        }
    }
    println!(
        "chosen: {} (* above, by validation on the training part)",
        report.chosen
    );
    println!(
        "took {:.2} s ({:.2} s fitting and choosing)",
        report.seconds, report.fit_seconds
    );
    Ok(())
}

fn plot_command(args: &PlotArgs) -> Result<(), CliError> {
    let (series, _) = load(&args.series)?;
    let outcome = run_backtest(&args.series, &series, true)?;
    let from = outcome
        .report
        .train_points
        .saturating_sub(args.series.horizon * 4);
    let title = series.key.to_string();
    let input = PlotInput {
        title: &title,
        actual: &series.values,
        from,
        forecasts: &outcome.forecasts,
        coverage: outcome.report.interval_coverage,
    };
    let svg = plot::render_svg(&input, 1600, 600)?;
    write_file(&args.out, svg.as_bytes())?;
    println!(
        "wrote {} ({} chosen, MASE {:.3} over {} held-out points)",
        args.out.display(),
        outcome.report.chosen,
        outcome.report.chosen_score.mase,
        outcome.report.holdout_points
    );
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Write {
        path: path.display().to_string(),
        source,
    })
}
