//! Agent test plumbing: the three stand-ins, the real pipeline built by `App`, a request-counting proxy in front
//! of the fake LINSTOR, traffic, and a running agent wired to all of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

use trimtab::agent::actuators::{LinstorPlacement, PipelineKnobs};
use trimtab::agent::{Agent, AgentHandle, AgentParts};
use trimtab::app::App;
use trimtab::audit::{AuditKind, AuditLog, AuditRecord};
use trimtab::config::AgentConfig;
use trimtab::executor::ExecutorConfig;
use trimtab::forecast::live::LiveConfig;
use trimtab::forecast::model::Family;
use trimtab::forecast::ForecastConfig;
use trimtab::linstor::config::LinstorConfig;
use trimtab::linstor::{LinstorReader, LinstorWriter};
use trimtab::metrics::collect::{Sources, TableHistory};
use trimtab::metrics::store::MetricStore;
use trimtab::pipeline::{Knobs, LiveKnobs};
use trimtab::planner::Limits;
use trimtab::policy::Mode;
use trimtab::servicebus::{Entity, MessageSender, OutgoingMessage};
use trimtab::sim::cluster::{SimCluster, SimOptions, SIM_LINSTOR_TOKEN};

pub const QUEUE: &str = "orders";

/// Every request the proxy forwarded, as `METHOD path`, in order.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<String>>>);

impl RequestLog {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Requests that are not GET (the mutating ones).
    pub fn mutating(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    log: RequestLog,
}

async fn forward(State(s): State<ProxyState>, req: Request) -> Response {
    let method = req.method().clone();
    let path_q = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    s.log
        .0
        .lock()
        .unwrap()
        .push(format!("{method} {}", req.uri().path()));
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let mut out = s
        .http
        .request(method, format!("{}{path_q}", s.upstream))
        .body(body.to_vec());
    for (k, v) in headers.iter() {
        if k != "host" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    match out.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = Response::builder().status(status);
            if let Some(ct) = ct {
                resp = resp.header("content-type", ct);
            }
            resp.body(Body::from(bytes)).unwrap()
        }
        Err(_) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap(),
    }
}

/// Starts a proxy to `upstream` that records every request; returns its base URL and the log.
pub async fn counting_proxy(upstream: String) -> (String, RequestLog) {
    let log = RequestLog::default();
    let state = ProxyState {
        upstream,
        http: reqwest::Client::new(),
        log: log.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    (format!("http://{addr}"), log)
}

/// Starts a TCP proxy to `upstream` that holds every chunk a client sends for `delay` before passing it on,
/// without holding back the chunks behind it: latency, not a throughput cap. Returns its address.
pub async fn latency_proxy(
    upstream: std::net::SocketAddr,
    delay: Duration,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    delayed_copy(client_read, server_write, delay),
                    delayed_copy(server_read, client_write, Duration::ZERO)
                );
            });
        }
    });
    addr
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// A copy of the shipped `policies/` in a temporary directory, to edit per test.
pub fn policies_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dst = dir.join("policies");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    dst
}

pub struct Options {
    pub mode: Mode,
    pub policies: Option<PathBuf>,
    pub knobs: Knobs,
    pub limits: Limits,
    pub executor: ExecutorConfig,
    pub sync_delay_ms: u64,
    /// Delay added to every request on its way to the CQL server (a Cassandra a few milliseconds away); 0 for none.
    pub cql_latency_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Autonomous,
            policies: None,
            knobs: Knobs::default(),
            limits: test_limits(),
            executor: ExecutorConfig {
                verify_window_s: 2,
                poll_interval_s: 1,
                up_to_date_timeout_s: 30,
                ..ExecutorConfig::default()
            },
            sync_delay_ms: 1500,
            cql_latency_ms: 0,
        }
    }
}

/// The default limits, with the history and cooldown scaled to a test that runs for seconds, not days.
pub fn test_limits() -> Limits {
    Limits {
        // Ten one-second samples stand in for the default 48 steps of history.
        min_history_points: 10,
        // The test traffic is short and periodic, where the best model merely matches seasonal naive; the gate
        // logic, not forecast quality, is what these tests check (the backtest checks quality).
        max_mase: 1.5,
        cooldown_s: 3,
        ..Limits::default()
    }
}

/// The agent's parts over a built `App`, as the tests run it: one-second samples, two-second plans, a forecaster
/// on a 4-step season, and `opts`' mode, limits and executor settings.
pub fn agent_parts(
    app: &App,
    opts: &Options,
    state_dir: &Path,
    policies: PathBuf,
    placement: LinstorPlacement,
    reader: LinstorReader,
) -> AgentParts {
    let history = Arc::new(TableHistory::new(app.tables.clone()));
    let store = Arc::new(MetricStore::new(history, 600));
    let sources = Sources {
        depth: Some((app.depth.clone(), app.entities.clone())),
        lag: Some(app.lag.clone()),
        writes: Some(app.writer.observations()),
        stats: Some(app.stats()),
        knobs: Some(app.knobs.subscribe()),
        linstor: Some(reader),
    };
    AgentParts {
        config: AgentConfig {
            mode: opts.mode,
            state_dir: state_dir.to_path_buf(),
            policies_dir: policies,
            models_dir: state_dir.join("models"),
            sample_interval_ms: 1000,
            plan_interval_ms: 2000,
            maintenance_windows: false,
        },
        limits: opts.limits.clone(),
        executor: opts.executor.clone(),
        forecast: ForecastConfig {
            horizon: 2,
            season: Some(4),
            families: vec![Family::Ridge],
            ..ForecastConfig::default()
        },
        live: LiveConfig {
            min_scored: 4,
            ..LiveConfig::default()
        },
        refit_every: 5,
        sources,
        store,
        placement: Arc::new(placement),
        knobs: Arc::new(PipelineKnobs::new(
            app.knobs.clone(),
            app.writer.observations(),
        )),
        tables: Some(app.tables.clone()),
        models_dir: None,
    }
}

pub struct Harness {
    pub sim: SimCluster,
    pub agent: Option<AgentHandle>,
    pub token: CancellationToken,
    pub knobs: LiveKnobs,
    pub linstor_log: RequestLog,
    pub writer: LinstorWriter,
    pub reader: LinstorReader,
    pub sender: Arc<dyn MessageSender>,
    pub app_tables: Arc<trimtab::cassandra::OwnTables>,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    pub pipeline: Option<tokio::task::JoinHandle<trimtab::pipeline::StatsSnapshot>>,
}

impl Harness {
    pub async fn start(opts: Options) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut sim_opts = SimOptions::local(&[QUEUE]);
        sim_opts.linstor.sync_delay_ms = opts.sync_delay_ms;
        let sim = SimCluster::start(sim_opts).await.expect("stand-ins start");
        let (proxy_url, linstor_log) = counting_proxy(sim.linstor.base_url()).await;
        let mut config = sim.config(vec![Entity::Queue(QUEUE.into())]);
        config.pipeline.knobs = opts.knobs;
        if opts.cql_latency_ms > 0 {
            let proxy =
                latency_proxy(sim.cql.addr(), Duration::from_millis(opts.cql_latency_ms)).await;
            config.cassandra.contact_points = vec![proxy.to_string()];
        }
        config.linstor = LinstorConfig::for_controller(
            &proxy_url,
            Some(SIM_LINSTOR_TOKEN),
            Some(SIM_LINSTOR_TOKEN),
        );
        let app = tokio::time::timeout(Duration::from_secs(30), App::build(&config))
            .await
            .expect("app build timed out")
            .expect("app builds against the stand-ins");
        let validated = config.linstor.validate().unwrap();
        let writer = LinstorWriter::new(&validated).unwrap();
        let reader = LinstorReader::new(&validated).unwrap();
        let sender: Arc<dyn MessageSender> = Arc::new(
            app.servicebus
                .sender(&Entity::Queue(QUEUE.into()))
                .await
                .expect("sender"),
        );
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let policies = opts
            .policies
            .clone()
            .unwrap_or_else(|| policies_copy(dir.path()));
        let token = CancellationToken::new();
        let knobs = app.knobs.clone();
        let parts = agent_parts(
            &app,
            &opts,
            &state_dir,
            policies,
            LinstorPlacement::new(writer.clone()),
            reader.clone(),
        );
        let app_tables = app.tables.clone();
        let pipeline = tokio::spawn(app.run(token.child_token()));
        let agent = Agent::start(parts, token.child_token()).expect("agent starts");
        Harness {
            sim,
            agent: Some(agent),
            token,
            knobs,
            linstor_log,
            writer,
            reader,
            sender,
            app_tables,
            dir,
            state_dir,
            pipeline: Some(pipeline),
        }
    }

    pub fn agent(&self) -> &AgentHandle {
        self.agent.as_ref().expect("agent running")
    }

    /// Sends `n` event messages on partition key `stream`.
    pub async fn send_events(&self, n: usize, stream: &str, tag: &str) {
        let messages: Vec<OutgoingMessage> = (0..n)
            .map(|i| OutgoingMessage {
                message_id: Some(format!("{tag}-{stream}-{i}")),
                body: serde_json::to_vec(&serde_json::json!({
                    "version": 1, "kind": "event", "stream": stream,
                    "ts": "2026-11-22T04:00:00Z", "payload": {"i": i, "pad": "x".repeat(64)}
                }))
                .unwrap()
                .into(),
                partition_key: Some(stream.into()),
                content_type: Some("application/json".into()),
                ..OutgoingMessage::default()
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(30), self.sender.send_batch(messages))
            .await
            .expect("send timed out")
            .expect("send");
    }

    /// Periodic traffic (period 4 s) on `stream` until the token is cancelled: what the forecaster learns from.
    pub fn periodic_traffic(
        &self,
        stream: &'static str,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        periodic_traffic(self.sender.clone(), stream, stop)
    }

    /// Waits until the agent's latest step ran in autonomous mode (forecasts trusted on enough data).
    pub async fn until_autonomous(&self, within: Duration) {
        let agent = self.agent();
        tokio::time::timeout(within, async {
            loop {
                let s = agent.snapshot();
                if s.mode.as_ref().is_some_and(|m| m.mode == Mode::Autonomous) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let s = self.agent().snapshot();
            panic!(
                "agent never trusted its forecasts: mode {:?}, arrival {:?}, errors {:?}, forecasts {:?}",
                s.mode,
                s.collected.as_ref().map(|c| c.arrival_per_s),
                s.errors,
                s.forecasts.iter().map(|f| (&f.key.name, &f.accuracy)).collect::<Vec<_>>()
            )
        });
    }

    /// Waits until `pred` holds for the agent's audit log, returning the records.
    pub async fn until_audit(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[AuditRecord]) -> bool,
    ) -> Vec<AuditRecord> {
        let path = self.state_dir.join("audit.log");
        let path = if path.exists() {
            path
        } else {
            self.agent().state_dir().audit_log()
        };
        tokio::time::timeout(within, async {
            loop {
                if let Ok(records) = trimtab::audit::tail(&path, 100_000) {
                    if pred(&records) {
                        return records;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let records = trimtab::audit::tail(&path, 100_000).unwrap_or_default();
            let kinds: Vec<String> = records
                .iter()
                .map(|r| format!("{:?} {} {}", r.kind, r.subject, r.detail))
                .collect();
            let snap = self.agent().snapshot();
            panic!(
                "waiting for {what} timed out; audit log:\n{}\nlatest plan: {}\nmeasured settings: {:?}\nknobs: {:?}\nerrors: {:?}",
                kinds.join("\n"),
                serde_json::to_string(&snap.plan).unwrap_or_default(),
                snap.collected.as_ref().map(|c| c
                    .batches
                    .iter()
                    .map(|(k, v)| (*k, v.batches.len()))
                    .collect::<Vec<_>>()),
                snap.settings,
                snap.errors
            )
        })
    }

    /// An audit log handle for a person's action (approve, reject), as the command line opens it.
    pub fn audit_log(&self) -> AuditLog {
        AuditLog::open(&self.agent().state_dir().audit_log())
            .unwrap()
            .0
    }

    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(agent) = self.agent.take() {
            tokio::time::timeout(Duration::from_secs(30), agent.join())
                .await
                .expect("agent stops");
        }
        if let Some(p) = self.pipeline.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), p)
                .await
                .expect("pipeline stops");
        }
        self.sim.shutdown().await;
    }
}

/// Periodic traffic (period 4 s) on `stream` through `sender` until `stop` is cancelled: what the forecaster
/// learns from.
pub fn periodic_traffic(
    sender: Arc<dyn MessageSender>,
    stream: &'static str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut i = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let phase = (time::OffsetDateTime::now_utc().unix_timestamp() % 4) as usize;
            // A period of 4 s plus noise: a perfectly periodic series gives seasonal naive zero error, which
            // no model can be scaled against.
            let noise = ((i * 7919) % 5) as usize;
            let n = [2usize, 5, 10, 5][phase] + noise;
            let messages: Vec<OutgoingMessage> = (0..n)
                .map(|j| OutgoingMessage {
                    message_id: Some(format!("warm-{stream}-{i}-{j}")),
                    body: serde_json::to_vec(&serde_json::json!({
                        "version": 1, "kind": "event", "stream": stream,
                        "ts": "2026-11-22T04:00:00Z", "payload": {"i": i}
                    }))
                    .unwrap()
                    .into(),
                    partition_key: Some(stream.into()),
                    ..OutgoingMessage::default()
                })
                .collect();
            let _ = sender.send_batch(messages).await;
            i += 1;
        }
    })
}

/// Records of `kind`.
pub fn of_kind(records: &[AuditRecord], kind: AuditKind) -> Vec<&AuditRecord> {
    records.iter().filter(|r| r.kind == kind).collect()
}

/// Creates a resource of `size_kib` with diskful replicas on `nodes` in `pool`, as a user would (not the agent).
pub async fn create_volume(
    writer: &LinstorWriter,
    name: &str,
    size_kib: u64,
    pool: &str,
    nodes: &[&str],
) {
    writer
        .create_resource_definition(name, None)
        .await
        .expect("create rd");
    writer
        .create_volume_definition(name, 0, size_kib)
        .await
        .expect("create vd");
    for n in nodes {
        writer
            .create_diskful(name, n, pool)
            .await
            .expect("create replica");
    }
}
