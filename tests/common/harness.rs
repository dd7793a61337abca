//! A pipeline harness over the wire: the three stand-ins, trimtab's real clients, message factories and
//! read-back of what the stores hold afterwards.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trimtab::cassandra::{connect_session, ensure_schema, OwnTables};
use trimtab::config::Config;
use trimtab::message::{self, Event, VolumeRequest};
use trimtab::servicebus::azure::{AzureSender, AzureServiceBus};
use trimtab::servicebus::{Entity, MessageSender, OutgoingMessage};
use trimtab::sim::cluster::{SimCluster, SimOptions};

/// The day every test event is stamped with, so rows can be read back by partition.
pub const EVENT_DAY: time::OffsetDateTime = time::macros::datetime!(2026-01-01 12:00 UTC);
/// The streams test events are spread over.
pub const STREAMS: [&str; 4] = ["s0", "s1", "s2", "s3"];

/// Stand-ins plus a configuration pointing trimtab at them.
pub struct Harness {
    pub sim: SimCluster,
    pub config: Config,
    pub events: Entity,
}

impl Harness {
    /// Writes `dir/trimtab.toml`, a config pointing `trimtab run` (or another verb) at these stand-ins, with the
    /// shipped policies and its state under `dir/state`; `pipeline_extra` is added to the `[pipeline]` section.
    pub fn run_config(&self, dir: &std::path::Path, pipeline_extra: &str) -> std::path::PathBuf {
        let text = format!(
            r#"
[servicebus]
connection_string = "{cs}"
tls = false
management_base_url = "{mgmt}"

[lock_renewal]

[cassandra]
contact_points = ["{cql}"]

[linstor]
controllers = ["{linstor}"]
reader = {{ token = "{token}" }}
executor = {{ token = "{token}" }}

[agent]
state_dir = "{state}"
policies_dir = "{policies}"
models_dir = "{state}/models"

[api]
bind = ""

[pipeline]
entities = ["events"]
{pipeline_extra}
"#,
            cs = self.sim.servicebus.connection_string(),
            mgmt = self.sim.servicebus.management_base_url(),
            cql = self.sim.cql.addr(),
            linstor = self.sim.linstor.base_url(),
            token = trimtab::sim::cluster::SIM_LINSTOR_TOKEN,
            state = dir.join("state").display(),
            policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies")
                .display(),
        );
        let path = dir.join("trimtab.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// Starts the stand-ins with queues `events` and `volume-replies` and the given lock duration.
    pub async fn start(lock_duration: Duration) -> Harness {
        Harness::start_with(lock_duration, |_| {}).await
    }

    /// [`Harness::start`], with the stand-ins' options adjusted by `adjust` first (a CQL capacity model, say).
    pub async fn start_with(
        lock_duration: Duration,
        adjust: impl FnOnce(&mut SimOptions),
    ) -> Harness {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let mut options = SimOptions::local(&["events", "volume-replies"]);
        options.servicebus.lock_duration = lock_duration;
        adjust(&mut options);
        let sim = tokio::time::timeout(Duration::from_secs(30), SimCluster::start(options))
            .await
            .expect("stand-ins should start within 30 s")
            .expect("stand-ins start");
        let events = Entity::Queue("events".into());
        let mut config = sim.config(vec![events.clone()]);
        config.pipeline.receive_wait_ms = 200;
        config.pipeline.backoff_initial_ms = 50;
        config.pipeline.backoff_max_ms = 500;
        config.pipeline.grace_ms = 10_000;
        Harness {
            sim,
            config,
            events,
        }
    }

    /// Sends messages to `events` through trimtab's real Service Bus client.
    pub async fn send(&self, messages: Vec<OutgoingMessage>) {
        let sender = self.sender().await;
        tokio::time::timeout(Duration::from_secs(60), sender.send_batch(messages))
            .await
            .expect("sending should finish within 60 s")
            .expect("send batch");
    }

    /// A sender to `events` over trimtab's real Service Bus client, for tests that pace their sends.
    pub async fn sender(&self) -> AzureSender {
        let bus = AzureServiceBus::connect(&self.config.servicebus)
            .await
            .expect("connect to the stand-in");
        bus.sender(&self.events).await.expect("open sender")
    }

    /// Cancels a running pipeline, waits for it to drain and shuts the stand-ins down.
    pub async fn stop_pipeline<T>(self, stop: CancellationToken, running: JoinHandle<T>) {
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), running)
            .await
            .expect("the pipeline drains within 30 s")
            .expect("pipeline task");
        self.sim.shutdown().await;
    }

    /// trimtab's own tables on the CQL stand-in.
    pub async fn tables(&self) -> OwnTables {
        let session = connect_session(&self.config.cassandra)
            .await
            .expect("connect to the cql stand-in");
        ensure_schema(&session, &self.config.cassandra)
            .await
            .expect("create the schema");
        OwnTables::new(session, &self.config.cassandra)
            .await
            .expect("open trimtab's tables")
    }

    /// The message ids of every row in `events`, read back from the CQL server.
    pub async fn stored_ids(&self, tables: &OwnTables) -> Vec<String> {
        let mut ids = Vec::new();
        for stream in STREAMS {
            let rows = tables
                .load_events(stream, EVENT_DAY)
                .await
                .expect("read events back");
            ids.extend(rows.into_iter().map(|r| r.message_id));
        }
        ids.sort();
        ids
    }

    /// Bodies and reasons of the dead-lettered messages of `events`.
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        self.sim
            .servicebus
            .peek_dead_letters("events")
            .into_iter()
            .map(|(body, reason, _)| {
                (
                    String::from_utf8_lossy(&body).into_owned(),
                    reason.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The correlation ids of every reply on `volume-replies`, received (and completed) with the real client.
    pub async fn reply_ids(&self) -> Vec<String> {
        use trimtab::servicebus::MessageReceiver;
        let bus = AzureServiceBus::connect(&self.config.servicebus)
            .await
            .expect("connect to the stand-in");
        let replies = bus
            .receiver(&Entity::Queue("volume-replies".into()))
            .await
            .expect("open reply receiver");
        let mut ids = Vec::new();
        loop {
            let got = replies
                .receive(50, Duration::from_millis(500))
                .await
                .expect("receive replies");
            if got.is_empty() {
                break;
            }
            for m in got {
                replies.complete(&m).await.expect("complete reply");
                ids.push(m.correlation_id.clone().unwrap_or_default());
            }
        }
        ids.sort();
        ids
    }

    /// Messages still on `events` (active includes locked ones, as Service Bus counts them).
    pub fn active(&self) -> u64 {
        self.sim
            .servicebus
            .counts("events")
            .map(|c| c.active)
            .unwrap_or(u64::MAX)
    }
}

/// `n` valid event messages with ids `{prefix}-{i}`.
pub fn events(prefix: &str, n: usize) -> Vec<OutgoingMessage> {
    (0..n)
        .map(|i| {
            let event = Event {
                stream: STREAMS[i % STREAMS.len()].into(),
                ts: Some(EVENT_DAY),
                payload: serde_json::json!({ "i": i, "text": "x".repeat(100 + i % 400) }),
            };
            OutgoingMessage {
                message_id: Some(format!("{prefix}-{i}")),
                body: Bytes::from(message::event_body(&event)),
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// `n` malformed messages, alternating broken JSON and an unknown kind; each body names its index.
pub fn malformed(prefix: &str, n: usize) -> Vec<OutgoingMessage> {
    (0..n)
        .map(|i| {
            let body = if i % 2 == 0 {
                format!("{{\"version\":1,\"kind\":\"event\",\"broken\":\"{prefix}-bad-{i}\"")
            } else {
                format!("{{\"version\":1,\"kind\":\"gossip\",\"id\":\"{prefix}-bad-{i}\"}}")
            };
            OutgoingMessage {
                message_id: Some(format!("{prefix}-bad-{i}")),
                body: Bytes::from(body),
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// `n` volume create requests for resources `{prefix}-vol-{i}` that reply to `volume-replies`.
pub fn volume_creates(prefix: &str, n: usize) -> Vec<OutgoingMessage> {
    (0..n)
        .map(|i| {
            let request = VolumeRequest::Create {
                resource: format!("{prefix}-vol-{i}"),
                size_kib: 1024 * 1024,
                place_count: 2,
                storage_pool: Some("pool-ssd".into()),
                replicas_on_different: vec!["Aux/zone".into()],
                replicas_on_same: vec![],
                resource_group: None,
            };
            OutgoingMessage {
                message_id: Some(format!("{prefix}-vol-{i}")),
                body: Bytes::from(message::volume_body(&request)),
                reply_to: Some("volume-replies".into()),
                ..OutgoingMessage::default()
            }
        })
        .collect()
}

/// The ids of a set of messages, sorted.
pub fn ids(messages: &[OutgoingMessage]) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Polls `check` every 100 ms until it holds, failing with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bodies of a set of messages.
pub fn bodies(messages: &[OutgoingMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}
