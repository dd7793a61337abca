//! Pipeline knob tuning: batch rows and bytes, write concurrency and prefetch from measured latency and throughput.

use std::collections::BTreeMap;

use super::model::{Action, BatchSample, ForecastView, Observed, Reason, Settings};
use super::Limits;

/// Whether the forecast is used, and the sentence saying why not when it is not.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Trust {
    pub trusted: bool,
    pub why_not: Option<String>,
}

/// Decides whether the forecast may drive planning.
pub(crate) fn judge_forecast(forecast: &ForecastView, limits: &Limits) -> Trust {
    let t = &forecast.trust;
    let why_not = if t.history_points < limits.min_history_points {
        Some(format!(
            "forecast not trusted: {} observations of history, fewer than {}",
            t.history_points, limits.min_history_points
        ))
    } else {
        match t.rolling_mase {
            None => Some("forecast not trusted: no rolling accuracy yet".to_string()),
            Some(m) if m.is_nan() || m >= limits.max_mase => Some(format!(
                "forecast not trusted: rolling MASE {m:.2} is at or above {:.2} (no better than seasonal naive)",
                limits.max_mase
            )),
            Some(_) if forecast.arrival.is_none() => Some("forecast not trusted: no arrival forecast".to_string()),
            Some(_) => None,
        }
    };
    Trust {
        trusted: why_not.is_none(),
        why_not,
    }
}

/// A proposed knob change with its reason and expected effect.
pub(crate) struct KnobProposal {
    pub action: Action,
    pub reason: Reason,
    pub expected_effect: String,
}

fn find(samples: &[BatchSample], rows: u32, concurrency: u32) -> Option<&BatchSample> {
    samples
        .iter()
        .find(|s| s.rows == rows && s.concurrency == concurrency)
}

/// Plans the knobs; `None` when the current setting should stay.
pub(crate) fn plan_knobs(
    observed: &Observed,
    forecast: &ForecastView,
    settings: &Settings,
    limits: &Limits,
    trust: &Trust,
) -> Option<KnobProposal> {
    let p = &observed.pipeline;
    let samples = &p.batches;
    if samples.is_empty() {
        return None;
    }
    // Rows that keep a batch under Cassandra's warn threshold at the measured row size.
    let rows_cap = if p.avg_row_bytes > 0.0 {
        (limits.batch_bytes_warn as f64 / p.avg_row_bytes).floor()
    } else {
        f64::from(limits.max_batch_rows)
    };
    let in_bounds = |s: &BatchSample| {
        s.rows >= limits.min_batch_rows
            && s.rows <= limits.max_batch_rows
            && s.concurrency >= 1
            && s.concurrency <= limits.max_concurrency
    };
    // Hysteresis: a new setting must beat the objectives by a margin to be adopted; the current one is kept while
    // it meets them (with 5 % slack on the row-size cap, since the mean row size is itself measured). Without the
    // gap, a p99 hovering at the objective would switch settings on every step.
    let adoptable = |s: &BatchSample| {
        in_bounds(s)
            && s.p99_ms <= limits.p99_objective_ms * (1.0 - limits.p99_enter_margin)
            && f64::from(s.rows) <= rows_cap
    };
    let keepable = |s: &BatchSample| {
        in_bounds(s) && s.p99_ms <= limits.p99_objective_ms && f64::from(s.rows) <= rows_cap * 1.05
    };

    // Capacity the pipeline needs: ahead of the forecast when it is trusted, otherwise reacting to measured lag.
    let drain = p.backlog_messages / limits.lag_objective_s;
    let (required, basis) = match (&forecast.arrival, trust.trusted) {
        (Some(a), true) => (
            a.upper_per_s * limits.capacity_headroom + drain,
            format!(
                "forecast arrival upper {:.1}/s over {} s",
                a.upper_per_s, forecast.horizon_s
            ),
        ),
        _ => {
            let lagging = p.lag_s > limits.lag_objective_s;
            let extra = if lagging { drain } else { 0.0 };
            let why = trust.why_not.clone().unwrap_or_default();
            (
                p.arrival_per_s * limits.capacity_headroom + extra,
                format!(
                    "{why}; reacting to measured lag {:.1} s (objective {:.0} s) and arrival {:.1}/s",
                    p.lag_s, limits.lag_objective_s, p.arrival_per_s
                ),
            )
        }
    };

    // Most throughput among adoptable settings; ties go to less concurrency, then smaller batches.
    let best = samples.iter().filter(|s| adoptable(s)).max_by(|a, b| {
        a.throughput_rows_per_s
            .total_cmp(&b.throughput_rows_per_s)
            .then(b.concurrency.cmp(&a.concurrency))
            .then(b.rows.cmp(&a.rows))
    });
    let current = find(samples, settings.batch_rows, settings.concurrency);
    let current_tp = current.map(|c| c.throughput_rows_per_s);

    let mut figures = BTreeMap::new();
    figures.insert("required_rows_per_s".to_string(), required);
    figures.insert("p99_objective_ms".to_string(), limits.p99_objective_ms);
    figures.insert("lag_s".to_string(), p.lag_s);
    if let Some(c) = current {
        figures.insert("current_rows_per_s".to_string(), c.throughput_rows_per_s);
        figures.insert("current_p99_ms".to_string(), c.p99_ms);
    }

    let mut to = *settings;
    let mut why = Vec::new();
    if let Some(b) = best {
        let shape_change = match current {
            None => Some(format!(
                "current setting ({} rows, concurrency {}) has no measurement",
                settings.batch_rows, settings.concurrency
            )),
            Some(c) if !keepable(c) => Some(format!(
                "current p99 {:.1} ms exceeds objective {:.1} ms or batch exceeds {} bytes",
                c.p99_ms, limits.p99_objective_ms, limits.batch_bytes_warn
            )),
            Some(c) => {
                let gain =
                    b.throughput_rows_per_s / c.throughput_rows_per_s.max(f64::MIN_POSITIVE) - 1.0;
                if c.throughput_rows_per_s < required && gain >= limits.min_gain {
                    Some(format!(
                        "capacity {:.0} rows/s is below required {:.0} rows/s ({basis})",
                        c.throughput_rows_per_s, required
                    ))
                } else if gain >= limits.switch_gain {
                    Some(format!(
                        "{:.0} % more throughput within the p99 objective",
                        gain * 100.0
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(w) = shape_change {
            figures.insert("chosen_rows_per_s".to_string(), b.throughput_rows_per_s);
            figures.insert("chosen_p99_ms".to_string(), b.p99_ms);
            to.batch_rows = b.rows;
            to.concurrency = b.concurrency;
            why.push(format!(
                "{w}: batch {} → {} rows, concurrency {} → {} (measured {:.0} rows/s at p99 {:.1} ms)",
                settings.batch_rows, b.rows, settings.concurrency, b.concurrency, b.throughput_rows_per_s, b.p99_ms
            ));
            if b.throughput_rows_per_s < required {
                why.push(format!(
                    "even the best measured setting ({:.0} rows/s) is below required {:.0} rows/s: lag will grow",
                    b.throughput_rows_per_s, required
                ));
            }
        }
    }

    // Batch bytes. Hysteresis: act only when the cap would cut batches short (below rows × row size) or is
    // above Cassandra's warn threshold, and then leave 25 % room, so a row size that wobbles by a few per cent
    // does not move the cap every step.
    if p.avg_row_bytes > 0.0 {
        let need = f64::from(to.batch_rows) * p.avg_row_bytes;
        let short = (to.batch_bytes as f64) < need;
        let over = to.batch_bytes > limits.batch_bytes_warn;
        if short || over {
            let wanted = ((need * 1.25).ceil() as u64).min(limits.batch_bytes_warn);
            why.push(format!(
                "batch bytes {} → {wanted} (rows {} × {:.0} B = {need:.0} B, warn threshold {} B)",
                to.batch_bytes, to.batch_rows, p.avg_row_bytes, limits.batch_bytes_warn
            ));
            to.batch_bytes = wanted;
        }
    }

    // Prefetch: enough for one round of batches, never more than the setting processes within a fraction of
    // one lock duration. Hysteresis: act when below one round or above the ceiling (with 5 % slack, as the
    // ceiling follows measured throughput), and then aim for two rounds, so noise does not re-trigger it.
    let tp = find(samples, to.batch_rows, to.concurrency)
        .map(|s| s.throughput_rows_per_s)
        .or(current_tp);
    if let Some(tp) = tp {
        let ceiling = (tp * limits.lock_duration_s * limits.prefetch_lock_fraction).floor();
        let round = f64::from(to.batch_rows) * f64::from(to.concurrency);
        figures.insert("prefetch_ceiling".to_string(), ceiling);
        let over = f64::from(to.prefetch) > ceiling * 1.05;
        let short = f64::from(to.prefetch) < round.min(ceiling);
        if over || short {
            let wanted = (2.0 * round)
                .min(ceiling)
                .min(f64::from(limits.max_prefetch))
                .max(1.0) as u32;
            why.push(format!(
                "prefetch {} → {wanted} (a round of batches is {round:.0}; ceiling {tp:.0} rows/s × {:.0} s lock × {:.2} = {ceiling:.0})",
                to.prefetch, limits.lock_duration_s, limits.prefetch_lock_fraction
            ));
            to.prefetch = wanted;
        }
    }

    if to == *settings {
        return None;
    }
    let expected_effect = match find(samples, to.batch_rows, to.concurrency) {
        Some(s) => format!(
            "throughput about {:.0} rows/s at p99 {:.1} ms against {:.0} rows/s required",
            s.throughput_rows_per_s, s.p99_ms, required
        ),
        None => "same batch shape; bytes and prefetch fitted to it".to_string(),
    };
    if !trust.trusted {
        why.push(trust.why_not.clone().unwrap_or_default() + ", so capacity follows measured lag");
    }
    Some(KnobProposal {
        action: Action::SetKnobs {
            from: *settings,
            to,
        },
        reason: Reason {
            summary: why.join("; "),
            figures,
        },
        expected_effect,
    })
}
