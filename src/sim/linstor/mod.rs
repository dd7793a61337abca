//! A stateful fake LINSTOR controller speaking the REST API, for tests, `trimtab demo` and `trimtab sim`.
//!
//! It copies the real controller's rules where trimtab depends on them: autoplace filters (online, not
//! evicted, named pool, free space, replicas-on-same/different, not already placed) with "most free space
//! wins" and a stable tie-break on the node name; `ApiCallRc` replies with the exact signed codes and the
//! controller's status mapping; sizes in KiB with pool capacity shrinking as volumes are placed; bearer-token
//! enforcement on every path but `/` and `/health`; `/metrics` with the `linstor_*` names.
//! [`Faults`] switches a node offline, fills a pool, slows replies or makes requests fail with 500.

mod cluster;
mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use cluster::Cluster;
pub use cluster::{Fixture, FixtureNode, FixturePool};

/// How to start the fake controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeLinstorConfig {
    /// Address to listen on; port 0 picks a free one (read it back with [`FakeLinstor::base_url`]).
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The cluster: nodes, their properties and pools. The shipped six-node fixture by default.
    #[serde(default = "Fixture::default_cluster")]
    pub fixture: Fixture,
    /// When set, every path but `/` and `/health` needs `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token: Option<String>,
    /// How long a replica joining existing data reports `Inconsistent` before `UpToDate`, in milliseconds.
    #[serde(default)]
    pub sync_delay_ms: u64,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Default for FakeLinstorConfig {
    fn default() -> Self {
        FakeLinstorConfig {
            bind: default_bind(),
            fixture: Fixture::default_cluster(),
            token: None,
            sync_delay_ms: 0,
        }
    }
}

/// The fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeLinstorError {
    /// The fixture is inconsistent.
    #[error("invalid linstor fixture: {0}")]
    Fixture(String),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// What the injected faults currently are.
#[derive(Debug, Default)]
struct FaultSettings {
    delay: Duration,
    pass_first: u32,
    fail_next: u32,
    fail_fraction: f64,
}

#[derive(Debug, Default)]
struct FaultState {
    settings: Mutex<FaultSettings>,
}

impl FaultState {
    fn lock(&self) -> MutexGuard<'_, FaultSettings> {
        // A poisoned lock only means a test panicked while holding it; the settings are still usable.
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delay for this request and whether it fails.
    fn decide(&self) -> (Duration, bool) {
        let mut s = self.lock();
        let fail = if s.pass_first > 0 {
            s.pass_first -= 1;
            false
        } else if s.fail_next > 0 {
            s.fail_next -= 1;
            true
        } else {
            s.fail_fraction > 0.0 && rand::random::<f64>() < s.fail_fraction
        };
        (s.delay, fail)
    }
}

/// State shared by the handlers and the fault switches.
#[derive(Debug)]
struct Shared {
    cluster: Mutex<Cluster>,
    token: Option<String>,
    faults: FaultState,
    scrapes: AtomicU64,
    injected_failures: AtomicU64,
}

impl Shared {
    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        // See FaultState::lock: poisoning does not corrupt the model, which every mutation keeps consistent.
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One replica as the fake holds it, for test assertions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Resource name.
    pub resource: String,
    /// Node name.
    pub node: String,
    /// Storage pool; `None` for a diskless replica.
    pub pool: Option<String>,
}

/// The fault switches of a running fake. Cheap to clone; every clone controls the same fake.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    /// Disconnects a satellite: its replicas lose their disk state and autoplace skips it. False if unknown.
    pub fn node_offline(&self, node: &str) -> bool {
        self.shared
            .cluster()
            .set_node_online(node, false, Instant::now())
    }

    /// Reconnects a satellite: its diskful replicas are `Outdated` until the sync delay has passed.
    pub fn node_online(&self, node: &str) -> bool {
        self.shared
            .cluster()
            .set_node_online(node, true, Instant::now())
    }

    /// Evicts a node, as LINSTOR's auto-evict does: offline and flagged `EVICTED`.
    pub fn evict_node(&self, node: &str) -> bool {
        self.shared.cluster().evict_node(node)
    }

    /// Fills a pool (free capacity 0) or frees it again. False if the node or pool is unknown.
    pub fn pool_full(&self, node: &str, pool: &str, full: bool) -> bool {
        self.shared.cluster().set_pool_full(node, pool, full)
    }

    /// Delays every gated reply by `delay` (zero to stop).
    pub fn slow_replies(&self, delay: Duration) {
        self.shared.faults.lock().delay = delay;
    }

    /// Fails the next `n` gated requests with a 500 carrying FAIL_UNKNOWN_ERROR.
    pub fn fail_next(&self, n: u32) {
        self.fail_after(0, n);
    }

    /// Lets `pass` gated requests through, then fails the `n` after them: a crash in the middle of a sequence.
    pub fn fail_after(&self, pass: u32, n: u32) {
        let mut s = self.shared.faults.lock();
        s.pass_first = pass;
        s.fail_next = n;
    }

    /// Fails this fraction (0 to 1) of gated requests at random with a 500.
    pub fn fail_fraction(&self, fraction: f64) {
        self.shared.faults.lock().fail_fraction = fraction.clamp(0.0, 1.0);
    }

    /// Sets how long replicas joining existing data stay `Inconsistent`.
    pub fn sync_delay(&self, delay: Duration) {
        self.shared.cluster().sync_delay = delay;
    }

    /// Marks a replica in use (DRBD primary): deleting it then fails with FAIL_IN_USE.
    pub fn in_use(&self, resource: &str, node: &str, in_use: bool) -> bool {
        self.shared.cluster().set_in_use(resource, node, in_use)
    }

    /// Sets a controller property, e.g. `BalanceResourcesEnabled`.
    pub fn controller_prop(&self, key: &str, value: &str) {
        self.shared.cluster().set_controller_prop(key, value);
    }

    /// Clears delay and failure injection (node, pool and in-use switches stay as set).
    pub fn clear(&self) {
        *self.shared.faults.lock() = FaultSettings::default();
    }

    /// How many requests have been failed on purpose so far.
    pub fn injected_failures(&self) -> u64 {
        self.shared.injected_failures.load(Ordering::Relaxed)
    }
}

/// A running fake controller.
#[derive(Debug)]
pub struct FakeLinstor {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeLinstor {
    /// Validates the fixture, binds the socket and serves in a background task.
    pub async fn start(config: FakeLinstorConfig) -> Result<FakeLinstor, FakeLinstorError> {
        config
            .fixture
            .validate()
            .map_err(FakeLinstorError::Fixture)?;
        let mut cluster = Cluster::from_fixture(&config.fixture);
        cluster.sync_delay = Duration::from_millis(config.sync_delay_ms);
        let shared = Arc::new(Shared {
            cluster: Mutex::new(cluster),
            token: config.token.clone(),
            faults: FaultState::default(),
            scrapes: AtomicU64::new(0),
            injected_failures: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| FakeLinstorError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| FakeLinstorError::Bind {
                addr: config.bind,
                source,
            })?;
        let app = routes::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "fake linstor stopped with an error");
            }
        });
        tracing::info!(%addr, token = config.token.is_some(), nodes = config.fixture.nodes.len(), "fake linstor listening");
        Ok(FakeLinstor {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Serves until `shutdown` completes, then stops: what `trimtab sim` runs.
    pub async fn serve(
        config: FakeLinstorConfig,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), FakeLinstorError> {
        let fake = FakeLinstor::start(config).await?;
        shutdown.await;
        fake.shutdown().await;
        Ok(())
    }

    /// `http://ip:port`, for `LS_CONTROLLERS` or python-linstor's `linstor://ip:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault switches.
    pub fn faults(&self) -> Faults {
        Faults {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Every replica the fake holds, sorted by resource and node.
    pub fn resources(&self) -> Vec<Placement> {
        let mut cluster = self.shared.cluster();
        cluster.tick(Instant::now());
        cluster
            .placements()
            .into_iter()
            .map(|(resource, node, pool)| Placement {
                resource,
                node,
                pool,
            })
            .collect()
    }

    /// Free KiB of a pool as the fake accounts it, for test assertions.
    pub fn free_kib(&self, node: &str, pool: &str) -> Option<u64> {
        self.shared
            .cluster()
            .pools_view(&[node.to_owned()], &[pool.to_owned()])
            .first()
            .and_then(|p| p.free_capacity)
    }

    /// Stops accepting connections and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeLinstor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
