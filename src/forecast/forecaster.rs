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

/// Where a candidate's point forecast comes from.
#[derive(Debug, Clone)]
enum Kind {
    /// A baseline, by index into the forecaster's baselines.
    Baseline(usize),
    /// A direct model, by index into the forecaster's models.
    Direct(usize),
    /// The weighted mean of the point forecasts of these earlier candidates (index, weight; weights sum to 1).
    Combination(Vec<(usize, f64)>),
}

/// A prediction interval calibrated on validation residuals scaled by the local volatility at their origin.
#[derive(Debug, Clone, PartialEq)]
struct Interval {
    /// Per step: the low and high quantiles of the scaled residuals.
    bounds: Vec<(f64, f64)>,
}

struct Candidate {
    name: String,
    kind: Kind,
    interval: Interval,
}

/// A fitted forecaster for one series.
pub struct Forecaster {
    spec: FeatureSpec,
    horizon: usize,
    baselines: Vec<Baseline>,
    models: Vec<DirectModel>,
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

/// A single candidate joins the combination when its validation MASE is within this share of the best one's.
/// Validation over a few days is noisy: candidates this close cannot be told apart on it, and their mean is
/// more reliable than whichever of them happened to score best.
const COMBINE_TOLERANCE: f64 = 0.1;

/// The most candidates the combination averages, best first.
const COMBINE_MAX: usize = 5;

/// The local volatility at origin `t`: the mean absolute one-step change over the last `window` values up to
/// `t`. Prediction intervals scale with it, so they widen when the series turns noisier than in validation.
/// Never zero: a flat stretch falls back to a millionth of the mean absolute level (or 1e-9).
pub fn local_scale(y: &[f64], t: usize, window: usize) -> f64 {
    let from = t.saturating_sub(window.max(1));
    let changes = &y[from..=t];
    let n = changes.len().saturating_sub(1);
    let mean_change = if n == 0 {
        0.0
    } else {
        changes.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / n as f64
    };
    let level = changes.iter().map(|v| v.abs()).sum::<f64>() / changes.len() as f64;
    mean_change.max(level * 1e-6).max(1e-9)
}

impl Forecaster {
    /// Fits every candidate on `y` (gap-free) and chooses one by rolling-origin validation over the last
    /// `config.validation` share of `y`: models are fitted on the part before it, then forecast the next
    /// `horizon` steps from every origin in it that has them, from the data observed up to the origin. Every
    /// origin rather than one per window: the models are not refitted, so the extra origins cost little, and
    /// they make the scores and the interval quantiles steadier than `1 / horizon` as many windows would.
    ///
    /// The single candidates are the baselines (naive, seasonal naive, the local median over the last `H` and
    /// `4H` steps) and each direct model. The combination averages the single candidates whose validation MASE
    /// is within [`COMBINE_TOLERANCE`] of the best one (at most [`COMBINE_MAX`]), each weighted by the inverse
    /// of its validation MASE. The combination is chosen whenever it has two members or more: among
    /// candidates that validation cannot tell apart, picking the one that scored best picks noise, and the
    /// weighted mean is the more reliable forecast. Otherwise the single best is chosen. All models are then
    /// refitted on the whole of `y`.
    ///
    /// Prediction intervals come from the same validation residuals divided by the [`local_scale`] at their
    /// origin: per step, the conformal quantiles of those scaled residuals, times the local scale at the
    /// forecast's origin.
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
        baselines.extend([
            Baseline::LocalMedian { window: horizon },
            Baseline::LocalMedian {
                window: 4 * horizon,
            },
        ]);

        // Validation: fit on y[..inner], forecast the full window after each origin from there on.
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
        // Validation forecasts per single candidate (baselines, then models), window by window.
        let singles = baselines.len() + inner_models.len();
        let mut validated: Vec<Vec<Vec<f64>>> = vec![Vec::new(); singles];
        let mut actuals: Vec<Vec<f64>> = Vec::new();
        let mut scales: Vec<f64> = Vec::new();
        let mut t = inner - 1;
        while t + horizon < y.len() {
            let points = raw_points(&baselines, &inner_models, &spec, &y[..=t], t, horizon);
            for (s, p) in points.into_iter().enumerate() {
                validated[s].push(p);
            }
            actuals.push(y[t + 1..=t + horizon].to_vec());
            scales.push(local_scale(y, t, season));
            t += 1;
        }
        let windows = actuals.len();
        if windows < 2 {
            return Err(ForecastError::TooShort {
                needed: inner + horizon + 2,
                found: y.len(),
            });
        }
        let mut candidates: Vec<Candidate> = (0..singles)
            .map(|s| {
                let (name, kind) = if s < baselines.len() {
                    (baselines[s].name(), Kind::Baseline(s))
                } else {
                    let m = s - baselines.len();
                    (inner_models[m].name(), Kind::Direct(m))
                };
                Candidate {
                    name,
                    kind,
                    interval: Interval { bounds: Vec::new() },
                }
            })
            .collect();

        let flat_actuals: Vec<f64> = actuals.iter().flatten().copied().collect();
        let score_of = |forecasts: &[Vec<f64>], name: &str| {
            let flat: Vec<f64> = forecasts.iter().flatten().copied().collect();
            ValidationScore {
                model: name.to_string(),
                mase: score::mase(&flat_actuals, &flat, scale),
                smape: score::smape(&flat_actuals, &flat),
            }
        };
        let mut validation: Vec<ValidationScore> = candidates
            .iter()
            .zip(&validated)
            .map(|(c, f)| score_of(f, &c.name))
            .collect();
        let members = combination_members(&validation);
        if members.len() >= 2 {
            let combined: Vec<Vec<f64>> = (0..windows)
                .map(|w| {
                    combine(
                        members
                            .iter()
                            .map(|&(m, weight)| (&validated[m][w], weight)),
                    )
                })
                .collect();
            validation.push(score_of(&combined, COMBINATION));
            candidates.push(Candidate {
                name: COMBINATION.to_string(),
                kind: Kind::Combination(members),
                interval: Interval { bounds: Vec::new() },
            });
            validated.push(combined);
        }
        // The combination when there is one (see COMBINE_TOLERANCE), else the single best.
        let chosen = if candidates.len() > singles {
            candidates.len() - 1
        } else {
            validation
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.mase.total_cmp(&b.1.mase))
                .map_or(0, |(i, _)| i)
        };

        // Intervals: per step, conformal quantiles of the residuals scaled by the local volatility.
        let low_q = (1.0 - config.coverage) / 2.0;
        let high_q = 1.0 - low_q;
        for (c, forecasts) in candidates.iter_mut().zip(&validated) {
            c.interval.bounds = (0..horizon)
                .map(|h| {
                    let z: Vec<f64> = (0..windows)
                        .map(|w| (actuals[w][h] - forecasts[w][h]) / scales[w])
                        .collect();
                    (
                        conformal_quantile(&z, low_q),
                        conformal_quantile(&z, high_q),
                    )
                })
                .collect();
        }

        // Refit on everything.
        let mut models = Vec::with_capacity(variants.len());
        for &(family, log) in &variants {
            models.push(DirectModel::fit(family, log, &spec, y, horizon)?);
        }
        Ok(Self {
            spec,
            horizon,
            baselines,
            models,
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

    /// The validation score of every candidate, in [`Forecaster::model_names`] order.
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
        let raw = raw_points(
            &self.baselines,
            &self.models,
            &self.spec,
            y,
            t,
            self.horizon,
        );
        let local = local_scale(y, t, self.spec.season);
        let mut points: Vec<Vec<f64>> = Vec::with_capacity(self.candidates.len());
        for c in &self.candidates {
            let point = match &c.kind {
                Kind::Baseline(b) => raw[*b].clone(),
                Kind::Direct(m) => raw[self.baselines.len() + m].clone(),
                Kind::Combination(members) => {
                    combine(members.iter().map(|&(m, weight)| (&points[m], weight)))
                }
            };
            points.push(point);
        }
        Ok(self
            .candidates
            .iter()
            .zip(points)
            .map(|(c, point)| c.forecast(point, t, local))
            .collect())
    }

    /// The chosen model's forecast after the last value of `y`.
    pub fn forecast(&self, y: &[f64]) -> Result<Forecast, ForecastError> {
        self.forecast_all(y)
            .map(|mut all| all.swap_remove(self.chosen))
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
    fn forecast(&self, point: Vec<f64>, origin: usize, local: f64) -> Forecast {
        let lower = point
            .iter()
            .zip(&self.interval.bounds)
            .map(|(p, (lo, _))| p + lo * local)
            .collect();
        let upper = point
            .iter()
            .zip(&self.interval.bounds)
            .map(|(p, (_, hi))| p + hi * local)
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

/// The name of the combined candidate.
pub const COMBINATION: &str = "combination";

/// The single candidates the combination averages, with their weights: those whose validation MASE is within
/// [`COMBINE_TOLERANCE`] of the best, best first, at most [`COMBINE_MAX`], each weighted by the inverse of its
/// validation MASE (weights sum to 1). A non-finite or zero score never joins.
fn combination_members(scores: &[ValidationScore]) -> Vec<(usize, f64)> {
    let mut ranked: Vec<usize> = (0..scores.len())
        .filter(|&i| scores[i].mase.is_finite() && scores[i].mase > 0.0)
        .collect();
    ranked.sort_by(|&a, &b| scores[a].mase.total_cmp(&scores[b].mase));
    let Some(&best) = ranked.first() else {
        return Vec::new();
    };
    let limit = scores[best].mase * (1.0 + COMBINE_TOLERANCE);
    let chosen: Vec<usize> = ranked
        .into_iter()
        .take_while(|&i| scores[i].mase <= limit)
        .take(COMBINE_MAX)
        .collect();
    let total: f64 = chosen.iter().map(|&i| 1.0 / scores[i].mase).sum();
    chosen
        .into_iter()
        .map(|i| (i, 1.0 / scores[i].mase / total))
        .collect()
}

/// The weighted mean, step by step, of point forecasts of equal length.
fn combine<'a>(parts: impl Iterator<Item = (&'a Vec<f64>, f64)>) -> Vec<f64> {
    let mut sum: Vec<f64> = Vec::new();
    for (point, weight) in parts {
        sum.resize(point.len(), 0.0);
        for (s, p) in sum.iter_mut().zip(point) {
            *s += weight * p;
        }
    }
    sum
}

/// Raw point forecasts of the baselines, then the direct models, after origin `t`.
fn raw_points(
    baselines: &[Baseline],
    models: &[DirectModel],
    spec: &FeatureSpec,
    y: &[f64],
    t: usize,
    horizon: usize,
) -> Vec<Vec<f64>> {
    baselines
        .iter()
        .map(|b| b.forecast(&y[..=t], horizon))
        .chain(models.iter().map(|m| m.predict(spec, y, t)))
        .collect()
}

/// The split-conformal `q` quantile of `values`: the order statistic at rank `ceil((n + 1) q)` for an upper
/// quantile (and `floor((n + 1) q)` for a lower one), so that a new value falls below it with probability at
/// least `q` (above, for a lower one); beyond the sample it is the extreme value.
pub fn conformal_quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = if q >= 0.5 {
        ((n + 1) as f64 * q).ceil() as usize
    } else {
        ((n + 1) as f64 * q).floor() as usize
    };
    sorted[rank.clamp(1, n) - 1]
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
    fn conformal_quantiles_pick_the_order_statistic_that_guarantees_coverage() {
        let values: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(conformal_quantile(&values, 0.9), 9.0);
        assert_eq!(conformal_quantile(&values, 0.8), 8.0);
        assert_eq!(conformal_quantile(&values, 0.1), 1.0);
        assert_eq!(conformal_quantile(&values, 0.2), 2.0);
        // Beyond the sample the extreme value is the best available bound.
        assert_eq!(conformal_quantile(&values[..3], 0.95), 3.0);
    }

    #[test]
    fn intervals_widen_when_the_series_turns_noisier() {
        let y = noisy_daily(24 * 30, 2.0, 3);
        let forecaster = Forecaster::fit(&y, HOURLY, &linear_only()).expect("fits");
        let calm = forecaster.forecast(&y).expect("forecasts");
        // The same history with its last day four times as noisy.
        let mut rough = y.clone();
        let last_day = rough.len() - 24;
        for (i, v) in rough[last_day..].iter_mut().enumerate() {
            *v += if i % 2 == 0 { 6.0 } else { -6.0 };
        }
        let wide = forecaster.forecast(&rough).expect("forecasts");
        let width = |f: &Forecast| f.upper[5] - f.lower[5];
        assert!(
            width(&wide) > 2.0 * width(&calm),
            "step 6 interval {:.2} after a rough day vs {:.2} after a calm one",
            width(&wide),
            width(&calm)
        );
    }

    /// Mean absolute error of each model's forecasts over new data after `train` (non-overlapping windows).
    fn new_data_mae(forecaster: &Forecaster, y: &[f64], train: usize) -> Vec<(String, f64)> {
        let h = forecaster.horizon();
        let mut sums = vec![0.0; forecaster.model_names().len()];
        let mut count = 0;
        for origin in (train - 1..y.len() - h).step_by(h) {
            let all = forecaster.forecast_all(&y[..=origin]).expect("forecasts");
            for (sum, f) in sums.iter_mut().zip(&all) {
                *sum += f
                    .point
                    .iter()
                    .zip(&y[origin + 1..=origin + h])
                    .map(|(p, a)| (p - a).abs())
                    .sum::<f64>();
            }
            count += h;
        }
        forecaster
            .model_names()
            .into_iter()
            .zip(sums)
            .map(|(name, sum)| (name, sum / count as f64))
            .collect()
    }

    fn mae_of(scores: &[(String, f64)], name: &str) -> f64 {
        scores
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is scored"))
            .1
    }

    #[test]
    fn on_new_data_the_chosen_forecast_beats_the_seasonal_naive_by_a_margin() {
        let y = noisy_daily(24 * 40, 3.0, 21);
        let train = 24 * 30;
        let config = ForecastConfig {
            season: Some(24),
            ..linear_only()
        };
        let forecaster = Forecaster::fit(&y[..train], HOURLY, &config).expect("fits");
        let scores = new_data_mae(&forecaster, &y, train);
        let chosen = mae_of(&scores, forecaster.chosen_name());
        let seasonal = mae_of(&scores, "seasonal_naive_24");
        // Seasonal naive carries one day's noise into every forecast; a model that averages it away should err
        // clearly less.
        assert!(
            chosen < 0.8 * seasonal,
            "{} MAE {chosen:.3} vs seasonal naive {seasonal:.3} on new data",
            forecaster.chosen_name()
        );
    }

    #[test]
    fn on_a_series_that_sits_on_two_levels_between_spikes_the_forecast_ignores_the_spikes() {
        // CPU utilisation like the NAB ec2 series: 0.07 or 0.13 at random, and one step in twenty a spike to 1-2.
        let mut state = 17u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let y: Vec<f64> = (0..24 * 40)
            .map(|_| {
                let level = if next() < 0.7 { 0.13 } else { 0.07 };
                if next() < 0.05 {
                    1.0 + next()
                } else {
                    level
                }
            })
            .collect();
        let train = 24 * 30;
        let forecaster = Forecaster::fit(&y[..train], HOURLY, &linear_only()).expect("fits");
        let scores = new_data_mae(&forecaster, &y, train);
        let chosen = mae_of(&scores, forecaster.chosen_name());
        for baseline in ["naive", "seasonal_naive_24"] {
            let other = mae_of(&scores, baseline);
            assert!(
                chosen < 0.8 * other,
                "{} MAE {chosen:.4} vs {baseline} {other:.4} on new data",
                forecaster.chosen_name()
            );
        }
    }

    #[test]
    fn the_combination_weighs_candidates_close_to_the_best_by_inverse_validation_error() {
        let scores = |mases: &[f64]| -> Vec<ValidationScore> {
            mases
                .iter()
                .enumerate()
                .map(|(i, &mase)| ValidationScore {
                    model: format!("m{i}"),
                    mase,
                    smape: 0.0,
                })
                .collect()
        };
        // 1.05 is within 10 % of the best 1.0; 1.5 and NaN are not candidates.
        let members = combination_members(&scores(&[1.5, 1.05, f64::NAN, 1.0]));
        let indices: Vec<usize> = members.iter().map(|m| m.0).collect();
        assert_eq!(indices, vec![3, 1]);
        let total = 1.0 + 1.0 / 1.05;
        assert!((members[0].1 - 1.0 / total).abs() < 1e-12, "{members:?}");
        assert!((members[0].1 + members[1].1 - 1.0).abs() < 1e-12);
        // At most COMBINE_MAX join, best first.
        let many = combination_members(&scores(&[1.0; 9]));
        assert_eq!(many.len(), COMBINE_MAX);
        // A lone clear winner has nobody to combine with.
        assert_eq!(combination_members(&scores(&[1.0, 2.0])).len(), 1);
    }

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), 2.5);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.0), 1.0);
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 1.0), 4.0);
    }
}
