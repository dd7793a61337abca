//! Planning time against cluster size: 1,000 resources on 100 nodes (goal under 50 ms) and how it grows.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use trimtab::planner::{
    plan, ArrivalForecast, Automation, BatchSample, ForecastTrust, ForecastView, History, Limits,
    NodeState, Observed, PipelineObservation, PoolForecast, PoolState, ReplicaState, ResourceState,
    Settings,
};

/// A small deterministic generator (64-bit LCG), so every run plans the same clusters.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NOW: i64 = 1_800_000_000;

/// `resources` resources with 2–3 replicas in distinct zones across `nodes` nodes, some pools near full,
/// some resources under-replicated with BalanceResources off, and a pipeline batch table.
fn cluster(resources: usize, nodes: usize, seed: u64) -> (Observed, ForecastView) {
    let mut rng = Lcg(seed);
    let total = 10_000_000u64;
    let mut used = vec![0u64; nodes];
    let mut res = Vec::with_capacity(resources);
    for i in 0..resources {
        let size = 5_000 + rng.below(50_000);
        let place = 2 + rng.below(2) as u32;
        let start = rng.below(nodes as u64) as usize;
        let mut replicas = Vec::new();
        for j in 0..place as usize {
            // Consecutive nodes are in consecutive zones (node % 3), so up to three replicas are zone-distinct.
            let n = (start + j) % nodes;
            used[n] += size;
            replicas.push(ReplicaState {
                node: format!("n{n}"),
                pool: "data".into(),
                diskful: true,
                up_to_date: true,
                in_use: j == 0,
            });
        }
        let degraded = rng.below(50) == 0;
        if degraded {
            if let Some(r) = replicas.pop() {
                let n: usize = r.node[1..].parse().unwrap_or(0);
                used[n] -= size;
            }
        }
        res.push(ResourceState {
            name: format!("pvc-{i:05}"),
            place_count: place,
            size_kib: size,
            replicas_on_different: vec!["Aux/zone".into()],
            replicas,
            balance_resources: degraded.then_some(false),
            under_replicated_since: degraded.then_some(NOW - 60),
        });
    }
    let nodes_v = (0..nodes)
        .map(|i| NodeState {
            name: format!("n{i}"),
            online: true,
            evicted: false,
            aux: BTreeMap::from([("zone".to_string(), format!("z{}", i % 3))]),
        })
        .collect();
    let pools = (0..nodes)
        .map(|i| {
            // One pool in ten is nearly full already.
            let extra = if i % 10 == 0 {
                total * 8 / 10
            } else {
                rng.below(total / 3)
            };
            PoolState {
                node: format!("n{i}"),
                name: "data".into(),
                total_kib: total,
                free_kib: total.saturating_sub(used[i] + extra),
            }
        })
        .collect();
    let mut batches = Vec::new();
    for rows in [10u32, 25, 50, 100] {
        for conc in [1u32, 2, 4, 8] {
            let work = f64::from(rows * conc);
            batches.push(BatchSample {
                rows,
                concurrency: conc,
                throughput_rows_per_s: 40.0 * work / (1.0 + work / 400.0),
                p99_ms: 5.0 + work * 0.07,
                ..Default::default()
            });
        }
    }
    let observed = Observed {
        nodes: nodes_v,
        pools,
        resources: res,
        automation: Automation::default(),
        pipeline: PipelineObservation {
            lag_s: 40.0,
            backlog_messages: 20_000.0,
            arrival_per_s: 900.0,
            avg_row_bytes: 40.0,
            batches,
            service: None,
        },
    };
    let forecast = ForecastView {
        horizon_s: 6 * 3600,
        arrival: Some(ArrivalForecast {
            mean_per_s: 1000.0,
            upper_per_s: 1300.0,
        }),
        pools: (0..nodes)
            .map(|i| PoolForecast {
                node: format!("n{i}"),
                pool: "data".into(),
                growth_kib_upper: total / 20,
            })
            .collect(),
        trust: ForecastTrust {
            history_points: 500,
            rolling_mase: Some(0.7),
        },
    };
    (observed, forecast)
}

/// Median and minimum wall time of `plan` over `runs` runs, and the number of changes it planned.
fn time(
    resources: usize,
    nodes: usize,
    runs: usize,
    limits: &Limits,
) -> (Duration, Duration, usize) {
    let (observed, forecast) = cluster(resources, nodes, 42);
    let settings = Settings {
        batch_rows: 10,
        batch_bytes: 1024,
        concurrency: 1,
        prefetch: 50,
    };
    let history = History::default();
    let mut times = Vec::with_capacity(runs);
    let mut changes = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let p = plan(&observed, &forecast, &settings, &history, limits, NOW);
        times.push(start.elapsed());
        changes = p.changes.len();
        std::hint::black_box(p);
    }
    times.sort();
    (times[times.len() / 2], times[0], changes)
}

fn main() {
    let profile = if cfg!(debug_assertions) {
        "with debug assertions (likely unoptimised)"
    } else {
        "without debug assertions (optimised)"
    };
    println!("planner benchmark, built {profile}; median of N runs per row, default limits (10 changes per step)");
    let limits = Limits::default();
    let sizes = [
        (100, 10),
        (1_000, 10),
        (1_000, 100),
        (10_000, 100),
        (1_000, 1_000),
        (10_000, 1_000),
    ];
    let mut rows = Vec::new();
    for (resources, nodes) in sizes {
        let runs = if resources * nodes >= 10_000_000 {
            5
        } else {
            21
        };
        let (median, min, changes) = time(resources, nodes, runs, &limits);
        rows.push((resources, nodes, runs, median, min, changes));
    }
    let base = rows[0].3.as_secs_f64();
    println!(
        "{:>10} {:>6} {:>5} {:>12} {:>12} {:>8} {:>14} {:>12}",
        "resources",
        "nodes",
        "runs",
        "median ms",
        "min ms",
        "changes",
        "× 100/10 row",
        "µs/resource"
    );
    for (resources, nodes, runs, median, min, changes) in &rows {
        println!(
            "{:>10} {:>6} {:>5} {:>12.3} {:>12.3} {:>8} {:>14.1} {:>12.2}",
            resources,
            nodes,
            runs,
            median.as_secs_f64() * 1e3,
            min.as_secs_f64() * 1e3,
            changes,
            median.as_secs_f64() / base,
            median.as_secs_f64() * 1e6 / *resources as f64
        );
    }
    let goal = rows
        .iter()
        .find(|r| r.0 == 1_000 && r.1 == 100)
        .map(|r| r.3)
        .unwrap_or_default();
    println!(
        "1,000 resources on 100 nodes: {:.3} ms against a 50 ms goal ({})",
        goal.as_secs_f64() * 1e3,
        if goal < Duration::from_millis(50) {
            "met"
        } else {
            "missed"
        }
    );
}
