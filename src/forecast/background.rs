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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::model::Family;

    #[tokio::test(flavor = "current_thread")]
    async fn fitting_runs_off_the_runtime_and_saves_a_card() {
        let values: Vec<f64> = (0..24 * 20)
            .map(|i| 10.0 + 0.01 * i as f64 + 5.0 * (std::f64::consts::TAU * i as f64 / 24.0).sin())
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SeriesKey::new("queue_depth").with_label("queue", "orders/eu");
        let config = ForecastConfig {
            horizon: 4,
            season: Some(24),
            families: vec![Family::Ridge],
            ..Default::default()
        };
        let fit = tokio::spawn(fit_and_save(
            key,
            values,
            Calendar {
                start: 0,
                step: 3600,
            },
            config,
            dir.path().into(),
        ));
        // On a single-threaded runtime this tick can only run while the fit is off the runtime.
        let ticked =
            tokio::time::timeout(std::time::Duration::from_secs(5), tokio::task::yield_now()).await;
        assert!(ticked.is_ok(), "the runtime stayed responsive");
        let (forecaster, path) = tokio::time::timeout(std::time::Duration::from_secs(60), fit)
            .await
            .expect("fit finished in time, likely deadlocked otherwise")
            .expect("task joined")
            .expect("fit succeeded");
        assert_eq!(path, dir.path().join("queue_depth__queue_orders_eu.json"));
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("card written"))
                .expect("card is json");
        assert_eq!(card["series"], "queue_depth{queue=\"orders/eu\"}");
        assert_eq!(card["chosen"], forecaster.chosen_name());
        assert_eq!(card["training_points"], 480);
        assert_eq!(card["training_end"], "1970-01-20T23:00:00Z");
        assert!(
            card["validation_mase"].as_f64().is_some_and(|m| m < 1.0),
            "{card}"
        );
    }
}
