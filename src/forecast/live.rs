//! Live accuracy: every forecast the agent makes is kept and scored when its actuals arrive, giving a rolling
//! MASE per series that the policy gate reads before acting on a forecast.
//!
//! The rolling MASE divides the mean absolute error of the scored forecast steps in the window by the mean
//! absolute error the seasonal naive forecast (`y[t - season]`) made on the same window's actuals, so a value
//! below 1 means the forecasts currently beat seasonal naive.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::Forecast;
use crate::metrics::series::SeriesKey;

/// How live accuracy is kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Scored forecast steps (and seasonal naive errors) kept in the rolling window per series.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Scored forecast steps needed before a series' forecasts can be trusted.
    #[serde(default = "default_min_scored")]
    pub min_scored: usize,
    /// The rolling MASE at or above which forecasts are not trusted (1 is seasonal naive's accuracy).
    #[serde(default = "default_max_mase")]
    pub max_mase: f64,
}

const fn default_window() -> usize {
    576
}
const fn default_min_scored() -> usize {
    48
}
const fn default_max_mase() -> f64 {
    1.0
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            window: default_window(),
            min_scored: default_min_scored(),
            max_mase: default_max_mase(),
        }
    }
}

/// A forecast as the agent issued it: where its steps fall in time.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedForecast {
    /// Timestamp (seconds) of the last observation the forecast saw.
    pub origin_at: i64,
    /// Seconds between steps.
    pub step: i64,
    /// The series' season in steps, for the seasonal naive comparison.
    pub season: usize,
    /// The forecast.
    pub forecast: Forecast,
}

/// The accuracy of one series' forecasts, as plain data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccuracySnapshot {
    /// Rolling MASE against seasonal naive; `None` until both have been scored.
    pub rolling_mase: Option<f64>,
    /// Mean absolute error of the forecasts in the window.
    pub mae: Option<f64>,
    /// Forecast steps scored in the window.
    pub scored: usize,
    /// Forecast steps still waiting for their actual.
    pub pending: usize,
    /// Whether the forecasts may be acted on.
    pub trusted: bool,
}

#[derive(Debug, Default)]
struct SeriesAccuracy {
    step: i64,
    season: usize,
    /// Predicted values per target timestamp.
    pending: BTreeMap<i64, Vec<f64>>,
    /// Recent actuals by timestamp, kept for one season plus the window.
    actuals: BTreeMap<i64, f64>,
    errors: VecDeque<f64>,
    naive_errors: VecDeque<f64>,
}

/// Stored forecasts and their scores for every series.
#[derive(Debug, Default)]
pub struct LiveAccuracy {
    config: LiveConfig,
    series: HashMap<SeriesKey, SeriesAccuracy>,
}

impl LiveAccuracy {
    /// An empty record.
    pub fn new(config: LiveConfig) -> Self {
        Self {
            config,
            series: HashMap::new(),
        }
    }

    /// Keeps every step of `issued` until its actual arrives.
    pub fn record_forecast(&mut self, key: &SeriesKey, issued: &IssuedForecast) {
        let entry = self.series.entry(key.clone()).or_default();
        entry.step = issued.step;
        entry.season = issued.season;
        for (i, value) in issued.forecast.point.iter().enumerate() {
            let at = issued.origin_at + issued.step * (i as i64 + 1);
            entry.pending.entry(at).or_default().push(*value);
        }
    }

    /// Takes the actual `value` at `at` and scores every stored forecast step for that time.
    pub fn observe(&mut self, key: &SeriesKey, at: i64, value: f64) {
        let window = self.config.window.max(1);
        let entry = self.series.entry(key.clone()).or_default();
        entry.actuals.insert(at, value);
        if let Some(predicted) = entry.pending.remove(&at) {
            for p in predicted {
                push_bounded(&mut entry.errors, (value - p).abs(), window);
            }
        }
        if entry.step > 0 && entry.season > 0 {
            let back = at - entry.step * entry.season as i64;
            if let Some(earlier) = entry.actuals.get(&back) {
                push_bounded(&mut entry.naive_errors, (value - earlier).abs(), window);
            }
            let keep_from = at - entry.step * (entry.season + window) as i64;
            entry.actuals = entry.actuals.split_off(&keep_from);
            // Forecast steps whose time has long passed without an actual will never be scored.
            entry.pending = entry.pending.split_off(&keep_from);
        }
    }

    /// The accuracy of one series, if anything was recorded for it.
    pub fn snapshot(&self, key: &SeriesKey) -> Option<AccuracySnapshot> {
        self.series.get(key).map(|s| self.summarise(s))
    }

    /// The accuracy of every series.
    pub fn snapshots(&self) -> BTreeMap<SeriesKey, AccuracySnapshot> {
        self.series
            .iter()
            .map(|(k, s)| (k.clone(), self.summarise(s)))
            .collect()
    }

    /// The rolling MASE of a series, if it can be computed yet.
    pub fn rolling_mase(&self, key: &SeriesKey) -> Option<f64> {
        self.snapshot(key).and_then(|s| s.rolling_mase)
    }

    /// Whether a series has enough scored forecasts and they beat seasonal naive (rolling MASE below the limit).
    pub fn is_trusted(&self, key: &SeriesKey) -> bool {
        self.snapshot(key).is_some_and(|s| s.trusted)
    }

    fn summarise(&self, s: &SeriesAccuracy) -> AccuracySnapshot {
        let mean =
            |v: &VecDeque<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let mae = mean(&s.errors);
        let rolling_mase = match (mae, mean(&s.naive_errors)) {
            (Some(e), Some(n)) if n > 0.0 => Some(e / n),
            _ => None,
        };
        let trusted = s.errors.len() >= self.config.min_scored
            && rolling_mase.is_some_and(|m| m < self.config.max_mase);
        AccuracySnapshot {
            rolling_mase,
            mae,
            scored: s.errors.len(),
            pending: s.pending.values().map(Vec::len).sum(),
            trusted,
        }
    }
}

fn push_bounded(queue: &mut VecDeque<f64>, value: f64, limit: usize) {
    if queue.len() == limit {
        queue.pop_front();
    }
    queue.push_back(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(origin_at: i64, point: Vec<f64>) -> IssuedForecast {
        let n = point.len();
        IssuedForecast {
            origin_at,
            step: 60,
            season: 4,
            forecast: Forecast {
                model: "m".into(),
                origin: 0,
                point,
                lower: vec![0.0; n],
                upper: vec![0.0; n],
            },
        }
    }

    /// A season-4 pattern; seasonal naive is off by the trend, 1 per season.
    fn actual(i: i64) -> f64 {
        [10.0, 20.0, 30.0, 20.0][i as usize % 4] + (i / 4) as f64
    }

    #[test]
    fn accurate_forecasts_become_trusted_and_drifting_ones_lose_trust() {
        let key = SeriesKey::new("depth");
        let mut live = LiveAccuracy::new(LiveConfig {
            window: 16,
            min_scored: 8,
            max_mase: 1.0,
        });
        // Forecasts off by 0.25 every step: MAE 0.25 against seasonal naive's 1.
        for i in 0..40 {
            if i % 2 == 0 {
                live.record_forecast(
                    &key,
                    &issued(i * 60, vec![actual(i + 1) + 0.25, actual(i + 2) - 0.25]),
                );
            }
            live.observe(&key, i * 60, actual(i));
        }
        let snap = live.snapshot(&key).expect("series recorded");
        let mase = snap.rolling_mase.expect("scored");
        assert!((mase - 0.25).abs() < 1e-9, "rolling mase {mase}");
        assert!(live.is_trusted(&key));
        // Now forecasts miss by 3 every step: rolling MASE rises to 3 and trust is withdrawn.
        for i in 40..80 {
            if i % 2 == 0 {
                live.record_forecast(
                    &key,
                    &issued(i * 60, vec![actual(i + 1) + 3.0, actual(i + 2) - 3.0]),
                );
            }
            live.observe(&key, i * 60, actual(i));
        }
        let mase = live.rolling_mase(&key).expect("scored");
        assert!((mase - 3.0).abs() < 1e-9, "rolling mase {mase}");
        assert!(!live.is_trusted(&key));
    }

    #[test]
    fn too_few_scores_are_not_trusted() {
        let key = SeriesKey::new("lag");
        let mut live = LiveAccuracy::new(LiveConfig {
            window: 16,
            min_scored: 8,
            max_mase: 1.0,
        });
        live.record_forecast(&key, &issued(0, vec![actual(1)]));
        for i in 0..6 {
            live.observe(&key, i * 60, actual(i));
        }
        let snap = live.snapshot(&key).expect("series recorded");
        assert_eq!(snap.scored, 1);
        assert!(!snap.trusted);
        assert!(!live.is_trusted(&SeriesKey::new("never seen")));
    }
}
