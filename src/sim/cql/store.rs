//! The in-memory database: keyspaces, tables and rows with Cassandra's primary-key semantics, plus the
//! system tables the drivers read on connect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use super::types::{push_cell, CqlType, SortKey};

/// How many row-store shards each table has; writers to different partitions rarely share a lock.
const SHARDS: usize = 32;

/// One stored cell: `None` is null.
pub type Cell = Option<Vec<u8>>;

/// Where a column sits in the primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    PartitionKey(usize),
    Clustering(usize),
    Regular,
}

/// A column definition.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: CqlType,
    pub kind: ColumnKind,
}

type Partition = BTreeMap<Vec<SortKey>, Vec<Cell>>;

/// A user table with its rows, sharded by partition key.
#[derive(Debug)]
pub struct Table {
    pub keyspace: String,
    pub name: String,
    pub columns: Vec<Column>,
    pub partition_key: Vec<usize>,
    pub clustering: Vec<usize>,
    shards: Vec<Mutex<HashMap<Vec<u8>, Partition>>>,
    rows: AtomicUsize,
}

impl Table {
    /// Builds an empty table from its columns and key column names (already validated by the parser).
    pub fn new(
        keyspace: &str,
        name: &str,
        columns: &[(String, CqlType)],
        partition_key: &[String],
        clustering: &[String],
    ) -> Result<Table, String> {
        let index = |key: &String| {
            columns
                .iter()
                .position(|(c, _)| c == key)
                .ok_or_else(|| format!("unknown primary key column '{key}'"))
        };
        let pk = partition_key
            .iter()
            .map(index)
            .collect::<Result<Vec<_>, _>>()?;
        let ck = clustering
            .iter()
            .map(index)
            .collect::<Result<Vec<_>, _>>()?;
        let columns = columns
            .iter()
            .enumerate()
            .map(|(i, (n, ty))| Column {
                name: n.clone(),
                ty: ty.clone(),
                kind: if let Some(p) = pk.iter().position(|&k| k == i) {
                    ColumnKind::PartitionKey(p)
                } else if let Some(p) = ck.iter().position(|&k| k == i) {
                    ColumnKind::Clustering(p)
                } else {
                    ColumnKind::Regular
                },
            })
            .collect();
        Ok(Table {
            keyspace: keyspace.to_string(),
            name: name.to_string(),
            columns,
            partition_key: pk,
            clustering: ck,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            rows: AtomicUsize::new(0),
        })
    }

    /// The index of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The serialized partition key of a full row, or an error naming a missing key column.
    pub fn partition_of(&self, row: &[Option<Cell>]) -> Result<Vec<u8>, String> {
        let mut key = Vec::with_capacity(32);
        for &i in &self.partition_key {
            match &row[i] {
                Some(Some(bytes)) => push_cell(&mut key, Some(bytes)),
                _ => {
                    return Err(format!(
                        "Invalid null value in condition for column {}",
                        self.columns[i].name
                    ))
                }
            }
        }
        Ok(key)
    }

    fn clustering_of(&self, row: &[Option<Cell>]) -> Result<Vec<SortKey>, String> {
        self.clustering
            .iter()
            .map(|&i| match &row[i] {
                Some(Some(bytes)) => Ok(self.columns[i].ty.sort_key(Some(bytes))),
                _ => Err(format!(
                    "Missing mandatory PRIMARY KEY part {}",
                    self.columns[i].name
                )),
            })
            .collect()
    }

    fn shard(&self, partition: &[u8]) -> &Mutex<HashMap<Vec<u8>, Partition>> {
        // FNV-1a: cheap and good enough to spread partition keys over the shards.
        let hash = partition.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Writes one row: `None` leaves a column as it was, `Some(None)` sets it to null. An existing
    /// primary key is overwritten column by column, as Cassandra does.
    pub fn upsert(&self, row: Vec<Option<Cell>>) -> Result<(), String> {
        let partition = self.partition_of(&row)?;
        self.upsert_at(partition, row)
    }

    /// [`Table::upsert`] with the partition key already computed by [`Table::partition_of`].
    pub fn upsert_at(&self, partition: Vec<u8>, row: Vec<Option<Cell>>) -> Result<(), String> {
        let clustering = self.clustering_of(&row)?;
        let mut shard = self
            .shard(&partition)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let rows = shard.entry(partition).or_default();
        match rows.get_mut(&clustering) {
            Some(existing) => {
                for (slot, value) in existing.iter_mut().zip(row) {
                    if let Some(value) = value {
                        *slot = value;
                    }
                }
            }
            None => {
                rows.insert(clustering, row.into_iter().map(Option::flatten).collect());
                self.rows.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
        Ok(())
    }

    /// How many rows the table holds.
    pub fn row_count(&self) -> usize {
        self.rows.load(AtomicOrdering::Relaxed)
    }

    /// The rows of the given partitions (all partitions when `None`), in clustering order per partition.
    pub fn rows(&self, partitions: Option<&[Vec<u8>]>) -> Vec<Vec<Cell>> {
        let mut out = Vec::new();
        match partitions {
            Some(keys) => {
                let mut seen = HashSet::new();
                for key in keys {
                    if !seen.insert(key) {
                        continue;
                    }
                    let shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = shard.get(key) {
                        out.extend(p.values().cloned());
                    }
                }
            }
            None => {
                for shard in &self.shards {
                    let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                    let mut keys: Vec<_> = shard.keys().collect();
                    keys.sort();
                    for key in keys {
                        out.extend(shard[key].values().cloned());
                    }
                }
            }
        }
        out
    }

    /// Removes every row.
    pub fn truncate(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.rows.store(0, AtomicOrdering::Relaxed);
    }

    /// The `CREATE TABLE` body columns, for snapshots.
    pub fn definition(&self) -> (Vec<(String, String)>, Vec<String>, Vec<String>) {
        (
            self.columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.name()))
                .collect(),
            self.partition_key
                .iter()
                .map(|&i| self.columns[i].name.clone())
                .collect(),
            self.clustering
                .iter()
                .map(|&i| self.columns[i].name.clone())
                .collect(),
        )
    }
}

/// A keyspace definition.
#[derive(Debug, Clone)]
pub struct Keyspace {
    pub name: String,
    pub replication: Vec<(String, String)>,
    pub durable_writes: bool,
}

/// The whole schema and data.
#[derive(Debug)]
pub struct Database {
    keyspaces: RwLock<BTreeMap<String, Keyspace>>,
    tables: RwLock<BTreeMap<(String, String), Arc<Table>>>,
    generation: AtomicU64,
    /// Bumped on every write, so the snapshotter knows when there is something new to save.
    pub writes: AtomicU64,
    host_id: uuid::Uuid,
}

/// A table computed on demand (the system tables): column definitions and rows.
pub struct Virtual {
    pub columns: Vec<(String, CqlType)>,
    pub rows: Vec<Vec<Cell>>,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            keyspaces: RwLock::default(),
            tables: RwLock::default(),
            generation: AtomicU64::new(1),
            writes: AtomicU64::new(0),
            host_id: uuid::Uuid::new_v4(),
        }
    }
}

impl Database {
    pub fn create_keyspace(&self, ks: Keyspace, if_not_exists: bool) -> Result<(), String> {
        let mut keyspaces = self.keyspaces.write().unwrap_or_else(|p| p.into_inner());
        if keyspaces.contains_key(&ks.name) {
            return if if_not_exists {
                Ok(())
            } else {
                Err(format!("Keyspace {} already exists", ks.name))
            };
        }
        keyspaces.insert(ks.name.clone(), ks);
        self.generation.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(())
    }

    pub fn has_keyspace(&self, name: &str) -> bool {
        self.keyspaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    pub fn create_table(&self, table: Table, if_not_exists: bool) -> Result<(), String> {
        if !self.has_keyspace(&table.keyspace) {
            return Err(format!("Keyspace '{}' does not exist", table.keyspace));
        }
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        let key = (table.keyspace.clone(), table.name.clone());
        if tables.contains_key(&key) {
            return if if_not_exists {
                Ok(())
            } else {
                Err(format!("Table {}.{} already exists", key.0, key.1))
            };
        }
        tables.insert(key, Arc::new(table));
        self.generation.fetch_add(1, AtomicOrdering::Relaxed);
        Ok(())
    }

    pub fn drop_table(&self, keyspace: &str, name: &str) -> bool {
        let removed = self
            .tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(keyspace.to_string(), name.to_string()))
            .is_some();
        self.generation.fetch_add(1, AtomicOrdering::Relaxed);
        removed
    }

    pub fn drop_keyspace(&self, name: &str) -> bool {
        let removed = self
            .keyspaces
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some();
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(ks, _), _| ks != name);
        self.generation.fetch_add(1, AtomicOrdering::Relaxed);
        removed
    }

    pub fn table(&self, keyspace: &str, name: &str) -> Option<Arc<Table>> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(keyspace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn keyspaces(&self) -> Vec<Keyspace> {
        self.keyspaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn tables(&self) -> Vec<Arc<Table>> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn schema_version(&self) -> uuid::Uuid {
        let generation = self.generation.load(AtomicOrdering::Relaxed);
        uuid::Uuid::from_u64_pair(0x7472_696d_7461_6200, generation)
    }

    /// The system tables, by keyspace and name. `None` means "not a system table"; an `Err` names a
    /// table that does not exist here (such as Scylla's own `system_schema.scylla_*`).
    pub fn system_table(
        &self,
        keyspace: &str,
        name: &str,
        ip: IpAddr,
    ) -> Option<Result<Virtual, String>> {
        use CqlType::*;
        let text = |s: &str| Some(s.as_bytes().to_vec());
        let col = |cols: &[(&str, CqlType)]| {
            cols.iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect::<Vec<_>>()
        };
        let map_tt = || Map(Box::new(Text), Box::new(Text));
        let list_t = || List(Box::new(Text));
        let inet = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => Some(v4.octets().to_vec()),
            IpAddr::V6(v6) => Some(v6.octets().to_vec()),
        };
        let schema_columns = || {
            col(&[
                ("keyspace_name", Text),
                ("table_name", Text),
                ("column_name", Text),
                ("clustering_order", Text),
                ("column_name_bytes", Blob),
                ("kind", Text),
                ("position", Int),
                ("type", Text),
            ])
        };
        let empty = |columns| {
            Some(Ok(Virtual {
                columns,
                rows: Vec::new(),
            }))
        };
        match (keyspace, name) {
            ("system", "local") => {
                let columns = col(&[
                    ("key", Text),
                    ("bootstrapped", Text),
                    ("broadcast_address", Inet),
                    ("cluster_name", Text),
                    ("cql_version", Text),
                    ("data_center", Text),
                    ("host_id", Uuid),
                    ("listen_address", Inet),
                    ("native_protocol_version", Text),
                    ("partitioner", Text),
                    ("rack", Text),
                    ("release_version", Text),
                    ("rpc_address", Inet),
                    ("schema_version", Uuid),
                    ("tokens", Set(Box::new(Text))),
                ]);
                let mut tokens = 1i32.to_be_bytes().to_vec();
                push_cell(&mut tokens, Some(b"0"));
                let row = vec![
                    text("local"),
                    text("COMPLETED"),
                    inet(ip),
                    text("trimtab-sim"),
                    text("3.4.5"),
                    text("datacenter1"),
                    Some(self.host_id.as_bytes().to_vec()),
                    inet(ip),
                    text("4"),
                    text("org.apache.cassandra.dht.Murmur3Partitioner"),
                    text("rack1"),
                    text("4.1.0"),
                    inet(ip),
                    Some(self.schema_version().as_bytes().to_vec()),
                    Some(tokens),
                ];
                Some(Ok(Virtual {
                    columns,
                    rows: vec![row],
                }))
            }
            ("system", "peers") => empty(col(&[
                ("peer", Inet),
                ("data_center", Text),
                ("host_id", Uuid),
                ("preferred_ip", Inet),
                ("rack", Text),
                ("release_version", Text),
                ("rpc_address", Inet),
                ("schema_version", Uuid),
                ("tokens", Set(Box::new(Text))),
            ])),
            ("system", "peers_v2") => empty(col(&[
                ("peer", Inet),
                ("peer_port", Int),
                ("data_center", Text),
                ("host_id", Uuid),
                ("native_address", Inet),
                ("native_port", Int),
                ("preferred_ip", Inet),
                ("preferred_port", Int),
                ("rack", Text),
                ("release_version", Text),
                ("schema_version", Uuid),
                ("tokens", Set(Box::new(Text))),
            ])),
            ("system_schema", "keyspaces") => {
                let rows = self
                    .keyspaces()
                    .into_iter()
                    .map(|ks| {
                        let mut replication = (ks.replication.len() as i32).to_be_bytes().to_vec();
                        for (k, v) in &ks.replication {
                            push_cell(&mut replication, Some(k.as_bytes()));
                            push_cell(&mut replication, Some(v.as_bytes()));
                        }
                        vec![
                            text(&ks.name),
                            Some(vec![u8::from(ks.durable_writes)]),
                            Some(replication),
                        ]
                    })
                    .collect();
                let columns = col(&[
                    ("keyspace_name", Text),
                    ("durable_writes", Boolean),
                    ("replication", map_tt()),
                ]);
                Some(Ok(Virtual { columns, rows }))
            }
            ("system_schema", "tables") => {
                let columns = col(&[
                    ("keyspace_name", Text),
                    ("table_name", Text),
                    ("bloom_filter_fp_chance", Double),
                    ("caching", map_tt()),
                    ("comment", Text),
                    ("compaction", map_tt()),
                    ("compression", map_tt()),
                    ("crc_check_chance", Double),
                    ("default_time_to_live", Int),
                    ("extensions", Map(Box::new(Text), Box::new(Blob))),
                    ("flags", Set(Box::new(Text))),
                    ("gc_grace_seconds", Int),
                    ("id", Uuid),
                    ("max_index_interval", Int),
                    ("memtable_flush_period_in_ms", Int),
                    ("min_index_interval", Int),
                    ("speculative_retry", Text),
                ]);
                let empty_map = Some(0i32.to_be_bytes().to_vec());
                let mut flags = 1i32.to_be_bytes().to_vec();
                push_cell(&mut flags, Some(b"compound"));
                let rows = self
                    .tables()
                    .iter()
                    .map(|t| {
                        let mut h = Sha256::new();
                        h.update(format!("{}.{}", t.keyspace, t.name).as_bytes());
                        let id = uuid::Builder::from_random_bytes(
                            h.finalize()[..16].try_into().unwrap_or_default(),
                        )
                        .into_uuid();
                        vec![
                            text(&t.keyspace),
                            text(&t.name),
                            Some(0.01f64.to_be_bytes().to_vec()),
                            empty_map.clone(),
                            text(""),
                            empty_map.clone(),
                            empty_map.clone(),
                            Some(1.0f64.to_be_bytes().to_vec()),
                            Some(0i32.to_be_bytes().to_vec()),
                            empty_map.clone(),
                            Some(flags.clone()),
                            Some(864_000i32.to_be_bytes().to_vec()),
                            Some(id.as_bytes().to_vec()),
                            Some(2048i32.to_be_bytes().to_vec()),
                            Some(0i32.to_be_bytes().to_vec()),
                            Some(128i32.to_be_bytes().to_vec()),
                            text("99PERCENTILE"),
                        ]
                    })
                    .collect();
                Some(Ok(Virtual { columns, rows }))
            }
            ("system_schema", "columns") => {
                let mut rows = Vec::new();
                for t in self.tables() {
                    for c in &t.columns {
                        let (kind, position, order) = match c.kind {
                            ColumnKind::PartitionKey(p) => ("partition_key", p as i32, "none"),
                            ColumnKind::Clustering(p) => ("clustering", p as i32, "asc"),
                            ColumnKind::Regular => ("regular", -1, "none"),
                        };
                        rows.push(vec![
                            text(&t.keyspace),
                            text(&t.name),
                            text(&c.name),
                            text(order),
                            Some(c.name.as_bytes().to_vec()),
                            text(kind),
                            Some(position.to_be_bytes().to_vec()),
                            text(&c.ty.name()),
                        ]);
                    }
                }
                Some(Ok(Virtual {
                    columns: schema_columns(),
                    rows,
                }))
            }
            ("system_schema", "types") => empty(col(&[
                ("keyspace_name", Text),
                ("type_name", Text),
                ("field_names", list_t()),
                ("field_types", list_t()),
            ])),
            ("system_schema", "functions") => empty(col(&[
                ("keyspace_name", Text),
                ("function_name", Text),
                ("argument_names", list_t()),
                ("argument_types", list_t()),
                ("body", Text),
                ("called_on_null_input", Boolean),
                ("language", Text),
                ("return_type", Text),
            ])),
            ("system_schema", "aggregates") => empty(col(&[
                ("keyspace_name", Text),
                ("aggregate_name", Text),
                ("argument_types", list_t()),
                ("final_func", Text),
                ("initcond", Text),
                ("return_type", Text),
                ("state_func", Text),
                ("state_type", Text),
            ])),
            ("system_schema", "triggers") => empty(col(&[
                ("keyspace_name", Text),
                ("table_name", Text),
                ("trigger_name", Text),
                ("options", map_tt()),
            ])),
            ("system_schema", "indexes") => empty(col(&[
                ("keyspace_name", Text),
                ("table_name", Text),
                ("index_name", Text),
                ("kind", Text),
                ("options", map_tt()),
            ])),
            ("system_schema", "views") => empty(col(&[
                ("keyspace_name", Text),
                ("view_name", Text),
                ("base_table_id", Uuid),
                ("base_table_name", Text),
                ("include_all_columns", Boolean),
                ("where_clause", Text),
            ])),
            ("system_schema", "dropped_columns") => empty(col(&[
                ("keyspace_name", Text),
                ("table_name", Text),
                ("column_name", Text),
                ("dropped_time", Timestamp),
                ("type", Text),
            ])),
            ("system_virtual_schema", "keyspaces") => empty(col(&[("keyspace_name", Text)])),
            ("system_virtual_schema", "tables") => empty(col(&[
                ("keyspace_name", Text),
                ("table_name", Text),
                ("comment", Text),
            ])),
            ("system_virtual_schema", "columns") => empty(schema_columns()),
            (
                "system"
                | "system_schema"
                | "system_virtual_schema"
                | "system_auth"
                | "system_distributed"
                | "system_traces",
                _,
            ) => Some(Err(format!("unconfigured table {keyspace}.{name}"))),
            _ => None,
        }
    }
}
