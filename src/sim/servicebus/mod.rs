//! A wire-compatible Azure Service Bus stand-in: AMQP 1.0 with `$cbs` and `$management`, plus the management
//! HTTP endpoint, running in-process on tokio.
//!
//! Real clients (`azservicebus`, Python `azure-servicebus`) talk to it unchanged: SAS tokens are checked against
//! the configured key, peek-lock deliveries carry 16-byte lock-token tags and the `x-opt-*` annotations, locks
//! expire and requeue, the delivery limit dead-letters, and settlements after a lost lock are answered with
//! `com.microsoft:message-lock-lost`. [`Faults`] switches inject throttling, lock loss, detaches and slow
//! settlement at runtime.
//!
//! What clients can and cannot observe:
//! * `azservicebus` 0.25.1 (`fe2o3-amqp` 0.14) returns from `complete`/`abandon`/`dead_letter` as soon as its
//!   disposition is queued, without waiting for the stand-in's answer, so a settlement refused with
//!   `com.microsoft:message-lock-lost` is invisible to it (the message simply comes back); `renew_message_lock`
//!   on a lost lock does fail. Python `azure-servicebus` waits for the answer and raises `MessageLockLostError`.
//! * The outcome of every message a client sends is held back 5 ms to dodge a race in `fe2o3-amqp` 0.14 on
//!   multi-threaded runtimes (see `connection.rs`): each send that waits for its outcome takes at least 5 ms.
//! * `azservicebus` always dials port 5672, hence [`StandIn::start_on_free_loopback`].
//!
//! **Invariant:** a message the stand-in has accepted is never lost while it runs: lock expiry, abandon, link
//! detaches and dropped connections all put it back (or dead-letter it at the delivery limit).
//!
//! ```no_run
//! # async fn demo() -> Result<(), trimtab::sim::servicebus::StandInError> {
//! use trimtab::sim::servicebus::{StandIn, StandInConfig};
//! let config = StandInConfig { queues: vec!["orders".into()], ..StandInConfig::default() };
//! let standin = StandIn::start_on_free_loopback(config).await?;
//! let connection_string = standin.connection_string(); // for azservicebus (`unsecured`), port 5672
//! standin.faults().throttle_sends(Some(1));
//! standin.shutdown().await;
//! # Ok(()) }
//! ```

mod broker;
mod connection;
mod faults;
mod frame;
mod http;
mod node;
mod sas;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use faults::Faults;

use broker::{Broker, Limits};
use connection::Shared;
use sas::SasKey;

/// The port `azservicebus` always dials (it drops any port given in the connection string).
pub const AMQP_PORT: u16 = 5672;

/// Configuration of a stand-in namespace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StandInConfig {
    /// Where the AMQP listener binds. `azservicebus` only reaches port 5672.
    #[serde(default = "default_amqp_bind")]
    pub amqp_bind: SocketAddr,
    /// Where the management HTTP endpoint binds (port 0 picks a free port).
    #[serde(default = "default_http_bind")]
    pub http_bind: SocketAddr,
    /// The shared-access key name clients sign with (`SharedAccessKeyName`).
    #[serde(default = "default_key_name")]
    pub key_name: String,
    /// The shared-access key itself (`SharedAccessKey`). Never logged.
    #[serde(default = "default_key")]
    pub key: String,
    /// How long a peek-lock lasts before the message is requeued, e.g. `"30s"` or `"500ms"`.
    #[serde(default = "default_lock_duration", with = "duration_text")]
    pub lock_duration: Duration,
    /// Deliveries after which a message is dead-lettered with `MaxDeliveryCountExceeded`.
    #[serde(default = "default_max_delivery_count")]
    pub max_delivery_count: u32,
    /// The `max-message-size` announced on send links, in bytes; larger messages are rejected.
    #[serde(default = "default_max_message_size")]
    pub max_message_size: u64,
    /// Queues created at start.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Topics (with their subscriptions) created at start.
    #[serde(default)]
    pub topics: Vec<TopicSpec>,
}

/// A topic and its subscriptions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Subscription names; every message sent to the topic is copied to each.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

const fn default_amqp_bind() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, AMQP_PORT))
}
const fn default_http_bind() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
}
// `String` defaults cannot be `const fn`: they allocate.
fn default_key_name() -> String {
    "RootManageSharedAccessKey".to_string()
}
fn default_key() -> String {
    "c3RhbmQtaW4tc2hhcmVkLWFjY2Vzcy1rZXk=".to_string()
}
const fn default_lock_duration() -> Duration {
    Duration::from_secs(60)
}
const fn default_max_delivery_count() -> u32 {
    10
}
const fn default_max_message_size() -> u64 {
    262_144
}

impl Default for StandInConfig {
    fn default() -> Self {
        StandInConfig {
            amqp_bind: default_amqp_bind(),
            http_bind: default_http_bind(),
            key_name: default_key_name(),
            key: default_key(),
            lock_duration: default_lock_duration(),
            max_delivery_count: default_max_delivery_count(),
            max_message_size: default_max_message_size(),
            queues: Vec::new(),
            topics: Vec::new(),
        }
    }
}

/// Durations as text: `"250ms"`, `"30s"`, `"5m"`.
mod duration_text {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", duration.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a duration: expected e.g. \"500ms\", \"30s\" or \"5m\""
            ))
        })
    }

    pub(super) fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
        let n: u64 = number.parse().ok()?;
        match unit.trim() {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => Some(Duration::from_secs(n * 60)),
            _ => None,
        }
    }
}

/// Message counts of a queue or subscription, as the management endpoint reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EntityCounts {
    /// Active messages: available, deferred and locked ones (as Service Bus counts them).
    pub active: u64,
    /// Messages in the dead-letter sub-queue.
    pub dead_letter: u64,
    /// Messages scheduled for later.
    pub scheduled: u64,
    /// Always 0: the stand-in has no auto-forwarding.
    pub transfer: u64,
    /// Always 0: the stand-in has no auto-forwarding.
    pub transfer_dead_letter: u64,
    /// The part of `active` locked to a receiver right now.
    pub locked: u64,
}

/// A dead-lettered message: its body and the reason and description it was dead-lettered with.
pub type DeadLetter = (Vec<u8>, Option<String>, Option<String>);

/// Why the stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// A listener could not bind.
    #[error("failed to bind the {what} listener on {addr}")]
    Bind {
        /// Which listener: `amqp` or `http`.
        what: &'static str,
        /// The address tried.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// No loopback address 127.0.0.2..=127.0.0.254 had port 5672 free.
    #[error("no loopback address 127.0.0.2..=127.0.0.254 has port {AMQP_PORT} free")]
    NoFreeLoopback,
    /// The configuration is unusable.
    #[error("invalid stand-in config: {0}")]
    InvalidConfig(String),
}

impl StandInError {
    /// True when trying again (e.g. on another address, or later) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            StandInError::Bind { .. } | StandInError::NoFreeLoopback
        )
    }
}

/// A running stand-in. Dropping it without [`StandIn::shutdown`] leaves its tasks running until the runtime ends.
pub struct StandIn {
    amqp_addr: SocketAddr,
    http_addr: SocketAddr,
    config: StandInConfig,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl StandIn {
    /// Binds both listeners as configured and starts serving.
    pub async fn start(config: StandInConfig) -> Result<StandIn, StandInError> {
        let amqp = TcpListener::bind(config.amqp_bind)
            .await
            .map_err(|source| StandInError::Bind {
                what: "amqp",
                addr: config.amqp_bind,
                source,
            })?;
        Self::serve(config, amqp).await
    }

    /// Starts on the first loopback address 127.0.0.2, 127.0.0.3, … whose port 5672 is free, so stand-ins in
    /// many test processes do not collide and `azservicebus` (which always dials 5672) reaches each. The HTTP
    /// endpoint binds the same address on a free port unless `http_bind` names another IP.
    pub async fn start_on_free_loopback(
        mut config: StandInConfig,
    ) -> Result<StandIn, StandInError> {
        for last in 2..=254u8 {
            let ip = Ipv4Addr::new(127, 0, 0, last);
            let addr = SocketAddr::V4(SocketAddrV4::new(ip, AMQP_PORT));
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    config.amqp_bind = addr;
                    if config.http_bind == default_http_bind() {
                        config.http_bind = SocketAddr::new(IpAddr::V4(ip), 0);
                    }
                    return Self::serve(config, listener).await;
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "loopback address taken; trying the next")
                }
            }
        }
        Err(StandInError::NoFreeLoopback)
    }

    async fn serve(config: StandInConfig, amqp: TcpListener) -> Result<StandIn, StandInError> {
        if config.key_name.is_empty() || config.key.is_empty() {
            return Err(StandInError::InvalidConfig(
                "`key_name` and `key` must not be empty".into(),
            ));
        }
        if config.max_delivery_count == 0 || config.lock_duration.is_zero() {
            return Err(StandInError::InvalidConfig(
                "`max_delivery_count` and `lock_duration` must be above zero".into(),
            ));
        }
        let http = TcpListener::bind(config.http_bind)
            .await
            .map_err(|source| StandInError::Bind {
                what: "http",
                addr: config.http_bind,
                source,
            })?;
        let amqp_addr = amqp.local_addr().map_err(|source| StandInError::Bind {
            what: "amqp",
            addr: config.amqp_bind,
            source,
        })?;
        let http_addr = http.local_addr().map_err(|source| StandInError::Bind {
            what: "http",
            addr: config.http_bind,
            source,
        })?;
        let (wake, wake_rx) = watch::channel(0u64);
        let faults = Faults::new(wake.clone());
        let limits = Limits {
            lock_duration: config.lock_duration,
            max_delivery_count: config.max_delivery_count,
        };
        let broker = Arc::new(Broker::new(limits, faults, wake));
        for queue in &config.queues {
            broker.create_queue(queue);
        }
        for topic in &config.topics {
            broker.create_topic(&topic.name, &topic.subscriptions);
        }
        let key = SasKey {
            name: config.key_name.clone(),
            key: config.key.clone(),
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let shared = Arc::new(Shared {
            broker: broker.clone(),
            key: key.clone(),
            max_message_size: config.max_message_size,
        });
        let (accept_tasks, accept_shutdown) = (tasks.clone(), shutdown.clone());
        tasks.spawn(async move {
            let ids = AtomicU64::new(1);
            loop {
                let accepted = tokio::select! {
                    accepted = amqp.accept() => accepted,
                    _ = accept_shutdown.cancelled() => break,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(connection = id, %peer, "amqp connection accepted");
                        let _ = stream.set_nodelay(true);
                        accept_tasks.spawn(connection::serve(
                            stream,
                            id,
                            shared.clone(),
                            wake_rx.clone(),
                            accept_shutdown.clone(),
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "amqp accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });

        let (sweep_broker, sweep_shutdown) = (broker.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            loop {
                tokio::select! {
                    _ = tick.tick() => sweep_broker.sweep(),
                    _ = sweep_shutdown.cancelled() => break,
                }
            }
        });

        let router = http::router(Arc::new(http::HttpState {
            broker: broker.clone(),
            key,
        }));
        let http_shutdown = shutdown.clone();
        tasks.spawn(async move {
            let served = axum::serve(http, router)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "management endpoint stopped");
            }
        });
        tracing::info!(%amqp_addr, %http_addr, "service bus stand-in started");
        Ok(StandIn {
            amqp_addr,
            http_addr,
            config,
            broker,
            shutdown,
            tasks,
        })
    }

    /// The AMQP listener's address.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    /// The management endpoint's base URL, e.g. `http://127.0.0.2:41234`.
    pub fn management_base_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// A connection string for `azservicebus` with the `unsecured` builder (`Endpoint=sb://HOST;...`); it only
    /// works when the stand-in listens on port 5672, since that client drops the port.
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{};SharedAccessKeyName={};SharedAccessKey={}",
            self.amqp_addr.ip(),
            self.config.key_name,
            self.config.key
        )
    }

    /// A connection string for Python `azure-servicebus`, which keeps the port with `UseDevelopmentEmulator=true`.
    pub fn python_connection_string(&self) -> String {
        format!(
            "Endpoint=sb://{}:{};SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true",
            self.amqp_addr.ip(),
            self.amqp_addr.port(),
            self.config.key_name,
            self.config.key
        )
    }

    /// The fault switches of this stand-in.
    pub fn faults(&self) -> Faults {
        self.broker.faults.clone()
    }

    /// Creates a queue (no-op if it exists).
    pub fn create_queue(&self, name: &str) {
        self.broker.create_queue(name);
    }

    /// Creates a topic with subscriptions, or adds subscriptions to an existing topic.
    pub fn create_topic(&self, name: &str, subscriptions: &[String]) {
        self.broker.create_topic(name, subscriptions);
    }

    /// Counts of a queue or subscription (`topic/Subscriptions/sub`); `None` if there is no such entity.
    pub fn counts(&self, entity_path: &str) -> Option<EntityCounts> {
        self.broker.counts(entity_path).map(|(_, counts)| counts)
    }

    /// The dead-lettered messages of a queue or subscription, oldest first.
    pub fn peek_dead_letters(&self, entity_path: &str) -> Vec<DeadLetter> {
        self.broker.dead_letters(entity_path)
    }

    /// Closes every connection (clients see a `close`), stops the listeners and waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("service bus stand-in tasks still running 5s after shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_durations_and_refuses_unknown_fields() {
        let config: StandInConfig =
            serde_json::from_str(r#"{"lock_duration": "1500ms", "queues": ["q"], "topics": [{"name": "t", "subscriptions": ["s"]}]}"#).unwrap();
        assert_eq!(config.lock_duration, Duration::from_millis(1_500));
        assert_eq!(config.max_message_size, 262_144);
        assert_eq!(config.topics[0].subscriptions, ["s"]);
        let err = serde_json::from_str::<StandInConfig>(r#"{"queue": ["q"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `queue`"), "{err}");
        let err =
            serde_json::from_str::<StandInConfig>(r#"{"lock_duration": "soon"}"#).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
    }
}
