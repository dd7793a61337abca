//! The feature rows the linfa models learn from: lags, seasonal lags, rolling statistics and calendar terms.
//!
//! A row describes one origin `t` (the last observed index) and one horizon step `h`. Every value-based
//! feature is taken relative to the anchor `y[t]`, and the target is `y[t + h] - y[t]`, so the models learn the
//! change from the last value and are insensitive to slow level shifts. A row reads only `y[..=t]`.

use std::f64::consts::TAU;

/// Where a series sits in time: first timestamp and step, both in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Calendar {
    /// Seconds since the Unix epoch of index 0.
    pub start: i64,
    /// Seconds between points.
    pub step: i64,
}

/// Which features a row holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    /// The season length in steps (the daily period for daily data).
    pub season: usize,
    /// The weekly period in steps, when the history is long enough to use it.
    pub weekly: Option<usize>,
    /// Plain lags `y[t-1] .. y[t-lags]`.
    pub lags: usize,
    /// Seasonal lags of the target time: one, two, … seasons back.
    pub seasonal_lags: usize,
    /// Half-width in steps of the smoothed seasonal profile: the mean of the values within this many steps of
    /// the target's time of day (or of season) on each of the last `seasonal_lags` seasons.
    pub profile_half_width: usize,
    /// Fourier harmonics of the seasonal phase of the target time.
    pub season_harmonics: usize,
    /// Fourier harmonics of the weekly phase of the target time.
    pub weekly_harmonics: usize,
    /// Where the series sits in time.
    pub calendar: Calendar,
}

impl FeatureSpec {
    /// The usual features for a season of `season` steps.
    pub fn new(season: usize, weekly: Option<usize>, calendar: Calendar) -> Self {
        Self {
            season: season.max(2),
            weekly,
            lags: 12.min(season.max(2)),
            seasonal_lags: 3,
            profile_half_width: (season.max(2) / 48).clamp(1, 6),
            season_harmonics: 3,
            weekly_harmonics: if weekly.is_some() { 3 } else { 0 },
            calendar,
        }
    }

    /// Feature names in row order, for the model card.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = (1..=self.lags).map(|l| format!("lag_{l}")).collect();
        names.extend((1..=self.seasonal_lags).map(|j| format!("seasonal_lag_{j}x{}", self.season)));
        names.push(format!("lag_{}", self.season));
        names.push(format!("seasonal_change_{}", self.season));
        names.push(format!(
            "profile_level_{}x{}",
            self.seasonal_lags, self.season
        ));
        names.push(format!(
            "profile_change_{}x{}",
            self.seasonal_lags, self.season
        ));
        if let Some(w) = self.weekly {
            names.extend([
                format!("weekly_lag_{w}"),
                format!("lag_{w}"),
                format!("weekly_change_{w}"),
            ]);
        }
        names.extend([
            "rolling_mean_short".into(),
            "rolling_mean_season".into(),
            "rolling_std_season".into(),
        ]);
        for k in 1..=self.season_harmonics {
            names.extend([format!("season_sin_{k}"), format!("season_cos_{k}")]);
        }
        for k in 1..=self.weekly_harmonics {
            names.extend([format!("week_sin_{k}"), format!("week_cos_{k}")]);
        }
        names
    }

    /// Number of features in a row.
    pub fn width(&self) -> usize {
        self.lags
            + self.seasonal_lags
            + 4
            + if self.weekly.is_some() { 3 } else { 0 }
            + 3
            + 2 * (self.season_harmonics + self.weekly_harmonics)
    }

    /// The earliest origin `t` for which a row at step `h` can be built.
    pub fn min_origin(&self, h: usize) -> usize {
        let m = self.season;
        let wrap = (h - 1) / m;
        let mut need = self
            .lags
            .max(m)
            .max(m * (self.seasonal_lags + wrap) + self.profile_half_width);
        if let Some(w) = self.weekly {
            need = need.max(w * (1 + (h - 1) / w));
        }
        need
    }

    /// The anchor the row and target are relative to: the last observation.
    pub fn anchor(y: &[f64], t: usize) -> f64 {
        y[t]
    }

    /// Writes the row for origin `t` and step `h` into `out` (cleared first). Needs `t >= min_origin(h)`.
    pub fn row(&self, y: &[f64], t: usize, h: usize, out: &mut Vec<f64>) {
        out.clear();
        let a = Self::anchor(y, t);
        let m = self.season;
        for l in 1..=self.lags {
            out.push(y[t - l] - a);
        }
        let wrap = (h - 1) / m;
        for j in 1..=self.seasonal_lags {
            out.push(y[t + h - m * (j + wrap)] - a);
        }
        out.push(y[t - m] - a);
        let back = m * (1 + wrap);
        out.push(y[t + h - back] - y[t - back]);
        let at_target = self.profile(y, t, t + h - m * wrap);
        out.push(at_target - a);
        out.push(at_target - self.profile(y, t, t));
        if let Some(w) = self.weekly {
            let back = w * (1 + (h - 1) / w);
            out.push(y[t + h - back] - a);
            out.push(y[t - w] - a);
            out.push(y[t + h - back] - y[t - back]);
        }
        let short = 3.min(t + 1);
        out.push(y[t + 1 - short..=t].iter().sum::<f64>() / short as f64 - a);
        let window = &y[t + 1 - m..=t];
        let mean = window.iter().sum::<f64>() / m as f64;
        out.push(mean - a);
        out.push((window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m as f64).sqrt());
        let at = self.calendar.start + self.calendar.step * (t + h) as i64;
        let period = self.calendar.step * m as i64;
        let phase = at.rem_euclid(period) as f64 / period as f64;
        for k in 1..=self.season_harmonics {
            let angle = TAU * k as f64 * phase;
            out.push(angle.sin());
            out.push(angle.cos());
        }
        if let Some(w) = self.weekly {
            let period = self.calendar.step * w as i64;
            let phase = at.rem_euclid(period) as f64 / period as f64;
            for k in 1..=self.weekly_harmonics {
                let angle = TAU * k as f64 * phase;
                out.push(angle.sin());
                out.push(angle.cos());
            }
        }
    }

    /// The mean of `y` within `profile_half_width` steps of index `at - j * season` for `j` in
    /// `1..=seasonal_lags`, reading only indices up to `t`: a denoised estimate of the seasonal shape at `at`.
    fn profile(&self, y: &[f64], t: usize, at: usize) -> f64 {
        let w = self.profile_half_width;
        let mut sum = 0.0;
        let mut count = 0usize;
        for j in 1..=self.seasonal_lags {
            let centre = at - j * self.season;
            let near = &y[centre - w..=(centre + w).min(t)];
            sum += near.iter().sum::<f64>();
            count += near.len();
        }
        sum / count.max(1) as f64
    }

    /// The training target for origin `t` and step `h`: the change from the anchor.
    pub fn target(y: &[f64], t: usize, h: usize) -> f64 {
        y[t + h] - Self::anchor(y, t)
    }
}
