//! Season length detection from the autocorrelation of the series.

/// Lowest autocorrelation (of the differenced series) that counts as a season.
const MIN_PEAK: f64 = 0.2;

/// Detects the dominant season length (in steps) of `values` from its autocorrelation function.
///
/// The series is first differenced once to remove trend and level shifts; among the lags from 2 to a third
/// of the length, the local peaks of the autocorrelation are candidates, and the shortest candidate whose
/// autocorrelation is at least 90 % of the highest peak wins, so that a daily season is not reported as its
/// weekly multiple. Returns `None` when no peak reaches `0.2` (no clear season).
pub fn detect_season(values: &[f64]) -> Option<usize> {
    let acf = differenced_acf(values)?;
    let max_lag = acf.len() - 1;
    let peaks: Vec<(usize, f64)> = (2..max_lag)
        .filter(|&lag| is_peak(&acf, lag))
        .map(|lag| (lag, acf[lag]))
        .collect();
    let best = peaks.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    peaks.into_iter().find(|p| p.1 >= 0.9 * best).map(|p| p.0)
}

/// Like [`detect_season`], for a series sampled every `step` seconds: when one day is a whole number of steps
/// and the autocorrelation peaks at one day, the season is one day even where the weekly peak is higher (the
/// weekly cycle is then a second season, see `forecaster::weekly_period`). Operators think in days, and the
/// daily seasonal naive is the baseline the forecasts are judged against.
pub fn detect_season_on_calendar(values: &[f64], step: i64) -> Option<usize> {
    let daily = (step > 0 && 86_400 % step == 0).then(|| (86_400 / step) as usize);
    if let (Some(day), Some(acf)) = (daily, differenced_acf(values)) {
        if day >= 2 && day + 1 < acf.len() && is_peak(&acf, day) {
            return Some(day);
        }
    }
    detect_season(values)
}

/// The autocorrelation of the once-differenced series at lags `0..=n/3`, or `None` when it is too short or
/// constant.
fn differenced_acf(values: &[f64]) -> Option<Vec<f64>> {
    let diff: Vec<f64> = values.windows(2).map(|w| w[1] - w[0]).collect();
    let n = diff.len();
    if n < 8 {
        return None;
    }
    let mean = diff.iter().sum::<f64>() / n as f64;
    let centred: Vec<f64> = diff.iter().map(|v| v - mean).collect();
    let variance: f64 = centred.iter().map(|v| v * v).sum();
    if variance == 0.0 {
        return None;
    }
    Some(
        (0..=n / 3)
            .map(|lag| {
                centred[lag..]
                    .iter()
                    .zip(&centred)
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
                    / variance
            })
            .collect(),
    )
}

/// Whether `lag` (with a neighbour on each side) is a local peak of `acf` above [`MIN_PEAK`].
fn is_peak(acf: &[f64], lag: usize) -> bool {
    acf[lag] > acf[lag - 1] && acf[lag] >= acf[lag + 1] && acf[lag] > MIN_PEAK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_period_of_a_noisy_seasonal_series_with_trend() {
        // A daily-like pattern of 24 steps with a weekly modulation, trend and noise.
        let mut state = 7u64;
        let values: Vec<f64> = (0..24 * 7 * 4)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let noise = ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5;
                let t = i as f64;
                100.0
                    + 0.05 * t
                    + 20.0 * (2.0 * std::f64::consts::PI * t / 24.0).sin()
                    + 5.0 * (2.0 * std::f64::consts::PI * t / 168.0).sin()
                    + 2.0 * noise
            })
            .collect();
        assert_eq!(detect_season(&values), Some(24));
    }

    #[test]
    fn white_noise_has_no_season() {
        let mut state = 11u64;
        let values: Vec<f64> = (0..500)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as f64
            })
            .collect();
        assert_eq!(detect_season(&values), None);
    }

    #[test]
    fn on_a_calendar_the_daily_period_wins_over_a_stronger_weekly_one() {
        // Half-hourly: a daily cycle of 48 steps under a strong weekly one of 336 steps.
        let values: Vec<f64> = (0..336 * 5)
            .map(|i| {
                let t = i as f64;
                10.0 * (std::f64::consts::TAU * t / 48.0).sin()
                    + 30.0 * (std::f64::consts::TAU * t / 336.0).sin()
                    + if (i / 48) % 7 >= 5 { 25.0 } else { 0.0 }
            })
            .collect();
        assert_eq!(detect_season(&values), Some(336));
        assert_eq!(detect_season_on_calendar(&values, 1800), Some(48));
        // One day is not a whole number of 7-second steps, so the plain detection decides.
        assert_eq!(detect_season_on_calendar(&values, 7), Some(336));
    }
}
