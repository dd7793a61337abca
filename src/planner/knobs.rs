//! Pipeline knob tuning: batch rows and bytes, write concurrency and prefetch from measured latency and throughput.

use std::collections::BTreeMap;

use super::model::{
    Action, BatchSample, ForecastView, Observed, PipelineObservation, Reason, ServiceTime,
    Settings, SATURATED_SLOT_SHARE,
};
use super::Limits;

/// Lag, in lag objectives, from which the pipeline counts as far behind: short of write capacity, not just of a
/// lower latency per message. Only then does the round grow ([`probe`]): a larger round carries more rows per
/// write, and each message also waits for a longer chunk, which costs more than it gains while the lag hovers at
/// its objective.
const FAR_BEHIND: f64 = 1.5;

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
    /// Whether the capacity it plans for came from the arrival forecast.
    pub uses_forecast: bool,
    /// Whether it only sheds load from a node the setting in force overloads or queues writes at, which may follow
    /// the last knob change after `Limits::relief_cooldown_s` rather than the full cooldown.
    pub relieves_overload: bool,
}

fn find(samples: &[BatchSample], rows: u32, concurrency: u32) -> Option<&BatchSample> {
    samples
        .iter()
        .find(|s| s.rows == rows && s.concurrency == concurrency)
}

/// One step from `from` toward `to`, no larger than `ratio` in either direction, so the change is one the
/// policy's step limit lets through on its own.
fn step_toward(from: u64, to: u64, ratio: f64) -> u64 {
    let from_f = from.max(1) as f64;
    let lo = (from_f / ratio).ceil() as u64;
    let hi = (from_f * ratio).floor() as u64;
    to.clamp(lo.max(1), hi.max(1))
}

/// Whether a measured setting overloads the node: p99 over the objective, or the node refusing work.
fn overloading(s: &BatchSample, limits: &Limits) -> bool {
    s.p99_ms > limits.p99_objective_ms || s.error_share > limits.max_error_share
}

/// Whether a measured setting keeps more writes in flight than the node serves at once: its writes took
/// `Limits::queueing_cut` times what each would have taken alone, with at least two in flight. Gives the
/// queueing and the writes in flight when it does.
fn queueing(s: &BatchSample, limits: &Limits) -> Option<(f64, f64)> {
    queue_met(s).filter(|&(q, n)| q >= limits.queueing_cut && n >= 2.0)
}

/// What a setting's writes met at the node: their queueing and the writes in flight, counted within the setting's
/// concurrency (a write meets at least itself and at most the setting's slots). `None` when either is not
/// measured.
fn queue_met(s: &BatchSample) -> Option<(f64, f64)> {
    let (q, n) = (s.queueing?, s.writes_in_flight?);
    (q > 0.0).then(|| (q, n.clamp(1.0, f64::from(s.concurrency.max(1)))))
}

/// The writes the node serves at once, as a setting's writes met it: a write that met n writes in flight (itself
/// included) at a node serving w at once, first come first served, waits for the n − w ahead of it to start and
/// then for its own service, about n / w service times, so writes that took q service times meeting n in flight
/// met about n / q workers. Rounded to a whole number of at least one: a node serves whole writes.
fn served_at_once(in_flight: f64, queueing: f64) -> f64 {
    (in_flight / queueing).round().max(1.0)
}

/// Whether fewer writes in flight would relieve the node: it is overloaded, or it only queues the extra writes.
fn needs_relief(s: &BatchSample, limits: &Limits) -> bool {
    overloading(s, limits) || queueing(s, limits).is_some()
}

/// How full a setting's batches came out: rows carried over the row cap, and whether the byte cap cut them
/// (their bytes reached 80 % of it).
struct Fill {
    rows: f64,
    byte_bound: bool,
}

impl Fill {
    fn of(current: &BatchSample, settings: &Settings, avg_row_bytes: f64) -> Fill {
        Fill {
            rows: if settings.batch_rows > 0 {
                current.mean_rows / f64::from(settings.batch_rows)
            } else {
                0.0
            },
            byte_bound: avg_row_bytes > 0.0
                && current.mean_rows * avg_row_bytes >= 0.8 * settings.batch_bytes as f64,
        }
    }

    /// Batches at 90 % of the row cap or more count as full.
    fn full(&self) -> bool {
        self.rows >= 0.9
    }

    /// Short of both caps: what cut the batches short is the partitions splitting the round (or the load).
    fn short_of_caps(&self) -> bool {
        !self.full() && !self.byte_bound
    }
}

/// The largest round whose writes fit `Limits::round_lag_share` of the lag objective on a saturated node: a
/// message that arrives as a round is cut waits for that round's writes and then for its own. A round takes its
/// batches (measured: the round over the rows per batch) times a lone write of their size, over the writes the
/// node serves at once (writes in flight over queueing). The lone write comes from the service fit at the
/// batches' own size, which holds however the fit splits it between the request and the bytes: batches of
/// one size cannot tell those apart (on speed_6005 the fit gave 10 to 76 ms per request and 0 to 2.5 ms per
/// KiB from one run to the next). Other rounds are scaled in proportion to their rows, which reads a smaller
/// round's write time low (its batches keep their cost per request) and so holds the round back less, never
/// more, than the node's cost would. `None` when any of that is not measured.
fn round_within_lag(
    current: &BatchSample,
    service: Option<ServiceTime>,
    avg_row_bytes: f64,
    limits: &Limits,
) -> Option<f64> {
    let service = service?;
    let round = current.round_rows?;
    let (q, in_flight) = queue_met(current)?;
    let served = served_at_once(in_flight, q);
    if current.mean_rows <= 0.0 {
        return None;
    }
    let batches = (round / current.mean_rows).max(1.0);
    let round_ms = batches * service.expected_ms(current.mean_rows * avg_row_bytes) / served;
    if round_ms <= 0.0 {
        return None;
    }
    let per_round_ms = limits.round_lag_share * limits.lag_objective_s * 1e3 / 2.0;
    Some(round * per_round_ms / round_ms)
}

/// The largest share of its round a cut of concurrency holds back for the lag objective ([`keeping_round`]).
const MOST_ROUND_HELD_BACK: f64 = 0.25;

/// How a cut of concurrency keeps the round: the batch rows, the round measured, the round kept (batch rows ×
/// the new concurrency), and the round that fits the lag objective ([`round_within_lag`]) when that held the
/// round back.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KeptRound {
    rows: u32,
    measured: f64,
    kept: u64,
    held_to: Option<f64>,
}

/// Batch rows for a cut of concurrency to `concurrency` that keeps the round the setting in force carried.
///
/// The pipeline cuts a round of at most batch rows × concurrency rows and writes one batch per partition, so
/// where batches come out short of both caps (the partitions split the round, not the row or byte cap), a cut of
/// concurrency alone would also cut the rows each batch carries, and with them the rows written per request:
/// on speed_6005 a cut 32x11 → 32x4 took batches from 12.2 rows to 8.3 and the throughput from 696 to 478
/// rows/s while the pipeline fell behind. Keeping the round keeps the batches as they were with fewer in
/// flight, which is what a cut for queueing means: latency falls, throughput holds. Within the policy's step
/// and the row limit; never fewer rows than now.
///
/// The round kept is at most the one whose writes fit the lag objective ([`round_within_lag`]), and at least
/// three quarters of the round measured ([`MOST_ROUND_HELD_BACK`]): on speed_6005 static rounds of 192 rows had
/// 0 to 27 minutes over the lag objective where rounds of 252 and 256 had 59 to 103 and rounds of 128 over a
/// thousand. The estimate rests on one round measured at one moment (a round measured in a lull reads short),
/// and a round too small to keep up costs far more than one a little too long.
fn keeping_round(
    current: &BatchSample,
    settings: &Settings,
    concurrency: u32,
    p: &PipelineObservation,
    limits: &Limits,
) -> Option<KeptRound> {
    let round = current.round_rows?;
    if !Fill::of(current, settings, p.avg_row_bytes).short_of_caps() || concurrency == 0 {
        return None;
    }
    // The fit behind that figure is an estimate: one cut holds the round back by at most a quarter.
    let held_to = round_within_lag(current, p.service, p.avg_row_bytes, limits)
        .filter(|&within| within < round);
    let wanted = match held_to {
        Some(within) => (within.max(round * (1.0 - MOST_ROUND_HELD_BACK)) / f64::from(concurrency))
            .floor() as u64,
        None => (round / f64::from(concurrency)).ceil() as u64,
    };
    let kept = step_toward(
        u64::from(settings.batch_rows),
        wanted,
        limits.max_step_ratio,
    )
    .min(u64::from(limits.max_batch_rows)) as u32;
    (kept > settings.batch_rows).then_some(KeptRound {
        rows: kept,
        measured: round,
        kept: u64::from(kept) * u64::from(concurrency),
        held_to,
    })
}

/// Says how a cut kept its round, for the proposal's reason.
fn kept_round_why(settings: &Settings, kept: Option<KeptRound>, current: &BatchSample) -> String {
    match kept {
        None => String::new(),
        Some(k) => match k.held_to {
            None => format!(
                "; batch {} → {} rows keeps the round of {:.0} rows, so batches still carry about {:.1}",
                settings.batch_rows, k.rows, k.measured, current.mean_rows
            ),
            Some(within) => format!(
                "; batch {} → {} rows keeps a round of {} of the {:.0} rows measured: two rounds of {within:.0} \
                 rows would fit the lag objective's share for writes, and a cut holds the round back by at most \
                 a quarter",
                settings.batch_rows, k.rows, k.kept, k.measured
            ),
        },
    }
}

/// An unmeasured setting worth measuring when no measured one fixes what is wrong, with the sentence saying
/// why. The executor measures it during its verification window and rolls it back if it does worse, so a probe
/// costs one cooldown at most; a setting already measured is never probed again (the measured choice above
/// covers it), which keeps the search from cycling.
///
/// * Overloaded (p99 over the objective, or write timeouts and Overloaded answers): queueing at the node makes
///   latency grow in proportion to the writes in flight, so concurrency is cut to half the writes a write met
///   in flight, or to in-flight × aim / p99 when that is deeper (a multiplicative decrease), within the policy's
///   step; at concurrency 1 the batch is made smaller by objective / p99 instead (by half when only errors
///   show).
/// * Queueing (writes took `Limits::queueing_cut` times their lone service time or more, with the p99 in
///   bounds): the node serves fewer writes at once than are in flight, so concurrency is cut to twice what it
///   serves (one write waiting behind each), within the policy's step.
/// * Both cuts keep the round the setting carried where the partitions, not the caps, cut its batches short
///   ([`keeping_round`]): otherwise fewer writes in flight would also mean fewer rows per write.
/// * Short of capacity with the p99 in bounds: full batches grow (fixed per-request cost is spread over more
///   rows); batches cut short by the byte cap get a larger cap; otherwise, with the p99 under half the
///   objective and writes hardly waiting for each other (queueing under `Limits::queueing_raise_below`, or not
///   measured), the node has room for more writes in flight; failing that, far behind (`far_behind`: lag at
///   least [`FAR_BEHIND`] objectives) with the write slots busy ([`SATURATED_SLOT_SHARE`]), the p99 under half
///   the objective and batches short of both caps, batch rows grow, so each chunk (batch rows × concurrency) and
///   each batch cut from it carry more rows with no more writes in flight.
fn probe(
    current: &BatchSample,
    settings: &Settings,
    p: &PipelineObservation,
    required: f64,
    far_behind: bool,
    limits: &Limits,
) -> Option<(Settings, String)> {
    let ratio = limits.max_step_ratio;
    let (samples, avg_row_bytes) = (&p.batches, p.avg_row_bytes);
    let measured = |rows: u32, concurrency: u32| find(samples, rows, concurrency).is_some();
    let mut to = *settings;
    if overloading(current, limits) {
        let aim = limits.p99_objective_ms * (1.0 - limits.p99_enter_margin);
        let factor = if current.p99_ms > limits.p99_objective_ms {
            aim / current.p99_ms
        } else {
            0.5
        };
        let why = if current.p99_ms > limits.p99_objective_ms {
            format!(
                "p99 {:.0} ms is over the objective {:.0} ms",
                current.p99_ms, limits.p99_objective_ms
            )
        } else {
            format!(
                "{:.1} % of batch writes failed (write timeouts or Overloaded), more than {:.1} %",
                current.error_share * 100.0,
                limits.max_error_share * 100.0
            )
        };
        if settings.concurrency > 1 {
            // A multiplicative decrease of the writes actually in flight: at least half, and deeper when p99 is
            // far over. Queueing at the node makes latency grow with the writes a write met in flight
            // (`BatchSample::writes_in_flight`; a setting allowed 32 that kept 13 in flight queued 13, not 32, and
            // a cut to 12 changed nothing and was rolled back). The slot share times the concurrency, used when
            // that is not measured, averages in the idle time between bursts: in one window of the Azure replay
            // it said 0.6 writes in flight where writes met 4.8, and such a figure once cut 8 → 2. So
            // in-flight × aim / p99 would bring p99 to the aim if queueing were all of it; service time and other
            // clients' writes are not, hence at least half. With natural batching fewer writes in flight cost
            // little (each batch carries more rows), while too many cost write timeouts. Proportional steps on
            // the configured concurrency (32 → 28 or 29) were too small, and were rolled back as the load swung.
            // The policy's step limit bounds the cut. A cut too deep is probed back up when it shows as a
            // capacity shortfall with p99 under half the objective; with batches full at the byte cap, service
            // time alone can hold p99 above that, and the cut stays (see the README's replay section).
            let c_now = f64::from(settings.concurrency);
            let in_flight = current
                .writes_in_flight
                .or(current.slot_share.map(|s| s * c_now))
                .map_or(c_now, |n| n.clamp(1.0, c_now));
            let wanted = (in_flight * factor.min(0.5)).ceil() as u64;
            let c = step_toward(u64::from(settings.concurrency), wanted, ratio)
                .min(u64::from(settings.concurrency) - 1) as u32;
            to.concurrency = c.max(1);
            let kept = keeping_round(current, settings, to.concurrency, p, limits);
            if let Some(k) = kept {
                to.batch_rows = k.rows;
            }
            if measured(to.batch_rows, to.concurrency) {
                return None;
            }
            return Some((
                to,
                format!(
                    "{why} with {in_flight:.1} writes in flight as a write started: writes queue at the node, so concurrency {} → {} (latency falls about in proportion; with fewer writes in flight batches fill fuller){}",
                    settings.concurrency,
                    to.concurrency,
                    kept_round_why(settings, kept, current)
                ),
            ));
        }
        let wanted = (f64::from(settings.batch_rows) * factor).ceil() as u64;
        let rows = step_toward(u64::from(settings.batch_rows), wanted, ratio)
            .min(u64::from(settings.batch_rows) - 1)
            .max(u64::from(limits.min_batch_rows)) as u32;
        if rows == settings.batch_rows || measured(rows, to.concurrency) {
            return None;
        }
        to.batch_rows = rows;
        return Some((
            to,
            format!(
                "{why} at concurrency 1: batch {} → {} rows",
                settings.batch_rows, rows
            ),
        ));
    }
    if let Some((q, in_flight)) = queueing(current, limits).filter(|_| settings.concurrency > 1) {
        // The cut aims at twice the writes the node serves at once ([`served_at_once`]), every worker busy with
        // one write waiting behind it, so no worker idles while the pipeline sends the next batch. That is
        // queueing 2, between `queueing_raise_below` and `queueing_cut`, so the setting it lands on is left
        // alone. The estimate is rounded to whole writes before doubling: 1.5 workers measured on a two-worker
        // node (the fit's noise) would otherwise aim at 3 and leave a worker idle whenever both of its writes
        // finish together.
        let c_now = u64::from(settings.concurrency);
        let workers = in_flight / q;
        let wanted = (2.0 * served_at_once(in_flight, q)) as u64;
        let c = step_toward(c_now, wanted, ratio).min(c_now - 1).max(1) as u32;
        to.concurrency = c;
        let kept = keeping_round(current, settings, c, p, limits);
        if let Some(k) = kept {
            to.batch_rows = k.rows;
        }
        if find(samples, to.batch_rows, c).is_some_and(|s| needs_relief(s, limits)) {
            return None;
        }
        return Some((
            to,
            format!(
                "writes took {q:.1}× their lone service time with {in_flight:.1} in flight: the node serves about \
                 {workers:.1} at once and the rest wait, so concurrency {} → {c}, one waiting per write served \
                 (latency falls, throughput holds, batches fill fuller){}",
                settings.concurrency,
                kept_round_why(settings, kept, current)
            ),
        ));
    }
    if current.throughput_rows_per_s >= required {
        return None;
    }
    let short = format!(
        "capacity {:.0} rows/s is below required {:.0} rows/s",
        current.throughput_rows_per_s, required
    );
    let fill = Fill::of(current, settings, avg_row_bytes);
    let batch_bytes = current.mean_rows * avg_row_bytes;
    let doubled_rows = step_toward(
        u64::from(settings.batch_rows),
        u64::from(settings.batch_rows) * 2,
        ratio,
    )
    .min(u64::from(limits.max_batch_rows)) as u32;
    if fill.full() && settings.batch_rows < limits.max_batch_rows {
        let rows = doubled_rows;
        if !measured(rows, settings.concurrency) {
            to.batch_rows = rows;
            return Some((
                to,
                format!(
                    "{short}; batches are full ({:.1} of {} rows): batch {} → {} rows spreads the per-request cost",
                    current.mean_rows, settings.batch_rows, settings.batch_rows, rows
                ),
            ));
        }
    }
    if fill.byte_bound && settings.batch_bytes < limits.batch_bytes_max {
        let bytes = step_toward(settings.batch_bytes, settings.batch_bytes * 2, ratio)
            .min(limits.batch_bytes_max);
        if bytes > settings.batch_bytes {
            to.batch_bytes = bytes;
            return Some((
                to,
                format!(
                    "{short}; the byte cap cuts batches at {:.1} rows ({batch_bytes:.0} B): batch bytes {} → {bytes}",
                    current.mean_rows, settings.batch_bytes
                ),
            ));
        }
    }
    let higher_measured_no_better = samples.iter().any(|s| {
        s.rows == settings.batch_rows
            && s.concurrency > settings.concurrency
            && s.throughput_rows_per_s < current.throughput_rows_per_s * (1.0 + limits.min_gain)
    });
    let node_has_room = current
        .queueing
        .is_none_or(|q| q < limits.queueing_raise_below);
    if current.p99_ms <= limits.p99_objective_ms * 0.5
        && node_has_room
        && settings.concurrency < limits.max_concurrency
        && !higher_measured_no_better
    {
        let c = step_toward(
            u64::from(settings.concurrency),
            u64::from(settings.concurrency) * 2,
            ratio,
        )
        .min(u64::from(limits.max_concurrency)) as u32;
        if !measured(settings.batch_rows, c) {
            to.concurrency = c;
            return Some((
                to,
                format!(
                    "{short}; p99 {:.0} ms leaves room under the objective {:.0} ms: concurrency {} → {c}",
                    current.p99_ms, limits.p99_objective_ms, settings.concurrency
                ),
            ));
        }
    }
    // A pipeline far behind fills every chunk to its cap, batch rows × concurrency, and the writer splits a chunk
    // into one batch per partition, so with many partitions each batch carries far fewer rows than the cap and
    // pays the per-request cost for few rows. Where more writes in flight would only wait at the node (or were
    // measured no better), a larger round spreads that cost without adding any: batch rows grow, and with them
    // the rows each batch carries. Doubling a batch at most doubles its write time, hence the same p99 bound as
    // a raise of concurrency. Only a setting that kept its write slots busy is short of capacity; at the tail of a
    // burst the lag is still high while the writer already has slots to spare.
    if far_behind
        && current
            .slot_share
            .is_some_and(|s| s >= SATURATED_SLOT_SHARE)
        && fill.short_of_caps()
        && current.p99_ms <= limits.p99_objective_ms * 0.5
        && settings.batch_rows < limits.max_batch_rows
    {
        let rows = doubled_rows;
        if !measured(rows, settings.concurrency) {
            to.batch_rows = rows;
            return Some((
                to,
                format!(
                    "{short}; far behind, batches carry {:.1} rows where {} are allowed (a round of {} rows split \
                     by partition), and more writes in flight would only wait: batch {} → {rows} rows spreads the \
                     per-request cost over a larger round",
                    current.mean_rows,
                    settings.batch_rows,
                    u64::from(settings.batch_rows) * u64::from(settings.concurrency),
                    settings.batch_rows
                ),
            ));
        }
    }
    None
}

/// Plans the knobs; `None` when the current setting should stay.
///
/// First among measured settings (the most throughput within the p99 objective, with hysteresis); when none
/// of those fixes what is wrong, one probe step toward an unmeasured setting ([`probe`]). Every knob moves by
/// at most `max_step_ratio` per change.
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
    let in_bounds = |s: &BatchSample| {
        s.rows >= limits.min_batch_rows
            && s.rows <= limits.max_batch_rows
            && s.concurrency >= 1
            && s.concurrency <= limits.max_concurrency
    };
    // Hysteresis: a new setting must beat the objectives by a margin to be adopted; the current one is kept while
    // it meets them. Without the gap, a p99 hovering at the objective would switch settings on every step.
    let adoptable = |s: &BatchSample| {
        in_bounds(s)
            && s.p99_ms <= limits.p99_objective_ms * (1.0 - limits.p99_enter_margin)
            && s.error_share <= limits.max_error_share
            && queueing(s, limits).is_none()
    };
    let keepable = |s: &BatchSample| in_bounds(s) && !overloading(s, limits);

    // Capacity the pipeline needs: ahead of the forecast when it is trusted, otherwise reacting to measured lag.
    let drain = p.backlog_messages / limits.lag_objective_s;
    let lagging = p.lag_s > limits.lag_objective_s;
    let uses_forecast = trust.trusted && forecast.arrival.is_some();
    let (required, basis) = match (&forecast.arrival, trust.trusted) {
        (Some(a), true) => (
            a.upper_per_s * limits.capacity_headroom + drain,
            format!(
                "forecast arrival upper {:.1}/s over {} s",
                a.upper_per_s, forecast.horizon_s
            ),
        ),
        _ => {
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

    // Most throughput among adoptable settings one step away; ties go to less concurrency, then smaller batches.
    // Farther ones become reachable once the pipeline has moved (or a probe finds the way).
    let reachable = |s: &BatchSample| {
        step_toward(
            u64::from(settings.batch_rows),
            u64::from(s.rows),
            limits.max_step_ratio,
        ) == u64::from(s.rows)
            && step_toward(
                u64::from(settings.concurrency),
                u64::from(s.concurrency),
                limits.max_step_ratio,
            ) == u64::from(s.concurrency)
    };
    let by_throughput = |a: &&BatchSample, b: &&BatchSample| {
        a.throughput_rows_per_s
            .total_cmp(&b.throughput_rows_per_s)
            .then(b.concurrency.cmp(&a.concurrency))
            .then(b.rows.cmp(&a.rows))
    };
    let current = find(samples, settings.batch_rows, settings.concurrency);
    let current_overloaded = current.is_some_and(|c| !keepable(c));
    // A smaller round (fewer batch rows, no more writes in flight) cannot carry more rows per write: a higher
    // figure for it was measured under a heavier backlog, when its chunks filled, and the setting in force
    // measured in a lull reads low. Such a step back is taken only as relief for an overloaded node.
    let smaller_round =
        |s: &BatchSample| s.rows < settings.batch_rows && s.concurrency <= settings.concurrency;
    // When the setting in force overloads the node and nothing adoptable is within one step, the best adoptable
    // one further away is approached one step at a time.
    let best = samples
        .iter()
        .filter(|s| adoptable(s) && reachable(s))
        .filter(|s| current_overloaded || !smaller_round(s))
        .max_by(by_throughput)
        .or_else(|| {
            samples
                .iter()
                .filter(|s| current_overloaded && adoptable(s))
                .max_by(by_throughput)
        });

    let mut figures = BTreeMap::new();
    figures.insert("required_rows_per_s".to_string(), required);
    figures.insert("p99_objective_ms".to_string(), limits.p99_objective_ms);
    figures.insert("lag_s".to_string(), p.lag_s);
    if let Some(c) = current {
        figures.insert("current_rows_per_s".to_string(), c.throughput_rows_per_s);
        figures.insert("current_p99_ms".to_string(), c.p99_ms);
        figures.insert("current_error_share".to_string(), c.error_share);
    }

    let mut to = *settings;
    let mut why = Vec::new();
    let mut probing = false;
    let measured_change = best.and_then(|b| {
        let w = match current {
            None => Some(format!(
                "current setting ({} rows, concurrency {}) has no measurement",
                settings.batch_rows, settings.concurrency
            )),
            Some(c) if !keepable(c) => Some(format!(
                "current p99 {:.1} ms exceeds objective {:.1} ms or {:.1} % of writes failed",
                c.p99_ms,
                limits.p99_objective_ms,
                c.error_share * 100.0
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
        w.map(|w| (b, w))
    });
    if let Some((b, w)) = measured_change {
        figures.insert("chosen_rows_per_s".to_string(), b.throughput_rows_per_s);
        figures.insert("chosen_p99_ms".to_string(), b.p99_ms);
        let ratio = limits.max_step_ratio;
        to.batch_rows =
            step_toward(u64::from(settings.batch_rows), u64::from(b.rows), ratio) as u32;
        to.concurrency = step_toward(
            u64::from(settings.concurrency),
            u64::from(b.concurrency),
            ratio,
        ) as u32;
        why.push(format!(
            "{w}: batch {} → {} rows, concurrency {} → {} (measured {:.0} rows/s at p99 {:.1} ms)",
            settings.batch_rows,
            to.batch_rows,
            settings.concurrency,
            to.concurrency,
            b.throughput_rows_per_s,
            b.p99_ms
        ));
        if b.throughput_rows_per_s < required {
            why.push(format!(
                "even the best measured setting ({:.0} rows/s) is below required {:.0} rows/s: lag will grow",
                b.throughput_rows_per_s, required
            ));
        }
    } else if let Some(c) = current {
        // Probe only when something is wrong: the node is overloaded, or the pipeline lags (or will, by the
        // trusted forecast) with too little capacity.
        let needs_capacity = lagging || (trust.trusted && c.throughput_rows_per_s < required);
        if needs_relief(c, limits) || needs_capacity {
            let need = if needs_capacity { required } else { 0.0 };
            if let Some((probe_to, w)) = probe(
                c,
                settings,
                p,
                need,
                p.lag_s >= FAR_BEHIND * limits.lag_objective_s,
                limits,
            ) {
                // Relief for a queueing node: latency should fall and throughput hold. The executor judges it on
                // p99 and allows throughput a wider wobble (`RELIEF_TOLERANCE`), because batch fill, and with it
                // measured throughput, follows the load of the moment. With a backlog and no errors to cut,
                // throughput is what clears the lag, so fewer writes in flight is judged like any change: a
                // relief that costs throughput then is undone, not repeated step after step.
                let errors = c.error_share > limits.max_error_share;
                if probe_to.concurrency < settings.concurrency
                    && needs_relief(c, limits)
                    && (errors || !lagging)
                {
                    figures.insert("relief_of_p99_ms".to_string(), c.p99_ms);
                }
                to = probe_to;
                probing = true;
                why.push(format!("probing an unmeasured setting: {w} ({basis})"));
            }
        }
    }

    // Batch bytes. Hysteresis: act only when the cap would cut batches short (below rows × row size) or is
    // above the planner's ceiling, and then leave 25 % room, so a row size that wobbles by a few per cent
    // does not move the cap every step. A probe that raised the cap on purpose is left as it is.
    if p.avg_row_bytes > 0.0 && to.batch_bytes == settings.batch_bytes {
        let need = f64::from(to.batch_rows) * p.avg_row_bytes;
        let short = (to.batch_bytes as f64) < need && to.batch_bytes < limits.batch_bytes_max;
        let over = to.batch_bytes > limits.batch_bytes_max;
        if short || over {
            let wanted = ((need * 1.25).ceil() as u64).min(limits.batch_bytes_max);
            let wanted = step_toward(to.batch_bytes, wanted, limits.max_step_ratio);
            if wanted != to.batch_bytes {
                why.push(format!(
                    "batch bytes {} → {wanted} (rows {} × {:.0} B = {need:.0} B, ceiling {} B)",
                    to.batch_bytes, to.batch_rows, p.avg_row_bytes, limits.batch_bytes_max
                ));
                to.batch_bytes = wanted;
            }
        }
    }

    // Prefetch: enough for one round of batches, never more than the setting processes within a fraction of
    // one lock duration. Hysteresis: act when below one round or above the ceiling (with 5 % slack, as the
    // ceiling follows measured throughput), and then aim for two rounds, so noise does not re-trigger it.
    // A step that cuts writes in flight raises nothing else: it then only sheds load, which a drop to recommend
    // for thin history lets through (`Action::sheds_load`), and prefetch follows at a later step.
    let shedding = to.concurrency < settings.concurrency;
    let tp = find(samples, to.batch_rows, to.concurrency)
        .or(current)
        .map(|s| s.throughput_rows_per_s);
    if let Some(tp) = tp {
        let ceiling = (tp * limits.lock_duration_s * limits.prefetch_lock_fraction).floor();
        let round = f64::from(to.batch_rows) * f64::from(to.concurrency);
        figures.insert("prefetch_ceiling".to_string(), ceiling);
        let over = f64::from(to.prefetch) > ceiling * 1.05;
        let short = f64::from(to.prefetch) < round.min(ceiling) && !shedding;
        if over || short {
            let wanted = (2.0 * round)
                .min(ceiling)
                .min(f64::from(limits.max_prefetch))
                .max(1.0) as u64;
            let wanted = step_toward(u64::from(to.prefetch), wanted, limits.max_step_ratio) as u32;
            if wanted != to.prefetch {
                why.push(format!(
                    "prefetch {} → {wanted} (a round of batches is {round:.0}; ceiling {tp:.0} rows/s × {:.0} s lock × {:.2} = {ceiling:.0})",
                    to.prefetch, limits.lock_duration_s, limits.prefetch_lock_fraction
                ));
                to.prefetch = wanted;
            }
        }
    }

    // A step that lands on a measured setting which overloads the node, or that leaves an overloaded shape in
    // place while only fitting bytes and prefetch to it, fixes nothing: wait for a measurement that does.
    let landed = find(samples, to.batch_rows, to.concurrency);
    if landed.is_some_and(|s| !keepable(s)) {
        return None;
    }
    if to == *settings {
        return None;
    }
    let expected_effect = match find(samples, to.batch_rows, to.concurrency) {
        Some(s) => format!(
            "throughput about {:.0} rows/s at p99 {:.1} ms against {:.0} rows/s required",
            s.throughput_rows_per_s, s.p99_ms, required
        ),
        None if probing => format!(
            "not measured yet: the verification window measures it against {:.0} rows/s required, and a worse \
             p99 or throughput rolls it back",
            required
        ),
        None => "same batch shape; bytes and prefetch fitted to it".to_string(),
    };
    if !trust.trusted {
        why.push(trust.why_not.clone().unwrap_or_default() + ", so capacity follows measured lag");
    }
    let action = Action::SetKnobs {
        from: *settings,
        to,
    };
    Some(KnobProposal {
        relieves_overload: action.sheds_load() && current.is_some_and(|c| needs_relief(c, limits)),
        action,
        reason: Reason {
            summary: why.join("; "),
            figures,
        },
        expected_effect,
        uses_forecast,
    })
}
