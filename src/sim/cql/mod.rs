//! trimtab's own CQL native protocol v4 server: an in-memory, optionally persisted Cassandra stand-in.
//!
//! It answers what the `scylla` 1.9 driver and Python's `cassandra-driver` send with their default
//! settings: OPTIONS/STARTUP/REGISTER, QUERY, PREPARE, EXECUTE and BATCH over pipelined stream ids;
//! USE, CREATE KEYSPACE/TABLE, INSERT, SELECT (WHERE on key columns with `=`, `IN` and ranges, LIMIT,
//! `COUNT(*)`), TRUNCATE and DROP; and the system tables the drivers read on connect, with
//! `system_schema.*` describing the keyspaces and tables it really holds.
//!
//! Semantics follow Cassandra where a client would notice: an INSERT with an existing primary key
//! overwrites that row; batches spanning several partitions warn above 5 KiB and are refused above
//! 50 KiB ("Batch too large"), single-partition batches are only bounded by `max_mutation_bytes`;
//! unknown tables and type mismatches are Invalid (0x2200), parse errors are Syntax (0x2000) naming the
//! statement; an unknown prepared id is Unprepared (0x2500); DDL answers Void, so drivers do not wait
//! for schema agreement. Result pages honour the page size with a paging state.
//!
//! Prepared statements are planned once and cached by id (and per connection), and rows live in
//! per-table shards, so EXECUTE of a prepared INSERT and BATCH neither re-parse nor share one lock.
//!
//! [`CapacityModel`] (off by default) makes writes cost worker time, queue behind a limit on concurrent work,
//! time out and be refused as Overloaded like a node under load; [`FaultHandle`] injects write timeouts, overload, unavailability and refused connections;
//! [`CqlServer::stop`] and [`CqlServer::restart`] take the node down and bring it back on the same
//! address with the same data (but no prepared statements, as a restarted node).

pub mod capacity;
mod conn;
mod exec;
mod faults;
mod parse;
mod persist;
mod store;
mod types;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use capacity::{CapacityModel, CapacityStats};
pub use exec::{BATCH_FAIL_BYTES, BATCH_WARN_BYTES};
pub use faults::FaultHandle;
pub use persist::PersistError;

use exec::Engine;
use store::Database;

/// Configuration of the CQL server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CqlServerConfig {
    /// Address to listen on. Drivers connect to the IP in `system.local.rpc_address`, which is this
    /// address's IP, so bind a concrete IP (not 0.0.0.0). Port 0 picks a free port (tests do this).
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// File to keep the data in across restarts: loaded on start, written on a clean stop and every
    /// `snapshot_interval_ms` when something changed. `None` keeps everything in memory only.
    #[serde(default)]
    pub persist_path: Option<PathBuf>,
    /// How often to write the snapshot file while running, in milliseconds.
    #[serde(default = "default_snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    /// The largest mutation (bytes of bound values for one partition in one request) accepted, as
    /// Cassandra's `max_mutation_size`; larger writes are refused with Invalid.
    #[serde(default = "default_max_mutation_bytes")]
    pub max_mutation_bytes: usize,
    /// How the node behaves under load (workers, cost per request and per byte, write timeout, backlog limit);
    /// see [`capacity`] for the model and the shape of its latency curve. `None` (the default) answers every
    /// write at once, as an infinitely fast node.
    #[serde(default)]
    pub capacity: Option<CapacityModel>,
}

const fn default_bind() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9042)
}

const fn default_snapshot_interval_ms() -> u64 {
    2_000
}

const fn default_max_mutation_bytes() -> usize {
    16 * 1024 * 1024
}

impl Default for CqlServerConfig {
    fn default() -> Self {
        CqlServerConfig {
            bind: default_bind(),
            persist_path: None,
            snapshot_interval_ms: default_snapshot_interval_ms(),
            max_mutation_bytes: default_max_mutation_bytes(),
            capacity: None,
        }
    }
}

/// Why the server could not start, stop or restart.
#[derive(Debug, thiserror::Error)]
pub enum CqlServerError {
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The snapshot file could not be read or written.
    #[error("cql server persistence failed")]
    Persist(#[from] PersistError),
}

struct Running {
    cancel: CancellationToken,
    tracker: TaskTracker,
    acceptor: JoinHandle<()>,
    snapshotter: Option<JoinHandle<()>>,
}

/// A running CQL server. Dropping it without [`CqlServer::shutdown`] stops accepting but skips the
/// final snapshot.
pub struct CqlServer {
    config: CqlServerConfig,
    addr: SocketAddr,
    engine: Arc<Engine>,
    running: Mutex<Option<Running>>,
}

impl CqlServer {
    /// Loads the snapshot (if configured), binds and starts serving.
    pub async fn start(config: CqlServerConfig) -> Result<CqlServer, CqlServerError> {
        let db = Database::default();
        if let Some(path) = &config.persist_path {
            persist::load(&db, path)?;
        }
        let listener = bind(config.bind).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| CqlServerError::Bind {
                addr: config.bind,
                source,
            })?;
        let engine = Arc::new(
            Engine::new(
                db,
                FaultHandle::default(),
                addr.ip(),
                config.max_mutation_bytes,
            )
            .with_capacity(config.capacity),
        );
        let server = CqlServer {
            addr,
            engine,
            running: Mutex::new(None),
            config,
        };
        *server.running.lock().await = Some(server.launch(listener));
        tracing::info!(%addr, persist = ?server.config.persist_path, "cql server listening");
        Ok(server)
    }

    fn launch(&self, listener: TcpListener) -> Running {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let acceptor = tokio::spawn(accept_loop(
            listener,
            self.engine.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        let snapshotter = self.config.persist_path.clone().map(|path| {
            let (engine, cancel) = (self.engine.clone(), cancel.clone());
            let every = Duration::from_millis(self.config.snapshot_interval_ms.max(10));
            tokio::spawn(async move {
                let mut saved = engine.db.writes.load(std::sync::atomic::Ordering::Relaxed);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = cancel.cancelled() => return,
                    }
                    let now = engine.db.writes.load(std::sync::atomic::Ordering::Relaxed);
                    if now != saved {
                        let (e, p) = (engine.clone(), path.clone());
                        match tokio::task::spawn_blocking(move || persist::save(&e.db, &p)).await {
                            Ok(Ok(())) => saved = now,
                            Ok(Err(error)) => tracing::warn!(error = %error, "cql snapshot failed"),
                            Err(error) => {
                                tracing::warn!(error = %error, "cql snapshot task failed")
                            }
                        }
                    }
                }
            })
        });
        Running {
            cancel,
            tracker,
            acceptor,
            snapshotter,
        }
    }

    /// The address the server listens on (with the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault switches.
    pub fn faults(&self) -> FaultHandle {
        self.engine.faults.clone()
    }

    /// What the capacity model has done so far (writes run, timed out, refused); `None` without a model.
    pub fn capacity_stats(&self) -> Option<CapacityStats> {
        self.engine.capacity.as_ref().map(|c| c.stats())
    }

    /// The applied writes per table (`keyspace.table`) and the worker time they took; empty without the capacity
    /// model.
    pub fn capacity_busy_by_table(
        &self,
    ) -> std::collections::BTreeMap<String, capacity::TableWork> {
        self.engine
            .capacity
            .as_ref()
            .map(|c| c.busy_by_table())
            .unwrap_or_default()
    }

    /// How many rows a table holds; 0 when the table does not exist.
    pub fn row_count(&self, keyspace: &str, table: &str) -> usize {
        self.engine
            .db
            .table(keyspace, table)
            .map_or(0, |t| t.row_count())
    }

    /// Stops accepting, closes every connection and writes the snapshot. The data stays in memory for
    /// [`CqlServer::restart`]. Stopping a stopped server does nothing.
    pub async fn stop(&self) -> Result<(), CqlServerError> {
        let Some(running) = self.running.lock().await.take() else {
            return Ok(());
        };
        running.cancel.cancel();
        let _ = running.acceptor.await;
        if let Some(s) = running.snapshotter {
            let _ = s.await;
        }
        running.tracker.close();
        running.tracker.wait().await;
        self.snapshot().await?;
        tracing::info!(addr = %self.addr, "cql server stopped");
        Ok(())
    }

    /// Stops (if running) and listens again on the same address with the same data; prepared
    /// statements are forgotten, so clients must re-prepare, as after a real node restart.
    pub async fn restart(&self) -> Result<(), CqlServerError> {
        self.stop().await?;
        self.engine.forget_prepared();
        let listener = bind(self.addr).await?;
        *self.running.lock().await = Some(self.launch(listener));
        tracing::info!(addr = %self.addr, "cql server restarted");
        Ok(())
    }

    /// Stops the server for good, writing the final snapshot.
    pub async fn shutdown(self) -> Result<(), CqlServerError> {
        self.stop().await
    }

    async fn snapshot(&self) -> Result<(), CqlServerError> {
        if let Some(path) = self.config.persist_path.clone() {
            let engine = self.engine.clone();
            tokio::task::spawn_blocking(move || persist::save(&engine.db, &path))
                .await
                .map_err(|e| PersistError::Io {
                    path: "snapshot".into(),
                    source: std::io::Error::other(e),
                })??;
        }
        Ok(())
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.get_mut().take() {
            running.cancel.cancel();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, CqlServerError> {
    // A restart may race the old socket's close; retry briefly before giving up.
    let mut attempt = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if attempt < 50 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => return Err(CqlServerError::Bind { addr, source }),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    engine: Arc<Engine>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                if engine.faults.refuses_connections() {
                    tracing::debug!(%peer, "refusing cql connection (fault switch)");
                    drop(stream);
                    continue;
                }
                tracker.spawn(conn::serve(stream, engine.clone(), cancel.child_token()));
            }
            Err(error) => {
                tracing::warn!(%error, "cql accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
