//! The baselines computed beside every model: naive, seasonal naive and the local median.

/// A baseline forecaster. Each looks only at the history up to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Every step repeats the last observation.
    Naive,
    /// Step `h` repeats the observation one period (or as many periods as needed) before it.
    SeasonalNaive {
        /// The period in steps.
        period: usize,
    },
    /// Every step repeats the median of the last `window` observations. The median is the constant forecast
    /// with the least absolute error, and it ignores bursts: on spiky or quantised series (CPU utilisation that
    /// sits on a few levels between spikes) it beats every forecast that chases the last value.
    LocalMedian {
        /// How many of the latest observations it takes the median of.
        window: usize,
    },
}

impl Baseline {
    /// The model name used in reports (`naive`, `seasonal_naive_48`).
    pub fn name(&self) -> String {
        match self {
            Baseline::Naive => "naive".to_string(),
            Baseline::SeasonalNaive { period } => format!("seasonal_naive_{period}"),
            Baseline::LocalMedian { window } => format!("local_median_{window}"),
        }
    }

    /// How many observations it needs before it can forecast.
    pub fn min_history(&self) -> usize {
        match self {
            Baseline::Naive => 1,
            Baseline::SeasonalNaive { period } => (*period).max(1),
            Baseline::LocalMedian { window } => (*window).max(1),
        }
    }

    /// Forecasts `horizon` steps after `history` (the observations up to and including the origin).
    /// `history` must hold at least [`Baseline::min_history`] values.
    pub fn forecast(&self, history: &[f64], horizon: usize) -> Vec<f64> {
        let n = history.len();
        match *self {
            Baseline::Naive => vec![history[n - 1]; horizon],
            Baseline::SeasonalNaive { period } => {
                let period = period.max(1);
                (1..=horizon)
                    .map(|h| {
                        let back = period * (h - 1).div_euclid(period) + period;
                        history[n + h - 1 - back]
                    })
                    .collect()
            }
            Baseline::LocalMedian { window } => {
                let recent = &history[n.saturating_sub(window.max(1))..];
                vec![super::forecaster::quantile(recent, 0.5); horizon]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_repeats_the_last_value() {
        assert_eq!(
            Baseline::Naive.forecast(&[4.0, 9.0, 2.0], 3),
            vec![2.0, 2.0, 2.0]
        );
    }

    #[test]
    fn seasonal_naive_repeats_the_last_season() {
        // Period 3 over 1 2 3 | 4 5 6: the next 7 steps are 4 5 6 4 5 6 4.
        let history = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let forecast = Baseline::SeasonalNaive { period: 3 }.forecast(&history, 7);
        assert_eq!(forecast, vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 4.0]);
        assert_eq!(
            Baseline::SeasonalNaive { period: 3 }.name(),
            "seasonal_naive_3"
        );
    }

    #[test]
    fn local_median_ignores_a_burst_that_naive_repeats() {
        let history = [5.0, 1.0, 9.0, 1.0, 400.0];
        let median = Baseline::LocalMedian { window: 4 };
        assert_eq!(median.forecast(&history, 2), vec![5.0, 5.0]);
        assert_eq!(Baseline::Naive.forecast(&history, 1), vec![400.0]);
        assert_eq!(median.name(), "local_median_4");
        // A window longer than the history takes what there is.
        assert_eq!(
            Baseline::LocalMedian { window: 9 }.forecast(&history[..3], 1),
            vec![5.0]
        );
    }
}
