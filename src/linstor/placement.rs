//! Placement metrics read from the controller: replicas per node and pool, capacity, under-replication,
//! degraded volumes, skew, and LINSTOR's own automation, as one plain [`PlacementSnapshot`].
//!
//! Collection uses a [`LinstorReader`] only; [`PlacementSnapshot::from_inputs`] is a pure function so the
//! planner and tests can build snapshots from recorded data.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::types::{
    Node, Props, ResourceDefinition, ResourceGroup, ResourceWithVolumes, StoragePool,
};
use super::{LinstorError, LinstorReader};

/// LINSTOR's place count when neither the request nor the resource group sets one.
pub const DEFAULT_PLACE_COUNT: u32 = 2;
/// The resource group of definitions created without one.
pub const DEFAULT_RESOURCE_GROUP: &str = "DfltRscGrp";

/// Property keys of LINSTOR's own automation, which the planner must not fight.
pub mod keys {
    /// Hourly task that tops up and trims replicas to the place count (controller, group or definition).
    pub const BALANCE_RESOURCES_ENABLED: &str = "BalanceResourcesEnabled";
    /// Seconds between balance runs.
    pub const BALANCE_RESOURCES_INTERVAL: &str = "BalanceResourcesInterval";
    /// Seconds a new replica is left alone by the balance task.
    pub const BALANCE_RESOURCES_GRACE_PERIOD: &str = "BalanceResourcesGracePeriod";
    /// Minutes offline before a node is evicted.
    pub const AUTO_EVICT_AFTER_TIME: &str = "DrbdOptions/AutoEvictAfterTime";
    /// Percentage of disconnected nodes above which eviction stops.
    pub const AUTO_EVICT_MAX_DISCONNECTED_NODES: &str = "DrbdOptions/AutoEvictMaxDisconnectedNodes";
    /// Replica count auto-evict restores.
    pub const AUTO_EVICT_MIN_REPLICA_COUNT: &str = "DrbdOptions/AutoEvictMinReplicaCount";
    /// Per node: whether it may be evicted.
    pub const AUTO_EVICT_ALLOW_EVICTION: &str = "DrbdOptions/AutoEvictAllowEviction";
    /// Minutes as a diskless primary before a replica is made diskful.
    pub const AUTO_DISKFUL: &str = "DrbdOptions/auto-diskful";
    /// Whether a diskless tie-breaker is added automatically.
    pub const AUTO_ADD_QUORUM_TIEBREAKER: &str = "DrbdOptions/auto-add-quorum-tiebreaker";
}

/// Everything the snapshot is computed from, as read from the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementInputs {
    /// Controller properties.
    pub controller_props: Props,
    /// `GET /v1/nodes`.
    pub nodes: Vec<Node>,
    /// `GET /v1/view/storage-pools`.
    pub pools: Vec<StoragePool>,
    /// `GET /v1/resource-groups`.
    pub groups: Vec<ResourceGroup>,
    /// `GET /v1/resource-definitions`.
    pub definitions: Vec<ResourceDefinition>,
    /// `GET /v1/view/resources`.
    pub resources: Vec<ResourceWithVolumes>,
}

/// Where replicas are and how full the pools are, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlacementSnapshot {
    /// One entry per node, sorted by name.
    pub nodes: Vec<NodePlacement>,
    /// One entry per diskful pool per node, sorted by pool then node.
    pub pools: Vec<PoolPlacement>,
    /// Resources with fewer healthy-or-not diskful replicas than their place count.
    pub under_replicated: Vec<UnderReplicated>,
    /// Diskful volumes whose disk state is not `UpToDate`.
    pub degraded: Vec<DegradedVolume>,
    /// Spread of diskful replica counts across the nodes of each pool class.
    pub skew: Vec<PoolSkew>,
    /// LINSTOR's own placement automation.
    pub automation: Automation,
}

/// One node's share of the placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlacement {
    /// Node name.
    pub node: String,
    /// Connected to the controller.
    pub online: bool,
    /// Carries the `EVICTED` flag.
    pub evicted: bool,
    /// Diskful replicas on the node.
    pub diskful: u32,
    /// Diskless replicas (attachments and tie-breakers) on the node.
    pub diskless: u32,
    /// The node's `Aux/` properties (zone, rack, ...).
    pub aux: Props,
}

/// One pool on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolPlacement {
    /// Node name.
    pub node: String,
    /// Pool name.
    pub pool: String,
    /// Provider kind (`LVM`, `ZFS_THIN`, ...).
    pub provider_kind: String,
    /// Free space in KiB (0 when unreported).
    pub free_kib: u64,
    /// Total space in KiB (0 when unreported).
    pub total_kib: u64,
    /// Diskful volumes placed in the pool.
    pub replicas: u32,
}

/// A resource below its place count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnderReplicated {
    /// Resource name.
    pub resource: String,
    /// Its resource group.
    pub resource_group: String,
    /// Diskful replicas the group asks for.
    pub place_count: u32,
    /// Diskful replicas that exist and are not being deleted.
    pub diskful: u32,
}

/// A diskful volume that is not `UpToDate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DegradedVolume {
    /// Resource name.
    pub resource: String,
    /// Node name.
    pub node: String,
    /// Volume number.
    pub volume_number: u32,
    /// What the controller reports (`Outdated`, `Inconsistent`, `Unknown`, ...).
    pub disk_state: String,
}

/// How evenly one pool class is used across its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSkew {
    /// Pool name (the class: pools of that name on all nodes).
    pub pool: String,
    /// Nodes that have the pool.
    pub nodes: u32,
    /// Fewest replicas on one node.
    pub min: u32,
    /// Most replicas on one node.
    pub max: u32,
    /// Mean replicas per node.
    pub mean: f64,
    /// Population standard deviation over the mean; 0 when the pool is empty.
    pub coefficient_of_variation: f64,
    /// `max / min`; absent when some node has none.
    pub max_over_min: Option<f64>,
    /// Free KiB over all nodes of the pool.
    pub free_kib: u64,
    /// Total KiB over all nodes of the pool.
    pub total_kib: u64,
}

/// LINSTOR's own automation that may act on the same resources as the planner.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Automation {
    /// The balance task is enabled at controller level (LINSTOR's default is on).
    pub balance_resources_enabled: bool,
    /// Seconds between balance runs, if set.
    pub balance_resources_interval_s: Option<u64>,
    /// Grace period for new replicas in seconds, if set.
    pub balance_resources_grace_period_s: Option<u64>,
    /// Resources the balance task acts on (the effective flag: definition, then group, then controller).
    pub balanced_resources: Vec<String>,
    /// Minutes offline before eviction, if set at controller level.
    pub auto_evict_after_minutes: Option<f64>,
    /// Percentage of disconnected nodes that stops eviction, if set.
    pub auto_evict_max_disconnected_percent: Option<f64>,
    /// Replica count auto-evict restores, if set.
    pub auto_evict_min_replica_count: Option<u32>,
    /// Nodes with eviction disallowed.
    pub eviction_disallowed_nodes: Vec<String>,
    /// Nodes carrying the `EVICTED` flag.
    pub evicted_nodes: Vec<String>,
    /// `auto-diskful` minutes at controller level, if set.
    pub auto_diskful_minutes: Option<f64>,
    /// Whether tie-breakers are added automatically (LINSTOR's default is on).
    pub auto_add_quorum_tiebreaker: bool,
}

/// One value of a placement series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementSample {
    /// Stable series name with sorted labels, e.g. `linstor.pool.free_kib{node=n1,pool=pool-ssd}`.
    pub series: String,
    /// When the snapshot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    /// The value.
    pub value: f64,
}

fn truthy(value: Option<&String>, default: bool) -> bool {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        Some(v) if v == "true" || v == "yes" || v == "1" => true,
        Some(v) if v == "false" || v == "no" || v == "0" => false,
        _ => default,
    }
}

fn number<T: std::str::FromStr>(props: &Props, key: &str) -> Option<T> {
    props.get(key).and_then(|v| v.trim().parse().ok())
}

impl PlacementSnapshot {
    /// Reads everything with GET requests and computes the snapshot.
    pub async fn collect(reader: &LinstorReader) -> Result<PlacementSnapshot, LinstorError> {
        let (controller_props, nodes, pools, groups, definitions, resources) = tokio::try_join!(
            reader.controller_properties(),
            reader.nodes(),
            reader.storage_pools(),
            reader.resource_groups(),
            reader.resource_definitions(),
            reader.resources(&[]),
        )?;
        Ok(PlacementSnapshot::from_inputs(&PlacementInputs {
            controller_props,
            nodes,
            pools,
            groups,
            definitions,
            resources,
        }))
    }

    /// Computes the snapshot from what the controller reported. Pure.
    pub fn from_inputs(inputs: &PlacementInputs) -> PlacementSnapshot {
        let mut diskful_per_node: BTreeMap<&str, u32> = BTreeMap::new();
        let mut diskless_per_node: BTreeMap<&str, u32> = BTreeMap::new();
        let mut per_pool_node: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        let mut diskful_per_resource: BTreeMap<&str, u32> = BTreeMap::new();
        let mut degraded = Vec::new();
        for placement in &inputs.resources {
            let rsc = &placement.resource;
            if rsc.is_diskless() {
                *diskless_per_node.entry(&rsc.node_name).or_default() += 1;
                continue;
            }
            *diskful_per_node.entry(&rsc.node_name).or_default() += 1;
            if !rsc.is_deleting() {
                *diskful_per_resource.entry(&rsc.name).or_default() += 1;
            }
            for volume in &placement.volumes {
                *per_pool_node
                    .entry((&volume.storage_pool_name, &rsc.node_name))
                    .or_default() += 1;
                let state = volume.state.disk_state.as_deref().unwrap_or("Unknown");
                if state != "UpToDate" {
                    degraded.push(DegradedVolume {
                        resource: rsc.name.clone(),
                        node: rsc.node_name.clone(),
                        volume_number: volume.volume_number,
                        disk_state: state.to_owned(),
                    });
                }
            }
        }

        let mut nodes: Vec<NodePlacement> = inputs
            .nodes
            .iter()
            .map(|n| NodePlacement {
                node: n.name.clone(),
                online: n.is_online(),
                evicted: n.is_evicted(),
                diskful: diskful_per_node.get(n.name.as_str()).copied().unwrap_or(0),
                diskless: diskless_per_node.get(n.name.as_str()).copied().unwrap_or(0),
                aux: n
                    .props
                    .iter()
                    .filter(|(k, _)| k.starts_with("Aux/"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));

        let mut pools: Vec<PoolPlacement> = inputs
            .pools
            .iter()
            .filter(|p| p.provider_kind != "DISKLESS")
            .map(|p| PoolPlacement {
                node: p.node_name.clone(),
                pool: p.storage_pool_name.clone(),
                provider_kind: p.provider_kind.clone(),
                free_kib: p.free_capacity.unwrap_or(0),
                total_kib: p.total_capacity.unwrap_or(0),
                replicas: per_pool_node
                    .get(&(p.storage_pool_name.as_str(), p.node_name.as_str()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        pools.sort_by(|a, b| (&a.pool, &a.node).cmp(&(&b.pool, &b.node)));

        let mut skew = Vec::new();
        let classes: BTreeSet<&str> = pools.iter().map(|p| p.pool.as_str()).collect();
        for class in classes {
            let members: Vec<&PoolPlacement> = pools.iter().filter(|p| p.pool == class).collect();
            let counts: Vec<f64> = members.iter().map(|p| f64::from(p.replicas)).collect();
            let n = counts.len() as f64;
            let mean = counts.iter().sum::<f64>() / n;
            let variance = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / n;
            let min = members.iter().map(|p| p.replicas).min().unwrap_or(0);
            let max = members.iter().map(|p| p.replicas).max().unwrap_or(0);
            skew.push(PoolSkew {
                pool: class.to_owned(),
                nodes: members.len() as u32,
                min,
                max,
                mean,
                coefficient_of_variation: if mean > 0.0 {
                    variance.sqrt() / mean
                } else {
                    0.0
                },
                max_over_min: (min > 0).then(|| f64::from(max) / f64::from(min)),
                free_kib: members.iter().map(|p| p.free_kib).sum(),
                total_kib: members.iter().map(|p| p.total_kib).sum(),
            });
        }

        let groups: BTreeMap<&str, &ResourceGroup> =
            inputs.groups.iter().map(|g| (g.name.as_str(), g)).collect();
        let controller_balance = truthy(
            inputs.controller_props.get(keys::BALANCE_RESOURCES_ENABLED),
            true,
        );
        let mut under_replicated = Vec::new();
        let mut balanced_resources = Vec::new();
        for definition in &inputs.definitions {
            let group_name = definition
                .resource_group_name
                .as_deref()
                .unwrap_or(DEFAULT_RESOURCE_GROUP);
            let group = groups.get(group_name);
            let place_count = group
                .and_then(|g| g.select_filter.place_count)
                .unwrap_or(DEFAULT_PLACE_COUNT);
            let diskful = diskful_per_resource
                .get(definition.name.as_str())
                .copied()
                .unwrap_or(0);
            if diskful < place_count {
                under_replicated.push(UnderReplicated {
                    resource: definition.name.clone(),
                    resource_group: group_name.to_owned(),
                    place_count,
                    diskful,
                });
            }
            let group_balance = truthy(
                group.and_then(|g| g.props.get(keys::BALANCE_RESOURCES_ENABLED)),
                controller_balance,
            );
            if truthy(
                definition.props.get(keys::BALANCE_RESOURCES_ENABLED),
                group_balance,
            ) {
                balanced_resources.push(definition.name.clone());
            }
        }
        under_replicated.sort_by(|a, b| a.resource.cmp(&b.resource));
        balanced_resources.sort();
        degraded.sort_by(|a, b| {
            (&a.resource, &a.node, a.volume_number).cmp(&(&b.resource, &b.node, b.volume_number))
        });

        let props = &inputs.controller_props;
        let automation = Automation {
            balance_resources_enabled: controller_balance,
            balance_resources_interval_s: number(props, keys::BALANCE_RESOURCES_INTERVAL),
            balance_resources_grace_period_s: number(props, keys::BALANCE_RESOURCES_GRACE_PERIOD),
            balanced_resources,
            auto_evict_after_minutes: number(props, keys::AUTO_EVICT_AFTER_TIME),
            auto_evict_max_disconnected_percent: number(
                props,
                keys::AUTO_EVICT_MAX_DISCONNECTED_NODES,
            ),
            auto_evict_min_replica_count: number(props, keys::AUTO_EVICT_MIN_REPLICA_COUNT),
            eviction_disallowed_nodes: inputs
                .nodes
                .iter()
                .filter(|n| !truthy(n.props.get(keys::AUTO_EVICT_ALLOW_EVICTION), true))
                .map(|n| n.name.clone())
                .collect(),
            evicted_nodes: inputs
                .nodes
                .iter()
                .filter(|n| n.is_evicted())
                .map(|n| n.name.clone())
                .collect(),
            auto_diskful_minutes: number(props, keys::AUTO_DISKFUL),
            auto_add_quorum_tiebreaker: truthy(props.get(keys::AUTO_ADD_QUORUM_TIEBREAKER), true),
        };

        PlacementSnapshot {
            nodes,
            pools,
            under_replicated,
            degraded,
            skew,
            automation,
        }
    }

    /// The snapshot as time-series values with stable names; labels are sorted by key.
    pub fn to_samples(&self, ts: OffsetDateTime) -> Vec<PlacementSample> {
        let mut out = Vec::new();
        let mut push = |name: &str, labels: &[(&str, &str)], value: f64| {
            out.push(PlacementSample {
                series: series(name, labels),
                ts,
                value,
            });
        };
        for n in &self.nodes {
            let labels = [("node", n.node.as_str())];
            push("linstor.node.replicas", &labels, f64::from(n.diskful));
            push("linstor.node.diskless", &labels, f64::from(n.diskless));
            push(
                "linstor.node.online",
                &labels,
                if n.online { 1.0 } else { 0.0 },
            );
        }
        for p in &self.pools {
            let labels = [("node", p.node.as_str()), ("pool", p.pool.as_str())];
            push("linstor.pool.free_kib", &labels, p.free_kib as f64);
            push("linstor.pool.total_kib", &labels, p.total_kib as f64);
            push("linstor.pool.replicas", &labels, f64::from(p.replicas));
        }
        for s in &self.skew {
            let labels = [("pool", s.pool.as_str())];
            push(
                "linstor.pool_class.replica_cv",
                &labels,
                s.coefficient_of_variation,
            );
            push("linstor.pool_class.replica_min", &labels, f64::from(s.min));
            push("linstor.pool_class.replica_max", &labels, f64::from(s.max));
            if let Some(ratio) = s.max_over_min {
                push("linstor.pool_class.replica_max_over_min", &labels, ratio);
            }
            push("linstor.pool_class.free_kib", &labels, s.free_kib as f64);
            push("linstor.pool_class.total_kib", &labels, s.total_kib as f64);
        }
        push(
            "linstor.resources.under_replicated",
            &[],
            self.under_replicated.len() as f64,
        );
        push("linstor.volumes.degraded", &[], self.degraded.len() as f64);
        push(
            "linstor.nodes.evicted",
            &[],
            self.automation.evicted_nodes.len() as f64,
        );
        push(
            "linstor.automation.balance_resources_enabled",
            &[],
            if self.automation.balance_resources_enabled {
                1.0
            } else {
                0.0
            },
        );
        out
    }
}

/// `name{k=v,...}` with labels sorted by key; just `name` without labels.
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let mut sorted = labels.to_vec();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, status: &str, flags: &[&str]) -> Node {
        serde_json::from_value(serde_json::json!({
            "name": name, "type": "SATELLITE", "connection_status": status,
            "flags": flags, "props": {"Aux/zone": format!("z-{name}")}
        }))
        .unwrap()
    }

    fn pool(node: &str, name: &str, free: u64) -> StoragePool {
        serde_json::from_value(serde_json::json!({
            "storage_pool_name": name, "node_name": node, "provider_kind": "LVM",
            "free_capacity": free, "total_capacity": 1000
        }))
        .unwrap()
    }

    fn placed(rsc: &str, node: &str, pool: &str, state: &str) -> ResourceWithVolumes {
        serde_json::from_value(serde_json::json!({
            "name": rsc, "node_name": node, "props": {"StorPoolName": pool},
            "volumes": [{"volume_number": 0, "storage_pool_name": pool, "provider_kind": "LVM", "state": {"disk_state": state}}]
        }))
        .unwrap()
    }

    #[test]
    fn snapshot_counts_replicas_flags_under_replication_and_skew() {
        let inputs = PlacementInputs {
            controller_props: [("BalanceResourcesEnabled".to_owned(), "false".to_owned())].into(),
            nodes: vec![node("a", "ONLINE", &[]), node("b", "ONLINE", &[]), node("c", "OFFLINE", &["EVICTED"])],
            pools: vec![pool("a", "ssd", 100), pool("b", "ssd", 900), pool("c", "ssd", 500)],
            groups: vec![serde_json::from_value(serde_json::json!({"name": "rg3", "select_filter": {"place_count": 3}, "props": {"BalanceResourcesEnabled": "true"}})).unwrap()],
            definitions: vec![
                serde_json::from_value(serde_json::json!({"name": "r1", "resource_group_name": "rg3"})).unwrap(),
                serde_json::from_value(serde_json::json!({"name": "r2"})).unwrap(),
            ],
            resources: vec![
                placed("r1", "a", "ssd", "UpToDate"),
                placed("r1", "c", "ssd", "Unknown"),
                placed("r2", "a", "ssd", "UpToDate"),
                placed("r2", "b", "ssd", "UpToDate"),
            ],
        };
        let snap = PlacementSnapshot::from_inputs(&inputs);
        assert_eq!(
            snap.nodes.iter().map(|n| n.diskful).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert_eq!(snap.under_replicated.len(), 1);
        assert_eq!(snap.under_replicated[0].resource, "r1");
        assert_eq!(snap.under_replicated[0].place_count, 3);
        assert_eq!(snap.degraded.len(), 1);
        assert_eq!(snap.degraded[0].disk_state, "Unknown");
        assert_eq!(snap.skew[0].max_over_min, Some(2.0));
        assert!(
            (snap.skew[0].coefficient_of_variation - (2.0f64 / 9.0).sqrt() / (4.0 / 3.0)).abs()
                < 1e-9
        );
        assert!(!snap.automation.balance_resources_enabled);
        assert_eq!(snap.automation.balanced_resources, vec!["r1".to_owned()]);
        assert_eq!(snap.automation.evicted_nodes, vec!["c".to_owned()]);
        let samples = snap.to_samples(OffsetDateTime::UNIX_EPOCH);
        let free = samples
            .iter()
            .find(|s| s.series == "linstor.pool.free_kib{node=b,pool=ssd}")
            .unwrap();
        assert_eq!(free.value, 900.0);
        assert!(samples
            .iter()
            .any(|s| s.series == "linstor.resources.under_replicated" && s.value == 1.0));
    }
}
