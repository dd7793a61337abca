//! Snapshots of the CQL server's keyspaces, tables and rows to one JSON file, and loading them back.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::store::{Database, Keyspace, Table};
use super::types::CqlType;

/// The snapshot file format version this build writes and reads.
const SNAPSHOT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    version: u32,
    keyspaces: Vec<KeyspaceSnapshot>,
    tables: Vec<TableSnapshot>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyspaceSnapshot {
    name: String,
    replication: Vec<(String, String)>,
    durable_writes: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSnapshot {
    keyspace: String,
    name: String,
    columns: Vec<(String, String)>,
    partition_key: Vec<String>,
    clustering: Vec<String>,
    /// Each cell as base64, or null.
    rows: Vec<Vec<Option<String>>>,
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot access snapshot file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot file {path} is not a valid snapshot")]
    Format {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("snapshot file {path}: {reason}")]
    Content { path: String, reason: String },
}

/// Writes every keyspace, table and row to `path` (through a temporary file and a rename).
pub fn save(db: &Database, path: &Path) -> Result<(), PersistError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        keyspaces: db
            .keyspaces()
            .into_iter()
            .map(|k| KeyspaceSnapshot {
                name: k.name,
                replication: k.replication,
                durable_writes: k.durable_writes,
            })
            .collect(),
        tables: db
            .tables()
            .iter()
            .map(|t| {
                let (columns, partition_key, clustering) = t.definition();
                TableSnapshot {
                    keyspace: t.keyspace.clone(),
                    name: t.name.clone(),
                    columns,
                    partition_key,
                    clustering,
                    rows: t
                        .rows(None)
                        .into_iter()
                        .map(|r| r.into_iter().map(|c| c.map(|b| b64.encode(b))).collect())
                        .collect(),
                }
            })
            .collect(),
    };
    let io = |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(&snapshot).map_err(|source| PersistError::Format {
        path: path.display().to_string(),
        source,
    })?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Loads a snapshot into an empty database; a missing file is an empty database.
pub fn load(db: &Database, path: &Path) -> Result<(), PersistError> {
    let display = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PersistError::Io {
                path: display,
                source,
            })
        }
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|source| PersistError::Format {
            path: display.clone(),
            source,
        })?;
    let content = |reason: String| PersistError::Content {
        path: display.clone(),
        reason,
    };
    if snapshot.version != SNAPSHOT_VERSION {
        return Err(content(format!(
            "version {} found, expected {SNAPSHOT_VERSION}",
            snapshot.version
        )));
    }
    for k in snapshot.keyspaces {
        db.create_keyspace(
            Keyspace {
                name: k.name,
                replication: k.replication,
                durable_writes: k.durable_writes,
            },
            true,
        )
        .map_err(content)?;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    for t in snapshot.tables {
        let columns = t
            .columns
            .iter()
            .map(|(n, ty)| {
                CqlType::parse(ty)
                    .map(|ty| (n.clone(), ty))
                    .ok_or_else(|| content(format!("unknown type '{ty}'")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let table = Table::new(
            &t.keyspace,
            &t.name,
            &columns,
            &t.partition_key,
            &t.clustering,
        )
        .map_err(content)?;
        db.create_table(table, true).map_err(content)?;
        let table = db
            .table(&t.keyspace, &t.name)
            .ok_or_else(|| content(format!("table {} vanished", t.name)))?;
        for row in t.rows {
            let cells = row
                .into_iter()
                .map(|c| c.map(|s| b64.decode(s)).transpose().map(Some))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| content(format!("bad cell in {}.{}: {e}", t.keyspace, t.name)))?;
            table.upsert(cells).map_err(content)?;
        }
    }
    Ok(())
}
