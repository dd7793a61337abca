//! Season length detection from the autocorrelation of the series.

/// Detects the dominant season length (in steps) of `values` from its autocorrelation function.
///
/// The series is first differenced once to remove trend and level shifts; among the lags from 2 to a third
/// of the length, the local peaks of the autocorrelation are candidates, and the shortest candidate whose
/// autocorrelation is at least 90 % of the highest peak wins, so that a daily season is not reported as its
/// weekly multiple. Returns `None` when no peak reaches `0.2` (no clear season).
pub fn detect_season(values: &[f64]) -> Option<usize> {
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
    let max_lag = n / 3;
    let acf: Vec<f64> = (0..=max_lag)
        .map(|lag| {
            centred[lag..]
                .iter()
                .zip(&centred)
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / variance
        })
        .collect();
    let peaks: Vec<(usize, f64)> = (2..max_lag)
        .filter(|&lag| acf[lag] > acf[lag - 1] && acf[lag] >= acf[lag + 1] && acf[lag] > 0.2)
        .map(|lag| (lag, acf[lag]))
        .collect();
    let best = peaks.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    peaks.into_iter().find(|p| p.1 >= 0.9 * best).map(|p| p.0)
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
}
