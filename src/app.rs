//! Builds the running pipeline from a configuration: real clients, adapters, live knobs, lag and lock renewal.
//!
//! `trimtab run`, `trimtab demo` and the over-the-wire tests all go through [`App::build`], so the product
//! is tested the way it runs: the `azservicebus` client, the `scylla` writer and the LINSTOR REST client,
//! whether they point at real systems or at the stand-ins.

use std::sync::Arc;
use std::time::Duration;

/// The maintenance windows' file in the policies directory.
const WINDOWS_FILE: &str = "windows.json";

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::agent::actuators::{LinstorPlacement, PipelineKnobs};
use crate::agent::AgentParts;
use crate::audit::AuditLog;
use crate::cassandra::{
    connect_session, ensure_schema, CassandraError, EventWriter, GiveWay, GiveWayConfig, OwnTables,
};
use crate::config::Config;
use crate::executor::StateDir;
use crate::linstor::ops::VolumeExecutor;
use crate::linstor::{LinstorError, LinstorReader, LinstorWriter};
use crate::metrics::collect::{Sources, WriteBehindHistory};
use crate::metrics::store::MetricStore;
use crate::pipeline::adapters::{
    follow_knobs, CassandraEvents, LagAndLocks, LinstorVolumes, ReplySenders, SenderFactory,
};
use crate::pipeline::{LiveKnobs, Pipeline, PipelineStats, StatsSnapshot};
use crate::servicebus::azure::AzureServiceBus;
use crate::servicebus::depth::DepthCollector;
use crate::servicebus::lag::LagTracker;
use crate::servicebus::{Entity, MessageReceiver, MessageSender, ServiceBusError};
use crate::windows::WindowHold;

/// The lag window for end-to-end latency percentiles.
const LAG_WINDOW: Duration = Duration::from_secs(300);
/// Samples kept in memory per metric series (a day at the default 10 s step).
const METRIC_WINDOW: usize = 8_640;
/// Latency samples kept per lag key inside the window.
const LAG_SAMPLES_PER_KEY: usize = 20_000;

/// The pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Service Bus refused or could not be reached.
    #[error("service bus: {0}")]
    ServiceBus(#[from] ServiceBusError),
    /// Cassandra refused or could not be reached.
    #[error("cassandra: {0}")]
    Cassandra(#[from] CassandraError),
    /// LINSTOR's configuration is unusable.
    #[error("linstor: {0}")]
    Linstor(#[from] LinstorError),
    /// A live knob is out of range.
    #[error("pipeline knobs: {0}")]
    Knobs(#[from] crate::pipeline::knobs::KnobError),
    /// The audit log the maintenance windows record their holds in cannot be opened.
    #[error("maintenance windows: {0}")]
    Audit(#[from] crate::audit::AuditError),
}

impl AppError {
    /// Whether building again later may succeed (a server not up yet, say).
    pub fn is_retriable(&self) -> bool {
        match self {
            AppError::ServiceBus(e) => e.is_retriable(),
            AppError::Cassandra(e) => e.is_retriable(),
            AppError::Linstor(e) => e.is_retriable(),
            AppError::Knobs(_) | AppError::Audit(_) => false,
        }
    }
}

/// The ingest hold of the maintenance windows in `{policies_dir}/windows.json`, which records its pauses and
/// resumes in the agent's audit log; `None` when windows are turned off or the file does not exist (then no
/// window can hold ingest).
fn maintenance_windows(config: &Config) -> Result<Option<Arc<WindowHold>>, AppError> {
    let path = config.agent.policies_dir.join(WINDOWS_FILE);
    if !config.agent.maintenance_windows || !path.exists() {
        return Ok(None);
    }
    let log = StateDir::new(config.agent.state_dir.clone()).audit_log();
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| crate::audit::AuditError::Io {
            path: dir.to_path_buf(),
            op: "create directory",
            source,
        })?;
    }
    let (audit, _) = AuditLog::open(&log)?;
    Ok(Some(Arc::new(WindowHold::from_file(
        path,
        Some(Arc::new(std::sync::Mutex::new(audit))),
    ))))
}

/// Opens reply senders through the Service Bus connection.
struct BusSenders(Arc<AzureServiceBus>);

#[async_trait]
impl SenderFactory for BusSenders {
    async fn open_sender(&self, entity: &str) -> Result<Arc<dyn MessageSender>, ServiceBusError> {
        Ok(Arc::new(
            self.0.sender(&Entity::Queue(entity.to_string())).await?,
        ))
    }
}

/// Everything the pipeline runs on, connected, before it starts receiving.
pub struct App {
    /// The live knobs (the executor sets them; the pipeline and writer follow).
    pub knobs: LiveKnobs,
    /// Lag per partition key or session.
    pub lag: Arc<LagTracker>,
    /// The Cassandra writer (its snapshot holds per-batch latency and outcome).
    pub writer: Arc<EventWriter>,
    /// trimtab's own tables (metric samples, forecasts, proposals, audit log).
    pub tables: Arc<OwnTables>,
    /// The Service Bus connection.
    pub servicebus: Arc<AzureServiceBus>,
    /// The depth collector (management endpoint).
    pub depth: DepthCollector,
    /// LINSTOR with the read credential: metrics and planning.
    pub linstor_reader: LinstorReader,
    /// LINSTOR with the executor's credential, if one is configured.
    pub linstor_writer: Option<LinstorWriter>,
    /// The entities received from.
    pub entities: Vec<Entity>,
    /// The maintenance windows holding back ingest, when the policies directory declares any
    /// (`windows.json`).
    pub windows: Option<Arc<WindowHold>>,
    pipeline: Pipeline,
}

impl App {
    /// Connects every client and assembles the pipeline. The configuration must already be validated.
    pub async fn build(config: &Config) -> Result<App, AppError> {
        let knobs = LiveKnobs::new(config.pipeline.knobs)?;
        let session = connect_session(&config.cassandra).await?;
        ensure_schema(&session, &config.cassandra).await?;
        let writer = Arc::new(EventWriter::new(session.clone(), &config.cassandra).await?);
        let tables = OwnTables::new(session, &config.cassandra).await?;
        // The agent's tables share the node with the events by default: its background writes give way.
        tables.give_way_to(GiveWay::new(
            writer.observations(),
            writer.knobs(),
            GiveWayConfig::for_sample_interval(
                std::time::Duration::from_millis(config.agent.sample_interval_ms),
                crate::planner::SATURATED_SLOT_SHARE,
            ),
        ));
        let tables = Arc::new(tables);

        let linstor = config.linstor.validate()?;
        let linstor_reader = LinstorReader::new(&linstor)?;
        let linstor_writer = match &config.linstor.executor {
            Some(_) => Some(LinstorWriter::new(&linstor)?),
            None => None,
        };

        let servicebus = Arc::new(AzureServiceBus::connect(&config.servicebus).await?);
        let depth = servicebus.depth_collector()?;
        let mut receivers: Vec<Arc<dyn MessageReceiver>> = Vec::new();
        for entity in &config.pipeline.entities {
            let receiver = servicebus.receiver(entity).await?;
            receivers.push(Arc::new(receiver));
        }

        let lag = Arc::new(LagTracker::new(LAG_WINDOW, LAG_SAMPLES_PER_KEY));
        let volumes: Arc<dyn crate::pipeline::sink::VolumeHandler> = match &linstor_writer {
            Some(w) => Arc::new(LinstorVolumes::new(VolumeExecutor::new(w.clone()))),
            None => Arc::new(NoExecutorCredential),
        };
        let pipeline = Pipeline::new(
            receivers,
            Arc::new(CassandraEvents::new(writer.clone())),
            volumes,
            Arc::new(ReplySenders::new(Arc::new(BusSenders(servicebus.clone())))),
            knobs.clone(),
            config.pipeline.clone(),
        )
        .with_observer(Arc::new(LagAndLocks::new(
            lag.clone(),
            config.lock_renewal.clone(),
        )));
        let windows = maintenance_windows(config)?;
        let pipeline = match &windows {
            Some(hold) => pipeline.with_ingest_hold(hold.clone()),
            None => pipeline,
        };

        Ok(App {
            knobs,
            lag,
            writer,
            tables,
            servicebus,
            depth,
            linstor_reader,
            linstor_writer,
            entities: config.pipeline.entities.clone(),
            windows,
            pipeline,
        })
    }

    /// The control loop's parts over this app: collectors read the pipeline's handles and LINSTOR with the read
    /// credential; only the executor's actuators get the LINSTOR writer and the live knobs. `None` when no
    /// executor credential is configured (then trimtab cannot change anything, and says so at start).
    pub async fn agent_parts(&self, config: &Config) -> Option<AgentParts> {
        let writer = self.linstor_writer.clone()?;
        let history = Arc::new(WriteBehindHistory::start(self.tables.clone()));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let store = match MetricStore::restore(history.clone(), METRIC_WINDOW, now).await {
            Ok(store) => Arc::new(store),
            Err(error) => {
                tracing::warn!(%error, "metric history could not be restored; starting with empty windows");
                Arc::new(MetricStore::new(history, METRIC_WINDOW))
            }
        };
        let sources = Sources {
            depth: Some((self.depth.clone(), self.entities.clone())),
            lag: Some(self.lag.clone()),
            writes: Some(self.writer.observations()),
            stats: Some(self.stats()),
            knobs: Some(self.knobs.subscribe()),
            linstor: Some(self.linstor_reader.clone()),
        };
        Some(AgentParts {
            config: config.agent.clone(),
            limits: Default::default(),
            executor: Default::default(),
            forecast: Default::default(),
            live: Default::default(),
            refit_every: 60,
            sources,
            store,
            placement: Arc::new(LinstorPlacement::new(writer)),
            knobs: Arc::new(PipelineKnobs::new(
                self.knobs.clone(),
                self.writer.observations(),
            )),
            tables: Some(self.tables.clone()),
            models_dir: Some(config.agent.models_dir.clone()),
        })
    }

    /// The pipeline's counters, live.
    pub fn stats(&self) -> Arc<PipelineStats> {
        self.pipeline.stats()
    }

    /// Runs the pipeline until `shutdown` is cancelled, then drains it; returns the final counters.
    pub async fn run(self, shutdown: CancellationToken) -> StatsSnapshot {
        let follower = follow_knobs(&self.knobs, self.writer.knobs(), shutdown.clone());
        let snapshot = self.pipeline.run(shutdown).await;
        follower.abort();
        snapshot
    }
}

/// Refuses volume requests when no executor credential is configured: the request stays on the queue
/// (abandoned, then dead-lettered after the maximum delivery count) rather than being dropped.
struct NoExecutorCredential;

#[async_trait]
impl crate::pipeline::sink::VolumeHandler for NoExecutorCredential {
    async fn handle(
        &self,
        request: &crate::message::VolumeRequest,
    ) -> Result<
        crate::pipeline::sink::VolumeOutcome,
        (crate::pipeline::sink::SinkError, serde_json::Value),
    > {
        let message = format!(
            "{} {}: no linstor executor credential is configured ([linstor] executor)",
            request.op(),
            request.resource()
        );
        let reply = serde_json::json!({"op": request.op(), "resource": request.resource(), "ok": false, "error": message});
        Err((
            crate::pipeline::sink::SinkError {
                retriable: true,
                reason: "NoExecutorCredential",
                message,
            },
            reply,
        ))
    }
}
