//! What a plan would leave behind: the projected state, the hard constraints it must keep, and input fingerprints.

use std::collections::BTreeSet;

use serde::Serialize;

use super::model::{Action, Change, Observed, Plan, ReplicaState, Settings};
use super::placement::aux_key;
use crate::audit::canonical::canonical_sha256;

/// The observed state and settings as they would be once every change of `plan` has completed
/// (moves finished, new replicas UpToDate). Pure; used by tests and by "what if" answers.
pub fn project(observed: &Observed, settings: &Settings, plan: &Plan) -> (Observed, Settings) {
    let mut obs = observed.clone();
    let mut set = *settings;
    for change in &plan.changes {
        apply(&mut obs, &mut set, &change.action);
    }
    (obs, set)
}

fn apply(obs: &mut Observed, set: &mut Settings, action: &Action) {
    let size_of = |obs: &Observed, name: &str| {
        obs.resources
            .iter()
            .find(|r| r.name == name)
            .map_or(0, |r| r.size_kib)
    };
    match action {
        Action::SetKnobs { to, .. } => *set = *to,
        Action::AddReplica {
            resource,
            node,
            pool,
        } => {
            let size = size_of(obs, resource);
            if let Some(p) = obs
                .pools
                .iter_mut()
                .find(|p| &p.node == node && &p.name == pool)
            {
                p.free_kib = p.free_kib.saturating_sub(size);
            }
            if let Some(r) = obs.resources.iter_mut().find(|r| &r.name == resource) {
                r.replicas.push(ReplicaState {
                    node: node.clone(),
                    pool: pool.clone(),
                    diskful: true,
                    up_to_date: true,
                    in_use: false,
                });
                if r.replicas.iter().filter(|x| x.diskful).count() >= r.place_count as usize {
                    r.under_replicated_since = None;
                }
            }
        }
        Action::MoveReplica {
            resource,
            from_node,
            from_pool,
            to_node,
            to_pool,
        } => {
            apply(
                obs,
                set,
                &Action::AddReplica {
                    resource: resource.clone(),
                    node: to_node.clone(),
                    pool: to_pool.clone(),
                },
            );
            let size = size_of(obs, resource);
            if let Some(p) = obs
                .pools
                .iter_mut()
                .find(|p| &p.node == from_node && &p.name == from_pool)
            {
                p.free_kib = (p.free_kib + size).min(p.total_kib);
            }
            if let Some(r) = obs.resources.iter_mut().find(|r| &r.name == resource) {
                r.replicas
                    .retain(|x| !(&x.node == from_node && &x.pool == from_pool));
            }
        }
        Action::RemoveReplica { resource, node } => {
            if let Some(r) = obs.resources.iter_mut().find(|r| &r.name == resource) {
                r.replicas.retain(|x| &x.node != node);
            }
        }
        Action::SetPlaceCount { resource, to, .. } => {
            if let Some(r) = obs.resources.iter_mut().find(|r| &r.name == resource) {
                r.place_count = *to;
            }
        }
        Action::DeleteResource { resource } => obs.resources.retain(|r| &r.name != resource),
    }
}

/// Hard constraints a plan must not break, checked between the state before and the projected state after.
///
/// Returns one sentence per violation; empty means the plan is safe: no resource loses diskful replicas, no
/// node holds two replicas of one resource, `replicas_on_different` keys stay distinct for every resource the
/// plan touches, and no pool that receives a replica ends above `max_fill` or its capacity.
pub fn violations(before: &Observed, after: &Observed, plan: &Plan, max_fill: f64) -> Vec<String> {
    let mut out = Vec::new();
    let touched: BTreeSet<&str> = plan
        .changes
        .iter()
        .filter_map(|c| c.action.resource())
        .collect();
    let receiving: BTreeSet<(&str, &str)> = plan
        .changes
        .iter()
        .filter_map(|c| match &c.action {
            Action::AddReplica { node, pool, .. } => Some((node.as_str(), pool.as_str())),
            Action::MoveReplica {
                to_node, to_pool, ..
            } => Some((to_node.as_str(), to_pool.as_str())),
            _ => None,
        })
        .collect();
    for res in &after.resources {
        let diskful: Vec<&ReplicaState> = res.replicas.iter().filter(|r| r.diskful).collect();
        let had = before
            .resources
            .iter()
            .find(|r| r.name == res.name)
            .map_or(0, |r| r.replicas.iter().filter(|x| x.diskful).count());
        if diskful.len() < had {
            out.push(format!(
                "{}: diskful replicas dropped from {had} to {}",
                res.name,
                diskful.len()
            ));
        }
        let nodes: BTreeSet<&str> = res.replicas.iter().map(|r| r.node.as_str()).collect();
        if nodes.len() != res.replicas.len() {
            out.push(format!("{}: two replicas on one node", res.name));
        }
        if touched.contains(res.name.as_str()) {
            for key in &res.replicas_on_different {
                let mut seen = BTreeSet::new();
                for r in &diskful {
                    let value = after
                        .nodes
                        .iter()
                        .find(|n| n.name == r.node)
                        .and_then(|n| n.aux.get(aux_key(key)));
                    if !seen.insert(value) {
                        out.push(format!("{}: two replicas share {key} {value:?}", res.name));
                    }
                }
            }
        }
    }
    for p in &after.pools {
        if receiving.contains(&(p.node.as_str(), p.name.as_str())) {
            let used = p.total_kib.saturating_sub(p.free_kib) as f64;
            if p.total_kib == 0 || used / p.total_kib as f64 > max_fill + 1e-9 {
                out.push(format!(
                    "pool {}/{} received a replica and is {:.1} % full",
                    p.node,
                    p.name,
                    100.0 * used / p.total_kib.max(1) as f64
                ));
            }
        }
    }
    out
}

#[derive(Serialize)]
struct ResourcePrint<'a> {
    name: &'a str,
    place_count: u32,
    replicas: Vec<(&'a str, &'a str, bool)>,
    nodes_online: Vec<(&'a str, bool, bool)>,
}

/// A fingerprint of the observed inputs `change` depends on: its resource's replicas and place count and the
/// state of the nodes involved, or the current knob settings. A proposal whose fingerprint no longer matches
/// has drifted and must be planned again. Free capacity is deliberately left out: it changes every second.
pub fn fingerprint(observed: &Observed, settings: &Settings, change: &Change) -> String {
    let hash = match change.action.resource() {
        None => canonical_sha256(settings),
        Some(name) => {
            let res = observed.resources.iter().find(|r| r.name == name);
            let mut replicas: Vec<(&str, &str, bool)> = res
                .map(|r| {
                    r.replicas
                        .iter()
                        .map(|x| (x.node.as_str(), x.pool.as_str(), x.diskful))
                        .collect()
                })
                .unwrap_or_default();
            replicas.sort();
            let mut involved: BTreeSet<&str> = replicas.iter().map(|r| r.0).collect();
            if let Action::AddReplica { node, .. } | Action::MoveReplica { to_node: node, .. } =
                &change.action
            {
                involved.insert(node);
            }
            let nodes_online = involved
                .into_iter()
                .map(|n| {
                    let state = observed.nodes.iter().find(|x| x.name == n);
                    (
                        n,
                        state.is_some_and(|s| s.online),
                        state.is_some_and(|s| s.evicted),
                    )
                })
                .collect();
            canonical_sha256(&ResourcePrint {
                name,
                place_count: res.map_or(0, |r| r.place_count),
                replicas,
                nodes_online,
            })
        }
    };
    // Serializing these plain structs cannot fail (string keys, finite values); an empty print then means
    // "always drifted", which fails safe.
    hash.unwrap_or_default()
}
