//! A per-series forecaster: fits every candidate, picks one by rolling-origin validation on its own history,
//! and turns the validation residuals into prediction intervals.

use super::baseline::Baseline;
use super::features::{Calendar, FeatureSpec};
use super::model::{DirectModel, Family};
use super::score;
use super::season::detect_season_on_calendar;
use super::ForecastError;

/// How a forecaster is fitted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// Steps ahead to forecast.
    #[serde(default = "default_horizon")]
    pub horizon: usize,
    /// The season length in steps; detected from the data when absent.
    #[serde(default)]
    pub season: Option<usize>,
    /// The share of the history held back to validate and choose a model (rolling origin over it).
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// The central coverage of the prediction interval, such as 0.8 for the 10th to 90th percentile.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
    /// The linfa families tried beside the baselines.
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
}

const fn default_horizon() -> usize {
    12
}
const fn default_validation() -> f64 {
    0.2
}
const fn default_coverage() -> f64 {
    0.8
}
fn default_families() -> Vec<Family> {
    Family::DEFAULT.to_vec()
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            horizon: default_horizon(),
            season: None,
            validation: default_validation(),
            coverage: default_coverage(),
            families: default_families(),
        }
    }
}

/// The point forecast of one model with its prediction interval, for steps `1..=horizon` after an origin.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Forecast {
    /// The model that made it.
    pub model: String,
    /// Index of the last observation the forecast saw.
    pub origin: usize,
    /// The point forecast per step.
    pub point: Vec<f64>,
    /// The lower bound of the interval per step.
    pub lower: Vec<f64>,
    /// The upper bound of the interval per step.
    pub upper: Vec<f64>,
}

/// The validation result of one candidate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ValidationScore {
    /// The candidate.
    pub model: String,
    /// MASE over the validation windows (scale: seasonal naive on the part before them).
    pub mase: f64,
    /// sMAPE over the validation windows.
    pub smape: f64,
}

enum Kind {
    Baseline(Baseline),
    Direct(DirectModel),
    /// The mean of every direct model.
    Ensemble,
}

struct Candidate {
    name: String,
    kind: Kind,
    /// Per step: the shift added to the raw point forecast (the median validation residual, zero for
    /// baselines), and the interval's low and high ends relative to the shifted point.
    interval: Vec<(f64, f64, f64)>,
}

/// A fitted forecaster for one series.
pub struct Forecaster {
    spec: FeatureSpec,
    horizon: usize,
    candidates: Vec<Candidate>,
    chosen: usize,
    validation: Vec<ValidationScore>,
    trained_on: usize,
}

impl std::fmt::Debug for Forecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forecaster")
            .field("chosen", &self.chosen_name())
            .field("season", &self.spec.season)
            .field("trained_on", &self.trained_on)
            .finish()
    }
}

/// The season to use: the configured one, or the detected one (preferring one day, see
/// [`detect_season_on_calendar`]), or one day when the data say nothing.
pub fn resolve_season(y: &[f64], calendar: Calendar, configured: Option<usize>) -> usize {
    configured
        .or_else(|| detect_season_on_calendar(y, calendar.step))
        .unwrap_or_else(|| (86_400 / calendar.step.max(1)).max(2) as usize)
}

/// The weekly period, when the season is one day and `len` observations hold at least two weeks.
pub fn weekly_period(season: usize, calendar: Calendar, len: usize) -> Option<usize> {
    let week = 7 * season;
    (calendar.step * season as i64 == 86_400 && len >= 2 * week).then_some(week)
}

impl Forecaster {
    /// Fits every candidate on `y` (gap-free) and chooses one by rolling-origin validation over the last
    /// `config.validation` share of `y`: candidates are fitted on the part before it, then forecast each
    /// non-overlapping window of `horizon` steps from the data observed up to the window. The chosen model has
    /// the lowest validation MASE; all models are then refitted on the whole of `y`.
    pub fn fit(
        y: &[f64],
        calendar: Calendar,
        config: &ForecastConfig,
    ) -> Result<Self, ForecastError> {
        let horizon = config.horizon;
        if horizon == 0 {
            return Err(ForecastError::Config(
                "horizon must be at least 1 step".into(),
            ));
        }
        if !(0.0..1.0).contains(&config.validation) || !(0.0..1.0).contains(&config.coverage) {
            return Err(ForecastError::Config(
                "validation and coverage must be fractions between 0 and 1".into(),
            ));
        }
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(ForecastError::Missing { index: i });
        }
        let season = resolve_season(y, calendar, config.season);
        let validation_len = ((y.len() as f64 * config.validation).round() as usize).max(horizon);
        let inner = y
            .len()
            .checked_sub(validation_len)
            .ok_or(ForecastError::TooShort {
                needed: validation_len + 1,
                found: y.len(),
            })?;
        let spec = FeatureSpec::new(season, weekly_period(season, calendar, inner), calendar);
        let mut baselines = vec![Baseline::Naive, Baseline::SeasonalNaive { period: season }];
        if let Some(week) = spec.weekly {
            baselines.push(Baseline::SeasonalNaive { period: week });
        }

        // Validation: fit on y[..inner], forecast each full window after it.
        let train = &y[..inner];
        let scale = score::seasonal_naive_scale(train, season)
            .filter(|s| *s > 0.0)
            .ok_or(ForecastError::TooShort {
                needed: season + 2,
                found: inner,
            })?;
        // Non-negative series also get the linear families on the log scale.
        let mut variants: Vec<(Family, bool)> =
            config.families.iter().map(|&f| (f, false)).collect();
        if y.iter().all(|v| *v >= 0.0) {
            variants.extend(
                config
                    .families
                    .iter()
                    .filter(|f| matches!(f, Family::Ridge | Family::ElasticNet | Family::Lad))
                    .map(|&f| (f, true)),
            );
        }
        let mut inner_models = Vec::new();
        for &(family, log) in &variants {
            inner_models.push(DirectModel::fit(family, log, &spec, train, horizon)?);
        }
        let mut names: Vec<String> = baselines.iter().map(Baseline::name).collect();
        names.extend(inner_models.iter().map(DirectModel::name));
        if variants.len() > 1 {
            names.push("ensemble".to_string());
        }
        let mut residuals: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); horizon]; names.len()];
        let mut actuals = Vec::new();
        let mut predictions: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut t = inner - 1;
        while t + horizon < y.len() {
            let all = forecast_all(&baselines, &inner_models, &spec, &y[..=t], t, horizon);
            let actual = &y[t + 1..=t + horizon];
            actuals.extend_from_slice(actual);
            for (c, forecast) in all.iter().enumerate() {
                predictions[c].extend_from_slice(forecast);
                for (h, (a, f)) in actual.iter().zip(forecast).enumerate() {
                    residuals[c][h].push(a - f);
                }
            }
            t += horizon;
        }
        if actuals.is_empty() {
            return Err(ForecastError::TooShort {
                needed: inner + horizon + 1,
                found: y.len(),
            });
        }
        // The models learn a conditional mean; MAE is lowest at the conditional median, which for skewed series
        // (request counts) sits well below the mean. Each model's point forecast is therefore shifted per step by
        // the median of its validation residuals. Baselines stay as they are.
        let shifts: Vec<Vec<f64>> = (0..names.len())
            .map(|c| {
                if c < baselines.len() {
                    vec![0.0; horizon]
                } else {
                    residuals[c].iter().map(|r| quantile(r, 0.5)).collect()
                }
            })
            .collect();
        for (c, p) in predictions.iter_mut().enumerate() {
            for (k, v) in p.iter_mut().enumerate() {
                *v += shifts[c][k % horizon];
            }
        }
        let validation: Vec<ValidationScore> = names
            .iter()
            .zip(&predictions)
            .map(|(name, p)| ValidationScore {
                model: name.clone(),
                mase: score::mase(&actuals, p, scale),
                smape: score::smape(&actuals, p),
            })
            .collect();
        let chosen = validation
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.mase.total_cmp(&b.1.mase))
            .map_or(0, |(i, _)| i);

        // Refit on everything.
        let low_q = (1.0 - config.coverage) / 2.0;
        let high_q = 1.0 - low_q;
        let interval_of = |c: usize| -> Vec<(f64, f64, f64)> {
            residuals[c]
                .iter()
                .zip(&shifts[c])
                .map(|(r, shift)| {
                    (
                        *shift,
                        quantile(r, low_q) - shift,
                        quantile(r, high_q) - shift,
                    )
                })
                .collect()
        };
        let mut candidates: Vec<Candidate> = Vec::with_capacity(names.len());
        for (i, b) in baselines.iter().enumerate() {
            candidates.push(Candidate {
                name: names[i].clone(),
                kind: Kind::Baseline(*b),
                interval: interval_of(i),
            });
        }
        for (k, &(family, log)) in variants.iter().enumerate() {
            let c = baselines.len() + k;
            let model = DirectModel::fit(family, log, &spec, y, horizon)?;
            candidates.push(Candidate {
                name: names[c].clone(),
                kind: Kind::Direct(model),
                interval: interval_of(c),
            });
        }
        if variants.len() > 1 {
            let c = names.len() - 1;
            candidates.push(Candidate {
                name: names[c].clone(),
                kind: Kind::Ensemble,
                interval: interval_of(c),
            });
        }
        Ok(Self {
            spec,
            horizon,
            candidates,
            chosen,
            validation,
            trained_on: y.len(),
        })
    }

    /// The name of the chosen model.
    pub fn chosen_name(&self) -> &str {
        &self.candidates[self.chosen].name
    }

    /// Every candidate's name, baselines first.
    pub fn model_names(&self) -> Vec<String> {
        self.candidates.iter().map(|c| c.name.clone()).collect()
    }

    /// The validation score of every candidate.
    pub fn validation(&self) -> &[ValidationScore] {
        &self.validation
    }

    /// The features the models use.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Steps ahead each forecast covers.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// How many observations the final models were fitted on.
    pub fn trained_on(&self) -> usize {
        self.trained_on
    }

    /// The fewest observations a forecast needs.
    pub fn min_history(&self) -> usize {
        self.spec.min_origin(self.horizon) + 1
    }

    /// Every candidate's forecast after the last value of `y`, in [`Forecaster::model_names`] order.
    pub fn forecast_all(&self, y: &[f64]) -> Result<Vec<Forecast>, ForecastError> {
        let t = self.check_history(y)?;
        let baselines: Vec<Baseline> = self
            .candidates
            .iter()
            .filter_map(|c| match c.kind {
                Kind::Baseline(b) => Some(b),
                _ => None,
            })
            .collect();
        let models: Vec<&DirectModel> = self
            .candidates
            .iter()
            .filter_map(|c| match &c.kind {
                Kind::Direct(m) => Some(m),
                _ => None,
            })
            .collect();
        let points = forecast_all(&baselines, &models, &self.spec, y, t, self.horizon);
        Ok(self
            .candidates
            .iter()
            .zip(points)
            .map(|(c, point)| c.with_interval(point, t))
            .collect())
    }

    /// The chosen model's forecast after the last value of `y`.
    pub fn forecast(&self, y: &[f64]) -> Result<Forecast, ForecastError> {
        let t = self.check_history(y)?;
        let candidate = &self.candidates[self.chosen];
        let point = match &candidate.kind {
            Kind::Baseline(b) => b.forecast(y, self.horizon),
            Kind::Direct(m) => m.predict(&self.spec, y, t),
            Kind::Ensemble => {
                return self
                    .forecast_all(y)
                    .map(|mut all| all.swap_remove(self.chosen))
            }
        };
        Ok(candidate.with_interval(point, t))
    }

    fn check_history(&self, y: &[f64]) -> Result<usize, ForecastError> {
        if y.len() < self.min_history() {
            return Err(ForecastError::TooShort {
                needed: self.min_history(),
                found: y.len(),
            });
        }
        let tail = &y[y.len().saturating_sub(self.min_history() + 1)..];
        if let Some(i) = tail.iter().position(|v| !v.is_finite()) {
            return Err(ForecastError::Missing {
                index: y.len() - tail.len() + i,
            });
        }
        Ok(y.len() - 1)
    }
}

impl Candidate {
    fn with_interval(&self, raw: Vec<f64>, origin: usize) -> Forecast {
        let point: Vec<f64> = raw
            .iter()
            .zip(&self.interval)
            .map(|(p, (shift, _, _))| p + shift)
            .collect();
        let lower = point
            .iter()
            .zip(&self.interval)
            .map(|(p, (_, lo, _))| p + lo)
            .collect();
        let upper = point
            .iter()
            .zip(&self.interval)
            .map(|(p, (_, _, hi))| p + hi)
            .collect();
        Forecast {
            model: self.name.clone(),
            origin,
            point,
            lower,
            upper,
        }
    }
}

/// Forecasts of the baselines, then the direct models, then (with more than one model) their mean.
fn forecast_all<M: std::borrow::Borrow<DirectModel>>(
    baselines: &[Baseline],
    models: &[M],
    spec: &FeatureSpec,
    y: &[f64],
    t: usize,
    horizon: usize,
) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = baselines
        .iter()
        .map(|b| b.forecast(&y[..=t], horizon))
        .collect();
    let direct: Vec<Vec<f64>> = models
        .iter()
        .map(|m| m.borrow().predict(spec, y, t))
        .collect();
    if direct.len() > 1 {
        let mean = (0..horizon)
            .map(|h| direct.iter().map(|d| d[h]).sum::<f64>() / direct.len() as f64)
            .collect();
        out.extend(direct);
        out.push(mean);
    } else {
        out.extend(direct);
    }
    out
}

/// The `q` quantile of `values` by linear interpolation between order statistics.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = pos.floor() as usize;
    let above = pos.ceil() as usize;
    sorted[below] + (sorted[above] - sorted[below]) * (pos - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A daily pattern of 24 hourly steps, a slow trend and uniform noise in [-amplitude, amplitude].
    fn noisy_daily(len: usize, amplitude: f64, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..len)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
                let t = i as f64;
                50.0 + 0.01 * t
                    + 10.0 * (std::f64::consts::TAU * t / 24.0).sin()
                    + amplitude * noise
            })
            .collect()
    }

    const HOURLY: Calendar = Calendar {
        start: 0,
        step: 3600,
    };

    fn linear_only() -> ForecastConfig {
        ForecastConfig {
            horizon: 6,
            families: vec![Family::Ridge, Family::ElasticNet],
            ..Default::default()
        }
    }

    #[test]
    fn intervals_cover_about_their_nominal_share_of_new_data() {
        let y = noisy_daily(24 * 40, 3.0, 5);
        let (train, test) = y.split_at(24 * 30);
        let forecaster = Forecaster::fit(train, HOURLY, &linear_only()).expect("fits");
        let mut inside = 0;
        let mut total = 0;
        for origin in (train.len() - 1..y.len() - 6).step_by(6) {
            let f = forecaster.forecast(&y[..=origin]).expect("forecasts");
            for (h, actual) in y[origin + 1..=origin + 6].iter().enumerate() {
                inside += usize::from(f.lower[h] <= *actual && *actual <= f.upper[h]);
                total += 1;
            }
        }
        let coverage = inside as f64 / total as f64;
        assert!(test.len() == 240 && total >= 200);
        assert!(
            (0.7..=0.9).contains(&coverage),
            "80 % intervals covered {coverage:.2} of new points"
        );
    }

    #[test]
    fn the_season_is_detected_and_a_model_beats_the_baselines_on_validation() {
        let y = noisy_daily(24 * 30, 1.0, 9);
        let forecaster = Forecaster::fit(&y, HOURLY, &linear_only()).expect("fits");
        assert_eq!(forecaster.spec().season, 24);
        assert!(
            !forecaster.chosen_name().starts_with("naive")
                && !forecaster.chosen_name().starts_with("seasonal")
        );
        let v = forecaster.validation();
        let best = v
            .iter()
            .find(|s| s.model == forecaster.chosen_name())
            .expect("chosen is scored");
        let seasonal = v
            .iter()
            .find(|s| s.model == "seasonal_naive_24")
            .expect("baseline is scored");
        assert!(best.mase < seasonal.mase, "{best:?} vs {seasonal:?}");
        let all = forecaster.forecast_all(&y).expect("forecasts");
        assert_eq!(all.len(), forecaster.model_names().len());
        assert!(all
            .iter()
            .all(|f| f.point.len() == 6 && f.lower.iter().zip(&f.upper).all(|(l, u)| l <= u)));
    }

    #[test]
    fn short_or_gappy_history_is_refused() {
        let y = noisy_daily(30, 1.0, 1);
        assert!(matches!(
            Forecaster::fit(&y, HOURLY, &linear_only()),
            Err(ForecastError::TooShort { .. })
        ));
        let mut y = noisy_daily(24 * 30, 1.0, 1);
        y[100] = f64::NAN;
        assert!(matches!(
            Forecaster::fit(&y, HOURLY, &linear_only()),
            Err(ForecastError::Missing { index: 100 })
        ));
    }

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.0), 1.0);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), 4.0);
    }
}
