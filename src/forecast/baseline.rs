//! The baselines computed beside every model: naive and seasonal naive.

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
}

impl Baseline {
    /// The model name used in reports (`naive`, `seasonal_naive_48`).
    pub fn name(&self) -> String {
        match self {
            Baseline::Naive => "naive".to_string(),
            Baseline::SeasonalNaive { period } => format!("seasonal_naive_{period}"),
        }
    }

    /// How many observations it needs before it can forecast.
    pub fn min_history(&self) -> usize {
        match self {
            Baseline::Naive => 1,
            Baseline::SeasonalNaive { period } => (*period).max(1),
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
}
