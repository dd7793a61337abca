//! The model card: a small JSON file next to a fitted model saying what it was fitted on and how well it validated.

use std::path::Path;

use super::backtest::BacktestReport;
use super::features::Calendar;
use super::forecaster::{Forecaster, ValidationScore};
use super::ForecastError;
use crate::metrics::series::{Series, SeriesKey};

/// The card format version.
pub const CARD_VERSION: u32 = 1;

/// What a fitted model is, in a form a person can read.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// The card format version.
    pub version: u32,
    /// The series the model forecasts.
    pub series: String,
    /// Seconds between points.
    pub step_seconds: i64,
    /// The first training timestamp (RFC 3339, UTC).
    pub training_start: String,
    /// The last training timestamp (RFC 3339, UTC).
    pub training_end: String,
    /// Training points.
    pub training_points: usize,
    /// Season length in steps.
    pub season: usize,
    /// Weekly period in steps, when used.
    pub weekly: Option<usize>,
    /// Steps ahead per forecast.
    pub horizon: usize,
    /// Feature names in row order.
    pub features: Vec<String>,
    /// The chosen model (family or baseline).
    pub chosen: String,
    /// The chosen model's validation MASE.
    pub validation_mase: f64,
    /// Every candidate's validation score.
    pub validation: Vec<ValidationScore>,
}

fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

impl ModelCard {
    /// The card of a forecaster fitted on the first `forecaster.trained_on()` points of a series at `calendar`.
    pub fn new(key: &SeriesKey, calendar: Calendar, forecaster: &Forecaster) -> Self {
        let spec = forecaster.spec();
        let chosen = forecaster.chosen_name().to_string();
        let validation = forecaster.validation().to_vec();
        let validation_mase = validation
            .iter()
            .find(|v| v.model == chosen)
            .map_or(f64::NAN, |v| v.mase);
        let last = forecaster.trained_on().saturating_sub(1) as i64;
        Self {
            version: CARD_VERSION,
            series: key.to_string(),
            step_seconds: calendar.step,
            training_start: rfc3339(calendar.start),
            training_end: rfc3339(calendar.start + last * calendar.step),
            training_points: forecaster.trained_on(),
            season: spec.season,
            weekly: spec.weekly,
            horizon: forecaster.horizon(),
            features: spec.names(),
            chosen,
            validation_mase,
            validation,
        }
    }

    /// The card of the model a backtest chose, fitted on the backtest's training part.
    pub fn from_backtest(series: &Series, report: &BacktestReport) -> Self {
        let validation_mase = report
            .validation
            .iter()
            .find(|v| v.model == report.chosen)
            .map_or(f64::NAN, |v| v.mase);
        Self {
            version: CARD_VERSION,
            series: series.key.to_string(),
            step_seconds: series.step,
            training_start: rfc3339(series.start),
            training_end: rfc3339(series.time_of(report.train_points.saturating_sub(1))),
            training_points: report.train_points,
            season: report.season,
            weekly: report.weekly,
            horizon: report.horizon,
            features: report.features.clone(),
            chosen: report.chosen.clone(),
            validation_mase,
            validation: report.validation.clone(),
        }
    }
}

/// Writes `card` as pretty JSON to `path`, creating its directory.
pub fn write_card(path: &Path, card: &ModelCard) -> Result<(), ForecastError> {
    let io_error = |source| ForecastError::Card {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_error)?;
    }
    let json =
        serde_json::to_string_pretty(card).map_err(|e| io_error(std::io::Error::other(e)))?;
    std::fs::write(path, json + "\n").map_err(io_error)
}
