//! The backtest protocol over every NAB series in `data/traces/nab`: the chosen model's MASE, sMAPE, interval
//! coverage and time per series, against the seasonal naive and best baseline of the same run, and against
//! statsforecast (AutoETS, MSTL, SeasonalNaive) run with the same protocol in the same run when available.
//!
//! `cargo bench --bench forecast_nab [-- FILE.csv ...]` (release profile). Each series runs
//! `trimtab forecast backtest --horizon 12 --holdout 0.2` with the season detected, as the README describes.
//! With `TRIMTAB_STATSFORECAST_PYTHON` set to a Python that has `statsforecast` installed, each series is also
//! run through `scripts/statsforecast_reference.py` with the season trimtab used (so both MASEs share one
//! scale); without it that column is skipped. statsforecast's MSTL is slow: expect minutes per series.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use trimtab::forecast::backtest::{self, BacktestConfig, BacktestReport};
use trimtab::forecast::features::Calendar;
use trimtab::metrics::series::{load_csv, LoadOptions};

/// The environment variable naming a Python with statsforecast.
const PYTHON_VAR: &str = "TRIMTAB_STATSFORECAST_PYTHON";

/// The baselines' names start with these.
fn is_baseline(name: &str) -> bool {
    name == "naive" || name.starts_with("seasonal_naive") || name.starts_with("local_median")
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

/// The best statsforecast model and its MASE on `csv` with season `season`, or why there is none.
fn statsforecast_best(python: &str, csv: &Path, season: usize) -> Result<(String, f64), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/statsforecast_reference.py");
    let output = Command::new(python)
        .arg(&script)
        .arg("--season")
        .arg(season.to_string())
        .arg(csv)
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "reference failed: {}",
            stderr.lines().last().unwrap_or("")
        ));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| format!("reference printed no JSON object: {e}"))?;
    let best = report["best"].as_str().ok_or("reference scored no model")?;
    let mase = report["best_mase"]
        .as_f64()
        .ok_or("reference has no MASE")?;
    Ok((best.to_string(), mase))
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
    let python = std::env::var(PYTHON_VAR).ok().filter(|p| !p.is_empty());
    let config = BacktestConfig::default();
    println!(
        "backtest: horizon {}, holdout {}, season detected, {:.0} % intervals",
        config.horizon,
        config.holdout,
        config.coverage * 100.0
    );
    match &python {
        Some(p) => println!("statsforecast reference: {p} scripts/statsforecast_reference.py"),
        None => println!(
            "statsforecast column skipped: set {PYTHON_VAR} to a Python with statsforecast installed"
        ),
    }
    println!(
        "{:<28} {:>6} {:<18} {:>7} {:>7} {:>7} {:>8} {:>7} | {:>7} {:>7} | {:<18} {:>7} {:>7} | {:<28} {:>7} {:>7}",
        "series",
        "season",
        "chosen",
        "MASE",
        "sMAPE",
        "MASE@H",
        "coverage",
        "seconds",
        "s.naive",
        "ratio",
        "best baseline",
        "MASE",
        "ratio",
        "statsforecast best",
        "MASE",
        "ratio"
    );
    let mut baseline_log_ratio = (0.0, 0);
    let mut reference_log_ratio = (0.0, 0);
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
        let chosen = r.chosen_score.mase;
        let seasonal = r
            .models
            .get(&format!("seasonal_naive_{}", r.season))
            .map_or(f64::NAN, |s| s.mase);
        let (baseline, baseline_mase) = best_baseline(r);
        baseline_log_ratio.0 += (chosen / baseline_mase).ln();
        baseline_log_ratio.1 += 1;
        let reference = match &python {
            None => format!("{:<28} {:>7} {:>7}", "(skipped)", "-", "-"),
            Some(p) => match statsforecast_best(p, path, r.season) {
                Ok((model, mase)) => {
                    reference_log_ratio.0 += (chosen / mase).ln();
                    reference_log_ratio.1 += 1;
                    format!("{model:<28} {mase:>7.3} {:>7.3}", chosen / mase)
                }
                Err(e) => format!("({e})"),
            },
        };
        println!(
            "{:<28} {:>6} {:<18} {:>7.3} {:>7.2} {:>7.3} {:>7.0}% {:>7.2} | {:>7.3} {:>7.3} | {:<18} {:>7.3} {:>7.3} | {}",
            name,
            r.season,
            r.chosen,
            chosen,
            r.chosen_score.smape,
            r.chosen_score.mase_h,
            r.chosen_score.coverage * 100.0,
            seconds,
            seasonal,
            chosen / seasonal,
            baseline,
            baseline_mase,
            chosen / baseline_mase,
            reference
        );
    }
    for (what, (sum, count)) in [
        ("best baseline", baseline_log_ratio),
        ("best statsforecast model", reference_log_ratio),
    ] {
        if count > 0 {
            println!(
                "geometric mean of chosen MASE / {what} MASE over {count} series: {:.3}",
                (sum / count as f64).exp()
            );
        }
    }
    println!("ratio: chosen MASE / that model's MASE, both measured in this run (below 0.9 is 10 % better)");
}
