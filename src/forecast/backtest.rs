//! The backtest: how well each model, and the one trimtab would choose, forecasts the held-out end of a series.
//!
//! # Protocol
//!
//! `trimtab forecast backtest --csv FILE --horizon H --holdout P [--season M] [--json]`
//!
//! 1. Read the `timestamp,value` CSV (the NAB format) and put it on its step (rows sorted, duplicate timestamps
//!    averaged, gaps filled by linear interpolation; the loader reports each).
//! 2. Hold out the last `P` share of the points (`round(P * n)`, default 20 %); the rest is the training part.
//!    The season `M` is given, or detected from the autocorrelation of the training part.
//! 3. Fit on the training part only. This includes choosing the model: every single candidate (see
//!    [`Forecaster::fit`]: naive, seasonal naive at `M` and, with two weeks of daily-season history, at `7M`,
//!    the local median over the last `H` and `4H` steps; the linfa families, each one model per horizon step,
//!    on the raw and for non-negative series the log scale) is fitted on the first 80 % of the training part
//!    and forecasts the next `H` steps from every origin in its last 20 %. The candidates whose validation MASE
//!    is within 10 % of the best (at most five) are combined, weighted by inverse validation MASE, and the
//!    combination is the chosen model (the single best when nothing comes within 10 % of it). Then every model
//!    is refitted on the whole training part. The held-out part is never looked at while fitting or choosing.
//! 4. Walk a rolling origin over the held-out part in non-overlapping windows of `H` steps: the first origin is
//!    the last training point; at each origin every model forecasts the next `H` steps from all data observed up
//!    to the origin (models are not refitted; their inputs are the observed values); the origin then moves `H`
//!    steps on. A last window shorter than `H` is scored over the steps it has.
//! 5. Score each model over all held-out forecasts: MASE = mean absolute error divided by the in-sample mean
//!    absolute error of the seasonal naive forecast at lag `M` on the training part; sMAPE =
//!    `mean(200 |a - f| / (|a| + |f|))` on the 0–200 scale. Both are also reported for step `H` alone
//!    (`mase_h`, `smape_h`), with the share of held-out values inside each model's interval (`coverage`). The
//!    time taken covers fitting, choosing and forecasting.

use std::collections::BTreeMap;
use std::time::Instant;

use super::features::Calendar;
use super::forecaster::{resolve_season, ForecastConfig, Forecaster, ValidationScore};
use super::model::Family;
use super::score;
use super::{Forecast, ForecastError};

/// What to backtest and how.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    /// Steps per forecast window.
    pub horizon: usize,
    /// The share of points held out at the end.
    pub holdout: f64,
    /// The season in steps; detected from the training part when absent.
    pub season: Option<usize>,
    /// The central coverage of the prediction intervals.
    pub coverage: f64,
    /// The linfa families tried beside the baselines.
    pub families: Vec<Family>,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        Self {
            horizon: 12,
            holdout: 0.2,
            season: None,
            coverage: 0.8,
            families: Family::DEFAULT.to_vec(),
        }
    }
}

/// One model's scores over the held-out part.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelScore {
    /// MASE over every held-out step.
    pub mase: f64,
    /// sMAPE (0–200) over every held-out step.
    pub smape: f64,
    /// MASE at step `H` only.
    pub mase_h: f64,
    /// sMAPE at step `H` only.
    pub smape_h: f64,
    /// Share of held-out actuals inside the model's prediction interval.
    pub coverage: f64,
}

/// The outcome of a backtest, as printed by `--json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BacktestReport {
    /// Scores per model name.
    pub models: BTreeMap<String, ModelScore>,
    /// The model chosen by validation on the training part.
    pub chosen: String,
    /// The chosen model's scores (a copy of its entry in `models`).
    pub chosen_score: ModelScore,
    /// Points in the series.
    pub points: usize,
    /// Points in the training part.
    pub train_points: usize,
    /// Points held out.
    pub holdout_points: usize,
    /// Steps per window.
    pub horizon: usize,
    /// Season used for the MASE scale and the features, in steps.
    pub season: usize,
    /// Whether the season was detected rather than given.
    pub season_detected: bool,
    /// The weekly period in steps, when the models used one.
    pub weekly: Option<usize>,
    /// The models' feature names in row order.
    pub features: Vec<String>,
    /// Rolling origins walked.
    pub origins: usize,
    /// The validation score of each candidate on the training part, which made the choice.
    pub validation: Vec<ValidationScore>,
    /// The interval's nominal coverage.
    pub interval_coverage: f64,
    /// Seconds spent fitting and choosing.
    pub fit_seconds: f64,
    /// Seconds for the whole backtest.
    pub seconds: f64,
}

/// A backtest's report and the chosen model's forecasts (for plotting).
#[derive(Debug, Clone)]
pub struct Backtest {
    /// The scores.
    pub report: BacktestReport,
    /// The chosen model's forecast at each origin.
    pub forecasts: Vec<Forecast>,
}

/// Progress of a running backtest, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Fitting and choosing has started.
    Fitting,
    /// `done` of `total` origins are forecast.
    Origins {
        /// Origins forecast so far.
        done: usize,
        /// All origins.
        total: usize,
    },
}

/// Runs the protocol in the module doc over `y` (gap-free), reporting progress to `progress`.
pub fn run(
    y: &[f64],
    calendar: Calendar,
    config: &BacktestConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Backtest, ForecastError> {
    let started = Instant::now();
    if !(0.0..1.0).contains(&config.holdout) || config.holdout == 0.0 {
        return Err(ForecastError::Config(format!(
            "holdout must be in (0, 1), got {}",
            config.holdout
        )));
    }
    let holdout = (y.len() as f64 * config.holdout).round() as usize;
    let train_points = y.len() - holdout;
    let train = &y[..train_points];
    let season = resolve_season(train, calendar, config.season);
    let forecast_config = ForecastConfig {
        horizon: config.horizon,
        season: Some(season),
        coverage: config.coverage,
        families: config.families.clone(),
        ..Default::default()
    };
    progress(Progress::Fitting);
    let forecaster = Forecaster::fit(train, calendar, &forecast_config)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let scale = score::seasonal_naive_scale(train, season)
        .filter(|s| *s > 0.0)
        .ok_or(ForecastError::TooShort {
            needed: season + 2,
            found: train_points,
        })?;

    let names = forecaster.model_names();
    let total = holdout.div_ceil(config.horizon);
    let mut actual_all = Vec::new();
    let mut actual_h = Vec::new();
    let mut predicted_all = vec![Vec::new(); names.len()];
    let mut predicted_h = vec![Vec::new(); names.len()];
    let mut inside = vec![0usize; names.len()];
    let mut chosen_forecasts = Vec::with_capacity(total);
    let mut origin = train_points - 1;
    let mut done = 0;
    while origin + 1 < y.len() {
        let steps = config.horizon.min(y.len() - 1 - origin);
        let actual = &y[origin + 1..=origin + steps];
        let forecasts = forecaster.forecast_all(&y[..=origin])?;
        actual_all.extend_from_slice(actual);
        if steps == config.horizon {
            actual_h.push(actual[steps - 1]);
        }
        for (m, f) in forecasts.iter().enumerate() {
            predicted_all[m].extend_from_slice(&f.point[..steps]);
            if steps == config.horizon {
                predicted_h[m].push(f.point[steps - 1]);
            }
            inside[m] += (0..steps)
                .filter(|&i| f.lower[i] <= actual[i] && actual[i] <= f.upper[i])
                .count();
            if f.model == forecaster.chosen_name() {
                chosen_forecasts.push(f.clone());
            }
        }
        origin += config.horizon;
        done += 1;
        progress(Progress::Origins { done, total });
    }
    let models: BTreeMap<String, ModelScore> = names
        .iter()
        .enumerate()
        .map(|(m, name)| {
            let s = ModelScore {
                mase: score::mase(&actual_all, &predicted_all[m], scale),
                smape: score::smape(&actual_all, &predicted_all[m]),
                mase_h: score::mase(&actual_h, &predicted_h[m], scale),
                smape_h: score::smape(&actual_h, &predicted_h[m]),
                coverage: inside[m] as f64 / actual_all.len().max(1) as f64,
            };
            (name.clone(), s)
        })
        .collect();
    let chosen = forecaster.chosen_name().to_string();
    let chosen_score = models[&chosen];
    let report = BacktestReport {
        models,
        chosen,
        chosen_score,
        points: y.len(),
        train_points,
        holdout_points: holdout,
        horizon: config.horizon,
        season,
        season_detected: config.season.is_none(),
        weekly: forecaster.spec().weekly,
        features: forecaster.spec().names(),
        origins: done,
        validation: forecaster.validation().to_vec(),
        interval_coverage: config.coverage,
        fit_seconds,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Backtest {
        report,
        forecasts: chosen_forecasts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_non_overlapping_windows_over_the_holdout_and_scores_the_baselines_as_by_hand() {
        // Season 4 pattern 1 3 5 3, every other season lifted by 1: the seasonal naive error is exactly 1 at every
        // point (so the MASE scale is 1 and seasonal naive scores MASE 1), and the naive forecast from the last
        // point of a season misses by 3, 1, 1, 1 or 1, 1, 3, 1: MASE 1.5.
        let y: Vec<f64> = (0..400)
            .map(|i| [1.0, 3.0, 5.0, 3.0][i % 4] + ((i / 4) % 2) as f64)
            .collect();
        let config = BacktestConfig {
            horizon: 4,
            holdout: 0.1,
            season: Some(4),
            families: vec![Family::Ridge],
            ..Default::default()
        };
        let mut seen = Vec::new();
        let outcome = run(&y, Calendar { start: 0, step: 60 }, &config, &mut |p| {
            seen.push(p)
        })
        .expect("runs");
        let report = &outcome.report;
        assert_eq!(
            (report.train_points, report.holdout_points, report.origins),
            (360, 40, 10)
        );
        assert_eq!(seen.first(), Some(&Progress::Fitting));
        assert_eq!(
            seen.last(),
            Some(&Progress::Origins {
                done: 10,
                total: 10
            })
        );
        let seasonal = report.models["seasonal_naive_4"];
        assert!(
            (seasonal.mase - 1.0).abs() < 1e-12 && (seasonal.mase_h - 1.0).abs() < 1e-12,
            "{seasonal:?}"
        );
        let naive = report.models["naive"];
        assert!((naive.mase - 1.5).abs() < 1e-12, "{naive:?}");
        assert!(
            (naive.mase_h - 1.0).abs() < 1e-12,
            "step 4 misses by 1: {naive:?}"
        );
        // The pattern is deterministic, so the ridge model learns it and is chosen.
        assert_eq!(report.chosen, "ridge");
        assert!(report.chosen_score.mase < 0.1, "{:?}", report.chosen_score);
        assert_eq!(outcome.forecasts.len(), 10);
    }
}
