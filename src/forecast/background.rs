//! Fitting off the async runtime: the CPU-heavy fit runs on tokio's blocking pool and its card is saved.

use std::path::PathBuf;

use super::card::{write_card, ModelCard};
use super::features::Calendar;
use super::{ForecastConfig, ForecastError, Forecaster};
use crate::metrics::series::SeriesKey;

/// Fits a forecaster on `values` in `tokio::task::spawn_blocking`, so the agent's loop keeps running.
pub async fn fit_in_background(
    values: Vec<f64>,
    calendar: Calendar,
    config: ForecastConfig,
) -> Result<Forecaster, ForecastError> {
    tokio::task::spawn_blocking(move || Forecaster::fit(&values, calendar, &config))
        .await
        .map_err(ForecastError::Task)?
}

/// Like [`fit_in_background`], then writes the model card to `models_dir/<series name>.json` (also off the
/// runtime) and returns the forecaster with the card's path.
pub async fn fit_and_save(
    key: SeriesKey,
    values: Vec<f64>,
    calendar: Calendar,
    config: ForecastConfig,
    models_dir: PathBuf,
) -> Result<(Forecaster, PathBuf), ForecastError> {
    tokio::task::spawn_blocking(move || {
        let forecaster = Forecaster::fit(&values, calendar, &config)?;
        let path = models_dir.join(format!("{}.json", card_file_stem(&key)));
        write_card(&path, &ModelCard::new(&key, calendar, &forecaster))?;
        tracing::info!(series = %key, chosen = forecaster.chosen_name(), card = %path.display(), "model fitted");
        Ok((forecaster, path))
    })
    .await
    .map_err(ForecastError::Task)?
}

/// A file name for a series key: its name and label values, with anything but `[A-Za-z0-9_-]` as `_`.
pub fn card_file_stem(key: &SeriesKey) -> String {
    let mut stem = key.name.clone();
    for (k, v) in &key.labels {
        stem.push_str(&format!("__{k}_{v}"));
    }
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
