//! Property tests of the planner: idempotent, never breaks a hard constraint, stable under small noise, deterministic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use trimtab::planner::{
    plan, project, violations, Action, ArrivalForecast, Automation, BatchSample, ForecastTrust,
    ForecastView, History, Limits, NodeState, Observed, PipelineObservation, Plan, PoolForecast,
    PoolState, ReplicaState, ResourceState, Settings,
};

const NOW: i64 = 1_800_000_000;
const ROWS: [u32; 4] = [10, 25, 50, 100];
const CONC: [u32; 4] = [1, 2, 4, 8];

/// Second-plan changes that undo what the first plan decided: a knob the first plan changed set back to its old
/// value, or a replica put back on a node the first plan moved it off. (Noise on a value the planner never decided, sitting
/// exactly on a threshold, can move it; no threshold can prevent that, so it is not counted.)
fn reversals(first: &Plan, second: &Plan) -> Vec<Action> {
    let vacated: Vec<(&str, &str)> = first
        .changes
        .iter()
        .filter_map(|c| match &c.action {
            Action::MoveReplica {
                resource,
                from_node,
                ..
            } => Some((resource.as_str(), from_node.as_str())),
            _ => None,
        })
        .collect();
    second
        .changes
        .iter()
        .filter(|c| match &c.action {
            Action::SetKnobs { to, .. } => first.changes.iter().any(|f| match &f.action {
                Action::SetKnobs {
                    from: f_from,
                    to: f_to,
                } => {
                    let shape = |s: &trimtab::planner::Settings| (s.batch_rows, s.concurrency);
                    (shape(f_from) != shape(f_to) && shape(to) == shape(f_from))
                        || (f_from.batch_bytes != f_to.batch_bytes
                            && to.batch_bytes == f_from.batch_bytes)
                        || (f_from.prefetch != f_to.prefetch && to.prefetch == f_from.prefetch)
                }
                _ => false,
            }),
            Action::AddReplica { resource, node, .. }
            | Action::MoveReplica {
                resource,
                to_node: node,
                ..
            } => vacated.contains(&(resource.as_str(), node.as_str())),
            _ => false,
        })
        .map(|c| c.action.clone())
        .collect()
}

#[derive(Debug, Clone)]
struct World {
    observed: Observed,
    forecast: ForecastView,
    settings: Settings,
}

fn world() -> impl Strategy<Value = World> {
    (
        (1usize..4).prop_map(|k| k * 3),
        prop::collection::vec(
            (
                5_000u64..80_000,
                2u32..4,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            ),
            1..40,
        ),
        prop::collection::vec(0u64..400_000, 9),
        prop::collection::vec(0u64..150_000, 9),
        (1.0f64..5.0, 50.0f64..400.0, 5.0f64..40.0, 0.01f64..0.2),
        (
            0usize..4,
            0usize..4,
            30.0f64..200.0,
            0.0f64..90.0,
            0.0f64..5_000.0,
        ),
        (any::<bool>(), 0.3f64..1.6, 0u32..200, 10.0f64..3_000.0),
    )
        .prop_map(
            |(
                n_nodes,
                res_specs,
                extra_used,
                growth,
                (k, c0, base, slope),
                (ri, ci, row_bytes, lag, backlog),
                (fc, mase, hist, upper),
            )| {
                let nodes: Vec<NodeState> = (0..n_nodes)
                    .map(|i| NodeState {
                        name: format!("n{i}"),
                        online: true,
                        evicted: false,
                        aux: BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]),
                    })
                    .collect();
                let total = 1_000_000u64;
                let mut used = vec![0u64; n_nodes];
                let mut resources = Vec::new();
                for (i, (size, place, zoned, degraded, balance_off)) in
                    res_specs.into_iter().enumerate()
                {
                    // Place on consecutive nodes so zones (i % 3) are distinct for up to 3 replicas.
                    let mut replicas = Vec::new();
                    for j in 0..place as usize {
                        let node = (i + j) % n_nodes;
                        if used[node] + size > total * 7 / 10 {
                            continue;
                        }
                        used[node] += size;
                        replicas.push(ReplicaState {
                            node: format!("n{node}"),
                            pool: "data".into(),
                            diskful: true,
                            up_to_date: true,
                            in_use: j == 0 && i % 4 == 0,
                        });
                    }
                    if degraded && replicas.len() > 1 {
                        let gone = replicas.pop().map(|r| r.node).unwrap_or_default();
                        let idx: usize = gone[1..].parse().unwrap_or(0);
                        used[idx] -= size;
                    }
                    resources.push(ResourceState {
                        name: format!("r{i:03}"),
                        place_count: place,
                        size_kib: size,
                        replicas_on_different: if zoned && n_nodes >= 3 {
                            vec!["Aux/zone".into()]
                        } else {
                            vec![]
                        },
                        replicas,
                        balance_resources: balance_off.then_some(false),
                        under_replicated_since: degraded.then_some(NOW - 100),
                    });
                }
                let pools = (0..n_nodes)
                    .map(|i| PoolState {
                        node: format!("n{i}"),
                        name: "data".into(),
                        total_kib: total,
                        free_kib: total - (used[i] + extra_used[i]).min(total),
                    })
                    .collect();
                let mut batches = Vec::new();
                for &r in &ROWS {
                    for &c in &CONC {
                        let work = f64::from(r * c);
                        batches.push(BatchSample {
                            rows: r,
                            concurrency: c,
                            throughput_rows_per_s: k * work * 100.0 / (1.0 + work / c0),
                            p99_ms: base + slope * work,
                            ..Default::default()
                        });
                    }
                }
                let observed = Observed {
                    nodes,
                    pools,
                    resources,
                    automation: Automation::default(),
                    pipeline: PipelineObservation {
                        lag_s: lag,
                        backlog_messages: backlog,
                        arrival_per_s: upper * 0.8,
                        avg_row_bytes: row_bytes,
                        batches,
                        service: None,
                    },
                };
                let forecast = ForecastView {
                    horizon_s: 3600,
                    arrival: fc.then_some(ArrivalForecast {
                        mean_per_s: upper * 0.8,
                        upper_per_s: upper,
                    }),
                    pools: (0..n_nodes)
                        .map(|i| PoolForecast {
                            node: format!("n{i}"),
                            pool: "data".into(),
                            growth_kib_upper: growth[i],
                        })
                        .collect(),
                    trust: ForecastTrust {
                        history_points: hist,
                        rolling_mase: Some(mase),
                    },
                };
                let settings = Settings {
                    batch_rows: ROWS[ri],
                    batch_bytes: 4096,
                    concurrency: CONC[ci],
                    prefetch: 100,
                };
                World {
                    observed,
                    forecast,
                    settings,
                }
            },
        )
}

fn wide_limits() -> Limits {
    Limits {
        max_changes_per_step: 10_000,
        ..Limits::default()
    }
}

/// Multiplies `x` by 1 + `e` × `scale`, e in [-1, 1].
fn wiggle(x: f64, e: f64, scale: f64) -> f64 {
    x * (1.0 + e * scale)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn planning_again_from_the_projected_state_changes_nothing(w in world()) {
        let limits = wide_limits();
        let history = History::default();
        let first = plan(&w.observed, &w.forecast, &w.settings, &history, &limits, NOW);
        let (after, settings) = project(&w.observed, &w.settings, &first);
        let mut history = history;
        history.record(&first, NOW);
        // The next step of the control loop: the plan's targets are in their cooldown.
        let next = plan(&after, &w.forecast, &settings, &history, &limits, NOW + 30);
        prop_assert!(next.changes.is_empty(), "next step changed {:#?}", next.changes);
        // Past every cooldown: the planner may continue work it had to leave (one change per resource per
        // step), but never touches the knobs again nor undoes a move.
        let later = NOW + limits.cooldown_s + 1;
        let second = plan(&after, &w.forecast, &settings, &history, &limits, later);
        prop_assert!(reversals(&first, &second).is_empty(), "second plan changed {:#?}\nafter first {:#?}",
            second.changes.iter().map(|c| (&c.action, &c.reason.summary)).collect::<Vec<_>>(),
            first.changes.iter().map(|c| (&c.action, &c.reason.summary)).collect::<Vec<_>>());
    }

    #[test]
    fn no_plan_breaks_a_hard_constraint(w in world()) {
        let limits = wide_limits();
        let p = plan(&w.observed, &w.forecast, &w.settings, &History::default(), &limits, NOW);
        let (after, settings) = project(&w.observed, &w.settings, &p);
        let broken = violations(&w.observed, &after, &p, limits.pool_drain_to);
        prop_assert!(broken.is_empty(), "{broken:?} in {:#?}", p.changes);
        prop_assert!(settings.batch_bytes <= limits.batch_bytes_max.max(w.settings.batch_bytes), "batch bytes {} above the ceiling", settings.batch_bytes);
        if let Some(s) = w.observed.pipeline.batches.iter().find(|s| s.rows == settings.batch_rows && s.concurrency == settings.concurrency) {
            if settings != w.settings {
                prop_assert!(s.p99_ms <= limits.p99_objective_ms, "chose p99 {} over objective", s.p99_ms);
                let ceiling = s.throughput_rows_per_s * limits.lock_duration_s * limits.prefetch_lock_fraction;
                prop_assert!(f64::from(settings.prefetch) <= ceiling.max(1.0), "prefetch {} above lock ceiling {ceiling}", settings.prefetch);
            }
        }
        prop_assert!(p.changes.iter().all(|c| c.action.verb() != "delete_resource" && c.action.verb() != "remove_replica"));
    }

    #[test]
    fn small_noise_after_acting_does_not_flip_the_plan(w in world(), noise in prop::collection::vec(-1.0f64..1.0, 64)) {
        let limits = wide_limits();
        let first = plan(&w.observed, &w.forecast, &w.settings, &History::default(), &limits, NOW);
        let (mut after, settings) = project(&w.observed, &w.settings, &first);
        let mut e = noise.iter().cycle();
        for s in &mut after.pipeline.batches {
            s.throughput_rows_per_s = wiggle(s.throughput_rows_per_s, *e.next().unwrap(), 0.01);
            s.p99_ms = wiggle(s.p99_ms, *e.next().unwrap(), 0.01);
        }
        after.pipeline.avg_row_bytes = wiggle(after.pipeline.avg_row_bytes, *e.next().unwrap(), 0.01);
        for p in &mut after.pools {
            let shift = (*e.next().unwrap() * 0.002 * p.total_kib as f64) as i64;
            p.free_kib = (p.free_kib as i64 + shift).clamp(0, p.total_kib as i64) as u64;
        }
        let mut history = History::default();
        history.record(&first, NOW);
        let next = plan(&after, &w.forecast, &settings, &history, &limits, NOW + 30);
        let flipped = reversals(&first, &next);
        prop_assert!(flipped.is_empty(), "noise flipped the next step: {:#?}", flipped);
        let second = plan(&after, &w.forecast, &settings, &history, &limits, NOW + limits.cooldown_s + 1);
        let flipped = reversals(&first, &second);
        prop_assert!(flipped.is_empty(), "noise flipped the plan: {:#?}\nfirst: {:#?}", flipped, first.changes.iter().map(|c| (&c.action, &c.reason.summary)).collect::<Vec<_>>());
    }

    #[test]
    fn the_same_inputs_give_the_same_plan(w in world()) {
        let limits = Limits::default();
        let a = plan(&w.observed, &w.forecast, &w.settings, &History::default(), &limits, NOW);
        let b = plan(&w.observed, &w.forecast, &w.settings, &History::default(), &limits, NOW);
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        prop_assert!(a.changes.len() <= limits.max_changes_per_step);
    }
}
