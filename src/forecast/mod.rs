//! Forecasting: features, baselines, linfa models, model choice by validation, the backtest and live accuracy.
//!
//! Nothing here does IO except [`card::write_card`], which writes a model card to the path it is given, and the
//! command line in [`cli`], which reads the CSV and writes what the user asked for.
//!
//! * [`score`]: MASE and sMAPE.
//! * [`baseline`]: naive and seasonal naive.
//! * [`season`]: season length from the autocorrelation.
//! * [`features`]: the feature rows (lags, seasonal lags, rolling statistics, Fourier calendar terms).
//! * [`model`]: the linfa families and direct multi-step models.
//! * [`forecaster`]: per-series model choice by rolling-origin validation, and prediction intervals.
//! * [`backtest`]: the backtest protocol.
//! * [`live`]: forecasts stored and scored as actuals arrive; rolling MASE and trust.
//! * [`card`]: the model card written next to a fitted model.
//! * [`background`]: fitting off the async runtime.
//! * [`plot`]: the SVG of actual against forecast with its interval.
//! * [`cli`]: `trimtab forecast backtest | plot`.

pub mod background;
pub mod backtest;
pub mod baseline;
pub mod card;
pub mod cli;
pub mod features;
pub mod forecaster;
pub mod live;
pub mod model;
pub mod plot;
pub mod score;
pub mod season;

pub use forecaster::{Forecast, ForecastConfig, Forecaster};

/// Why a forecast could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    /// The history is too short for the models and the horizon.
    #[error("history too short: need at least {needed} points, found {found}")]
    TooShort {
        /// Points needed.
        needed: usize,
        /// Points given.
        found: usize,
    },
    /// The history has a missing or non-finite value where the models need one.
    #[error("history has a missing value at index {index}; fill gaps before forecasting")]
    Missing {
        /// The first bad index.
        index: usize,
    },
    /// The configuration is not usable.
    #[error("invalid forecast configuration: {0}")]
    Config(String),
    /// A linfa fit failed.
    #[error("fitting {family} failed")]
    Fit {
        /// The family.
        family: &'static str,
        /// The linfa error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The model card could not be written.
    #[error("cannot write model card {path}")]
    Card {
        /// The card's path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The background fitting task died.
    #[error("background fit task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The plot could not be drawn.
    #[error("cannot draw plot: {0}")]
    Plot(String),
}

impl ForecastError {
    /// Whether trying again could succeed: only writing the card can fail transiently.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ForecastError::Card { .. })
    }
}
