//! Placement: add missing replicas, move replicas off pools forecast to fill up, and rebalance skew.
//!
//! Works on a projected copy of the cluster, so every change is planned against the state the earlier
//! changes of the same plan leave behind; hard constraints (no two replicas on one node, zones distinct for
//! `replicas_on_different`, destination fill under `pool_drain_to`, never fewer diskful replicas) hold for
//! the projection as a whole.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{Action, ForecastView, History, Observed, Reason, ResourceState};
use super::{Limits, Step};

/// The `Aux/` key a `replicas_on_different` entry refers to, without its prefix.
pub(crate) fn aux_key(key: &str) -> &str {
    key.strip_prefix("Aux/").unwrap_or(key)
}

struct Pool<'a> {
    node: &'a str,
    name: &'a str,
    total: u64,
    used: u64,
    growth: u64,
}

impl Pool<'_> {
    fn fill_now(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.used as f64 / self.total as f64
        }
    }
    fn fill_at_horizon(&self, extra: u64) -> f64 {
        if self.total == 0 {
            f64::INFINITY
        } else {
            (self.used + self.growth + extra) as f64 / self.total as f64
        }
    }
}

#[derive(Clone)]
struct Rep<'a> {
    node: &'a str,
    pool: Option<usize>,
    diskful: bool,
    in_use: bool,
}

/// The projected cluster the placement phases mutate as they plan.
struct Cluster<'a> {
    observed: &'a Observed,
    nodes: HashMap<&'a str, usize>,
    evacuating: BTreeSet<&'a str>,
    pools: Vec<Pool<'a>>,
    residents: Vec<BTreeSet<usize>>,
    replicas: Vec<Vec<Rep<'a>>>,
    touched: Vec<bool>,
}

impl<'a> Cluster<'a> {
    fn new(observed: &'a Observed, forecast: &ForecastView) -> Self {
        let nodes = observed
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let growth: HashMap<(&str, &str), u64> = forecast
            .pools
            .iter()
            .map(|p| ((p.node.as_str(), p.pool.as_str()), p.growth_kib_upper))
            .collect();
        let pools: Vec<Pool> = observed
            .pools
            .iter()
            .map(|p| Pool {
                node: &p.node,
                name: &p.name,
                total: p.total_kib,
                used: p.total_kib.saturating_sub(p.free_kib),
                growth: growth
                    .get(&(p.node.as_str(), p.name.as_str()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        let pool_idx: HashMap<(&str, &str), usize> = pools
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.node, p.name), i))
            .collect();
        let mut residents = vec![BTreeSet::new(); pools.len()];
        let replicas: Vec<Vec<Rep>> = observed
            .resources
            .iter()
            .enumerate()
            .map(|(ri, r)| {
                r.replicas
                    .iter()
                    .map(|rep| {
                        let pool = pool_idx
                            .get(&(rep.node.as_str(), rep.pool.as_str()))
                            .copied();
                        if let (Some(pi), true) = (pool, rep.diskful) {
                            residents[pi].insert(ri);
                        }
                        Rep {
                            node: &rep.node,
                            pool,
                            diskful: rep.diskful,
                            in_use: rep.in_use,
                        }
                    })
                    .collect()
            })
            .collect();
        Cluster {
            observed,
            nodes,
            evacuating: observed
                .automation
                .evacuating_nodes
                .iter()
                .map(String::as_str)
                .collect(),
            pools,
            residents,
            touched: vec![false; replicas.len()],
            replicas,
        }
    }

    fn node_usable(&self, name: &str) -> bool {
        match self.nodes.get(name) {
            Some(&i) => {
                let n = &self.observed.nodes[i];
                n.online && !n.evicted && !self.evacuating.contains(name)
            }
            None => false,
        }
    }

    fn aux(&self, node: &str, key: &str) -> Option<&'a str> {
        let i = *self.nodes.get(node)?;
        self.observed.nodes[i]
            .aux
            .get(aux_key(key))
            .map(String::as_str)
    }

    fn diskful(&self, ri: usize) -> usize {
        self.replicas[ri].iter().filter(|r| r.diskful).count()
    }

    /// Whether `candidate` keeps every `replicas_on_different` key distinct among the diskful replicas
    /// (leaving out `leaving`, the source of a move).
    fn zones_ok(&self, ri: usize, candidate: &str, leaving: Option<&str>) -> bool {
        let res = &self.observed.resources[ri];
        res.replicas_on_different.iter().all(|key| {
            let Some(value) = self.aux(candidate, key) else {
                return false;
            };
            self.replicas[ri]
                .iter()
                .filter(|r| r.diskful && Some(r.node) != leaving)
                .all(|r| self.aux(r.node, key) != Some(value))
        })
    }

    /// The emptiest pool (at the horizon) that can take a replica of `ri` and stay under `max_fill`.
    fn destination(&self, ri: usize, leaving: Option<&str>, max_fill: f64) -> Option<usize> {
        let size = self.observed.resources[ri].size_kib;
        let hosts: BTreeSet<&str> = self.replicas[ri].iter().map(|r| r.node).collect();
        let mut best: Option<(f64, usize)> = None;
        for (pi, p) in self.pools.iter().enumerate() {
            if hosts.contains(p.node) || !self.node_usable(p.node) {
                continue;
            }
            let fill = p.fill_at_horizon(size);
            if fill > max_fill || !self.zones_ok(ri, p.node, leaving) {
                continue;
            }
            let better = match best {
                None => true,
                Some((f, bi)) => {
                    fill < f
                        || (fill == f
                            && (p.node, p.name) < (self.pools[bi].node, self.pools[bi].name))
                }
            };
            if better {
                best = Some((fill, pi));
            }
        }
        best.map(|(_, pi)| pi)
    }

    fn add(&mut self, ri: usize, pi: usize) {
        let size = self.observed.resources[ri].size_kib;
        self.pools[pi].used += size;
        self.residents[pi].insert(ri);
        let node = self.pools[pi].node;
        self.replicas[ri].push(Rep {
            node,
            pool: Some(pi),
            diskful: true,
            in_use: false,
        });
        self.touched[ri] = true;
    }

    fn relocate(&mut self, ri: usize, from: usize, to: usize) {
        let size = self.observed.resources[ri].size_kib;
        let from_node = self.pools[from].node;
        self.pools[from].used = self.pools[from].used.saturating_sub(size);
        self.residents[from].remove(&ri);
        self.replicas[ri].retain(|r| !(r.node == from_node && r.pool == Some(from)));
        self.add(ri, to);
    }

    /// Diskful, not-in-use replicas on pool `pi` of resources this plan may still touch, largest first.
    fn movable(&self, pi: usize, may_touch: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let node = self.pools[pi].node;
        let mut list: Vec<usize> = self.residents[pi]
            .iter()
            .copied()
            .filter(|&ri| {
                !self.touched[ri]
                    && may_touch(ri)
                    && self.replicas[ri]
                        .iter()
                        .any(|r| r.node == node && r.diskful && !r.in_use)
            })
            .collect();
        let res = &self.observed.resources;
        list.sort_by(|&a, &b| {
            res[b]
                .size_kib
                .cmp(&res[a].size_kib)
                .then(res[a].name.cmp(&res[b].name))
        });
        list
    }

    fn move_action(&self, ri: usize, from: usize, to: usize) -> Action {
        Action::MoveReplica {
            resource: self.observed.resources[ri].name.clone(),
            from_node: self.pools[from].node.to_string(),
            from_pool: self.pools[from].name.to_string(),
            to_node: self.pools[to].node.to_string(),
            to_pool: self.pools[to].name.to_string(),
        }
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// Cooldowns a resource must rest after any change before skew rebalancing moves it.
const SKEW_SETTLE_COOLDOWNS: i64 = 10;

/// The prefix of a resource's target key.
const RESOURCE_KEY_PREFIX: &str = "resource:";

/// Target key of a resource.
pub(crate) fn resource_key(name: &str) -> String {
    format!("{RESOURCE_KEY_PREFIX}{name}")
}

/// Plans placement into `step`, calling `between` (the knobs' slot) after missing replicas and before pool
/// pressure.
pub(crate) fn plan_placement_priority(
    observed: &Observed,
    forecast: &ForecastView,
    history: &History,
    limits: &Limits,
    now: i64,
    step: &mut Step,
    between: impl FnOnce(&mut Step),
) {
    let mut c = Cluster::new(observed, forecast);
    let blocked = |res: &ResourceState| -> Option<String> {
        let key = resource_key(&res.name);
        if history.in_flight.contains(&key) {
            return Some("a change is still in flight for it".to_string());
        }
        if let Some(&at) = history.last_changed.get(&key) {
            if now - at < limits.cooldown_s {
                return Some(format!(
                    "cooldown: changed {} s ago, cooldown {} s",
                    now - at,
                    limits.cooldown_s
                ));
            }
        }
        None
    };
    let may_touch = |ri: usize| blocked(&observed.resources[ri]).is_none();

    let mut pool_order: Vec<usize> = (0..c.pools.len()).collect();
    pool_order.sort_by(|&a, &b| {
        (c.pools[a].node, c.pools[a].name).cmp(&(c.pools[b].node, c.pools[b].name))
    });
    let mut between = Some(between);
    let mut knob_changes = 0;
    // A later phase can free the room an earlier one lacked (a move off a full pool makes space for a missing
    // replica), so the phases repeat until a round plans nothing new; planning again from the projected
    // result then finds nothing either. Four rounds is plenty: each round only moves data towards emptier pools.
    for _round in 0..4 {
        let changes_before = step.changes.len();

        // Phase A: replicas missing against the place count.
        let mut order: Vec<usize> = (0..observed.resources.len()).collect();
        order.sort_by(|&a, &b| observed.resources[a].name.cmp(&observed.resources[b].name));
        for &ri in &order {
            let res = &observed.resources[ri];
            let have = c.diskful(ri);
            let want = res.place_count as usize;
            if have >= want {
                continue;
            }
            let key = resource_key(&res.name);
            let auto = &observed.automation;
            let evicted_host = res.replicas.iter().find(|r| {
                c.nodes
                    .get(r.node.as_str())
                    .is_some_and(|&i| observed.nodes[i].evicted)
            });
            if let (true, Some(r)) = (auto.auto_evict_enabled, evicted_host) {
                step.skip(key, format!(
                "{have} of {want} diskful replicas, but node {} is evicted: LINSTOR auto-evict re-places its replicas",
                r.node
            ));
                continue;
            }
            let balance_on =
                auto.balance_resources_enabled && res.balance_resources.unwrap_or(true);
            let window = auto.balance_interval_s + auto.balance_grace_s;
            let waited = res.under_replicated_since.map(|s| now - s);
            if balance_on && waited.is_none_or(|w| w < window) {
                step.skip(key, format!(
                "{have} of {want} diskful replicas: LINSTOR BalanceResources (on, every {} s after a {} s grace) tops it up; \
                 trimtab acts only if it has not after {window} s (under-replicated for {} s)",
                auto.balance_interval_s, auto.balance_grace_s, waited.map_or("an unknown number of".to_string(), |w| w.to_string())
            ));
                continue;
            }
            if let Some(why) = blocked(res) {
                step.skip(key, why);
                continue;
            }
            if !step.has_room() {
                step.skip(key, step.cap_reason());
                continue;
            }
            let Some(pi) = c.destination(ri, None, limits.pool_drain_to) else {
                step.skip(key, format!(
                "{have} of {want} diskful replicas, but no pool qualifies: node online and not evicted or evacuating, \
                 not already hosting it, distinct {:?}, fill at the horizon under {} after adding {} KiB",
                res.replicas_on_different, pct(limits.pool_drain_to), res.size_kib
            ));
                continue;
            };
            let mut figures = BTreeMap::new();
            figures.insert("diskful".to_string(), have as f64);
            figures.insert("place_count".to_string(), want as f64);
            figures.insert(
                "destination_fill_after".to_string(),
                c.pools[pi].fill_at_horizon(res.size_kib),
            );
            let why_us = if balance_on {
                format!(
                    "BalanceResources has not topped it up in {} s",
                    waited.unwrap_or(0)
                )
            } else {
                "BalanceResources is off for it".to_string()
            };
            let action = Action::AddReplica {
                resource: res.name.clone(),
                node: c.pools[pi].node.to_string(),
                pool: c.pools[pi].name.to_string(),
            };
            let summary = format!(
            "{have} of {want} diskful replicas ({why_us}); {}/{} is the emptiest qualifying pool at {} after adding",
            c.pools[pi].node, c.pools[pi].name, pct(c.pools[pi].fill_at_horizon(res.size_kib))
        );
            c.add(ri, pi);
            step.push(
                key,
                action,
                Reason { summary, figures },
                format!("{} of {want} diskful replicas", have + 1),
                false,
            );
        }

        // The knobs come after missing replicas and before pool pressure: at most one change, on the write path
        // rather than LINSTOR, reacting to an overload measured now. Behind pool moves, which are planned again
        // every step while held back (recommended while the forecast is not trusted, or waiting for a person),
        // the cap left no room for it through a whole NAB replay peak.
        if let Some(knobs) = between.take() {
            let before = step.changes.len();
            knobs(step);
            knob_changes = step.changes.len() - before;
        }

        // Phase B: pools forecast to cross the high-water mark within the horizon.
        for &pi in &pool_order {
            let start = c.pools[pi].fill_at_horizon(0);
            // Hysteresis: trigger at the high-water mark but drain to the lower `pool_drain_to`, and never fill a
            // destination above it, so a pool just under the line is not pushed back and forth between steps.
            if start < limits.pool_high_water {
                continue;
            }
            let pool_key = format!("pool:{}/{}", c.pools[pi].node, c.pools[pi].name);
            let node = c.pools[pi].node;
            let node_state = c.nodes.get(node).map(|&i| &observed.nodes[i]);
            if node_state.is_some_and(|n| n.evicted || !n.online)
                && observed.automation.auto_evict_enabled
            {
                step.skip(pool_key, format!(
                "forecast fill {} ≥ {}, but node {node} is offline or evicted: LINSTOR auto-evict handles its replicas",
                pct(start), pct(limits.pool_high_water)
            ));
                continue;
            }
            if c.evacuating.contains(node) {
                step.skip(
                    pool_key,
                    format!(
                        "forecast fill {}, but node {node} is being evacuated by LINSTOR",
                        pct(start)
                    ),
                );
                continue;
            }
            while c.pools[pi].fill_at_horizon(0) > limits.pool_drain_to {
                if !step.has_room() {
                    step.skip(pool_key.clone(), step.cap_reason());
                    break;
                }
                let found = c.movable(pi, &may_touch).into_iter().find_map(|ri| {
                    c.destination(ri, Some(node), limits.pool_drain_to)
                        .map(|to| (ri, to))
                });
                let Some((ri, to)) = found else {
                    step.skip(pool_key.clone(), format!(
                    "forecast fill {} (now {}) ≥ {}: no replica can move (in use, in cooldown or in flight, \
                     or no destination keeps zones distinct and stays under {})",
                    pct(c.pools[pi].fill_at_horizon(0)), pct(c.pools[pi].fill_now()),
                    pct(limits.pool_high_water), pct(limits.pool_drain_to)
                ));
                    break;
                };
                let size = observed.resources[ri].size_kib;
                let before = c.pools[pi].fill_at_horizon(0);
                let mut figures = BTreeMap::new();
                figures.insert("source_fill_at_horizon".to_string(), before);
                figures.insert("source_fill_now".to_string(), c.pools[pi].fill_now());
                figures.insert("high_water".to_string(), limits.pool_high_water);
                figures.insert("growth_kib_upper".to_string(), c.pools[pi].growth as f64);
                figures.insert("horizon_s".to_string(), forecast.horizon_s as f64);
                figures.insert(
                    "destination_fill_after".to_string(),
                    c.pools[to].fill_at_horizon(size),
                );
                let action = c.move_action(ri, pi, to);
                let summary = format!(
                "pool {node}/{} forecast at {} within {} s (now {}, growth up to {} KiB) ≥ high water {}; \
                 moving {} ({} KiB) to {}/{} at {} after",
                c.pools[pi].name, pct(before), forecast.horizon_s, pct(c.pools[pi].fill_now()), c.pools[pi].growth,
                pct(limits.pool_high_water), observed.resources[ri].name, size, c.pools[to].node, c.pools[to].name,
                pct(c.pools[to].fill_at_horizon(size))
            );
                c.relocate(ri, pi, to);
                let effect = format!(
                "pool {node}/{} at {} at the horizon; add on {} first, remove from {node} once UpToDate",
                c.pools[pi].name, pct(c.pools[pi].fill_at_horizon(0)), c.pools[to].node
            );
                step.push(
                    resource_key(&observed.resources[ri].name),
                    action,
                    Reason { summary, figures },
                    effect,
                    true,
                );
            }
        }

        // Phase C: skew between the fullest and emptiest usable pool.
        'skew: {
            let usable: Vec<usize> = pool_order
                .iter()
                .copied()
                .filter(|&pi| c.node_usable(c.pools[pi].node) && c.pools[pi].total > 0)
                .collect();
            if usable.len() < 2 {
                break 'skew;
            }
            let spread = |c: &Cluster| {
                let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
                let mut hi_pool = usable[0];
                for &pi in &usable {
                    let f = c.pools[pi].fill_now();
                    lo = lo.min(f);
                    if f > hi {
                        hi = f;
                        hi_pool = pi;
                    }
                }
                (hi - lo, hi_pool)
            };
            let (initial, _) = spread(&c);
            // Hysteresis: rebalance only above `skew_trigger`, and then down to `skew_target`, so skew sitting near the
            // trigger does not start a move every other step.
            if initial <= limits.skew_trigger {
                break 'skew;
            }
            // Rebalancing is background work: while placement changes planned earlier still wait for a person or
            // run, they are not in the observed fill, and planning more from it would queue a new move every step.
            let waiting: Vec<&String> = history
                .in_flight
                .iter()
                .filter(|k| k.starts_with(RESOURCE_KEY_PREFIX))
                .collect();
            if !waiting.is_empty() {
                step.skip(
                    "cluster:skew".to_string(),
                    format!(
                        "pool fill spread {} above trigger {}, but {} placement change(s) are still in flight ({}); rebalancing waits for them",
                        pct(initial),
                        pct(limits.skew_trigger),
                        waiting.len(),
                        waiting.iter().take(3).map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                );
                break 'skew;
            }
            loop {
                let (skew, src) = spread(&c);
                if skew <= limits.skew_target {
                    break;
                }
                let skew_key = "cluster:skew".to_string();
                if !step.has_room() {
                    step.skip(skew_key, step.cap_reason());
                    break;
                }
                let before = c.pools[src].fill_now();
                let src_node = c.pools[src].node;
                // Skew is background work: a resource changed within `SKEW_SETTLE_COOLDOWNS` cooldowns stays
                // where it is, so the greedy order of one step (a move it could make only once another resource
                // was done) never moves a replica back onto the pool it just left.
                let settled = |ri: usize| {
                    may_touch(ri)
                        && history
                            .last_changed
                            .get(&resource_key(&observed.resources[ri].name))
                            .is_none_or(|&at| now - at >= SKEW_SETTLE_COOLDOWNS * limits.cooldown_s)
                };
                let found = c.movable(src, &settled).into_iter().find_map(|ri| {
                    let size = observed.resources[ri].size_kib;
                    let to = c.destination(ri, Some(src_node), limits.pool_drain_to)?;
                    let total_src = c.pools[src].total as f64;
                    let src_after = (c.pools[src].used.saturating_sub(size)) as f64 / total_src;
                    let dst_after = (c.pools[to].used + size) as f64 / c.pools[to].total as f64;
                    // Only a move that lowers the peak by a clear step counts; tiny gains are noise and would churn.
                    (before - src_after.max(dst_after) >= 0.01).then_some((ri, to, dst_after))
                });
                let Some((ri, to, dst_after)) = found else {
                    step.skip(skew_key, format!(
                "pool fill spread {} above trigger {}, but no move off {}/{} lowers its fill without raising another above it",
                pct(skew), pct(limits.skew_trigger), src_node, c.pools[src].name
            ));
                    break;
                };
                let mut figures = BTreeMap::new();
                figures.insert("skew".to_string(), skew);
                figures.insert("skew_trigger".to_string(), limits.skew_trigger);
                figures.insert("source_fill_now".to_string(), before);
                figures.insert("destination_fill_after".to_string(), dst_after);
                let action = c.move_action(ri, src, to);
                let summary = format!(
            "pool fill spread {} above trigger {} (rebalancing to {}); moving {} off the fullest pool {}/{} ({}) to {}/{} ({} after)",
            pct(skew), pct(limits.skew_trigger), pct(limits.skew_target), observed.resources[ri].name, src_node,
            c.pools[src].name, pct(before), c.pools[to].node, c.pools[to].name, pct(dst_after)
        );
                c.relocate(ri, src, to);
                let (after, _) = spread(&c);
                step.push(
                    resource_key(&observed.resources[ri].name),
                    action,
                    Reason { summary, figures },
                    format!(
                        "pool fill spread about {}; add first, remove the source once UpToDate",
                        pct(after)
                    ),
                    false,
                );
            }
        }
        if step.changes.len() - knob_changes == changes_before {
            break;
        }
    }
    step.dedupe_skips();
}
