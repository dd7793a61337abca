//! The fake controller's cluster model: nodes, pools, definitions, replicas and snapshots, and the rules the
//! real controller applies to them (autoplace filters and scoring, capacity accounting, return codes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::linstor::retcode::{self, ApiCallRc, RetCode};
use crate::linstor::types::*;

/// LINSTOR's default place count.
const DEFAULT_PLACE_COUNT: u32 = 2;
/// The resource group of definitions created without one.
pub const DEFAULT_GROUP: &str = "DfltRscGrp";
/// The pool a diskful resource lands in when the request names none.
const DEFAULT_POOL: &str = "DfltStorPool";
/// The diskless pool every node has.
const DISKLESS_POOL: &str = "DfltDisklessStorPool";
/// Largest volume the fake accepts, in KiB (16 TiB... times 1024: LINSTOR's own limit is far above any fixture).
const MAX_VOLUME_KIB: u64 = 1 << 44;

/// A cluster description: what `trimtab sim` and the tests start the fake with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Controller properties (`BalanceResourcesEnabled`, `DrbdOptions/AutoEvict*`, ...).
    #[serde(default)]
    pub controller_props: Props,
    /// Resource groups besides `DfltRscGrp` (which always exists, with place count 2 unless listed here).
    #[serde(default)]
    pub resource_groups: Vec<ResourceGroup>,
    /// Satellites.
    pub nodes: Vec<FixtureNode>,
}

/// One satellite of a fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureNode {
    /// Node name.
    pub name: String,
    /// IP address shown in `net_interfaces`.
    #[serde(default)]
    pub address: Option<String>,
    /// Properties, e.g. `Aux/zone`.
    #[serde(default)]
    pub props: Props,
    /// Flags, e.g. `EVICTED`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Whether the satellite starts connected.
    #[serde(default = "default_online")]
    pub online: bool,
    /// Diskful storage pools (each node also gets `DfltDisklessStorPool`).
    #[serde(default)]
    pub pools: Vec<FixturePool>,
}

const fn default_online() -> bool {
    true
}

/// One storage pool of a fixture node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturePool {
    /// Pool name.
    pub name: String,
    /// `LVM`, `LVM_THIN`, `ZFS`, `ZFS_THIN`, `FILE`, `FILE_THIN`.
    pub provider_kind: String,
    /// Capacity in KiB.
    pub total_kib: u64,
}

impl Fixture {
    /// The fixture shipped with trimtab: six nodes over three zones, pools `pool-ssd` and `pool-hdd`.
    pub fn default_cluster() -> Fixture {
        // The file is part of the source tree and checked by a unit test; a parse failure is a build defect.
        serde_json::from_str(include_str!("default-cluster.json"))
            .expect("default-cluster.json is valid")
    }

    /// Parses a fixture from JSON (the format of `default-cluster.json`) and validates it.
    pub fn from_json(text: &str) -> Result<Fixture, String> {
        let fixture: Fixture =
            serde_json::from_str(text).map_err(|e| format!("not a cluster fixture: {e}"))?;
        fixture.validate()?;
        Ok(fixture)
    }

    /// Checks names and sizes; the error names the offending entry.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        for node in &self.nodes {
            if !valid_name(&node.name) {
                return Err(format!(
                    "node name {:?}: expected letters, digits, '_' and '-', starting with a letter",
                    node.name
                ));
            }
            if !names.insert(&node.name) {
                return Err(format!("node {:?} is listed twice", node.name));
            }
            for pool in &node.pools {
                if pool.provider_kind == "DISKLESS" || pool.name == DISKLESS_POOL {
                    return Err(format!(
                        "node {:?} pool {:?}: list only diskful pools",
                        node.name, pool.name
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A reply: the entries and whether it is a success (`Ok`) or carries an error (`Err`).
pub type Reply = Result<Vec<ApiCallRc>, Vec<ApiCallRc>>;

fn ok(code: u32, op_obj: i64, message: String) -> ApiCallRc {
    ApiCallRc::new(RetCode::success(code, op_obj), message)
}

fn fail(code: u32, op_obj: i64, message: String) -> Vec<ApiCallRc> {
    vec![ApiCallRc::new(RetCode::error(code, op_obj), message)]
}

#[derive(Debug, Clone)]
struct FakeNode {
    props: Props,
    flags: Vec<String>,
    online: bool,
    address: String,
    uuid: String,
    pools: BTreeMap<String, FakePool>,
}

#[derive(Debug, Clone)]
struct FakePool {
    provider_kind: String,
    total_kib: u64,
    full: bool,
    uuid: String,
}

#[derive(Debug, Clone)]
struct FakeResource {
    /// `None` for a diskless replica.
    pool: Option<String>,
    flags: Vec<String>,
    in_use: bool,
    /// Until when the replica reports a state other than `UpToDate`, and which.
    pending: Option<(Instant, &'static str)>,
    /// A move: delete the replica on this node once this one has synced.
    migrate_from: Option<String>,
    create_ms: i64,
    uuid: String,
}

#[derive(Debug, Clone)]
struct FakeSnapshot {
    nodes: Vec<String>,
    sizes: BTreeMap<u32, u64>,
    create_ms: i64,
    uuid: String,
}

#[derive(Debug, Clone)]
struct FakeDefinition {
    group: String,
    props: Props,
    volumes: BTreeMap<u32, u64>,
    resources: BTreeMap<String, FakeResource>,
    snapshots: BTreeMap<String, FakeSnapshot>,
    minor: u32,
    uuid: String,
}

impl FakeDefinition {
    fn size_kib(&self) -> u64 {
        self.volumes.values().sum()
    }

    fn diskful(&self) -> impl Iterator<Item = (&String, &FakeResource)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.pool.is_some() && !r.flags.iter().any(|f| f == "DELETE"))
    }
}

/// The whole controller state.
#[derive(Debug, Clone)]
pub struct Cluster {
    controller_props: Props,
    nodes: BTreeMap<String, FakeNode>,
    groups: BTreeMap<String, ResourceGroup>,
    definitions: BTreeMap<String, FakeDefinition>,
    next_minor: u32,
    /// How long a replica joining existing data reports `Inconsistent` before `UpToDate`.
    pub sync_delay: Duration,
}

impl Cluster {
    /// A cluster as the fixture describes it, with nothing placed.
    pub fn from_fixture(fixture: &Fixture) -> Cluster {
        let mut groups = BTreeMap::new();
        groups.insert(
            DEFAULT_GROUP.to_owned(),
            ResourceGroup {
                name: DEFAULT_GROUP.into(),
                select_filter: AutoSelectFilter {
                    place_count: Some(DEFAULT_PLACE_COUNT),
                    ..AutoSelectFilter::default()
                },
                uuid: Some(uuid()),
                ..ResourceGroup::default()
            },
        );
        for group in &fixture.resource_groups {
            let mut group = group.clone();
            group.uuid.get_or_insert_with(uuid);
            groups.insert(group.name.clone(), group);
        }
        let nodes = fixture
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let pools = n
                    .pools
                    .iter()
                    .map(|p| {
                        (
                            p.name.clone(),
                            FakePool {
                                provider_kind: p.provider_kind.clone(),
                                total_kib: p.total_kib,
                                full: false,
                                uuid: uuid(),
                            },
                        )
                    })
                    .collect();
                let node = FakeNode {
                    props: n.props.clone(),
                    flags: n.flags.clone(),
                    online: n.online,
                    address: n
                        .address
                        .clone()
                        .unwrap_or_else(|| format!("10.0.0.{}", i + 1)),
                    uuid: uuid(),
                    pools,
                };
                (n.name.clone(), node)
            })
            .collect();
        Cluster {
            controller_props: fixture.controller_props.clone(),
            nodes,
            groups,
            definitions: BTreeMap::new(),
            next_minor: 1000,
            sync_delay: Duration::ZERO,
        }
    }

    /// Completes moves whose new replica has synced: the source replica is deleted, as LINSTOR does.
    pub fn tick(&mut self, now: Instant) {
        for definition in self.definitions.values_mut() {
            let done: Vec<(String, String)> = definition
                .resources
                .iter()
                .filter_map(|(node, r)| {
                    let synced = r.pending.is_none_or(|(until, _)| now >= until);
                    r.migrate_from
                        .clone()
                        .filter(|_| synced)
                        .map(|from| (node.clone(), from))
                })
                .collect();
            for (node, from) in done {
                definition.resources.remove(&from);
                if let Some(r) = definition.resources.get_mut(&node) {
                    r.migrate_from = None;
                }
            }
        }
    }

    fn used_kib(&self, node: &str, pool: &str) -> u64 {
        self.definitions
            .values()
            .filter_map(|d| {
                d.resources
                    .get(node)
                    .filter(|r| r.pool.as_deref() == Some(pool))
                    .map(|_| d.size_kib())
            })
            .sum()
    }

    fn free_kib(&self, node: &str, pool: &str) -> u64 {
        match self.nodes.get(node).and_then(|n| n.pools.get(pool)) {
            Some(p) if p.full => 0,
            Some(p) => p.total_kib.saturating_sub(self.used_kib(node, pool)),
            None => 0,
        }
    }

    // ---- fault switches ----

    /// Connects or disconnects a satellite. A returning node's replicas are `Outdated` until they resync.
    pub fn set_node_online(&mut self, node: &str, online: bool, now: Instant) -> bool {
        let Some(n) = self.nodes.get_mut(node) else {
            return false;
        };
        let was_online = n.online;
        n.online = online;
        if online && !was_online {
            let until = now + self.sync_delay;
            for definition in self.definitions.values_mut() {
                if let Some(r) = definition
                    .resources
                    .get_mut(node)
                    .filter(|r| r.pool.is_some())
                {
                    r.pending = Some((until, "Outdated"));
                }
            }
        }
        true
    }

    /// Marks a node `EVICTED` (and offline), as auto-evict does.
    pub fn evict_node(&mut self, node: &str) -> bool {
        let Some(n) = self.nodes.get_mut(node) else {
            return false;
        };
        n.online = false;
        if !n.flags.iter().any(|f| f == "EVICTED") {
            n.flags.push("EVICTED".into());
        }
        true
    }

    /// Fills a pool (free capacity 0) or gives its space back.
    pub fn set_pool_full(&mut self, node: &str, pool: &str, full: bool) -> bool {
        match self.nodes.get_mut(node).and_then(|n| n.pools.get_mut(pool)) {
            Some(p) => {
                p.full = full;
                true
            }
            None => false,
        }
    }

    /// Marks a replica as opened (DRBD primary) or not.
    pub fn set_in_use(&mut self, resource: &str, node: &str, in_use: bool) -> bool {
        match self
            .definitions
            .get_mut(resource)
            .and_then(|d| d.resources.get_mut(node))
        {
            Some(r) => {
                r.in_use = in_use;
                true
            }
            None => false,
        }
    }

    /// Sets a controller property.
    pub fn set_controller_prop(&mut self, key: &str, value: &str) {
        self.controller_props
            .insert(key.to_owned(), value.to_owned());
    }

    // ---- views ----

    /// `GET /v1/controller/properties`.
    pub fn controller_props(&self) -> Props {
        self.controller_props.clone()
    }

    /// One node as the REST API shows it.
    pub fn node_view(&self, name: &str) -> Option<Node> {
        let n = self.nodes.get(name)?;
        let mut providers: Vec<String> =
            n.pools.values().map(|p| p.provider_kind.clone()).collect();
        providers.push("DISKLESS".into());
        providers.sort();
        providers.dedup();
        Some(Node {
            name: name.to_owned(),
            node_type: "SATELLITE".into(),
            flags: n.flags.clone(),
            props: n.props.clone(),
            net_interfaces: vec![NetInterface {
                name: "default".into(),
                address: n.address.clone(),
                satellite_port: Some(3366),
                satellite_encryption_type: Some("PLAIN".into()),
                extra: Default::default(),
            }],
            connection_status: if n.online { "ONLINE" } else { "OFFLINE" }.into(),
            uuid: Some(n.uuid.clone()),
            storage_providers: providers,
            resource_layers: vec!["DRBD".into(), "STORAGE".into()],
            eviction_timestamp: None,
            extra: Default::default(),
        })
    }

    /// `GET /v1/nodes`, optionally filtered by name.
    pub fn nodes_view(&self, only: &[String]) -> Vec<Node> {
        self.nodes
            .keys()
            .filter(|n| only.is_empty() || only.contains(n))
            .filter_map(|n| self.node_view(n))
            .collect()
    }

    /// `GET /v1/view/storage-pools`, optionally filtered by node and pool names.
    pub fn pools_view(&self, nodes: &[String], pools: &[String]) -> Vec<StoragePool> {
        let mut out = Vec::new();
        for (node_name, node) in &self.nodes {
            if !nodes.is_empty() && !nodes.contains(node_name) {
                continue;
            }
            if pools.is_empty() || pools.iter().any(|p| p == DISKLESS_POOL) {
                out.push(StoragePool {
                    storage_pool_name: DISKLESS_POOL.into(),
                    node_name: node_name.clone(),
                    provider_kind: "DISKLESS".into(),
                    props: Props::new(),
                    static_traits: [("SupportsSnapshots".to_owned(), "false".to_owned())].into(),
                    free_capacity: None,
                    total_capacity: None,
                    free_space_mgr_name: format!("{node_name};{DISKLESS_POOL}"),
                    reports: Vec::new(),
                    supports_snapshots: false,
                    uuid: Some(format!("{}-diskless", node.uuid)),
                    extra: Default::default(),
                });
            }
            for (pool_name, pool) in &node.pools {
                if !pools.is_empty() && !pools.contains(pool_name) {
                    continue;
                }
                let thin = pool.provider_kind.ends_with("_THIN");
                let snapshots = thin || pool.provider_kind.starts_with("ZFS");
                let mut traits = Props::new();
                traits.insert(
                    "Provisioning".into(),
                    if thin { "Thin" } else { "Fat" }.into(),
                );
                traits.insert("SupportsSnapshots".into(), snapshots.to_string());
                out.push(StoragePool {
                    storage_pool_name: pool_name.clone(),
                    node_name: node_name.clone(),
                    provider_kind: pool.provider_kind.clone(),
                    props: [(
                        "StorDriver/StorPoolName".to_owned(),
                        format!("vg-{pool_name}"),
                    )]
                    .into(),
                    static_traits: traits,
                    free_capacity: Some(self.free_kib(node_name, pool_name)),
                    total_capacity: Some(pool.total_kib),
                    free_space_mgr_name: format!("{node_name};{pool_name}"),
                    reports: Vec::new(),
                    supports_snapshots: snapshots,
                    uuid: Some(pool.uuid.clone()),
                    extra: Default::default(),
                });
            }
        }
        out
    }

    /// `GET /v1/resource-groups`.
    pub fn groups_view(&self) -> Vec<ResourceGroup> {
        self.groups.values().cloned().collect()
    }

    /// `GET /v1/resource-groups/{rg}`.
    pub fn group_view(&self, name: &str) -> Option<ResourceGroup> {
        self.groups.get(name).cloned()
    }

    fn volume_definitions(&self, definition: &FakeDefinition) -> Vec<VolumeDefinition> {
        definition
            .volumes
            .iter()
            .map(|(nr, size)| VolumeDefinition {
                volume_number: Some(*nr),
                size_kib: *size,
                props: Props::new(),
                flags: Vec::new(),
                uuid: Some(format!("{}-{nr}", definition.uuid)),
                extra: Default::default(),
            })
            .collect()
    }

    /// One definition as the REST API shows it.
    pub fn definition_view(&self, name: &str, with_volumes: bool) -> Option<ResourceDefinition> {
        let d = self.definitions.get(name)?;
        Some(ResourceDefinition {
            name: name.to_owned(),
            props: d.props.clone(),
            flags: Vec::new(),
            resource_group_name: Some(d.group.clone()),
            volume_definitions: with_volumes.then(|| self.volume_definitions(d)),
            uuid: Some(d.uuid.clone()),
            extra: Default::default(),
        })
    }

    /// `GET /v1/resource-definitions`.
    pub fn definitions_view(&self, only: &[String], with_volumes: bool) -> Vec<ResourceDefinition> {
        self.definitions
            .keys()
            .filter(|n| only.is_empty() || only.contains(n))
            .filter_map(|n| self.definition_view(n, with_volumes))
            .collect()
    }

    /// `GET /v1/resource-definitions/{rsc}/volume-definitions`.
    pub fn volume_definitions_view(&self, name: &str) -> Option<Vec<VolumeDefinition>> {
        self.definitions
            .get(name)
            .map(|d| self.volume_definitions(d))
    }

    fn disk_state(&self, node: &str, r: &FakeResource, now: Instant) -> Option<String> {
        if !self.nodes.get(node).is_some_and(|n| n.online) {
            return None;
        }
        if r.pool.is_none() {
            return Some("Diskless".into());
        }
        match r.pending {
            Some((until, state)) if now < until => Some(state.into()),
            _ => Some("UpToDate".into()),
        }
    }

    fn resource_view(
        &self,
        name: &str,
        d: &FakeDefinition,
        node: &str,
        r: &FakeResource,
        now: Instant,
    ) -> ResourceWithVolumes {
        let online = self.nodes.get(node).is_some_and(|n| n.online);
        let disk_state = self.disk_state(node, r, now);
        let mut replication_states = BTreeMap::new();
        for (peer, peer_rsc) in &d.resources {
            if peer == node || !online {
                continue;
            }
            let peer_online = self.nodes.get(peer).is_some_and(|n| n.online);
            let state = if !peer_online {
                "Off"
            } else if matches!(
                self.disk_state(peer, peer_rsc, now).as_deref(),
                Some("Inconsistent" | "Outdated")
            ) {
                "SyncSource"
            } else if matches!(disk_state.as_deref(), Some("Inconsistent" | "Outdated")) {
                "SyncTarget"
            } else {
                "Established"
            };
            replication_states.insert(
                peer.clone(),
                ReplicationState {
                    replication_state: state.into(),
                    done_percentage: None,
                    extra: Default::default(),
                },
            );
        }
        let pool_name = r.pool.clone().unwrap_or_else(|| DISKLESS_POOL.into());
        let provider_kind = r
            .pool
            .as_ref()
            .and_then(|p| self.nodes.get(node).and_then(|n| n.pools.get(p)))
            .map(|p| p.provider_kind.clone())
            .unwrap_or_else(|| "DISKLESS".into());
        let volumes = d
            .volumes
            .iter()
            .map(|(nr, size)| Volume {
                volume_number: *nr,
                storage_pool_name: pool_name.clone(),
                provider_kind: provider_kind.clone(),
                device_path: Some(format!("/dev/drbd{}", d.minor + nr)),
                allocated_size_kib: Some(if r.pool.is_some() { *size } else { 0 }),
                usable_size_kib: Some(*size),
                state: VolumeState {
                    disk_state: disk_state.clone(),
                    replication_states: replication_states.clone(),
                    extra: Default::default(),
                },
                flags: Vec::new(),
                extra: Default::default(),
            })
            .collect();
        let mut props = Props::new();
        props.insert("StorPoolName".into(), pool_name);
        ResourceWithVolumes {
            resource: Resource {
                name: name.to_owned(),
                node_name: node.to_owned(),
                props,
                flags: r.flags.clone(),
                state: Some(ResourceState {
                    in_use: online.then_some(r.in_use),
                    extra: Default::default(),
                }),
                uuid: Some(r.uuid.clone()),
                create_timestamp: Some(r.create_ms),
                extra: Default::default(),
            },
            volumes,
        }
    }

    /// `GET /v1/view/resources`, filtered by node, resource and pool names.
    pub fn resources_view(
        &self,
        nodes: &[String],
        resources: &[String],
        pools: &[String],
        now: Instant,
    ) -> Vec<ResourceWithVolumes> {
        let mut out = Vec::new();
        for (name, d) in &self.definitions {
            if !resources.is_empty() && !resources.contains(name) {
                continue;
            }
            for (node, r) in &d.resources {
                if !nodes.is_empty() && !nodes.contains(node) {
                    continue;
                }
                let pool = r.pool.as_deref().unwrap_or(DISKLESS_POOL);
                if !pools.is_empty() && !pools.iter().any(|p| p == pool) {
                    continue;
                }
                out.push(self.resource_view(name, d, node, r, now));
            }
        }
        out
    }

    /// `GET /v1/resource-definitions/{rsc}/resources[/{node}]` without volumes; `None` when the definition is missing.
    pub fn definition_resources(&self, name: &str, now: Instant) -> Option<Vec<Resource>> {
        let d = self.definitions.get(name)?;
        Some(
            d.resources
                .iter()
                .map(|(node, r)| self.resource_view(name, d, node, r, now).resource)
                .collect(),
        )
    }

    /// `GET /v1/resource-definitions/{rsc}/snapshots`, or every snapshot when `name` is `None`.
    pub fn snapshots_view(&self, name: Option<&str>) -> Option<Vec<Snapshot>> {
        if let Some(name) = name {
            self.definitions.get(name)?;
        }
        let mut out = Vec::new();
        for (rsc, d) in &self.definitions {
            if name.is_some_and(|n| n != rsc) {
                continue;
            }
            for (snap_name, s) in &d.snapshots {
                out.push(Snapshot {
                    name: snap_name.clone(),
                    resource_name: rsc.clone(),
                    nodes: s.nodes.clone(),
                    flags: vec!["SUCCESSFUL".into()],
                    volume_definitions: s
                        .sizes
                        .iter()
                        .map(|(nr, size)| SnapshotVolumeDefinition {
                            volume_number: *nr,
                            size_kib: *size,
                            extra: Default::default(),
                        })
                        .collect(),
                    snapshots: s
                        .nodes
                        .iter()
                        .map(|node| SnapshotNode {
                            snapshot_name: snap_name.clone(),
                            node_name: node.clone(),
                            create_timestamp: Some(s.create_ms),
                            flags: Vec::new(),
                            extra: Default::default(),
                        })
                        .collect(),
                    extra: [("uuid".to_owned(), serde_json::Value::String(s.uuid.clone()))]
                        .into_iter()
                        .collect(),
                });
            }
        }
        Some(out)
    }

    /// Placement of every resource, for tests: `(resource, node, pool or None when diskless)`.
    pub fn placements(&self) -> Vec<(String, String, Option<String>)> {
        self.definitions
            .iter()
            .flat_map(|(name, d)| {
                d.resources
                    .iter()
                    .map(move |(node, r)| (name.clone(), node.clone(), r.pool.clone()))
            })
            .collect()
    }

    // ---- mutations ----

    /// `POST /v1/resource-groups`.
    pub fn create_group(&mut self, mut group: ResourceGroup) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_RSC_GRP;
        if !valid_name(&group.name) {
            return Err(fail(
                retcode::FAIL_INVLD_REQUEST,
                obj,
                format!("Resource group name '{}' is invalid.", group.name),
            ));
        }
        if self.groups.contains_key(&group.name) {
            return Err(fail(
                retcode::FAIL_EXISTS_RSC_GRP,
                obj,
                format!("Resource group '{}' already exists.", group.name),
            ));
        }
        group.uuid.get_or_insert_with(uuid);
        let name = group.name.clone();
        self.groups.insert(name.clone(), group);
        Ok(vec![ok(
            retcode::CREATED,
            obj,
            format!("New resource group '{name}' created."),
        )])
    }

    /// `PUT /v1/resource-groups/{rg}`: replaces the select-filter fields given, the description and properties;
    /// then places replicas of every definition in the group that is below a raised place count (a lowered one
    /// removes nothing, as autoplace never deletes).
    pub fn modify_group(&mut self, name: &str, modify: ResourceGroupModify, now: Instant) -> Reply {
        let obj = retcode::MASK_MOD | retcode::MASK_RSC_GRP;
        let Some(group) = self.groups.get_mut(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_GRP,
                obj,
                format!("Resource group '{name}' not found."),
            ));
        };
        if let Some(change) = &modify.select_filter {
            // Overlay the fields given onto the group's filter; absent fields are not serialized, so they stay.
            let merged = serde_json::to_value(&group.select_filter).and_then(|mut current| {
                if let (Some(c), serde_json::Value::Object(given)) =
                    (current.as_object_mut(), serde_json::to_value(change)?)
                {
                    c.extend(given);
                }
                serde_json::from_value::<AutoSelectFilter>(current)
            });
            match merged {
                Ok(filter) => group.select_filter = filter,
                Err(e) => {
                    return Err(fail(
                        retcode::FAIL_INVLD_REQUEST,
                        obj,
                        format!("Select filter of resource group '{name}' is invalid: {e}"),
                    ))
                }
            }
        }
        if let Some(d) = &modify.description {
            group.description = d.clone();
        }
        for key in &modify.delete_props {
            group.props.remove(key);
        }
        group.props.extend(
            modify
                .override_props
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let place_count = group
            .select_filter
            .place_count
            .unwrap_or(DEFAULT_PLACE_COUNT) as usize;
        let mut replies = vec![ok(
            retcode::MODIFIED,
            obj,
            format!("Resource group '{name}' modified."),
        )];
        let below: Vec<String> = self
            .definitions
            .iter()
            .filter(|(_, d)| d.group == name && d.diskful().count() < place_count)
            .map(|(n, _)| n.clone())
            .collect();
        let mut failed = false;
        for definition in below {
            match self.autoplace(&definition, AutoPlaceRequest::default(), now) {
                Ok(r) => replies.extend(r),
                Err(r) => {
                    failed = true;
                    replies.extend(r);
                }
            }
        }
        if failed {
            Err(replies)
        } else {
            Ok(replies)
        }
    }

    /// `POST /v1/resource-definitions`.
    pub fn create_definition(&mut self, create: ResourceDefinitionCreate) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_RSC_DFN;
        let rd = create.resource_definition;
        let name = rd.name.clone();
        if !valid_name(&name) {
            return Err(fail(202, obj, format!("Invalid resource name: '{name}'")));
        }
        if self.definitions.contains_key(&name) {
            return Err(vec![ApiCallRc::new(
                RetCode::error(retcode::FAIL_EXISTS_RSC_DFN, obj),
                format!("A resource definition with the name '{name}' already exists."),
            )
            .with_cause("The resource definition already exists.")]);
        }
        let group = rd
            .resource_group_name
            .clone()
            .unwrap_or_else(|| DEFAULT_GROUP.into());
        if !self.groups.contains_key(&group) {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_GRP,
                obj,
                format!("Resource group '{group}' not found."),
            ));
        }
        let minor = self.next_minor;
        self.next_minor += 16;
        self.definitions.insert(
            name.clone(),
            FakeDefinition {
                group,
                props: rd.props.clone(),
                volumes: BTreeMap::new(),
                resources: BTreeMap::new(),
                snapshots: BTreeMap::new(),
                minor,
                uuid: uuid(),
            },
        );
        let mut rc = ok(
            retcode::CREATED,
            obj,
            format!("New resource definition '{name}' created."),
        );
        rc.obj_refs.insert("RscDfn".into(), name);
        Ok(vec![rc])
    }

    /// `DELETE /v1/resource-definitions/{rsc}`.
    pub fn delete_definition(&mut self, name: &str) -> Reply {
        let obj = retcode::MASK_DEL | retcode::MASK_RSC_DFN;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        if let Some((node, _)) = d.resources.iter().find(|(_, r)| r.in_use) {
            return Err(fail(
                retcode::FAIL_IN_USE,
                obj,
                format!("Resource '{name}' is still in use on node '{node}'."),
            ));
        }
        self.definitions.remove(name);
        Ok(vec![ok(
            retcode::DELETED,
            obj,
            format!("Resource definition '{name}' deleted."),
        )])
    }

    /// `POST /v1/resource-definitions/{rsc}/volume-definitions`.
    pub fn create_volume_definition(
        &mut self,
        name: &str,
        create: VolumeDefinitionCreate,
    ) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_VLM_DFN;
        let size = create.volume_definition.size_kib;
        if size == 0 || size > MAX_VOLUME_KIB {
            return Err(fail(
                retcode::FAIL_INVLD_VLM_SIZE,
                obj,
                format!("Volume size {size} KiB is invalid: expected between 1 and {MAX_VOLUME_KIB} KiB."),
            ));
        }
        let free: Vec<(String, String, u64)> = match self.definitions.get(name) {
            None => {
                return Err(fail(
                    retcode::FAIL_NOT_FOUND_RSC_DFN,
                    obj,
                    format!("Resource definition '{name}' not found."),
                ))
            }
            Some(d) => d
                .diskful()
                .map(|(node, r)| {
                    let pool = r.pool.clone().unwrap_or_default();
                    let free = self.free_kib(node, &pool);
                    (node.clone(), pool, free)
                })
                .collect(),
        };
        if let Some((node, pool, free)) = free.iter().find(|(_, _, free)| *free < size) {
            return Err(fail(
                retcode::FAIL_NOT_ENOUGH_FREE_SPACE,
                obj,
                format!("Not enough free space in storage pool '{pool}' on node '{node}': {free} KiB free, {size} KiB needed."),
            ));
        }
        let Some(d) = self.definitions.get_mut(name) else {
            unreachable_missing()
        };
        let number = match create.volume_definition.volume_number {
            Some(nr) if d.volumes.contains_key(&nr) => {
                return Err(fail(
                    retcode::FAIL_EXISTS_VLM_DFN,
                    obj,
                    format!("A volume definition with the number {nr} already exists in resource definition '{name}'."),
                ))
            }
            Some(nr) => nr,
            None => d.volumes.keys().next_back().map_or(0, |n| n + 1),
        };
        d.volumes.insert(number, size);
        Ok(vec![ok(
            retcode::CREATED,
            obj,
            format!("New volume definition with number '{number}' of resource definition '{name}' created."),
        )])
    }

    /// `PUT /v1/resource-definitions/{rsc}/volume-definitions/{nr}`: only growing is allowed.
    pub fn modify_volume_definition(
        &mut self,
        name: &str,
        number: u32,
        modify: VolumeDefinitionModify,
    ) -> Reply {
        let obj = retcode::MASK_MOD | retcode::MASK_VLM_DFN;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        let Some(&current) = d.volumes.get(&number) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_VLM_DFN,
                obj,
                format!("Volume definition {number} of resource definition '{name}' not found."),
            ));
        };
        if let Some(size) = modify.size_kib {
            if size < current || size > MAX_VOLUME_KIB {
                return Err(fail(
                    retcode::FAIL_INVLD_VLM_SIZE,
                    obj,
                    format!("Volume {number} of '{name}' is {current} KiB; it can only grow, {size} KiB was requested."),
                ));
            }
            let grow = size - current;
            for (node, r) in d.diskful() {
                if !self.nodes.get(node).is_some_and(|n| n.online) {
                    return Err(fail(
                        retcode::FAIL_NOT_CONNECTED,
                        obj,
                        format!("No active connection to satellite '{node}'; the volume cannot be resized."),
                    ));
                }
                let pool = r.pool.as_deref().unwrap_or_default();
                let free = self.free_kib(node, pool);
                if free < grow {
                    return Err(fail(
                        retcode::FAIL_NOT_ENOUGH_FREE_SPACE,
                        obj,
                        format!("Not enough free space in storage pool '{pool}' on node '{node}': {free} KiB free, {grow} KiB needed."),
                    ));
                }
            }
            if let Some(d) = self.definitions.get_mut(name) {
                d.volumes.insert(number, size);
            }
        }
        Ok(vec![ok(
            retcode::MODIFIED,
            obj,
            format!("Volume definition with number '{number}' of resource definition '{name}' modified."),
        )])
    }

    /// `POST /v1/resource-definitions/{rsc}/resources`: all or nothing.
    pub fn create_resources(
        &mut self,
        name: &str,
        creates: Vec<ResourceCreate>,
        now: Instant,
    ) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_RSC;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        let size = d.size_kib();
        let joining_data = d.diskful().next().is_some();
        let mut planned = Vec::new();
        let mut warnings = Vec::new();
        for create in creates {
            let rsc = create.resource;
            let node_name = rsc.node_name.clone();
            let Some(node) = self.nodes.get(&node_name) else {
                return Err(fail(
                    retcode::FAIL_NOT_FOUND_NODE,
                    obj,
                    format!("Node '{node_name}' not found."),
                ));
            };
            if d.resources.contains_key(&node_name) || planned.iter().any(|(n, _)| n == &node_name)
            {
                return Err(fail(
                    retcode::FAIL_EXISTS_RSC,
                    obj,
                    format!(
                        "A resource with the name '{name}' already exists on node '{node_name}'."
                    ),
                ));
            }
            let diskless = rsc.is_diskless();
            let pool = if diskless {
                None
            } else {
                let pool = rsc
                    .props
                    .get("StorPoolName")
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_POOL.into());
                if !node.pools.contains_key(&pool) {
                    return Err(fail(
                        retcode::FAIL_NOT_FOUND_STOR_POOL,
                        obj,
                        format!("Storage pool '{pool}' not found on node '{node_name}'."),
                    ));
                }
                let free = self.free_kib(&node_name, &pool);
                if free < size {
                    return Err(fail(
                        retcode::FAIL_NOT_ENOUGH_FREE_SPACE,
                        obj,
                        format!("Not enough free space in storage pool '{pool}' on node '{node_name}': {free} KiB free, {size} KiB needed."),
                    ));
                }
                Some(pool)
            };
            if !node.online {
                warnings.push(ApiCallRc::new(
                    RetCode::warn(retcode::WARN_NOT_CONNECTED, obj),
                    format!("No active connection to satellite '{node_name}'"),
                ));
            }
            let mut flags: Vec<String> = rsc
                .flags
                .iter()
                .filter(|f| *f != "DISKLESS")
                .cloned()
                .collect();
            if diskless {
                flags.retain(|f| f != "DRBD_DISKLESS");
                flags.push("DRBD_DISKLESS".into());
                flags.push("DISKLESS".into());
            }
            planned.push((
                node_name,
                FakeResource {
                    pending: (pool.is_some() && joining_data && !self.sync_delay.is_zero())
                        .then(|| (now + self.sync_delay, "Inconsistent")),
                    pool,
                    flags,
                    in_use: false,
                    migrate_from: None,
                    create_ms: now_ms(),
                    uuid: uuid(),
                },
            ));
        }
        let mut replies = Vec::new();
        let Some(d) = self.definitions.get_mut(name) else {
            unreachable_missing()
        };
        for (node, r) in planned {
            replies.push(ok(
                retcode::CREATED,
                obj,
                format!("New resource '{name}' on node '{node}' registered."),
            ));
            d.resources.insert(node, r);
        }
        replies.extend(warnings);
        Ok(replies)
    }

    /// `DELETE /v1/resource-definitions/{rsc}/resources/{node}`.
    pub fn delete_resource(&mut self, name: &str, node: &str) -> Reply {
        let obj = retcode::MASK_DEL | retcode::MASK_RSC;
        let Some(d) = self.definitions.get_mut(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        let Some(r) = d.resources.get(node) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC,
                obj,
                format!("Resource '{name}' not found on node '{node}'."),
            ));
        };
        if r.in_use {
            return Err(fail(
                retcode::FAIL_IN_USE,
                obj,
                format!("Resource '{name}' is still in use on node '{node}'."),
            ));
        }
        d.resources.remove(node);
        Ok(vec![ok(
            retcode::DELETED,
            obj,
            format!("Resource '{name}' on node '{node}' deleted."),
        )])
    }

    /// `PUT /v1/resource-definitions/{rsc}/resources/{node}/toggle-disk` (API 1.28 body).
    pub fn toggle_disk(
        &mut self,
        name: &str,
        node: &str,
        toggle: ToggleDisk,
        now: Instant,
    ) -> Reply {
        let obj = retcode::MASK_MOD | retcode::MASK_RSC;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        let Some(r) = d.resources.get(node) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC,
                obj,
                format!("Resource '{name}' not found on node '{node}'."),
            ));
        };
        let size = d.size_kib();
        match toggle.operation.as_str() {
            "INTO_DRBD_DISKFUL" => {
                if r.pool.is_some() {
                    return Ok(vec![ApiCallRc::new(
                        RetCode::warn(retcode::WARN_RSC_ALREADY_HAS_DISK, obj),
                        format!("Resource '{name}' already has a disk on node '{node}'."),
                    )]);
                }
                if let Some(from) = &toggle.migrate_from {
                    if d.resources.get(from).is_none_or(|r| r.pool.is_none()) {
                        return Err(fail(
                            retcode::FAIL_NOT_FOUND_RSC,
                            obj,
                            format!("No diskful resource '{name}' on node '{from}' to migrate from."),
                        ));
                    }
                }
                let pool = toggle.storage_pool.clone().unwrap_or_else(|| DEFAULT_POOL.into());
                if !self.nodes.get(node).is_some_and(|n| n.pools.contains_key(&pool)) {
                    return Err(fail(retcode::FAIL_NOT_FOUND_STOR_POOL, obj, format!("Storage pool '{pool}' not found on node '{node}'.")));
                }
                let free = self.free_kib(node, &pool);
                if free < size {
                    return Err(fail(
                        retcode::FAIL_NOT_ENOUGH_FREE_SPACE,
                        obj,
                        format!("Not enough free space in storage pool '{pool}' on node '{node}': {free} KiB free, {size} KiB needed."),
                    ));
                }
                let delay = self.sync_delay;
                let Some(r) = self.definitions.get_mut(name).and_then(|d| d.resources.get_mut(node)) else {
                    unreachable_missing()
                };
                r.pool = Some(pool);
                r.flags.retain(|f| !matches!(f.as_str(), "DISKLESS" | "DRBD_DISKLESS" | "TIE_BREAKER"));
                r.pending = (!delay.is_zero()).then(|| (now + delay, "Inconsistent"));
                r.migrate_from = toggle.migrate_from.clone();
                self.tick(now);
                Ok(vec![ok(retcode::MODIFIED, obj, format!("Resource '{name}' on node '{node}' is getting a disk."))])
            }
            "INTO_DRBD_DISKLESS" | "INTO_DRBD_CLIENT" => {
                if r.pool.is_none() {
                    return Ok(vec![ApiCallRc::new(
                        RetCode::warn(retcode::WARN_RSC_ALREADY_DISKLESS, obj),
                        format!("Resource '{name}' is already diskless on node '{node}'."),
                    )]);
                }
                let Some(r) = self.definitions.get_mut(name).and_then(|d| d.resources.get_mut(node)) else {
                    unreachable_missing()
                };
                r.pool = None;
                r.pending = None;
                r.flags.push("DRBD_DISKLESS".into());
                r.flags.push("DISKLESS".into());
                Ok(vec![ok(retcode::MODIFIED, obj, format!("Resource '{name}' on node '{node}' is now diskless."))])
            }
            other => Err(fail(
                retcode::FAIL_INVLD_REQUEST,
                obj,
                format!("Unknown toggle-disk operation '{other}': expected INTO_DRBD_DISKFUL, INTO_DRBD_DISKLESS or INTO_DRBD_CLIENT."),
            )),
        }
    }

    /// `POST /v1/resource-definitions/{rsc}/snapshots`.
    pub fn create_snapshot(&mut self, name: &str, snapshot: Snapshot) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_SNAPSHOT;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        if !valid_name(&snapshot.name) {
            return Err(fail(
                218,
                obj,
                format!("Invalid snapshot name: '{}'", snapshot.name),
            ));
        }
        if d.snapshots.contains_key(&snapshot.name) {
            return Err(fail(
                retcode::FAIL_EXISTS_SNAPSHOT,
                obj,
                format!(
                    "A snapshot with the name '{}' of resource '{name}' already exists.",
                    snapshot.name
                ),
            ));
        }
        let nodes: Vec<String> = if snapshot.nodes.is_empty() {
            d.diskful().map(|(n, _)| n.clone()).collect()
        } else {
            snapshot.nodes.clone()
        };
        if nodes.is_empty() {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC,
                obj,
                format!("Resource '{name}' has no diskful replica to take a snapshot of."),
            ));
        }
        for node in &nodes {
            if d.resources.get(node).is_none_or(|r| r.pool.is_none()) {
                return Err(fail(
                    retcode::FAIL_NOT_FOUND_RSC,
                    obj,
                    format!("No diskful resource '{name}' on node '{node}'."),
                ));
            }
            if !self.nodes.get(node).is_some_and(|n| n.online) {
                return Err(fail(
                    retcode::FAIL_NOT_CONNECTED,
                    obj,
                    format!(
                        "No active connection to satellite '{node}'; the snapshot cannot be taken."
                    ),
                ));
            }
        }
        let sizes = d.volumes.clone();
        let Some(d) = self.definitions.get_mut(name) else {
            unreachable_missing()
        };
        d.snapshots.insert(
            snapshot.name.clone(),
            FakeSnapshot {
                nodes,
                sizes,
                create_ms: now_ms(),
                uuid: uuid(),
            },
        );
        Ok(vec![ok(
            retcode::CREATED,
            obj,
            format!(
                "New snapshot '{}' of resource '{name}' registered.",
                snapshot.name
            ),
        )])
    }

    /// `DELETE /v1/resource-definitions/{rsc}/snapshots/{snap}`.
    pub fn delete_snapshot(&mut self, name: &str, snapshot: &str) -> Reply {
        let obj = retcode::MASK_DEL | retcode::MASK_SNAPSHOT;
        let Some(d) = self.definitions.get_mut(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        if d.snapshots.remove(snapshot).is_none() {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_SNAPSHOT,
                obj,
                format!("Snapshot '{snapshot}' of resource '{name}' not found."),
            ));
        }
        Ok(vec![ok(
            retcode::DELETED,
            obj,
            format!("Snapshot '{snapshot}' of resource '{name}' deleted."),
        )])
    }

    /// `POST /v1/resource-definitions/{rsc}/autoplace`, following the controller's autoplacer.
    pub fn autoplace(&mut self, name: &str, request: AutoPlaceRequest, now: Instant) -> Reply {
        let obj = retcode::MASK_CRT | retcode::MASK_RSC;
        let Some(d) = self.definitions.get(name) else {
            return Err(fail(
                retcode::FAIL_NOT_FOUND_RSC_DFN,
                obj,
                format!("Resource definition '{name}' not found."),
            ));
        };
        let group = self
            .groups
            .get(&d.group)
            .map(|g| g.select_filter.clone())
            .unwrap_or_default();
        let filter = merge(&request.select_filter, &group);
        let place_count = filter.place_count.unwrap_or(DEFAULT_PLACE_COUNT);
        let existing: Vec<&String> = d.diskful().map(|(n, _)| n).collect();
        let already = existing.len() as i64;
        let additional = match request.select_filter.additional_place_count {
            Some(extra) => i64::from(extra),
            None => i64::from(place_count) - already,
        };
        if additional == 0 {
            return Ok(vec![ApiCallRc::new(
                RetCode::warn(
                    retcode::WARN_RSC_ALREADY_DEPLOYED,
                    retcode::MASK_CRT | retcode::MASK_RSC_DFN,
                ),
                format!("Resource '{name}' was already deployed on {already} nodes. Skipping."),
            )]);
        }
        if additional < 0 {
            return Ok(vec![ApiCallRc::new(
                RetCode::warn(retcode::WARN_RSC_ALREADY_DEPLOYED, retcode::MASK_CRT | retcode::MASK_RSC_DFN),
                format!(
                    "Resource '{name}' is deployed on {already} nodes; {} would have to be deleted from nodes to reach the placement count of {place_count}. Autoplace never deletes.",
                    -additional
                ),
            )]);
        }
        let additional = additional as usize;
        let size = d.size_kib();
        if filter
            .not_place_with_rsc_regex
            .as_deref()
            .is_some_and(|r| !r.is_empty())
        {
            // Refused loudly rather than ignored, so a test never passes on a filter the fake did not apply.
            return Err(fail(
                retcode::FAIL_INVLD_REQUEST,
                obj,
                "not_place_with_rsc_regex is not supported by the fake controller".into(),
            ));
        }
        let pools_named = filter.pools();
        let same: Vec<(String, Option<String>)> = filter
            .replicas_on_same
            .iter()
            .flatten()
            .map(|k| split_prop(k))
            .collect();
        let different: Vec<String> = filter
            .replicas_on_different
            .iter()
            .flatten()
            .map(|k| split_prop(k).0)
            .collect();

        // Values fixed by the replicas already placed.
        let prop_of =
            |node: &str, key: &str| self.nodes.get(node).and_then(|n| n.props.get(key).cloned());
        let fixed_same: Vec<(String, Option<String>)> = same
            .iter()
            .map(|(key, value)| {
                let from_existing = existing.first().and_then(|n| prop_of(n, key));
                (key.clone(), value.clone().or(from_existing))
            })
            .collect();
        let used_different: BTreeSet<(String, String)> = existing
            .iter()
            .flat_map(|n| {
                different
                    .iter()
                    .filter_map(|k| prop_of(n, k).map(|v| (k.clone(), v)))
            })
            .collect();

        let mut candidates: Vec<Candidate> = Vec::new();
        for (node_name, node) in &self.nodes {
            if !node.online
                || node.flags.iter().any(|f| f == "EVICTED")
                || d.resources.contains_key(node_name)
            {
                continue;
            }
            if filter
                .node_name_list
                .as_ref()
                .is_some_and(|l| !l.is_empty() && !l.contains(node_name))
            {
                continue;
            }
            let avoid = filter.not_place_with_rsc.iter().flatten();
            if avoid.clone().any(|other| {
                self.definitions
                    .get(other)
                    .is_some_and(|o| o.resources.contains_key(node_name))
            }) {
                continue;
            }
            if fixed_same.iter().any(|(k, v)| match v {
                Some(v) => node.props.get(k) != Some(v),
                None => !node.props.contains_key(k),
            }) {
                continue;
            }
            if different.iter().any(|k| match node.props.get(k) {
                Some(v) => used_different.contains(&(k.clone(), v.clone())),
                None => true,
            }) {
                continue;
            }
            let best_pool = node
                .pools
                .iter()
                .filter(|(p, pool)| {
                    (pools_named.is_empty() || pools_named.contains(p))
                        && filter
                            .provider_list
                            .as_ref()
                            .is_none_or(|l| l.is_empty() || l.contains(&pool.provider_kind))
                })
                .map(|(p, _)| (p.clone(), self.free_kib(node_name, p)))
                .filter(|(_, free)| *free >= size)
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
            if let Some((pool, free)) = best_pool {
                candidates.push(Candidate {
                    node: node_name.clone(),
                    pool,
                    free,
                    props: node.props.clone(),
                });
            }
        }
        // Most free space first; ties go to the node name, so placement is reproducible.
        candidates.sort_by(|a, b| b.free.cmp(&a.free).then(a.node.cmp(&b.node)));

        // Replicas-on-same keys without a fixed value split the candidates into groups; pick the best group.
        let open_same: Vec<&String> = fixed_same
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k)
            .collect();
        let mut groups: BTreeMap<Vec<String>, Vec<&Candidate>> = BTreeMap::new();
        for c in &candidates {
            let key: Vec<String> = open_same
                .iter()
                .map(|k| c.props.get(*k).cloned().unwrap_or_default())
                .collect();
            groups.entry(key).or_default().push(c);
        }
        // At most N replicas per value of each `x_replicas_on_different_map` key, existing ones included.
        let x_limits: Vec<(String, u32)> = filter
            .x_replicas_on_different_map
            .iter()
            .flatten()
            .map(|(k, n)| (split_prop(k).0, *n))
            .collect();
        let mut x_existing: BTreeMap<(String, String), u32> = BTreeMap::new();
        for node in &existing {
            for (key, _) in &x_limits {
                if let Some(value) = prop_of(node, key) {
                    *x_existing.entry((key.clone(), value)).or_default() += 1;
                }
            }
        }
        let mut best: Option<Vec<&Candidate>> = None;
        for members in groups.values() {
            let mut picked: Vec<&Candidate> = Vec::new();
            let mut taken = used_different.clone();
            let mut x_counts = x_existing.clone();
            for c in members {
                if picked.len() == additional {
                    break;
                }
                let values: Vec<(String, String)> = different
                    .iter()
                    .filter_map(|k| c.props.get(k).map(|v| (k.clone(), v.clone())))
                    .collect();
                if values.iter().any(|v| taken.contains(v)) {
                    continue;
                }
                let x_values: Vec<((String, String), u32)> = x_limits
                    .iter()
                    .filter_map(|(k, limit)| {
                        c.props.get(k).map(|v| ((k.clone(), v.clone()), *limit))
                    })
                    .collect();
                if x_values
                    .iter()
                    .any(|(kv, limit)| x_counts.get(kv).copied().unwrap_or(0) >= *limit)
                {
                    continue;
                }
                for (kv, _) in x_values {
                    *x_counts.entry(kv).or_default() += 1;
                }
                taken.extend(values);
                picked.push(c);
            }
            if picked.len() == additional {
                let score: u64 = picked.iter().map(|c| c.free).sum();
                if best
                    .as_ref()
                    .is_none_or(|b| b.iter().map(|c| c.free).sum::<u64>() < score)
                {
                    best = Some(picked);
                }
            }
        }
        let Some(picked) = best else {
            let details = not_enough_nodes_details(
                &filter,
                place_count,
                additional,
                size,
                &pools_named,
                &same,
                &different,
            );
            return Err(vec![ApiCallRc::new(
                RetCode::error(retcode::FAIL_NOT_ENOUGH_NODES, 0),
                "Not enough available nodes",
            )
            .with_details(details)]);
        };
        let picked: Vec<Candidate> = picked.into_iter().cloned().collect();
        let creates: Vec<ResourceCreate> = picked
            .iter()
            .map(|c| ResourceCreate {
                resource: Resource {
                    node_name: c.node.clone(),
                    props: [("StorPoolName".to_owned(), c.pool.clone())].into(),
                    ..Resource::default()
                },
                ..ResourceCreate::default()
            })
            .collect();
        let mut replies = self.create_resources(name, creates, now)?;
        let diskless_on_remaining = request
            .diskless_on_remaining
            .or(filter.diskless_on_remaining)
            .unwrap_or(false);
        if diskless_on_remaining {
            let taken: BTreeSet<String> = self
                .definitions
                .get(name)
                .map(|d| d.resources.keys().cloned().collect())
                .unwrap_or_default();
            let rest: Vec<ResourceCreate> = self
                .nodes
                .iter()
                .filter(|(n, node)| node.online && !taken.contains(*n))
                .map(|(n, _)| ResourceCreate {
                    resource: Resource {
                        node_name: n.clone(),
                        flags: vec!["DISKLESS".into()],
                        ..Resource::default()
                    },
                    ..ResourceCreate::default()
                })
                .collect();
            if !rest.is_empty() {
                replies.extend(self.create_resources(name, rest, now)?);
            }
        }
        replies.push(ok(
            retcode::CREATED,
            retcode::MASK_CRT | retcode::MASK_RSC_DFN,
            format!(
                "Resource '{name}' successfully autoplaced on {} nodes",
                picked.len()
            ),
        ));
        Ok(replies)
    }

    /// Prometheus text with the controller's `linstor_*` names.
    pub fn metrics_text(&self, scrapes: u64, now: Instant) -> String {
        use crate::linstor::exposition::escape_label as esc;
        let mut out = String::new();
        let mut line = |name: &str, labels: &[(&str, &str)], value: f64| {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
                .collect();
            if inner.is_empty() {
                out.push_str(&format!("{name} {value}\n"));
            } else {
                out.push_str(&format!("{name}{{{}}} {value}\n", inner.join(",")));
            }
        };
        line(
            "linstor_info",
            &[
                ("version", "1.31.0"),
                ("buildtime", "2026-06-01T00:00:00+00:00"),
                ("gitid", "trimtab-fake"),
            ],
            1.0,
        );
        for (name, node) in &self.nodes {
            // 2 = online, 0 = offline: the fake's encoding of the connection status.
            line(
                "linstor_node_state",
                &[
                    ("node", name),
                    ("nodetype", "SATELLITE"),
                    ("address", &node.address),
                    ("port", "3366"),
                    ("encryption", "PLAIN"),
                ],
                if node.online { 2.0 } else { 0.0 },
            );
        }
        line("linstor_node_reconnect_attempt_count", &[], 0.0);
        line(
            "linstor_resource_definition_count",
            &[],
            self.definitions.len() as f64,
        );
        for (name, d) in &self.definitions {
            line(
                "linstor_resource_definition_resource_count",
                &[("name", name), ("resource_group", &d.group)],
                d.resources.len() as f64,
            );
            for (nr, size) in &d.volumes {
                line(
                    "linstor_volume_definition_size_bytes",
                    &[
                        ("name", name),
                        ("volume_number", &nr.to_string()),
                        ("resource_group", &d.group),
                    ],
                    (*size * 1024) as f64,
                );
            }
            for (node, r) in &d.resources {
                let online = self.nodes.get(node).is_some_and(|n| n.online);
                let state = if !online {
                    -1.0
                } else if r.in_use {
                    1.0
                } else {
                    0.0
                };
                line(
                    "linstor_resource_state",
                    &[("name", name), ("node", node)],
                    state,
                );
                let pool = r.pool.as_deref().unwrap_or(DISKLESS_POOL);
                for (nr, size) in &d.volumes {
                    let device = format!("/dev/drbd{}", d.minor + nr);
                    let labels = [
                        ("resource", name.as_str()),
                        ("node", node.as_str()),
                        ("volume", &nr.to_string()),
                        ("device_path", &device),
                        ("storage_pool", pool),
                    ];
                    // 1 = UpToDate or Diskless, 0 = anything else.
                    let healthy = matches!(
                        self.disk_state(node, r, now).as_deref(),
                        Some("UpToDate" | "Diskless")
                    );
                    line(
                        "linstor_volume_state",
                        &labels,
                        if healthy { 1.0 } else { 0.0 },
                    );
                    let allocated = if r.pool.is_some() { *size * 1024 } else { 0 };
                    line(
                        "linstor_volume_allocated_size_bytes",
                        &labels,
                        allocated as f64,
                    );
                }
            }
        }
        for (node_name, node) in &self.nodes {
            for (pool_name, pool) in &node.pools {
                let backing = format!("vg-{pool_name}");
                let labels = [
                    ("storage_pool", pool_name.as_str()),
                    ("node", node_name.as_str()),
                    ("driver", pool.provider_kind.as_str()),
                    ("backing_pool", backing.as_str()),
                ];
                line(
                    "linstor_storage_pool_capacity_free_bytes",
                    &labels,
                    (self.free_kib(node_name, pool_name) * 1024) as f64,
                );
                line(
                    "linstor_storage_pool_capacity_total_bytes",
                    &labels,
                    (pool.total_kib * 1024) as f64,
                );
                line("linstor_storage_pool_error_count", &labels, 0.0);
            }
        }
        line(
            "linstor_error_reports_count",
            &[("hostname", "controller"), ("module", "CONTROLLER")],
            0.0,
        );
        line("linstor_scrape_requests_count", &[], scrapes as f64);
        line("linstor_scrape_duration_seconds", &[], 0.001);
        out
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    node: String,
    pool: String,
    free: u64,
    props: Props,
}

/// Request fields override the resource group's.
fn merge(request: &AutoSelectFilter, group: &AutoSelectFilter) -> AutoSelectFilter {
    AutoSelectFilter {
        place_count: request.place_count.or(group.place_count),
        additional_place_count: request.additional_place_count,
        node_name_list: request
            .node_name_list
            .clone()
            .or_else(|| group.node_name_list.clone()),
        storage_pool: request
            .storage_pool
            .clone()
            .or_else(|| group.storage_pool.clone()),
        storage_pool_list: request
            .storage_pool_list
            .clone()
            .filter(|l| !l.is_empty())
            .or_else(|| group.storage_pool_list.clone()),
        storage_pool_diskless_list: request
            .storage_pool_diskless_list
            .clone()
            .or_else(|| group.storage_pool_diskless_list.clone()),
        not_place_with_rsc: request
            .not_place_with_rsc
            .clone()
            .or_else(|| group.not_place_with_rsc.clone()),
        not_place_with_rsc_regex: request
            .not_place_with_rsc_regex
            .clone()
            .or_else(|| group.not_place_with_rsc_regex.clone()),
        replicas_on_same: request
            .replicas_on_same
            .clone()
            .or_else(|| group.replicas_on_same.clone()),
        replicas_on_different: request
            .replicas_on_different
            .clone()
            .or_else(|| group.replicas_on_different.clone()),
        x_replicas_on_different_map: request
            .x_replicas_on_different_map
            .clone()
            .or_else(|| group.x_replicas_on_different_map.clone()),
        layer_stack: request
            .layer_stack
            .clone()
            .or_else(|| group.layer_stack.clone()),
        provider_list: request
            .provider_list
            .clone()
            .or_else(|| group.provider_list.clone()),
        diskless_on_remaining: request
            .diskless_on_remaining
            .or(group.diskless_on_remaining),
        extra: Default::default(),
    }
}

/// `zone` → `Aux/zone`; `Aux/zone=z1` → (`Aux/zone`, `z1`), as the controller reads these lists.
fn split_prop(text: &str) -> (String, Option<String>) {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim().to_owned())),
        None => (text.trim(), None),
    };
    let key = if key.starts_with("Aux/") {
        key.to_owned()
    } else {
        format!("Aux/{key}")
    };
    (key, value)
}

fn not_enough_nodes_details(
    filter: &AutoSelectFilter,
    place_count: u32,
    additional: usize,
    size: u64,
    pools: &[String],
    same: &[(String, Option<String>)],
    different: &[String],
) -> String {
    let mut text = String::from("Not enough nodes fulfilling the following auto-place criteria:\n");
    if !pools.is_empty() {
        text.push_str(&format!(" * has a deployed storage pool named {pools:?}\n"));
    }
    text.push_str(&format!(
        " * the storage pools have to have at least '{size}' free space\n"
    ));
    text.push_str(" * the current access context has enough privileges to use the node and the storage pool\n");
    text.push_str(" * the node is online\n");
    text.push_str(" * the node is not evicted\n");
    text.push_str(" * the resource is not yet deployed on the node\n");
    if !same.is_empty() {
        let keys: Vec<String> = same
            .iter()
            .map(|(k, v)| v.as_ref().map_or(k.clone(), |v| format!("{k}={v}")))
            .collect();
        text.push_str(&format!(
            " * the nodes have to share the values of the properties {keys:?}\n"
        ));
    }
    if !different.is_empty() {
        text.push_str(&format!(
            " * the nodes have to differ in the values of the properties {different:?}\n"
        ));
    }
    if let Some(nodes) = filter.node_name_list.as_ref().filter(|l| !l.is_empty()) {
        text.push_str(&format!(" * the node is one of {nodes:?}\n"));
    }
    if let Some(avoid) = filter.not_place_with_rsc.as_ref().filter(|l| !l.is_empty()) {
        text.push_str(&format!(
            " * the node holds none of the resources {avoid:?}\n"
        ));
    }
    if let Some(kinds) = filter.provider_list.as_ref().filter(|l| !l.is_empty()) {
        text.push_str(&format!(
            " * the storage pool's provider is one of {kinds:?}\n"
        ));
    }
    text.push_str("\nAuto-place configuration details:\n");
    text.push_str(&format!("   Replica count: {place_count}\n"));
    text.push_str(&format!("   Additional replica count: {additional}\n"));
    text.push_str(&format!("   Storage pool name(s): {pools:?}\n"));
    text
}

/// For `get_mut` right after a successful `get` of the same key under the same lock.
fn unreachable_missing() -> ! {
    // The caller held `&mut self` between the lookup and this point, so the entry cannot have vanished.
    unreachable!("entry looked up under the same borrow disappeared")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::from_fixture(&Fixture::default_cluster())
    }

    fn create(c: &mut Cluster, name: &str, size: u64) {
        c.create_definition(ResourceDefinitionCreate {
            resource_definition: ResourceDefinition {
                name: name.into(),
                ..Default::default()
            },
            extra: Default::default(),
        })
        .unwrap();
        c.create_volume_definition(
            name,
            VolumeDefinitionCreate {
                volume_definition: VolumeDefinition {
                    volume_number: None,
                    size_kib: size,
                    props: Props::new(),
                    flags: vec![],
                    uuid: None,
                    extra: Default::default(),
                },
                extra: Default::default(),
            },
        )
        .unwrap();
    }

    fn place(c: &mut Cluster, name: &str, count: u32, pool: &str, different: &[&str]) -> Reply {
        let request = AutoPlaceRequest {
            select_filter: AutoSelectFilter {
                place_count: Some(count),
                storage_pool_list: Some(vec![pool.into()]),
                replicas_on_different: Some(different.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        };
        c.autoplace(name, request, Instant::now())
    }

    fn nodes_of(c: &Cluster, name: &str) -> Vec<String> {
        c.placements()
            .into_iter()
            .filter(|(r, _, p)| r == name && p.is_some())
            .map(|(_, n, _)| n)
            .collect()
    }

    #[test]
    fn default_fixture_is_valid_and_spans_three_zones() {
        let fixture = Fixture::default_cluster();
        fixture.validate().unwrap();
        let zones: BTreeSet<_> = fixture
            .nodes
            .iter()
            .filter_map(|n| n.props.get("Aux/zone"))
            .collect();
        assert_eq!(zones.len(), 3);
    }

    #[test]
    fn autoplace_prefers_most_free_space_and_honours_different_zones() {
        let mut c = cluster();
        create(&mut c, "r1", 1024);
        place(&mut c, "r1", 3, "pool-ssd", &["Aux/zone"]).unwrap();
        let nodes = nodes_of(&c, "r1");
        // n5 has the biggest ssd pool; then one node each from z1 and z2, tie broken by name.
        assert_eq!(nodes, vec!["n1", "n3", "n5"]);
        // Placing again at the same count is a warning, not an error.
        let again = place(&mut c, "r1", 3, "pool-ssd", &["Aux/zone"]).unwrap();
        assert!(again[0].ret_code.is_warn());
        assert_eq!(again[0].ret_code.code(), retcode::WARN_RSC_ALREADY_DEPLOYED);
        // A fourth zone-distinct replica cannot exist.
        let err = place(&mut c, "r1", 4, "pool-ssd", &["Aux/zone"]).unwrap_err();
        assert_eq!(err[0].ret_code.0, -4611686018427386908);
        assert!(err[0]
            .details
            .as_deref()
            .unwrap()
            .contains("differ in the values of the properties [\"Aux/zone\"]"));
    }

    #[test]
    fn x_replicas_on_different_caps_replicas_per_zone() {
        let mut c = cluster();
        create(&mut c, "r1", 1024);
        let request = |count: u32| AutoPlaceRequest {
            select_filter: AutoSelectFilter {
                place_count: Some(count),
                storage_pool_list: Some(vec!["pool-ssd".into()]),
                x_replicas_on_different_map: Some([("zone".to_owned(), 1)].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        // Three zones hold ssd pools, so four replicas at one per zone cannot be placed.
        let err = c.autoplace("r1", request(4), Instant::now()).unwrap_err();
        assert_eq!(err[0].ret_code.code(), retcode::FAIL_NOT_ENOUGH_NODES);
        c.autoplace("r1", request(3), Instant::now()).unwrap();
        // Without the cap n2 (z1) would come before n3 (z2) on the name tie-break.
        assert_eq!(nodes_of(&c, "r1"), vec!["n1", "n3", "n5"]);
    }

    #[test]
    fn free_capacity_shrinks_as_volumes_are_placed_and_full_pools_are_skipped() {
        let mut c = cluster();
        let before = c.free_kib("n5", "pool-ssd");
        create(&mut c, "r1", 4096);
        place(&mut c, "r1", 1, "pool-ssd", &[]).unwrap();
        assert_eq!(c.free_kib("n5", "pool-ssd"), before - 4096);
        c.set_pool_full("n1", "pool-ssd", true);
        create(&mut c, "r2", 1024);
        place(&mut c, "r2", 4, "pool-ssd", &[]).unwrap();
        assert!(!nodes_of(&c, "r2").contains(&"n1".to_string()));
    }
}
