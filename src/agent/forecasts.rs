//! Forecasts the agent issues: one forecaster per series fitted off the runtime, every forecast recorded in
//! [`LiveAccuracy`] and Cassandra's `forecasts` table, and scored there when its actual arrives.

use crate::pipeline::adapters::error_chain;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use crate::cassandra::{ForecastRow, OwnTables};
use crate::forecast::background::{fit_and_save, fit_in_background};
use crate::forecast::features::Calendar;
use crate::forecast::live::{AccuracySnapshot, IssuedForecast, LiveAccuracy, LiveConfig};
use crate::forecast::{ForecastConfig, ForecastError, Forecaster};
use crate::metrics::collect::{names, Collected};
use crate::metrics::series::SeriesKey;
use crate::metrics::store::MetricStore;
use crate::planner::{ArrivalForecast, ForecastTrust, ForecastView, Limits, PoolForecast};

/// The latest forecast of one series and its accuracy so far.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesForecast {
    /// The series.
    pub key: SeriesKey,
    /// Unix seconds of the last observation the forecast saw.
    pub made_at: i64,
    /// Seconds between forecast steps.
    pub step_s: i64,
    /// The model that made it.
    pub model: String,
    /// Point forecast per step.
    pub point: Vec<f64>,
    /// Lower interval bound per step.
    pub lower: Vec<f64>,
    /// Upper interval bound per step.
    pub upper: Vec<f64>,
    /// Nominal interval coverage.
    pub coverage: f64,
    /// Live accuracy of this series' forecasts.
    pub accuracy: Option<AccuracySnapshot>,
    /// Observations the history holds.
    pub history_points: usize,
}

/// The key of the arrival-rate series the knob planning forecasts.
pub fn arrival_key() -> SeriesKey {
    SeriesKey::new(names::ARRIVAL_RATE)
}

/// The series the agent forecasts: arrival rate, and free space of every pool class.
pub fn forecast_keys(c: &Collected) -> Vec<SeriesKey> {
    let mut keys = vec![arrival_key()];
    if let Some((_, snapshot)) = &c.placement {
        for s in &snapshot.skew {
            keys.push(
                SeriesKey::new(names::POOL_CLASS_FREE_KIB).with_label("pool", s.pool.clone()),
            );
        }
    }
    keys
}

/// The recent samples of `key` on a regular step, gaps carried forward from the previous value.
fn regular(store: &MetricStore, key: &SeriesKey, step: i64) -> Option<(i64, Vec<f64>)> {
    let window = store.window(key);
    let first = window.first()?.at;
    let last = window.last()?.at;
    let mut values = Vec::with_capacity(((last - first) / step + 1) as usize);
    let mut it = window.iter().peekable();
    let mut current = window[0].value;
    let mut t = first;
    while t <= last {
        while let Some(s) = it.peek() {
            if s.at <= t {
                current = s.value;
                it.next();
            } else {
                break;
            }
        }
        values.push(current);
        t += step;
    }
    Some((first, values))
}

fn time_of(at: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A forecast step's actual and score: (made at, step number, actual, absolute error).
type Score = (OffsetDateTime, i32, f64, f64);

/// What the [`ForecastWriter`] has yet to write.
#[derive(Default)]
struct Unwritten {
    rows: Vec<ForecastRow>,
    scores: BTreeMap<String, Vec<Score>>,
}

/// Writes forecasts and their scores behind the book, from a task of its own: it gives way to the pipeline
/// (`OwnTables::give_way`) and then writes whatever queued meanwhile, the forecasts as one batch per series and
/// the scores as one batch per series. A write that fails is logged and not retried, and what is still queued
/// when the agent stops is not written: the book keeps what planning needs in memory, and the table is for
/// reading back.
struct ForecastWriter {
    unwritten: Arc<std::sync::Mutex<Unwritten>>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl ForecastWriter {
    fn start(tables: Arc<OwnTables>) -> Self {
        let unwritten: Arc<std::sync::Mutex<Unwritten>> = Arc::default();
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (unwritten, wake) = (unwritten.clone(), wake.clone());
            async move {
                loop {
                    wake.notified().await;
                    tables.give_way().await;
                    let Unwritten { rows, scores } =
                        std::mem::take(&mut *unwritten.lock().unwrap_or_else(|p| p.into_inner()));
                    if let Err(e) = tables.insert_forecasts(&rows).await {
                        tracing::warn!(forecast_steps = rows.len(), error = %error_chain(&e), "storing forecasts in cassandra failed");
                    }
                    for (series, scores) in scores {
                        if let Err(e) = tables.score_forecasts(&series, &scores).await {
                            tracing::warn!(
                                %series,
                                error = %error_chain(&e),
                                "scoring forecasts in cassandra failed"
                            );
                        }
                    }
                }
            }
        });
        ForecastWriter {
            unwritten,
            wake,
            task,
        }
    }

    fn unwritten(&self) -> std::sync::MutexGuard<'_, Unwritten> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, rows: Vec<ForecastRow>) {
        self.unwritten().rows.extend(rows);
    }

    fn score(&self, series: String, scores: Vec<Score>) {
        self.unwritten()
            .scores
            .entry(series)
            .or_default()
            .extend(scores);
    }

    /// Lets the task write what was queued: called once a step, after its scores and forecasts, so they go
    /// together.
    fn send(&self) {
        let unwritten = self.unwritten();
        if !unwritten.rows.is_empty() || !unwritten.scores.is_empty() {
            self.wake.notify_one();
        }
    }
}

impl Drop for ForecastWriter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One forecast step waiting for its actual: (made at, step number, target time, point).
type Pending = (i64, i32, i64, f64);

/// Forecasters, issued forecasts and their scores, per series.
pub struct ForecastBook {
    config: ForecastConfig,
    live: LiveAccuracy,
    tables: Option<ForecastWriter>,
    models_dir: Option<PathBuf>,
    step: i64,
    fitted: HashMap<SeriesKey, Arc<Forecaster>>,
    fitting: HashSet<SeriesKey>,
    latest: BTreeMap<SeriesKey, SeriesForecast>,
    pending: HashMap<SeriesKey, Vec<Pending>>,
    observed_to: HashMap<SeriesKey, i64>,
}

impl ForecastBook {
    /// An empty book; `step` is the sampling step in seconds.
    pub fn new(
        config: ForecastConfig,
        live: LiveConfig,
        tables: Option<Arc<OwnTables>>,
        models_dir: Option<PathBuf>,
        step: i64,
    ) -> Self {
        ForecastBook {
            config,
            live: LiveAccuracy::new(live),
            tables: tables.map(ForecastWriter::start),
            models_dir,
            step: step.max(1),
            fitted: HashMap::new(),
            fitting: HashSet::new(),
            latest: BTreeMap::new(),
            pending: HashMap::new(),
            observed_to: HashMap::new(),
        }
    }

    /// Feeds the new samples of `keys` (up to `now`) to live accuracy, and queues the scores of stored forecasts
    /// for Cassandra (written once [`ForecastBook::issue`] ends the step).
    pub fn observe(&mut self, store: &MetricStore, keys: &[SeriesKey], now: i64) {
        for key in keys {
            let from = self.observed_to.get(key).copied().unwrap_or(i64::MIN);
            let mut scores = Vec::new();
            for s in store
                .window(key)
                .into_iter()
                .filter(|s| s.at > from && s.at <= now)
            {
                self.live.observe(key, s.at, s.value);
                self.observed_to.insert(key.clone(), s.at);
                let Some(pending) = self.pending.get_mut(key) else {
                    continue;
                };
                let (due, rest): (Vec<Pending>, Vec<Pending>) = pending
                    .drain(..)
                    .partition(|(_, _, target, _)| *target <= s.at);
                *pending = rest;
                // No actual at exactly the target time: never scored.
                scores.extend(due.into_iter().filter(|p| p.2 == s.at).map(
                    |(made_at, step, _, point)| {
                        (time_of(made_at), step, s.value, (s.value - point).abs())
                    },
                ));
            }
            if let (Some(writer), false) = (&self.tables, scores.is_empty()) {
                writer.score(key.to_string(), scores);
            }
        }
    }

    /// A fit of `key` to run (it calls `spawn_blocking`), when it is due: `refit` asked, none in flight.
    pub fn fit_job(
        &mut self,
        store: &MetricStore,
        key: &SeriesKey,
        refit: bool,
    ) -> Option<impl Future<Output = (SeriesKey, Result<Forecaster, ForecastError>)> + Send + 'static>
    {
        if !refit || self.fitting.contains(key) {
            return None;
        }
        let (start, values) = regular(store, key, self.step)?;
        if values.len() < 3 * self.config.horizon + 4 {
            return None;
        }
        self.fitting.insert(key.clone());
        let calendar = Calendar {
            start,
            step: self.step,
        };
        let config = self.config.clone();
        let key = key.clone();
        let models_dir = self.models_dir.clone();
        Some(async move {
            let result = match models_dir {
                Some(dir) => fit_and_save(key.clone(), values, calendar, config, dir)
                    .await
                    .map(|(f, _)| f),
                None => fit_in_background(values, calendar, config).await,
            };
            (key, result)
        })
    }

    /// Takes a finished fit.
    pub fn fitted(&mut self, key: SeriesKey, result: Result<Forecaster, ForecastError>) {
        self.fitting.remove(&key);
        match result {
            Ok(f) => {
                tracing::info!(series = %key, chosen = f.chosen_name(), trained_on = f.trained_on(), "forecaster fitted");
                self.fitted.insert(key, Arc::new(f));
            }
            // A constant or too-short series cannot be fitted; the planner then reacts to measurements.
            Err(e) => tracing::info!(series = %key, error = %e, "forecaster not fitted"),
        }
    }

    /// Issues a forecast for each fitted series whose newest sample has not been forecast from yet, and sends the
    /// step's forecasts and scores (from [`ForecastBook::observe`], called first) to be written.
    pub fn issue(&mut self, store: &MetricStore, keys: &[SeriesKey], _now: i64) {
        for key in keys {
            let Some(f) = self.fitted.get(key).cloned() else {
                continue;
            };
            let Some((start, values)) = regular(store, key, self.step) else {
                continue;
            };
            let origin_at = start + self.step * (values.len() as i64 - 1);
            if self.latest.get(key).is_some_and(|l| l.made_at >= origin_at) {
                continue;
            }
            let forecast = match f.forecast(&values) {
                Ok(fc) => fc,
                Err(e) => {
                    tracing::debug!(series = %key, error = %e, "no forecast");
                    continue;
                }
            };
            self.live.record_forecast(
                key,
                &IssuedForecast {
                    origin_at,
                    step: self.step,
                    season: f.spec().season,
                    forecast: forecast.clone(),
                },
            );
            let pending = self.pending.entry(key.clone()).or_default();
            let mut rows = Vec::new();
            for (i, point) in forecast.point.iter().enumerate() {
                let target = origin_at + self.step * (i as i64 + 1);
                pending.push((origin_at, i as i32 + 1, target, *point));
                rows.push(ForecastRow {
                    series: key.to_string(),
                    made_at: time_of(origin_at),
                    step: i as i32 + 1,
                    target_ts: time_of(target),
                    point: *point,
                    lo: forecast.lower[i],
                    hi: forecast.upper[i],
                    actual: None,
                    score: None,
                });
            }
            if let Some(writer) = &self.tables {
                writer.insert(rows);
            }
            self.latest.insert(
                key.clone(),
                SeriesForecast {
                    key: key.clone(),
                    made_at: origin_at,
                    step_s: self.step,
                    model: forecast.model.clone(),
                    point: forecast.point,
                    lower: forecast.lower,
                    upper: forecast.upper,
                    coverage: self.config.coverage,
                    accuracy: self.live.snapshot(key),
                    history_points: values.len(),
                },
            );
        }
        // The step's scores (from `observe`) and forecasts go to the table together.
        if let Some(writer) = &self.tables {
            writer.send();
        }
    }

    /// The latest forecast of every series with its accuracy now.
    pub fn summaries(&self) -> Vec<SeriesForecast> {
        self.latest
            .values()
            .map(|f| SeriesForecast {
                accuracy: self.live.snapshot(&f.key),
                ..f.clone()
            })
            .collect()
    }

    /// What the planner needs: the arrival forecast, pool growth, and how far to trust them.
    /// How much history there is counts the arrival samples measured (one per step), whether or not a forecast
    /// has been fitted on them yet: the planner's measured-lag changes need history, not a forecast.
    pub fn view(&self, store: &MetricStore, c: &Collected, _limits: &Limits) -> ForecastView {
        let arrival = arrival_key();
        let horizon_s = self.config.horizon as i64 * self.step;
        let arrival_forecast = self.latest.get(&arrival).map(|f| ArrivalForecast {
            mean_per_s: (f.point.iter().sum::<f64>() / f.point.len().max(1) as f64).max(0.0),
            upper_per_s: f.upper.iter().copied().fold(0.0, f64::max),
        });
        let mut pools = Vec::new();
        if let Some((_, snapshot)) = &c.placement {
            for class in &snapshot.skew {
                let key = SeriesKey::new(names::POOL_CLASS_FREE_KIB)
                    .with_label("pool", class.pool.clone());
                let Some(f) = self.latest.get(&key) else {
                    continue;
                };
                // Growth of used space = fall of free space; the interval's low end of free is the high end of use.
                let lowest_free = f.lower.iter().copied().fold(f64::INFINITY, f64::min);
                let growth = (class.free_kib as f64 - lowest_free).max(0.0);
                for p in snapshot.pools.iter().filter(|p| p.pool == class.pool) {
                    let share = if class.total_kib > 0 {
                        p.total_kib as f64 / class.total_kib as f64
                    } else {
                        0.0
                    };
                    pools.push(PoolForecast {
                        node: p.node.clone(),
                        pool: p.pool.clone(),
                        growth_kib_upper: (growth * share).round() as u64,
                    });
                }
            }
        }
        ForecastView {
            horizon_s,
            arrival: arrival_forecast,
            pools,
            trust: ForecastTrust {
                history_points: regular(store, &arrival, self.step)
                    .map_or(0, |(_, values)| values.len() as u32),
                rolling_mase: self.live.rolling_mase(&arrival),
            },
        }
    }
}
