//! The backtest protocol over every NAB series in `data/traces/nab`: the chosen model's MASE, sMAPE, interval
//! coverage and time per series, against the best baseline of the same run and the statsforecast anchors.
//!
//! `cargo bench --bench forecast_nab [-- FILE.csv ...]` (release profile). Each series runs
//! `trimtab forecast backtest --horizon 12 --holdout 0.2` with the season detected, as the README describes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use trimtab::forecast::backtest::{self, BacktestConfig, BacktestReport};
use trimtab::forecast::features::Calendar;
use trimtab::metrics::series::{load_csv, LoadOptions};

/// The best statsforecast MASE of issue 7 (AutoETS, MSTL, SeasonalNaive under the same protocol).
const ANCHORS: [(&str, f64); 2] = [("nyc_taxi", 0.924), ("elb_request_count_8c0756", 0.793)];

/// The baselines' names start with these.
fn is_baseline(name: &str) -> bool {
    name == "naive" || name.starts_with("seasonal_naive")
}

fn best_baseline(report: &BacktestReport) -> (String, f64) {
    report
        .models
        .iter()
        .filter(|(name, _)| is_baseline(name))
        .map(|(name, s)| (name.clone(), s.mase))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or_else(|| ("none".into(), f64::NAN))
}

fn csv_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            csv_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "csv") {
            out.push(path);
        }
    }
}

fn main() {
    let mut files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| a.ends_with(".csv"))
        .map(PathBuf::from)
        .collect();
    if files.is_empty() {
        csv_files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("data/traces/nab"),
            &mut files,
        );
    }
    let config = BacktestConfig::default();
    println!(
        "backtest: horizon {}, holdout {}, season detected, {:.0} % intervals",
        config.horizon,
        config.holdout,
        config.coverage * 100.0
    );
    println!(
        "{:<28} {:>6} {:<24} {:>7} {:>7} {:>7} {:>8} {:>7} | {:<20} {:>7} {:>7} | {:>8}",
        "series",
        "season",
        "chosen",
        "MASE",
        "sMAPE",
        "MASE@H",
        "coverage",
        "seconds",
        "best baseline",
        "MASE",
        "ratio",
        "anchor"
    );
    let mut log_ratio_sum = 0.0;
    let mut counted = 0;
    for path in &files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (series, _) = match load_csv(path, &LoadOptions::default()) {
            Ok(loaded) => loaded,
            Err(e) => {
                println!("{name}: cannot load: {e}");
                continue;
            }
        };
        let calendar = Calendar {
            start: series.start,
            step: series.step,
        };
        let started = Instant::now();
        let outcome = match backtest::run(&series.values, calendar, &config, &mut |_| {}) {
            Ok(outcome) => outcome,
            Err(e) => {
                println!("{name}: backtest failed: {e}");
                continue;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let r = &outcome.report;
        let (baseline, baseline_mase) = best_baseline(r);
        let ratio = r.chosen_score.mase / baseline_mase;
        log_ratio_sum += ratio.ln();
        counted += 1;
        let anchor = ANCHORS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| format!("{:.3}x", r.chosen_score.mase / m))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<28} {:>6} {:<24} {:>7.3} {:>7.2} {:>7.3} {:>7.0}% {:>7.2} | {:<20} {:>7.3} {:>7.3} | {:>8}",
            name,
            r.season,
            r.chosen,
            r.chosen_score.mase,
            r.chosen_score.smape,
            r.chosen_score.mase_h,
            r.chosen_score.coverage * 100.0,
            seconds,
            baseline,
            baseline_mase,
            ratio,
            anchor
        );
    }
    if counted > 0 {
        println!(
            "geometric mean of chosen MASE / best baseline MASE over {counted} series: {:.3}",
            (log_ratio_sum / counted as f64).exp()
        );
    }
    println!("anchor: chosen MASE / best statsforecast MASE (issue 7: nyc_taxi 0.924, elb 0.793)");
}
