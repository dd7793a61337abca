//! Forecast accuracy measures: the MASE scale, MASE and sMAPE.

/// The in-sample mean absolute error of the seasonal naive forecast at lag `season` over `train`:
/// `mean(|y[i] - y[i - season]|)` for `i` in `season..train.len()`. `None` if `train` is not longer than `season`.
pub fn seasonal_naive_scale(train: &[f64], season: usize) -> Option<f64> {
    let season = season.max(1);
    if train.len() <= season {
        return None;
    }
    let sum: f64 = (season..train.len())
        .map(|i| (train[i] - train[i - season]).abs())
        .sum();
    Some(sum / (train.len() - season) as f64)
}

/// Mean absolute error of `forecast` against `actual` (pairs beyond the shorter slice are ignored).
pub fn mae(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return f64::NAN;
    }
    actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum::<f64>()
        / n as f64
}

/// MASE: the mean absolute error divided by `scale` (see [`seasonal_naive_scale`]).
pub fn mase(actual: &[f64], forecast: &[f64], scale: f64) -> f64 {
    mae(actual, forecast) / scale
}

/// Symmetric MAPE on the 0–200 scale: `mean(200 * |a - f| / (|a| + |f|))`, a pair of zeros counting 0.
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    let n = actual.len().min(forecast.len());
    if n == 0 {
        return f64::NAN;
    }
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| {
            let denom = a.abs() + f.abs();
            if denom == 0.0 {
                0.0
            } else {
                200.0 * (a - f).abs() / denom
            }
        })
        .sum();
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_the_in_sample_seasonal_naive_mae() {
        // Lag 2: |3-1| + |2-2| + |7-3| = 6 over 3 pairs.
        assert_eq!(
            seasonal_naive_scale(&[1.0, 2.0, 3.0, 2.0, 7.0], 2),
            Some(2.0)
        );
        assert_eq!(seasonal_naive_scale(&[1.0, 2.0], 2), None);
    }

    #[test]
    fn mase_divides_mae_by_the_scale() {
        // Errors 1, 2, 3: MAE 2, scale 4.
        assert_eq!(mase(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0], 4.0), 0.5);
    }

    #[test]
    fn smape_is_on_the_0_to_200_scale() {
        // 200*1/3, 0, 200 (forecast 0 for actual 5), both-zero counts 0: mean of 66.67, 0, 200, 0.
        let s = smape(&[1.0, 2.0, 5.0, 0.0], &[2.0, 2.0, 0.0, 0.0]);
        assert!((s - (200.0 / 3.0 + 200.0) / 4.0).abs() < 1e-9, "{s}");
        assert_eq!(smape(&[3.0], &[3.0]), 0.0);
    }
}
