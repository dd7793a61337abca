//! The planner's search beyond what it has measured: from the defaults on a node that queues, it probes
//! unmeasured settings one gate-sized step at a time and ends within the p99 objective near the best
//! throughput the node allows, without cycling.

use trimtab::planner::{
    plan, Action, BatchSample, ForecastTrust, ForecastView, History, Limits, Observed,
    PipelineObservation, Plan, ServiceTime, Settings,
};

const NOW: i64 = 1_800_000_000;

/// A node like the replay's capacity model: `workers` serve one batch each for
/// `per_request_ms + per_row_ms × rows`; writes beyond the workers queue, so latency grows with concurrency.
struct Node {
    workers: f64,
    per_request_ms: f64,
    per_row_ms: f64,
    row_bytes: f64,
    /// Partitions the load spreads over. The pipeline cuts chunks of batch rows × concurrency and writes one
    /// batch per partition, so with a backlog a batch carries a share of the chunk; `None` leaves every batch
    /// full.
    partitions: Option<f64>,
    /// Whether the agent has fitted the node's lone-write time (`PipelineObservation::service`).
    fitted: bool,
}

impl Node {
    /// What the pipeline would measure at `s`: rows per batch are cut by the byte cap.
    fn measure(&self, s: &Settings) -> BatchSample {
        let round = f64::from(s.batch_rows) * f64::from(s.concurrency);
        let rows = f64::from(s.batch_rows)
            .min((s.batch_bytes as f64 / self.row_bytes).floor().max(1.0))
            .min(
                self.partitions
                    .map_or(f64::INFINITY, |p| (round / p).max(1.0)),
            );
        let service = self.per_request_ms + self.per_row_ms * rows;
        let c = f64::from(s.concurrency);
        let latency = service * (c / self.workers).max(1.0);
        BatchSample {
            rows: s.batch_rows,
            concurrency: s.concurrency,
            throughput_rows_per_s: rows * c / (latency / 1e3),
            p99_ms: latency * 1.2,
            mean_rows: rows,
            error_share: 0.0,
            // The model keeps every slot busy: a lagging pipeline fills them.
            slot_share: Some(1.0),
            writes_in_flight: Some(c),
            // Every write waits its turn behind the workers.
            queueing: Some(latency / service),
            // A lagging pipeline fills every round to its cap.
            round_rows: Some(round),
        }
    }
}

impl Node {
    /// What a lone write costs, as the agent's fit of lone writes reports it.
    fn service(&self) -> ServiceTime {
        ServiceTime {
            base_ms: self.per_request_ms,
            ms_per_kib: self.per_row_ms * 1024.0 / self.row_bytes,
        }
    }

    /// How long one round of `round` rows takes the node, split into `batches` writes.
    fn round_ms(&self, round: f64, batches: f64) -> f64 {
        (batches * self.per_request_ms + round * self.per_row_ms) / self.workers
    }
}

fn untrusted() -> ForecastView {
    ForecastView {
        horizon_s: 60,
        arrival: None,
        pools: vec![],
        trust: ForecastTrust {
            history_points: 0,
            rolling_mase: None,
        },
    }
}

fn limits() -> Limits {
    Limits {
        p99_objective_ms: 250.0,
        lag_objective_s: 1.0,
        cooldown_s: 0,
        ..Limits::default()
    }
}

fn knob_change(p: &Plan) -> Option<(Settings, Settings, String)> {
    p.changes.iter().find_map(|c| match &c.action {
        Action::SetKnobs { from, to } => Some((*from, *to, c.reason.summary.clone())),
        _ => None,
    })
}

/// One plan over `node`'s pipeline at `settings` with `batches` measured: lagging means 3 s behind with 600
/// messages queued, else 0.2 s and none.
fn plan_once(
    node: &Node,
    settings: &Settings,
    lagging: bool,
    arrival_per_s: f64,
    batches: Vec<BatchSample>,
    limits: &Limits,
) -> Plan {
    let (lag_s, backlog) = if lagging { (3.0, 600.0) } else { (0.2, 0.0) };
    plan_with(
        node,
        settings,
        lag_s,
        backlog,
        arrival_per_s,
        batches,
        limits,
    )
}

/// One plan at `settings` with `batches` measured, `lag_s` behind with `backlog` messages queued.
fn plan_with(
    node: &Node,
    settings: &Settings,
    lag_s: f64,
    backlog: f64,
    arrival_per_s: f64,
    batches: Vec<BatchSample>,
    limits: &Limits,
) -> Plan {
    let observed = Observed {
        pipeline: PipelineObservation {
            lag_s,
            backlog_messages: backlog,
            arrival_per_s,
            avg_row_bytes: node.row_bytes,
            batches,
            service: node.fitted.then(|| node.service()),
        },
        ..Observed::default()
    };
    plan(
        &observed,
        &untrusted(),
        settings,
        &History::default(),
        limits,
        NOW,
    )
}

/// Runs plan → apply → measure until the planner wants nothing more; returns every setting it went through.
fn search(
    node: &Node,
    start: Settings,
    lagging: bool,
    arrival_per_s: f64,
    limits: &Limits,
) -> Vec<(Settings, String)> {
    let mut settings = start;
    let mut measured = vec![node.measure(&settings)];
    let mut path = vec![(settings, "start".to_string())];
    for _ in 0..12 {
        let p = plan_once(
            node,
            &settings,
            lagging,
            arrival_per_s,
            measured.clone(),
            limits,
        );
        let Some((from, to, why)) = knob_change(&p) else {
            return path;
        };
        assert_eq!(from, settings);
        settings = to;
        path.push((settings, why));
        if !measured
            .iter()
            .any(|m| m.rows == settings.batch_rows && m.concurrency == settings.concurrency)
        {
            measured.push(node.measure(&settings));
        } else if let Some(m) = measured
            .iter_mut()
            .find(|m| m.rows == settings.batch_rows && m.concurrency == settings.concurrency)
        {
            // Same shape, new bytes: the measurement follows the setting in force.
            *m = node.measure(&settings);
        }
    }
    panic!("the planner kept changing the knobs after 12 steps: {path:#?}");
}

/// One plan at `settings` with `sample` measured, the knobs last changed `changed_s_ago` seconds before: lagging
/// means 3 s behind with 600 messages queued, else 0.2 s and none; 600 messages a second arrive.
fn plan_after_change(
    node: &Node,
    settings: &Settings,
    sample: BatchSample,
    lagging: bool,
    changed_s_ago: i64,
    limits: &Limits,
) -> Plan {
    let mut history = History::default();
    history
        .last_changed
        .insert("pipeline".to_string(), NOW - changed_s_ago);
    let observed = Observed {
        pipeline: PipelineObservation {
            lag_s: if lagging { 3.0 } else { 0.2 },
            backlog_messages: if lagging { 600.0 } else { 0.0 },
            arrival_per_s: 600.0,
            avg_row_bytes: node.row_bytes,
            batches: vec![sample],
            service: None,
        },
        ..Observed::default()
    };
    plan(&observed, &untrusted(), settings, &history, limits, NOW)
}

/// One plan at `settings` with `sample` measured, `lag_s` behind with 600 messages queued and arriving per second.
fn plan_at_lag(
    node: &Node,
    settings: &Settings,
    lag_s: f64,
    sample: BatchSample,
    limits: &Limits,
) -> Plan {
    plan_with(node, settings, lag_s, 600.0, 600.0, vec![sample], limits)
}

fn replay_node() -> Node {
    // The replay fixture's defaults: 2 workers, 8 ms per request, 2 ms per KiB of 2 KiB rows.
    Node {
        workers: 2.0,
        per_request_ms: 8.0,
        per_row_ms: 4.0,
        row_bytes: 2048.0,
        partitions: None,
        fitted: false,
    }
}

/// The replay's node with a load over 16 partitions: each round splits into a batch per partition.
fn partitioned_node() -> Node {
    Node {
        partitions: Some(16.0),
        ..replay_node()
    }
}

/// 32 rows per batch at `concurrency`, with room in the byte cap and prefetch.
fn partitioned_start(concurrency: u32) -> Settings {
    Settings {
        batch_rows: 32,
        batch_bytes: 48 * 1024,
        concurrency,
        prefetch: 512,
    }
}

fn defaults() -> Settings {
    Settings {
        batch_rows: 32,
        batch_bytes: 48 * 1024,
        concurrency: 32,
        prefetch: 256,
    }
}

#[test]
fn from_the_defaults_on_a_queueing_node_it_reaches_the_objective_in_gate_sized_steps() {
    let node = replay_node();
    let limits = limits();
    let path = search(&node, defaults(), true, 400.0, &limits);
    let (last, _) = path.last().unwrap();
    let at_last = node.measure(last);
    assert!(
        at_last.p99_ms <= limits.p99_objective_ms,
        "ended at {last:?} with p99 {:.0} ms over the objective: {path:#?}",
        at_last.p99_ms
    );
    // The best the node allows within the objective, over every setting the limits permit.
    let mut best = 0.0f64;
    for rows in [1u32, 2, 4, 8, 16, 24, 32, 64, 128] {
        for concurrency in 1..=8u32 {
            let m = node.measure(&Settings {
                batch_rows: rows,
                concurrency,
                ..defaults()
            });
            if m.p99_ms <= limits.p99_objective_ms {
                best = best.max(m.throughput_rows_per_s);
            }
        }
    }
    assert!(
        at_last.throughput_rows_per_s >= 0.9 * best,
        "ended at {last:?} with {:.0} rows/s, under 90 % of the best {best:.0} rows/s within the objective: {path:#?}",
        at_last.throughput_rows_per_s
    );
    for pair in path.windows(2) {
        let (a, b) = (pair[0].0, pair[1].0);
        for (x, y) in [
            (a.batch_rows, b.batch_rows),
            (a.concurrency, b.concurrency),
            (a.prefetch, b.prefetch),
        ] {
            assert!(
                f64::from(x.max(y)) <= 4.0 * f64::from(x.min(y)),
                "step {a:?} → {b:?} moves a knob more than 4×"
            );
        }
        assert!(
            b.batch_bytes <= limits.batch_bytes_max,
            "batch bytes {} over the ceiling",
            b.batch_bytes
        );
    }
    assert!(
        path.iter()
            .any(|(_, why)| why.contains("probing an unmeasured setting")),
        "only the defaults were measured, so reaching the objective needs a probe: {path:#?}"
    );
}

#[test]
fn a_pipeline_within_its_objectives_is_left_alone() {
    let node = replay_node();
    let limits = limits();
    let good = Settings {
        batch_rows: 32,
        batch_bytes: 48 * 1024,
        concurrency: 2,
        prefetch: 128,
    };
    assert!(node.measure(&good).p99_ms <= limits.p99_objective_ms);
    let path = search(&node, good, false, 100.0, &limits);
    assert_eq!(
        path.len(),
        1,
        "nothing was wrong, yet it changed: {path:#?}"
    );
}

#[test]
fn full_batches_grow_when_capacity_falls_short_and_p99_has_room() {
    // Small rows, a fast node: one row per batch leaves most of each request's fixed cost unshared.
    let node = Node {
        workers: 8.0,
        per_request_ms: 2.0,
        per_row_ms: 0.01,
        row_bytes: 100.0,
        partitions: None,
        fitted: false,
    };
    let limits = limits();
    let start = Settings {
        batch_rows: 4,
        batch_bytes: 48 * 1024,
        concurrency: 2,
        prefetch: 64,
    };
    let before = node.measure(&start).throughput_rows_per_s;
    // Arrivals well above what 4-row batches at concurrency 2 carry.
    let path = search(&node, start, true, 4.0 * before, &limits);
    let (last, _) = path.last().unwrap();
    assert!(
        last.batch_rows > start.batch_rows,
        "batches stayed at {} rows: {path:#?}",
        last.batch_rows
    );
    assert!(
        node.measure(last).throughput_rows_per_s > 2.0 * before,
        "capacity did not grow: {path:#?}"
    );
}

/// Fewer writes in flight on a queueing node is relief, which the executor lets cost some throughput. With a
/// backlog and no errors to cut, throughput is what clears the lag, so the same step carries no relief figure and
/// is judged like any change; with write timeouts it is relief again.
#[test]
fn relief_is_claimed_under_a_backlog_only_when_there_are_errors_to_cut() {
    let node = replay_node();
    let settings = defaults();
    let relief_figure = |lagging: bool, error_share: f64| {
        let mut sample = node.measure(&settings);
        sample.error_share = error_share;
        let p = plan_once(&node, &settings, lagging, 100.0, vec![sample], &limits());
        let change = p
            .changes
            .iter()
            .find(|c| matches!(c.action, Action::SetKnobs { from, to } if to.concurrency < from.concurrency))
            .unwrap_or_else(|| panic!("fewer writes in flight is planned: {p:#?}"));
        change.reason.figures.contains_key("relief_of_p99_ms")
    };
    assert!(relief_figure(false, 0.0), "no backlog: relief");
    assert!(
        relief_figure(true, 0.10),
        "a backlog with 10 % timeouts: relief"
    );
    assert!(
        !relief_figure(true, 0.0),
        "a backlog without errors: judged like any change"
    );
}

#[test]
fn an_overload_cut_halves_the_writes_actually_in_flight_within_the_step_limit() {
    let node = replay_node();
    let limits = limits();
    // What the planner cuts `concurrency` to when its batches show `p99_ms` with `in_flight` writes in flight on
    // average, and whether the reason says so.
    let cut = |concurrency: u32, in_flight: f64, p99_ms: f64, error_share: f64| {
        let settings = Settings {
            concurrency,
            ..defaults()
        };
        let sample = BatchSample {
            p99_ms,
            error_share,
            writes_in_flight: Some(in_flight),
            ..node.measure(&settings)
        };
        let p = plan_once(&node, &settings, true, 300.0, vec![sample], &limits);
        let (_, to, why) = knob_change(&p).expect("an overloaded setting is changed");
        assert!(
            why.contains(&format!("{in_flight:.1} writes in flight")),
            "{why}"
        );
        // A cut raises nothing else (at 32x32 a prefetch of 256 is short of a round of batches), so it passes
        // a drop to recommend for thin history.
        assert_eq!(to.prefetch, settings.prefetch, "{why}");
        to.concurrency
    };
    // 8 allowed, all busy, p99 332 ms against 250: half of the 8 in flight, not a quarter of the allowance.
    assert_eq!(cut(8, 8.0, 332.0, 0.0), 4);
    // 32 allowed with 13 in flight: half of 13 is 7, which a quarter of 32 (the step limit) bounds at 8.
    assert_eq!(cut(32, 13.0, 272.0, 0.0), 8);
    // 16 allowed, 12 in flight, p99 four times the objective: in-flight × aim / p99 = 12 × 225 / 1000 = 2.7,
    // which the step limit bounds at 4.
    assert_eq!(cut(16, 12.0, 1000.0, 0.0), 4);
    // 8 allowed, p99 far over: 8 × 225 / 1000 = 1.8, so 2.
    assert_eq!(cut(8, 8.0, 1000.0, 0.0), 2);
    // Errors alone (p99 in bounds): half of the 6 in flight.
    assert_eq!(cut(16, 6.0, 100.0, 0.05), 4);
}

#[test]
fn a_node_still_overloaded_after_a_cut_is_cut_again_after_the_relief_cooldown_and_a_raise_waits_the_full_one(
) {
    let node = replay_node();
    let limits = Limits {
        cooldown_s: 600,
        relief_cooldown_s: 120,
        ..limits()
    };
    let plan_after =
        |settings: &Settings, sample: BatchSample, lagging: bool, changed_s_ago: i64| {
            plan_after_change(&node, settings, sample, lagging, changed_s_ago, &limits)
        };

    // 32xC measured with all C writes in flight at `p99_ms`.
    let at = |concurrency: u32, p99_ms: f64| {
        let settings = Settings {
            concurrency,
            ..defaults()
        };
        let sample = BatchSample {
            p99_ms,
            writes_in_flight: Some(f64::from(concurrency)),
            ..node.measure(&settings)
        };
        (settings, sample)
    };
    // No knob change, and the skip says which cooldown held it.
    let held = |p: &Plan, why: &str| {
        assert!(knob_change(p).is_none(), "{p:#?}");
        assert!(
            p.skipped.iter().any(|s| s.reason.contains(why)),
            "{why}: {:?}",
            p.skipped
        );
    };

    // 32x8 at p99 332 ms against 250: the node is still overloaded.
    let (eight, overloaded) = at(8, 332.0);
    held(
        &plan_after(&eight, overloaded.clone(), false, 60),
        "relief cooldown: knobs changed 60 s ago, relief cooldown 120 s",
    );
    let later = plan_after(&eight, overloaded, false, 150);
    let (_, to, _) = knob_change(&later).expect("a second cut once the relief cooldown has passed");
    assert_eq!(to.concurrency, 4);

    // 32x2 within the objective but short of capacity while lagging: the probe up waits the full cooldown.
    let (two, short) = at(2, 60.0);
    held(
        &plan_after(&two, short.clone(), true, 150),
        "cooldown: knobs changed 150 s ago, cooldown 600 s",
    );
    let (_, to, _) =
        knob_change(&plan_after(&two, short, true, 600)).expect("a probe up after the cooldown");
    assert!(to.concurrency > 2, "{to:?}");
}

#[test]
fn writes_the_node_only_queues_are_cut_to_one_waiting_per_worker_and_not_raised_back() {
    let node = replay_node();
    let limits = Limits {
        cooldown_s: 600,
        relief_cooldown_s: 120,
        ..limits()
    };
    let at = |concurrency: u32| Settings {
        concurrency,
        ..defaults()
    };
    let plan_after =
        |settings: &Settings, sample: BatchSample, lagging: bool, changed_s_ago: i64| {
            plan_after_change(&node, settings, sample, lagging, changed_s_ago, &limits)
        };

    // 32x8 on the 2-worker node with a light load: p99 within the objective, no errors, no lag, but each write
    // took 4 lone service times with 8 in flight.
    let eight = BatchSample {
        p99_ms: 200.0,
        ..node.measure(&at(8))
    };
    assert_eq!(eight.queueing, Some(4.0));
    let (_, to, why) = knob_change(&plan_after(&at(8), eight.clone(), false, 600))
        .expect("writes that only queue are cut");
    // 8 in flight / 4 = 2 workers; twice that keeps one write waiting behind each.
    assert_eq!(to.concurrency, 4, "{why}");
    assert!(why.contains("serves about 2.0 at once"), "{why}");
    // It sheds load from a queueing node, so it follows the last knob change after the relief cooldown.
    assert!(
        knob_change(&plan_after(&at(8), eight.clone(), false, 150)).is_some(),
        "held past the relief cooldown"
    );
    // The fit is noisy: 8 in flight at 5.3 service times reads as 1.5 workers. A node serves a whole number at
    // once, so the cut still keeps one write waiting behind each of two, not three writes for one and a half.
    let noisy = BatchSample {
        queueing: Some(8.0 / 1.5),
        ..eight.clone()
    };
    let (_, to, why) = knob_change(&plan_after(&at(8), noisy, false, 600)).expect("cut");
    assert_eq!(to.concurrency, 4, "{why}");
    assert!(why.contains("serves about 1.5 at once"), "{why}");
    // Without a service-time figure there is no evidence of queueing, and a setting in bounds stays.
    let unknown = BatchSample {
        queueing: None,
        ..eight
    };
    assert!(knob_change(&plan_after(&at(8), unknown, false, 600)).is_none());

    // Where the cut lands, writes take 2 service times: short of capacity with p99 under half the objective,
    // it is still not probed up, because more writes in flight would wait too.
    let four = BatchSample {
        p99_ms: 100.0,
        ..node.measure(&at(4))
    };
    assert_eq!(four.queueing, Some(2.0));
    assert!(
        knob_change(&plan_after(&at(4), four.clone(), true, 600)).is_none(),
        "{:#?}",
        plan_after(&at(4), four.clone(), true, 600)
    );
    // Writes that hardly waited for each other (1.2 service times) leave room: the probe up goes ahead.
    let roomy = BatchSample {
        queueing: Some(1.2),
        ..four
    };
    let (_, to, why) = knob_change(&plan_after(&at(4), roomy, true, 600))
        .expect("a probe up when the node has room");
    assert!(to.concurrency > 4, "{why}");
}

/// With a backlog spread over 16 partitions, a chunk of 32 × 4 rows becomes batches of 8. Far behind, with every
/// write slot busy and no room at the node for more writes in flight (each already waits for another), the round
/// grows instead: more rows per batch, the same writes in flight, more throughput. Keeping up, just over the lag
/// objective, with slots to spare or with the p99 past half the objective, the batch stays.
#[test]
fn far_behind_with_no_room_for_more_writes_the_round_grows_instead() {
    let node = partitioned_node();
    let limits = limits();
    let start = partitioned_start(4);
    let at_start = node.measure(&start);
    assert_eq!(at_start.mean_rows, 8.0);
    assert_eq!(at_start.queueing, Some(2.0));
    assert!(
        at_start.p99_ms <= limits.p99_objective_ms * 0.5,
        "{at_start:?}"
    );

    let path = search(
        &node,
        start,
        true,
        2.0 * at_start.throughput_rows_per_s,
        &limits,
    );
    let (last, why) = path.last().unwrap();
    assert_eq!(last.concurrency, 4, "writes in flight changed: {path:#?}");
    assert!(last.batch_rows > 32, "the batch stayed: {path:#?}");
    assert!(why.contains("larger round"), "{why}");
    let at_last = node.measure(last);
    assert!(
        at_last.throughput_rows_per_s > at_start.throughput_rows_per_s * 1.05,
        "no more throughput: {at_start:?} then {at_last:?}"
    );
    assert!(at_last.p99_ms <= limits.p99_objective_ms, "{at_last:?}");

    // Measured again in a lull, where chunks no longer fill, the larger round reads low. The figure the smaller
    // one got under the backlog does not take it back: with the same writes in flight it carries fewer rows.
    let lull = BatchSample {
        throughput_rows_per_s: at_start.throughput_rows_per_s * 0.8,
        mean_rows: 6.0,
        ..at_last.clone()
    };
    let plan = plan_once(
        &node,
        last,
        true,
        2.0 * at_start.throughput_rows_per_s,
        vec![at_start.clone(), lull],
        &limits,
    );
    if let Some((_, to, why)) = knob_change(&plan) {
        assert!(to.batch_rows >= last.batch_rows, "back to {to:?}: {why}");
    }

    // Keeping up, nothing calls for capacity.
    let plan = plan_after_change(&node, &start, at_start.clone(), false, 600, &limits);
    assert!(knob_change(&plan).is_none(), "{plan:#?}");
    // Just over the lag objective, each message's wait for a longer chunk would cost more than the rows gained.
    let plan = plan_at_lag(&node, &start, 1.2, at_start.clone(), &limits);
    assert!(knob_change(&plan).is_none(), "{plan:#?}");
    assert!(
        knob_change(&plan_at_lag(&node, &start, 1.6, at_start.clone(), &limits)).is_some(),
        "far behind, the round grows"
    );
    // Write slots to spare (the tail of a burst): the node is not what holds the pipeline back.
    let spare = BatchSample {
        slot_share: Some(0.5),
        ..at_start.clone()
    };
    let plan = plan_at_lag(&node, &start, 3.0, spare, &limits);
    assert!(knob_change(&plan).is_none(), "{plan:#?}");
    // Writes already slow: twice the rows could take the p99 past its objective.
    let slow = BatchSample {
        p99_ms: 200.0,
        ..at_start
    };
    let plan = plan_after_change(&node, &start, slow, true, 600, &limits);
    assert!(knob_change(&plan).is_none(), "{plan:#?}");
}

#[test]
fn a_cut_of_writes_in_flight_keeps_the_round_the_partitions_split() {
    // 16 partitions split each round, so at 32x8 a batch carries 16 rows where 32 are allowed.
    let node = partitioned_node();
    let limits = limits();
    let start = partitioned_start(8);
    let at_start = node.measure(&start);
    assert_eq!(at_start.mean_rows, 16.0);
    assert!(at_start.p99_ms > limits.p99_objective_ms, "{at_start:?}");

    let plan = plan_once(&node, &start, true, 600.0, vec![at_start.clone()], &limits);
    let (_, to, why) = knob_change(&plan).expect("p99 over the objective: a cut");
    assert_eq!(to.concurrency, 4, "{why}");
    assert_eq!(to.batch_rows, 64, "{why}");
    assert!(why.contains("keeps the round of 256 rows"), "{why}");
    let kept = node.measure(&to);
    assert_eq!(kept.mean_rows, at_start.mean_rows, "{kept:?}");
    assert!(kept.p99_ms <= limits.p99_objective_ms, "{kept:?}");
    assert!(
        kept.throughput_rows_per_s >= at_start.throughput_rows_per_s * 0.99,
        "the cut lost throughput: {at_start:?} then {kept:?}"
    );
    // What the cut alone would have done: half the rows per batch, and less throughput.
    let alone = node.measure(&Settings {
        concurrency: 4,
        ..start
    });
    assert_eq!(alone.mean_rows, 8.0);
    assert!(alone.throughput_rows_per_s < kept.throughput_rows_per_s * 0.95);

    // A round the load left short of its cap (a burst that filled 48 rows of 256) is carried by 32x4 already.
    let light = BatchSample {
        round_rows: Some(48.0),
        mean_rows: 3.0,
        ..at_start.clone()
    };
    let plan = plan_once(&node, &start, true, 600.0, vec![light], &limits);
    let (_, to, why) = knob_change(&plan).expect("p99 over the objective: a cut");
    assert_eq!((to.batch_rows, to.concurrency), (32, 4), "{why}");

    // Full batches: the row cap, not the partitions, sets the rows per batch, and fewer writes in flight keep it.
    let full = BatchSample {
        mean_rows: 32.0,
        ..at_start
    };
    let plan = plan_once(&node, &start, true, 600.0, vec![full], &limits);
    let (_, to, why) = knob_change(&plan).expect("p99 over the objective: a cut");
    assert_eq!((to.batch_rows, to.concurrency), (32, 4), "{why}");
}

#[test]
fn a_kept_round_is_held_back_toward_two_rounds_of_writes_within_the_lag_objective() {
    // At 32x8 over 16 partitions a round of 256 rows takes the node (16 × 8 + 256 × 4) / 2 = 576 ms: a message
    // arriving as it is cut waits about two of them, past the 1 s lag objective. With the service time known,
    // the cut to 4 writes in flight keeps a smaller round, toward the one whose two writes fit 75 % of the
    // objective (167 rows, scaled in proportion to the rows), held back by at most a quarter (to 192).
    let node = Node {
        fitted: true,
        ..partitioned_node()
    };
    let limits = limits();
    let start = partitioned_start(8);
    let at_start = node.measure(&start);
    let observed =
        |limits: &Limits| plan_once(&node, &start, true, 600.0, vec![at_start.clone()], limits);
    assert!(2.0 * node.round_ms(256.0, 16.0) > 1_000.0);

    let (_, to, why) = knob_change(&observed(&limits)).expect("p99 over the objective: a cut");
    assert_eq!((to.batch_rows, to.concurrency), (48, 4), "{why}");
    assert!(
        why.contains("keeps a round of 192 of the 256 rows measured"),
        "{why}"
    );
    assert!(why.contains("two rounds of 167 rows"), "{why}");
    let round = f64::from(to.batch_rows * to.concurrency);
    assert!(node.round_ms(round, 16.0) < node.round_ms(256.0, 16.0) * 0.8);
    // Still more rows per write than the cut alone (32x4, 8 rows a batch) would leave.
    assert!(node.measure(&to).mean_rows > 8.0);

    // Under a lag objective of 30 s the whole round fits, and is kept.
    let relaxed = Limits {
        lag_objective_s: 30.0,
        ..limits
    };
    let (_, to, why) = knob_change(&observed(&relaxed)).expect("p99 over the objective: a cut");
    assert_eq!((to.batch_rows, to.concurrency), (64, 4), "{why}");
    assert!(why.contains("keeps the round of 256 rows"), "{why}");
}
