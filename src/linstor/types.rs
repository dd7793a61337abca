//! The LINSTOR REST objects trimtab reads and writes (API 1.28), as hand-written serde types that keep unknown fields.
//!
//! Sizes are in KiB, as LINSTOR counts them. Every type keeps the fields it does not name in `extra`,
//! so a newer controller's additions pass through untouched and are never rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields a type does not name, kept as sent.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Property maps (`Aux/zone`, `StorPoolName`, ...).
pub type Props = BTreeMap<String, String>;

/// `GET /v1/controller/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerVersion {
    /// Controller release, e.g. `1.31.0`.
    pub version: String,
    /// Source revision.
    #[serde(default)]
    pub git_hash: String,
    /// Build time as the controller prints it.
    #[serde(default)]
    pub build_time: String,
    /// REST API version, e.g. `1.28.0`.
    #[serde(default)]
    pub rest_api_version: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A satellite's network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetInterface {
    /// Interface name, e.g. `default`.
    pub name: String,
    /// IP address.
    pub address: String,
    /// Satellite port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satellite_port: Option<u16>,
    /// `PLAIN` or `SSL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub satellite_encryption_type: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET /v1/nodes`: one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// `SATELLITE`, `CONTROLLER`, `COMBINED`, `AUXILIARY`, ...
    #[serde(rename = "type")]
    pub node_type: String,
    /// Flags such as `EVICTED` or `DELETE`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Properties, including the `Aux/` ones placement constraints refer to.
    #[serde(default)]
    pub props: Props,
    /// Network interfaces.
    #[serde(default)]
    pub net_interfaces: Vec<NetInterface>,
    /// `ONLINE`, `OFFLINE`, `CONNECTED`, ...
    #[serde(default = "unknown")]
    pub connection_status: String,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Storage providers the satellite supports.
    #[serde(default)]
    pub storage_providers: Vec<String>,
    /// Layers the satellite supports.
    #[serde(default)]
    pub resource_layers: Vec<String>,
    /// When the node was evicted (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_timestamp: Option<i64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

fn unknown() -> String {
    "UNKNOWN".into()
}

impl Node {
    /// The controller can reach the satellite.
    pub fn is_online(&self) -> bool {
        matches!(self.connection_status.as_str(), "ONLINE" | "CONNECTED")
    }

    /// LINSTOR evicted the node (auto-evict or `node evict`).
    pub fn is_evicted(&self) -> bool {
        self.flags.iter().any(|f| f == "EVICTED")
    }
}

/// `GET /v1/view/storage-pools`: one pool on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoragePool {
    /// Pool name, shared by the pools of one class across nodes.
    pub storage_pool_name: String,
    /// Node the pool is on.
    pub node_name: String,
    /// `LVM`, `LVM_THIN`, `ZFS`, `ZFS_THIN`, `FILE`, `FILE_THIN`, `DISKLESS`, ...
    pub provider_kind: String,
    /// Properties.
    #[serde(default)]
    pub props: Props,
    /// Traits such as `Provisioning` (`Fat`/`Thin`).
    #[serde(default)]
    pub static_traits: Props,
    /// Free space in KiB; absent while the satellite has not reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_capacity: Option<u64>,
    /// Total space in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_capacity: Option<u64>,
    /// Free-space manager (`node;pool` unless shared).
    #[serde(default)]
    pub free_space_mgr_name: String,
    /// Problems the satellite reported for the pool.
    #[serde(default)]
    pub reports: Vec<super::retcode::ApiCallRc>,
    /// Whether the provider can take snapshots.
    #[serde(default)]
    pub supports_snapshots: bool,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The autoplacer's criteria (`select_filter`), in resource groups and autoplace requests.
///
/// The spec says "do not add defaults": every field is optional and left out when unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoSelectFilter {
    /// Diskful replicas to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place_count: Option<u32>,
    /// Diskful replicas to add on top of what exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_place_count: Option<u32>,
    /// Only these nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name_list: Option<Vec<String>>,
    /// One pool (older controllers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_pool: Option<String>,
    /// Any of these pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_pool_list: Option<Vec<String>>,
    /// Diskless pools for diskless placements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_pool_diskless_list: Option<Vec<String>>,
    /// Avoid nodes holding these resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_place_with_rsc: Option<Vec<String>>,
    /// Avoid nodes holding resources matching this regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_place_with_rsc_regex: Option<String>,
    /// Node properties whose values must be equal between replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_on_same: Option<Vec<String>>,
    /// Node properties whose values must differ between replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_on_different: Option<Vec<String>>,
    /// At most N replicas per value of a property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_replicas_on_different_map: Option<BTreeMap<String, u32>>,
    /// Layer stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_stack: Option<Vec<String>>,
    /// Only these provider kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_list: Option<Vec<String>>,
    /// Add diskless replicas on every other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskless_on_remaining: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl AutoSelectFilter {
    /// The pools named by `storage_pool` and `storage_pool_list` together.
    pub fn pools(&self) -> Vec<String> {
        let mut pools: Vec<String> = self.storage_pool.iter().cloned().collect();
        for pool in self.storage_pool_list.iter().flatten() {
            if !pools.contains(pool) {
                pools.push(pool.clone());
            }
        }
        pools
    }
}

/// `GET /v1/resource-groups`: one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroup {
    /// Group name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Properties (e.g. `BalanceResourcesEnabled`).
    #[serde(default)]
    pub props: Props,
    /// Placement criteria for definitions in the group.
    #[serde(default)]
    pub select_filter: AutoSelectFilter,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A volume definition: volume number and size of one volume of a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeDefinition {
    /// Volume number inside the resource (0 for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<u32>,
    /// Size in KiB.
    pub size_kib: u64,
    /// Properties.
    #[serde(default)]
    pub props: Props,
    /// Flags (`ENCRYPTED`, `GROSS_SIZE`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/resource-definitions/{rsc}/volume-definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeDefinitionCreate {
    /// The definition to create.
    pub volume_definition: VolumeDefinition,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `PUT /v1/resource-definitions/{rsc}/volume-definitions/{nr}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeDefinitionModify {
    /// New size in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_kib: Option<u64>,
    /// Properties to set.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub override_props: Props,
    /// Properties to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_props: Vec<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `PUT /v1/resource-groups/{rg}`: what to change in a group. Fields left out stay as they are; in
/// `select_filter`, each field given replaces the group's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceGroupModify {
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Placement criteria to change, for example `place_count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_filter: Option<AutoSelectFilter>,
    /// Properties to set.
    #[serde(default, skip_serializing_if = "Props::is_empty")]
    pub override_props: Props,
    /// Properties to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete_props: Vec<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET /v1/resource-definitions`: one definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinition {
    /// Resource name.
    #[serde(default)]
    pub name: String,
    /// Properties.
    #[serde(default)]
    pub props: Props,
    /// Flags (`DELETE`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// The group the definition belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group_name: Option<String>,
    /// Volume definitions, when asked for with `with_volume_definitions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_definitions: Option<Vec<VolumeDefinition>>,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/resource-definitions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceDefinitionCreate {
    /// The definition to create.
    pub resource_definition: ResourceDefinition,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A resource's runtime state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceState {
    /// Whether the resource is opened (DRBD primary) on its node; unknown when the node is offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A resource: the placement of one resource definition on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource name.
    #[serde(default)]
    pub name: String,
    /// Node name.
    pub node_name: String,
    /// Properties (`StorPoolName`).
    #[serde(default)]
    pub props: Props,
    /// Flags (`DISKLESS`, `DRBD_DISKLESS`, `TIE_BREAKER`, `DELETE`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Runtime state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ResourceState>,
    /// Object id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Creation time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl Resource {
    /// The replica has no local disk.
    pub fn is_diskless(&self) -> bool {
        self.flags.iter().any(|f| {
            matches!(
                f.as_str(),
                "DISKLESS" | "DRBD_DISKLESS" | "NVME_INITIATOR" | "TIE_BREAKER"
            )
        })
    }

    /// The replica is being deleted.
    pub fn is_deleting(&self) -> bool {
        self.flags.iter().any(|f| f == "DELETE")
    }
}

/// `POST /v1/resource-definitions/{rsc}/resources`: one element of the array.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceCreate {
    /// The resource to create.
    pub resource: Resource,
    /// Layer list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_list: Option<Vec<String>>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `PUT /v1/resource-definitions/{rsc}/resources/{node}/toggle-disk` (API 1.28).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToggleDisk {
    /// `INTO_DRBD_DISKFUL`, `INTO_DRBD_DISKLESS` or `INTO_DRBD_CLIENT`.
    pub operation: String,
    /// Pool to put the new disk in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_pool: Option<String>,
    /// Delete the replica on this node once the new disk has synced: a move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_from: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/resource-definitions/{rsc}/autoplace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AutoPlaceRequest {
    /// Add diskless replicas on every other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diskless_on_remaining: Option<bool>,
    /// Placement criteria; the resource group's fill in what is absent.
    #[serde(default)]
    pub select_filter: AutoSelectFilter,
    /// Layer list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_list: Option<Vec<String>>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A peer's replication towards this volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationState {
    /// `Established`, `SyncSource`, `SyncTarget`, ...
    #[serde(default)]
    pub replication_state: String,
    /// Sync progress in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_percentage: Option<f64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A volume's runtime state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeState {
    /// `UpToDate`, `Outdated`, `Inconsistent`, `Diskless`, `Unknown`, ...; absent when not reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    /// Per-peer replication.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication_states: BTreeMap<String, ReplicationState>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A volume of a resource on a node, as `/v1/view/resources` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    /// Volume number.
    pub volume_number: u32,
    /// Pool the volume lives in.
    #[serde(default)]
    pub storage_pool_name: String,
    /// Provider kind of that pool.
    #[serde(default)]
    pub provider_kind: String,
    /// Block device, e.g. `/dev/drbd1000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    /// Allocated size in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<u64>,
    /// Usable size in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<u64>,
    /// Runtime state.
    #[serde(default)]
    pub state: VolumeState,
    /// Flags.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `GET /v1/view/resources`: a resource with its volumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceWithVolumes {
    /// The resource.
    #[serde(flatten)]
    pub resource: Resource,
    /// Its volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// A snapshot's volume definition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotVolumeDefinition {
    /// Volume number.
    pub volume_number: u32,
    /// Size in KiB.
    pub size_kib: u64,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The snapshot on one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// Snapshot name.
    #[serde(default)]
    pub snapshot_name: String,
    /// Node name.
    #[serde(default)]
    pub node_name: String,
    /// Creation time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
    /// Flags.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A snapshot definition: one named snapshot of a resource, across its nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Snapshot name.
    pub name: String,
    /// Resource name.
    #[serde(default)]
    pub resource_name: String,
    /// Nodes holding the snapshot (empty in a create request: all nodes).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Flags (`SUCCESSFUL`, `FAILED_DEPLOYMENT`, ...).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Volume definitions at snapshot time.
    #[serde(default)]
    pub volume_definitions: Vec<SnapshotVolumeDefinition>,
    /// Per-node snapshots.
    #[serde(default)]
    pub snapshots: Vec<SnapshotNode>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_from_a_newer_controller_parse_and_keep_what_is_unknown() {
        let json = r#"{"name":"n1","node_name":"n1","props":{"StorPoolName":"pool-ssd"},"flags":[],
            "state":{"in_use":false,"future":1},"layer_object":{"type":"DRBD"},"uuid":"u",
            "volumes":[{"volume_number":0,"storage_pool_name":"pool-ssd","provider_kind":"LVM",
            "allocated_size_kib":1024,"state":{"disk_state":"UpToDate"}}]}"#;
        let parsed: ResourceWithVolumes = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.resource.extra["layer_object"]["type"], "DRBD");
        assert_eq!(parsed.resource.state.as_ref().unwrap().extra["future"], 1);
        assert_eq!(
            parsed.volumes[0].state.disk_state.as_deref(),
            Some("UpToDate")
        );
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back["layer_object"]["type"], "DRBD");
    }
}
