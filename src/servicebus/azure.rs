//! The real Service Bus client over AMQP 1.0: the only file that names the `azservicebus` crate.
//!
//! [`AzureServiceBus`] is one AMQP connection built from a [`ServiceBusConfig`]; it opens [`AzureSender`]s
//! and peek-lock [`AzureReceiver`]s for queues and topic subscriptions, which implement the crate's
//! [`MessageSender`] / [`MessageReceiver`] traits, and a [`DepthCollector`] for the same namespace.
//!
//! Facts about `azservicebus` 0.25.1 this file is shaped by:
//! * It ignores any port in the endpoint and always dials 5671 (TLS) or 5672 (plain, the `unsecured` path).
//! * Settling needs the original `ServiceBusReceivedMessage`, so the receiver keeps each one in a map keyed by
//!   lock token until it is settled or its lock is lost.
//! * Receiver calls take `&mut self`. A receive waits in short slices (`receive_slice_ms`) so a settlement
//!   waiting for the same link gets it within one slice, never after the whole `max_wait`.
//! * A receive returns only when `max` messages arrived or the wait ended; trimtab returns after the first
//!   slice that yielded anything, which is the "at least one, up to `max`" the trait promises.
//! * Settling on the receive link is fire-and-forget in `fe2o3-amqp`: the broker's verdict is not reported
//!   back. So the receiver refuses to settle a message whose lock it knows has expired (renewals keep that
//!   knowledge current) and reports [`ServiceBusError::LockLost`] instead of pretending it completed.
//! * Prefetch is fixed when a receiver link is created. A live change opens a new link at the next
//!   `receive`; the old link stays open only until the messages it delivered are settled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azservicebus::amqp::error::TryAddMessageError;
use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{
    CreateMessageBatchOptions, ServiceBusClient, ServiceBusClientOptions, ServiceBusMessage,
    ServiceBusMessageBatch, ServiceBusReceivedMessage, ServiceBusReceiver,
    ServiceBusReceiverOptions, ServiceBusRetryMode, ServiceBusRetryOptions, ServiceBusSender,
    ServiceBusSenderOptions,
};
use azure_core::credentials::TokenCredential;
use bytes::Bytes;
use fe2o3_amqp_types::messaging::ApplicationProperties;
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue};
use time::OffsetDateTime;
use tokio::sync::Mutex as AsyncMutex;
use uuid::Uuid;

use super::depth::{DepthCollector, ManagementAuth};
use super::sas::{ConnectionString, SecretString};
use super::{
    Entity, MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

/// The environment variable trimtab reads the connection string from when the config names none.
pub const CONNECTION_STRING_ENV: &str = "TRIMTAB_SERVICEBUS_CONNECTION_STRING";

/// How trimtab authenticates to Service Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A SAS connection string (`Endpoint=sb://..;SharedAccessKeyName=..;SharedAccessKey=..`).
    #[default]
    Sas,
    /// Microsoft Entra ID (Azure AD) tokens for `namespace`, from the credential chosen in `azure_ad`.
    AzureAd,
}

/// Which Entra ID credential to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AzureAdCredential {
    /// The default chain of `azure_identity` (environment, workload identity, managed identity, Azure CLI).
    #[default]
    Default,
    /// The managed identity of the host; `client_id` picks a user-assigned one.
    ManagedIdentity,
    /// An app registration's client secret: needs `tenant_id`, `client_id` and the secret in `client_secret_env`.
    ClientSecret,
}

/// Entra ID settings, used when `auth = "azure_ad"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureAdConfig {
    /// Which credential to use: `default`, `managed_identity` or `client_secret`.
    #[serde(default)]
    pub credential: AzureAdCredential,
    /// Directory (tenant) id; required for `client_secret`.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Application (client) id; required for `client_secret`, optional for a user-assigned managed identity.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The environment variable holding the client secret (the secret itself never goes in the config).
    #[serde(default = "default_client_secret_env")]
    pub client_secret_env: String,
}

fn default_client_secret_env() -> String {
    "AZURE_CLIENT_SECRET".to_string()
}

impl Default for AzureAdConfig {
    fn default() -> Self {
        Self {
            credential: AzureAdCredential::default(),
            tenant_id: None,
            client_id: None,
            client_secret_env: default_client_secret_env(),
        }
    }
}

/// Retry behaviour of the AMQP client for one operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries inside the AMQP client after the first attempt. Keep 0 (the default) and let trimtab retry
    /// on [`ServiceBusError::is_retriable`]: `azservicebus` 0.25.1 panics ("called after complete") when it
    /// retries a batch send whose first attempt was refused, because it polls the finished delivery again.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// First back-off, in milliseconds.
    #[serde(default = "default_retry_delay_ms")]
    pub delay_ms: u64,
    /// Longest back-off, in milliseconds.
    #[serde(default = "default_retry_max_delay_ms")]
    pub max_delay_ms: u64,
    /// Time allowed for one attempt, in milliseconds.
    #[serde(default = "default_try_timeout_ms")]
    pub try_timeout_ms: u64,
    /// `true` doubles the back-off on each attempt; `false` keeps it fixed.
    #[serde(default = "default_exponential")]
    pub exponential: bool,
}

const fn default_max_retries() -> u32 {
    0
}
const fn default_retry_delay_ms() -> u64 {
    800
}
const fn default_retry_max_delay_ms() -> u64 {
    60_000
}
const fn default_try_timeout_ms() -> u64 {
    60_000
}
const fn default_exponential() -> bool {
    true
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: default_max_retries(),
            delay_ms: default_retry_delay_ms(),
            max_delay_ms: default_retry_max_delay_ms(),
            try_timeout_ms: default_try_timeout_ms(),
            exponential: default_exponential(),
        }
    }
}

/// How trimtab reaches one Service Bus namespace.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBusConfig {
    /// `sas` (a connection string) or `azure_ad` (Entra ID tokens for `namespace`).
    #[serde(default)]
    pub auth: AuthMode,
    /// The SAS connection string. Leave it out of config files: when absent it is read from the environment
    /// variable named by `connection_string_env`. Never logged.
    #[serde(default)]
    pub connection_string: Option<SecretString>,
    /// The environment variable holding the connection string.
    #[serde(default = "default_connection_string_env")]
    pub connection_string_env: String,
    /// The namespace, as `contoso` or `contoso.servicebus.windows.net`; required for `azure_ad`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Entra ID settings for `auth = "azure_ad"`.
    #[serde(default)]
    pub azure_ad: AzureAdConfig,
    /// `true` for AMQP over TLS on 5671 (every real namespace); `false` for plain AMQP on 5672, for local
    /// endpoints only.
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// Base URL of the management (ATOM) endpoint the depth collector calls; defaults to
    /// `https://{namespace host}`.
    #[serde(default)]
    pub management_base_url: Option<String>,
    /// Messages each receiver may fetch ahead (0 = only what a `receive` asks for). A live knob.
    #[serde(default)]
    pub prefetch: u32,
    /// Longest single wait on a receive link, in milliseconds; settlements for that link wait at most this long.
    #[serde(default = "default_receive_slice_ms")]
    pub receive_slice_ms: u64,
    /// Request timeout of the depth collector, in milliseconds.
    #[serde(default = "default_management_timeout_ms")]
    pub management_timeout_ms: u64,
    /// Retry behaviour of the AMQP client.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_connection_string_env() -> String {
    CONNECTION_STRING_ENV.to_string()
}
const fn default_tls() -> bool {
    true
}
const fn default_receive_slice_ms() -> u64 {
    100
}
const fn default_management_timeout_ms() -> u64 {
    10_000
}

impl std::fmt::Debug for ServiceBusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusConfig")
            .field("auth", &self.auth)
            .field(
                "connection_string",
                &self.connection_string.as_ref().map(|_| "<redacted>"),
            )
            .field("connection_string_env", &self.connection_string_env)
            .field("namespace", &self.namespace)
            .field("azure_ad", &self.azure_ad)
            .field("tls", &self.tls)
            .field("management_base_url", &self.management_base_url)
            .field("prefetch", &self.prefetch)
            .field("receive_slice_ms", &self.receive_slice_ms)
            .field("management_timeout_ms", &self.management_timeout_ms)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ServiceBusConfig {
    /// A SAS configuration for a connection string, with defaults elsewhere.
    pub fn from_connection_string(connection_string: SecretString) -> Self {
        Self {
            auth: AuthMode::Sas,
            connection_string: Some(connection_string),
            connection_string_env: default_connection_string_env(),
            namespace: None,
            azure_ad: AzureAdConfig::default(),
            tls: default_tls(),
            management_base_url: None,
            prefetch: 0,
            receive_slice_ms: default_receive_slice_ms(),
            management_timeout_ms: default_management_timeout_ms(),
            retry: RetryConfig::default(),
        }
    }

    /// Checks the configuration without IO (the connection string is checked only if it is in the config).
    pub fn validate(&self) -> Result<(), ServiceBusError> {
        let config = |detail: String| ServiceBusError::Config { detail };
        match self.auth {
            AuthMode::Sas => {
                if let Some(cs) = &self.connection_string {
                    ConnectionString::parse(cs).map_err(|e| config(e.to_string()))?;
                } else if self.connection_string_env.is_empty() {
                    return Err(config(
                        "auth is sas but neither connection_string nor connection_string_env is set".into(),
                    ));
                }
            }
            AuthMode::AzureAd => {
                if self.namespace.as_deref().unwrap_or("").is_empty() {
                    return Err(config("auth is azure_ad but namespace is not set".into()));
                }
                if self.azure_ad.credential == AzureAdCredential::ClientSecret
                    && (self.azure_ad.tenant_id.is_none() || self.azure_ad.client_id.is_none())
                {
                    return Err(config(
                        "azure_ad.credential is client_secret but tenant_id or client_id is not set".into(),
                    ));
                }
            }
        }
        if let Some(base) = &self.management_base_url {
            let parsed = url::Url::parse(base)
                .map_err(|_| config(format!("management_base_url {base:?} is not a url")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(config(format!(
                    "management_base_url {base:?} is not an http(s) url"
                )));
            }
        }
        if self.receive_slice_ms == 0 {
            return Err(config("receive_slice_ms is 0, expected at least 1".into()));
        }
        Ok(())
    }

    fn resolve_connection_string(&self) -> Result<SecretString, ServiceBusError> {
        if let Some(cs) = &self.connection_string {
            return Ok(cs.clone());
        }
        std::env::var(&self.connection_string_env)
            .map(SecretString::new)
            .map_err(|_| ServiceBusError::Config {
                detail: format!(
                    "auth is sas but no connection_string is configured and {} is not set",
                    self.connection_string_env
                ),
            })
    }

    fn retry_options(&self) -> ServiceBusRetryOptions {
        let r = &self.retry;
        ServiceBusRetryOptions {
            mode: if r.exponential {
                ServiceBusRetryMode::Exponential
            } else {
                ServiceBusRetryMode::Fixed
            },
            max_retries: r.max_retries,
            delay: Duration::from_millis(r.delay_ms),
            max_delay: Duration::from_millis(r.max_delay_ms),
            try_timeout: Duration::from_millis(r.try_timeout_ms),
        }
    }
}

/// Removes secret values from text that came from outside (error messages of the AMQP stack).
#[derive(Clone, Default)]
struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        // Any SAS signature or key that reached an error text by another way.
        for marker in ["sig=", "SharedAccessKey=", "SharedAccessSignature="] {
            let mut from = 0;
            while let Some(pos) = out[from..].find(marker) {
                let start = from + pos + marker.len();
                let end = out[start..]
                    .find(|c: char| c == '&' || c == ';' || c == '"' || c.is_whitespace())
                    .map_or(out.len(), |e| start + e);
                out.replace_range(start..end, "<redacted>");
                from = start + "<redacted>".len();
            }
        }
        out
    }
}

type Client = ServiceBusClient<azservicebus::core::BasicRetryPolicy>;

/// What the AMQP connection authenticates with.
enum Credentials {
    ConnectionString(SecretString),
    EntraId(Arc<dyn TokenCredential>),
}

/// Everything needed to open (and reopen) the AMQP connection.
struct Connector {
    credentials: Credentials,
    host: String,
    tls: bool,
    options: ServiceBusClientOptions,
}

impl Connector {
    /// Opens a new connection. Boxed: the client's connect future is large enough to overflow a test
    /// thread's stack in debug builds when nested in other futures.
    fn open(&self) -> futures::future::BoxFuture<'_, Result<Client, azure_core::Error>> {
        Box::pin(self.open_inner())
    }

    async fn open_inner(&self) -> Result<Client, azure_core::Error> {
        let options = self.options.clone();
        match (&self.credentials, self.tls) {
            (Credentials::ConnectionString(cs), true) => {
                ServiceBusClient::new_from_connection_string(cs.expose(), options).await
            }
            (Credentials::ConnectionString(cs), false) => {
                ServiceBusClient::unsecured()
                    .new_from_connection_string(cs.expose(), options)
                    .await
            }
            (Credentials::EntraId(credential), true) => {
                ServiceBusClient::new_from_token_credential(
                    self.host.clone(),
                    credential.clone(),
                    options,
                )
                .await
            }
            (Credentials::EntraId(credential), false) => {
                ServiceBusClient::unsecured()
                    .new_from_token_credential(self.host.clone(), credential.clone(), options)
                    .await
            }
        }
    }
}

/// Whether an error says the AMQP session or connection under the client has stopped. `fe2o3-amqp` ends the
/// session when the broker detaches a link it no longer tracks (a refused attach, for one), after which
/// every open on that client fails this way until it is replaced.
fn session_stopped(error: &azure_core::Error) -> bool {
    let text = format!("{error} {error:?}").to_ascii_lowercase();
    text.contains("illegal session state")
        || text.contains("illegalsessionstate")
        || text.contains("session might have stopped")
        || text.contains("client is disposed")
        || text.contains("scope is disposed")
}

struct Shared {
    client: AsyncMutex<Client>,
    connector: Connector,
    host: String,
    tls: bool,
    auth: AuthMode,
    management_base_url: String,
    management_timeout: Duration,
    management_auth: ManagementAuth,
    redactor: Redactor,
    receive_slice: Duration,
    prefetch: u32,
}

impl Shared {
    /// Runs an open (sender or receiver) on the client; if the client's session has stopped, replaces the
    /// client with a fresh connection and tries once more.
    async fn open_with<T, F>(&self, entity: &str, open: F) -> Result<T, ServiceBusError>
    where
        F: for<'c> Fn(
            &'c mut Client,
        ) -> futures::future::BoxFuture<'c, Result<T, azure_core::Error>>,
    {
        let mut client = self.client.lock().await;
        match open(&mut client).await {
            Ok(t) => Ok(t),
            Err(e) if session_stopped(&e) => {
                tracing::warn!(host = %self.host, entity, "amqp session stopped, reconnecting");
                let fresh = self
                    .connector
                    .open()
                    .await
                    .map_err(|e| classify(&e, &self.host, None, &self.redactor))?;
                let old = std::mem::replace(&mut *client, fresh);
                close_in_background("connection", self.host.clone(), old.dispose());
                open(&mut client)
                    .await
                    .map_err(|e| classify(&e, entity, None, &self.redactor))
            }
            Err(e) => Err(classify(&e, entity, None, &self.redactor)),
        }
    }
}

/// One AMQP connection to a namespace. Cheap to clone; senders and receivers share the connection.
#[derive(Clone)]
pub struct AzureServiceBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AzureServiceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureServiceBus")
            .field("host", &self.shared.host)
            .field("tls", &self.shared.tls)
            .field("auth", &self.shared.auth)
            .field("management_base_url", &self.shared.management_base_url)
            .finish_non_exhaustive()
    }
}

fn fully_qualified(namespace: &str) -> String {
    if namespace.contains('.') {
        namespace.to_string()
    } else {
        format!("{namespace}.servicebus.windows.net")
    }
}

fn entra_credential(config: &AzureAdConfig) -> Result<Arc<dyn TokenCredential>, ServiceBusError> {
    let fail = |e: azure_core::Error| ServiceBusError::Config {
        detail: format!(
            "cannot build the {:?} entra id credential: {e}",
            config.credential
        ),
    };
    Ok(match config.credential {
        AzureAdCredential::Default => {
            azure_identity::DefaultAzureCredential::new().map_err(fail)?
        }
        AzureAdCredential::ManagedIdentity => {
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: config
                    .client_id
                    .clone()
                    .map(azure_identity::UserAssignedId::ClientId),
                ..Default::default()
            };
            azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(fail)?
        }
        AzureAdCredential::ClientSecret => {
            let secret =
                std::env::var(&config.client_secret_env).map_err(|_| ServiceBusError::Config {
                    detail: format!(
                        "azure_ad client secret variable {} is not set",
                        config.client_secret_env
                    ),
                })?;
            azure_identity::ClientSecretCredential::new(
                config.tenant_id.as_deref().unwrap_or_default(),
                config.client_id.clone().unwrap_or_default(),
                secret.into(),
                None,
            )
            .map_err(fail)?
        }
    })
}

impl AzureServiceBus {
    /// Validates `config`, resolves its credentials and opens the connection.
    pub async fn connect(config: &ServiceBusConfig) -> Result<Self, ServiceBusError> {
        config.validate()?;
        let options = ServiceBusClientOptions {
            retry_options: config.retry_options(),
            identifier: Some(format!("trimtab-{}", Uuid::new_v4())),
            ..Default::default()
        };
        let (credentials, host, management_auth, redactor) = match config.auth {
            AuthMode::Sas => {
                let cs_text = config.resolve_connection_string()?;
                let cs =
                    ConnectionString::parse(&cs_text).map_err(|e| ServiceBusError::Config {
                        detail: e.to_string(),
                    })?;
                let redactor = Redactor {
                    secrets: vec![cs_text.expose().to_string(), cs.key.expose().to_string()],
                };
                let auth = ManagementAuth::Sas {
                    key_name: cs.key_name.clone(),
                    key: cs.key.clone(),
                };
                (
                    Credentials::ConnectionString(cs_text),
                    cs.host,
                    auth,
                    redactor,
                )
            }
            AuthMode::AzureAd => {
                let host = fully_qualified(config.namespace.as_deref().unwrap_or_default());
                let credential = entra_credential(&config.azure_ad)?;
                let auth = ManagementAuth::EntraId(credential.clone());
                (
                    Credentials::EntraId(credential),
                    host,
                    auth,
                    Redactor::default(),
                )
            }
        };
        let connector = Connector {
            credentials,
            host: host.clone(),
            tls: config.tls,
            options,
        };
        let client = connector
            .open()
            .await
            .map_err(|e| classify(&e, &host, None, &redactor))?;
        let management_base_url = config
            .management_base_url
            .clone()
            .unwrap_or_else(|| format!("https://{host}"));
        tracing::info!(host = %host, tls = config.tls, auth = ?config.auth, "connected to service bus");
        Ok(Self {
            shared: Arc::new(Shared {
                client: AsyncMutex::new(client),
                connector,
                host,
                tls: config.tls,
                auth: config.auth,
                management_base_url,
                management_timeout: Duration::from_millis(config.management_timeout_ms),
                management_auth,
                redactor,
                receive_slice: Duration::from_millis(config.receive_slice_ms),
                prefetch: config.prefetch,
            }),
        })
    }

    /// The namespace host this connection talks to.
    pub fn host(&self) -> &str {
        &self.shared.host
    }

    /// Opens a sender to a queue, or to the topic of a subscription.
    pub async fn sender(&self, entity: &Entity) -> Result<AzureSender, ServiceBusError> {
        let target = match entity {
            Entity::Queue(q) => q.clone(),
            Entity::Subscription { topic, .. } => topic.clone(),
        };
        let sender = self
            .shared
            .open_with(&target, |client| {
                let target = target.clone();
                Box::pin(async move {
                    client
                        .create_sender(target, ServiceBusSenderOptions::default())
                        .await
                })
            })
            .await?;
        tracing::debug!(entity = %target, "opened sender");
        Ok(AzureSender {
            shared: self.shared.clone(),
            target,
            sender: AsyncMutex::new(Some(sender)),
        })
    }

    /// Opens a peek-lock receiver for a queue or subscription, with the configured prefetch.
    pub async fn receiver(&self, entity: &Entity) -> Result<AzureReceiver, ServiceBusError> {
        let prefetch = self.shared.prefetch;
        let link = open_link(&self.shared, entity, prefetch, 0).await?;
        Ok(AzureReceiver {
            shared: self.shared.clone(),
            entity: entity.clone(),
            current: AsyncMutex::new(link),
            retired: std::sync::Mutex::new(Vec::new()),
            tracked: std::sync::Mutex::new(HashMap::new()),
            desired_prefetch: AtomicU32::new(prefetch),
            next_generation: AtomicU64::new(1),
            reopen: AtomicBool::new(false),
        })
    }

    /// Opens a peek-lock receiver on the dead-letter sub-queue of a queue or subscription (for re-drive).
    pub async fn dead_letter_receiver(
        &self,
        entity: &Entity,
    ) -> Result<AzureReceiver, ServiceBusError> {
        self.receiver(&entity.dead_letter_queue()).await
    }

    /// A depth collector for this namespace's management endpoint, with the same credentials.
    pub fn depth_collector(&self) -> Result<DepthCollector, ServiceBusError> {
        DepthCollector::new(
            &self.shared.management_base_url,
            self.shared.management_auth.clone(),
            self.shared.management_timeout,
        )
        .map_err(|e| ServiceBusError::Config {
            detail: e.to_string(),
        })
    }
}

/// Maps an `azservicebus` error into trimtab's, by the AMQP condition or management status it carries.
/// `entity` names what the call was about; `lock_token` is set for settlement and renewal calls.
fn classify(
    error: &azure_core::Error,
    entity: &str,
    lock_token: Option<Uuid>,
    redactor: &Redactor,
) -> ServiceBusError {
    let mut display = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        let text = s.to_string();
        if !display.contains(&text) {
            display.push_str(": ");
            display.push_str(&text);
        }
        source = s.source();
    }
    let debug = format!("{error:?}").to_ascii_lowercase();
    let detail = redactor.redact(display.trim());
    let has = |needle: &str| debug.contains(needle);
    if let Some(lock_token) = lock_token {
        if has("message-lock-lost") || has("messagelocklost") || has("statuscode(410)") {
            return ServiceBusError::LockLost { lock_token };
        }
    }
    if has("com.microsoft:server-busy") || has("statuscode(503)") {
        return ServiceBusError::ServerBusy { detail };
    }
    if has("amqperror(notfound)")
        || has("amqp:not-found")
        || has("statuscode(404)")
        || has("entity-not-found")
    {
        return ServiceBusError::EntityNotFound {
            entity: entity.to_string(),
        };
    }
    if has("amqperror(unauthorizedaccess)")
        || has("amqp:unauthorized-access")
        || has("statuscode(401)")
        || has("statuscode(403)")
        || matches!(error.kind(), azure_core::error::ErrorKind::Credential)
    {
        return ServiceBusError::Unauthorized {
            entity: entity.to_string(),
            detail,
        };
    }
    if has("amqp:link:message-size-exceeded") || has("linkerror(messagesizeexceeded)") {
        // Not retriable: the same message will be refused again.
        return match broker_sizes(&display) {
            Some((size, max)) => ServiceBusError::MessageTooLarge { size, max },
            None => ServiceBusError::InvalidMessage {
                detail: format!("the broker refused a message as too large: {detail}"),
            },
        };
    }
    ServiceBusError::Transport { detail }
}

/// Reads "size ... N bytes" and "limit (M bytes)" out of a broker's message-size-exceeded description, as
/// Service Bus words it ("The received message (delivery-id:0, size:269511 bytes) exceeds the limit (262144
/// bytes) currently allowed on the link.").
fn broker_sizes(text: &str) -> Option<(usize, u64)> {
    let number_after = |marker: &str| -> Option<u64> {
        let rest = &text[text.find(marker)? + marker.len()..];
        let digits: String = rest
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((number_after("size")? as usize, number_after("limit")?))
}

/// Sends to one queue or topic.
pub struct AzureSender {
    shared: Arc<Shared>,
    target: String,
    sender: AsyncMutex<Option<ServiceBusSender>>,
}

/// Closes an `azservicebus` link in the background. Dropping one without closing it makes `fe2o3-amqp` end
/// the whole AMQP session when the broker answers the detach, which breaks every other link of the connection.
fn close_in_background<F>(what: &'static str, entity: String, close: F)
where
    F: std::future::Future<Output = Result<(), azure_core::Error>> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                if let Err(e) = close.await {
                    tracing::debug!(entity = %entity, error = %e, "closing a {what} link failed");
                }
            });
        }
        Err(_) => {
            tracing::warn!(entity = %entity, "{what} dropped outside a tokio runtime; its link is not closed")
        }
    }
}

impl Drop for AzureSender {
    fn drop(&mut self) {
        if let Some(sender) = self.sender.get_mut().take() {
            close_in_background("sender", self.target.clone(), sender.dispose());
        }
    }
}

impl std::fmt::Debug for AzureSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSender")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn to_service_bus_message(message: OutgoingMessage) -> Result<ServiceBusMessage, ServiceBusError> {
    let invalid = |field: &str, e: &dyn std::fmt::Display| ServiceBusError::InvalidMessage {
        detail: format!("{field}: {e}"),
    };
    let mut out = ServiceBusMessage::new(message.body.to_vec());
    if let Some(id) = message.message_id {
        out.set_message_id(id)
            .map_err(|e| invalid("message_id", &e))?;
    }
    // The session id goes first: Service Bus requires the partition key to equal it when both are set.
    if message.session_id.is_some() {
        out.set_session_id(message.session_id)
            .map_err(|e| invalid("session_id", &e))?;
    }
    if message.partition_key.is_some() {
        out.set_partition_key(message.partition_key)
            .map_err(|e| invalid("partition_key", &e))?;
    }
    out.set_reply_to(message.reply_to);
    out.set_correlation_id(message.correlation_id);
    out.set_content_type(message.content_type);
    out.set_subject(message.subject);
    if !message.application_properties.is_empty() {
        let mut map = OrderedMap::new();
        for (k, v) in message.application_properties {
            map.insert(k, SimpleValue::String(v));
        }
        *out.application_properties_mut() = Some(ApplicationProperties(map));
    }
    Ok(out)
}

/// Bytes a batch envelope adds around each message: the data-section descriptor and a 32-bit binary header.
const DATA_SECTION_OVERHEAD: u64 = 8;

/// The encoded size of a message, with the encoder the batch uses.
fn encoded_size(message: &ServiceBusMessage) -> Option<usize> {
    // `Serializable` is the wrapper `fe2o3-amqp` itself encodes messages with (it sits in a `__private`
    // module but is the only way to get the exact wire size of a `Message`).
    use fe2o3_amqp_types::messaging::message::__private::Serializable;
    serde_amqp::serialized_size(&Serializable(message.raw_amqp_message())).ok()
}

impl AzureSender {
    fn new_batch(
        &self,
        sender: &ServiceBusSender,
    ) -> Result<ServiceBusMessageBatch, ServiceBusError> {
        sender
            .create_message_batch(CreateMessageBatchOptions::default())
            .map_err(|e| ServiceBusError::Transport {
                detail: format!("cannot create a message batch for {}: {e}", self.target),
            })
    }

    fn too_large(&self, message: &ServiceBusMessage, max: u64) -> ServiceBusError {
        ServiceBusError::MessageTooLarge {
            size: encoded_size(message).unwrap_or(message.body().len()),
            max,
        }
    }

    fn closed(&self) -> ServiceBusError {
        ServiceBusError::Transport {
            detail: format!("sender for {} is closed", self.target),
        }
    }

    fn map(&self, e: &azure_core::Error) -> ServiceBusError {
        classify(e, &self.target, None, &self.shared.redactor)
    }
}

#[async_trait]
impl MessageSender for AzureSender {
    async fn send(&self, message: OutgoingMessage) -> Result<(), ServiceBusError> {
        let message = to_service_bus_message(message)?;
        let mut guard = self.sender.lock().await;
        let sender = guard.as_mut().ok_or_else(|| self.closed())?;
        let max = self.new_batch(sender)?.max_size_in_bytes();
        if encoded_size(&message).is_some_and(|size| size as u64 > max) {
            return Err(self.too_large(&message, max));
        }
        sender.send_message(message).await.map_err(|e| self.map(&e))
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<usize, ServiceBusError> {
        if messages.is_empty() {
            return Ok(0);
        }
        let converted = messages
            .into_iter()
            .map(to_service_bus_message)
            .collect::<Result<Vec<_>, _>>()?;
        let mut guard = self.sender.lock().await;
        let sender = guard.as_mut().ok_or_else(|| self.closed())?;
        let mut batch = self.new_batch(sender)?;
        let max = batch.max_size_in_bytes();
        // Refuse a message that can never fit before anything is sent.
        if let Some(big) = converted
            .iter()
            .find(|m| encoded_size(m).is_some_and(|size| size as u64 > max))
        {
            return Err(self.too_large(big, max));
        }
        let total = converted.len();
        let mut batches = 0;
        for message in converted {
            // `azservicebus` counts each message's encoded size but not the data section that wraps it in the
            // batch envelope, so a batch it calls full can exceed the link limit by a few percent (seen: 269511
            // bytes against 262144). Close the batch early by that overhead instead.
            let size = encoded_size(&message).unwrap_or(0) as u64;
            let projected =
                batch.size_in_bytes() + size + DATA_SECTION_OVERHEAD * (batch.len() as u64 + 1);
            if !batch.is_empty() && projected > max {
                let full = std::mem::replace(&mut batch, self.new_batch(sender)?);
                sender
                    .send_message_batch(full)
                    .await
                    .map_err(|e| self.map(&e))?;
                batches += 1;
            }
            match batch.try_add_message(message) {
                Ok(()) => {}
                Err(TryAddMessageError::BatchFull(message)) => {
                    if batch.is_empty() {
                        return Err(self.too_large(&message, max));
                    }
                    let full = std::mem::replace(&mut batch, self.new_batch(sender)?);
                    sender
                        .send_message_batch(full)
                        .await
                        .map_err(|e| self.map(&e))?;
                    batches += 1;
                    match batch.try_add_message(message) {
                        Ok(()) => {}
                        Err(TryAddMessageError::BatchFull(message)) => {
                            return Err(self.too_large(&message, max))
                        }
                        Err(TryAddMessageError::Codec { source, .. }) => {
                            return Err(ServiceBusError::InvalidMessage {
                                detail: format!("cannot encode message: {source}"),
                            })
                        }
                    }
                }
                Err(TryAddMessageError::Codec { source, .. }) => {
                    return Err(ServiceBusError::InvalidMessage {
                        detail: format!("cannot encode message: {source}"),
                    })
                }
            }
        }
        if !batch.is_empty() {
            sender
                .send_message_batch(batch)
                .await
                .map_err(|e| self.map(&e))?;
            batches += 1;
        }
        tracing::debug!(entity = %self.target, messages = total, batches, "sent batch");
        Ok(batches)
    }
}

/// A settlement.
enum Verb {
    Complete,
    Abandon,
    DeadLetter(DeadLetterOptions),
}

impl Verb {
    fn name(&self) -> &'static str {
        match self {
            Verb::Complete => "complete",
            Verb::Abandon => "abandon",
            Verb::DeadLetter(_) => "dead-letter",
        }
    }
}

/// One receive link and its prefetch.
struct Link {
    generation: u64,
    prefetch: u32,
    receiver: AsyncMutex<Option<ServiceBusReceiver>>,
}

/// A received message this receiver still has to settle.
struct Tracked {
    message: Arc<AsyncMutex<ServiceBusReceivedMessage>>,
    link: Arc<Link>,
    locked_until: OffsetDateTime,
}

/// Receives from one queue or subscription in peek-lock mode and settles what it received.
pub struct AzureReceiver {
    shared: Arc<Shared>,
    entity: Entity,
    current: AsyncMutex<Arc<Link>>,
    retired: std::sync::Mutex<Vec<Arc<Link>>>,
    tracked: std::sync::Mutex<HashMap<Uuid, Tracked>>,
    desired_prefetch: AtomicU32,
    next_generation: AtomicU64,
    /// Set when the link failed in a way a new link may fix (detached, session stopped).
    reopen: AtomicBool,
}

impl Drop for AzureReceiver {
    fn drop(&mut self) {
        self.tracked
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let mut links = std::mem::take(self.retired.get_mut().unwrap_or_else(|p| p.into_inner()));
        links.push(self.current.get_mut().clone());
        for link in links {
            close_in_background("receiver", self.entity.path(), async move {
                match link.receiver.lock().await.take() {
                    Some(receiver) => receiver.dispose().await,
                    None => Ok(()),
                }
            });
        }
    }
}

impl std::fmt::Debug for AzureReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureReceiver")
            .field("entity", &self.entity)
            .field("prefetch", &self.desired_prefetch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

async fn open_link(
    shared: &Shared,
    entity: &Entity,
    prefetch: u32,
    generation: u64,
) -> Result<Arc<Link>, ServiceBusError> {
    let options = ServiceBusReceiverOptions {
        prefetch_count: prefetch,
        ..Default::default()
    };
    let receiver = shared
        .open_with(&entity.path(), |client| {
            let options = options.clone();
            let entity = entity.clone();
            Box::pin(async move {
                match entity {
                    Entity::Queue(q) => client.create_receiver_for_queue(q, options).await,
                    Entity::Subscription {
                        topic,
                        subscription,
                    } => {
                        client
                            .create_receiver_for_subscription(topic, subscription, options)
                            .await
                    }
                }
            })
        })
        .await?;
    tracing::debug!(entity = %entity, prefetch, generation, "opened receive link");
    Ok(Arc::new(Link {
        generation,
        prefetch,
        receiver: AsyncMutex::new(Some(receiver)),
    }))
}

fn render(value: &SimpleValue) -> String {
    match value {
        SimpleValue::String(s) => s.clone(),
        SimpleValue::Symbol(s) => s.0.clone(),
        SimpleValue::Bool(b) => b.to_string(),
        SimpleValue::Ubyte(n) => n.to_string(),
        SimpleValue::Ushort(n) => n.to_string(),
        SimpleValue::Uint(n) => n.to_string(),
        SimpleValue::Ulong(n) => n.to_string(),
        SimpleValue::Byte(n) => n.to_string(),
        SimpleValue::Short(n) => n.to_string(),
        SimpleValue::Int(n) => n.to_string(),
        SimpleValue::Long(n) => n.to_string(),
        SimpleValue::Float(n) => n.to_string(),
        SimpleValue::Double(n) => n.to_string(),
        SimpleValue::Uuid(u) => Uuid::from_bytes(*u.as_inner()).to_string(),
        SimpleValue::Timestamp(t) => t.milliseconds().to_string(),
        other => format!("{other:?}"),
    }
}

impl AzureReceiver {
    /// The link receives go to, reopened first if the prefetch knob changed.
    async fn link(&self) -> Result<Arc<Link>, ServiceBusError> {
        let mut current = self.current.lock().await;
        let desired = self.desired_prefetch.load(Ordering::Relaxed);
        let broken = self.reopen.swap(false, Ordering::Relaxed);
        if current.prefetch != desired || broken {
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            let fresh = open_link(&self.shared, &self.entity, desired, generation).await?;
            let old = std::mem::replace(&mut *current, fresh);
            tracing::info!(entity = %self.entity, from = old.prefetch, to = desired, broken, "reopened receive link");
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(old);
            self.close_idle_links();
        }
        Ok(current.clone())
    }

    /// Closes retired links none of whose messages are still in flight.
    fn close_idle_links(&self) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        if retired.is_empty() {
            return;
        }
        let busy: Vec<u64> = {
            let tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
            tracked.values().map(|t| t.link.generation).collect()
        };
        retired.retain(|link| {
            if busy.contains(&link.generation) {
                return true;
            }
            let link = link.clone();
            close_in_background("retired receiver", self.entity.path(), async move {
                match link.receiver.lock().await.take() {
                    Some(receiver) => receiver.dispose().await,
                    None => Ok(()),
                }
            });
            false
        });
    }

    fn convert(&self, message: &ServiceBusReceivedMessage) -> ReceivedMessage {
        let now = OffsetDateTime::now_utc();
        ReceivedMessage {
            entity: self.entity.clone(),
            message_id: message.message_id().map(|c| c.into_owned()),
            lock_token: Uuid::from_bytes(*message.lock_token().as_inner()),
            sequence_number: message.sequence_number(),
            enqueued_at: message.enqueued_time(),
            locked_until: message.locked_until().unwrap_or(now),
            delivery_count: message.delivery_count().unwrap_or(1),
            partition_key: message.partition_key().map(str::to_string),
            session_id: message.session_id().map(str::to_string),
            reply_to: message.reply_to().map(str::to_string),
            correlation_id: message.correlation_id().map(|c| c.into_owned()),
            content_type: message.content_type().map(str::to_string),
            subject: message.subject().map(str::to_string),
            application_properties: message
                .application_properties()
                .map(|p| p.0.iter().map(|(k, v)| (k.clone(), render(v))).collect())
                .unwrap_or_default(),
            body: Bytes::copy_from_slice(message.body().unwrap_or_default()),
        }
    }

    /// Reads up to `max` messages from sequence number `from` on without locking or changing them (the
    /// `$management` peek). Peeked messages carry a nil lock token and cannot be settled.
    pub async fn peek(&self, from: i64, max: u32) -> Result<Vec<ReceivedMessage>, ServiceBusError> {
        let link = self.link().await?;
        let mut guard = link.receiver.lock().await;
        let receiver = guard.as_mut().ok_or_else(|| ServiceBusError::Transport {
            detail: format!("receive link for {} is closed", self.entity),
        })?;
        let peeked = receiver
            .peek_messages(max, Some(from))
            .await
            .map_err(|e| classify(&e, &self.entity.path(), None, &self.shared.redactor))?;
        Ok(peeked
            .iter()
            .map(|m| ReceivedMessage {
                entity: self.entity.clone(),
                message_id: m.message_id().map(|c| c.into_owned()),
                lock_token: Uuid::nil(),
                sequence_number: m.sequence_number(),
                enqueued_at: m.enqueued_time(),
                locked_until: OffsetDateTime::UNIX_EPOCH,
                delivery_count: m.delivery_count().unwrap_or(0),
                partition_key: m.partition_key().map(str::to_string),
                session_id: m.session_id().map(str::to_string),
                reply_to: m.reply_to().map(str::to_string),
                correlation_id: m.correlation_id().map(|c| c.into_owned()),
                content_type: m.content_type().map(str::to_string),
                subject: m.subject().map(str::to_string),
                application_properties: m
                    .application_properties()
                    .map(|p| p.0.iter().map(|(k, v)| (k.clone(), render(v))).collect())
                    .unwrap_or_default(),
                body: Bytes::copy_from_slice(m.body().unwrap_or_default()),
            })
            .collect())
    }

    /// Takes a message out of the map for settlement; a message this receiver does not hold, or whose lock
    /// has expired by its own knowledge, is a lost lock.
    fn take_for_settlement(&self, message: &ReceivedMessage) -> Result<Tracked, ServiceBusError> {
        let lost = ServiceBusError::LockLost {
            lock_token: message.lock_token,
        };
        let tracked = self
            .tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&message.lock_token)
            .ok_or(ServiceBusError::LockLost {
                lock_token: message.lock_token,
            })?;
        if tracked.locked_until <= OffsetDateTime::now_utc() {
            tracing::warn!(entity = %self.entity, lock_token = %message.lock_token, locked_until = %tracked.locked_until, "refusing to settle a message whose lock expired");
            self.close_idle_links();
            return Err(lost);
        }
        Ok(tracked)
    }

    fn put_back(&self, lock_token: Uuid, tracked: Tracked) {
        self.tracked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lock_token, tracked);
    }

    async fn settle(&self, message: &ReceivedMessage, verb: Verb) -> Result<(), ServiceBusError> {
        let tracked = self.take_for_settlement(message)?;
        let result = {
            let original = tracked.message.lock().await;
            let mut link = tracked.link.receiver.lock().await;
            let Some(receiver) = link.as_mut() else {
                return Err(ServiceBusError::LockLost {
                    lock_token: message.lock_token,
                });
            };
            match &verb {
                Verb::Complete => receiver.complete_message(&*original).await,
                Verb::Abandon => receiver.abandon_message(&*original, None).await,
                Verb::DeadLetter(options) => {
                    receiver
                        .dead_letter_message(&*original, options.clone())
                        .await
                }
            }
        };
        let verb = verb.name();
        let result = result.map_err(|e| {
            classify(
                &e,
                &self.entity.path(),
                Some(message.lock_token),
                &self.shared.redactor,
            )
        });
        match &result {
            Err(e) if e.is_retriable() => self.put_back(message.lock_token, tracked),
            Err(e) => {
                tracing::warn!(entity = %self.entity, lock_token = %message.lock_token, verb, error = %e, "settlement failed");
                self.close_idle_links();
            }
            Ok(()) => self.close_idle_links(),
        }
        result
    }
}

#[async_trait]
impl MessageReceiver for AzureReceiver {
    async fn receive(
        &self,
        max: u32,
        max_wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, ServiceBusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let link = self.link().await?;
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let slice = left
                .min(self.shared.receive_slice)
                .max(Duration::from_millis(1));
            let got = {
                let mut guard = link.receiver.lock().await;
                let receiver = guard.as_mut().ok_or_else(|| ServiceBusError::Transport {
                    detail: format!("receive link for {} is closed", self.entity),
                })?;
                receiver
                    .receive_messages_with_max_wait_time(max, slice)
                    .await
            }
            .map_err(|e| classify(&e, &self.entity.path(), None, &self.shared.redactor));
            let got = match got {
                Ok(got) => got,
                Err(error) => {
                    // A detached link (throttling, a forced detach) or a dead session is not coming back by
                    // itself: the next receive opens a fresh link, reconnecting the client if it has to.
                    if error.is_retriable() {
                        self.reopen.store(true, Ordering::Relaxed);
                    }
                    return Err(error);
                }
            };
            if !got.is_empty() {
                let mut out = Vec::with_capacity(got.len());
                let mut tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
                for original in got {
                    let converted = self.convert(&original);
                    tracked.insert(
                        converted.lock_token,
                        Tracked {
                            message: Arc::new(AsyncMutex::new(original)),
                            link: link.clone(),
                            locked_until: converted.locked_until,
                        },
                    );
                    out.push(converted);
                }
                return Ok(out);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn complete(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settle(message, Verb::Complete).await
    }

    async fn abandon(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settle(message, Verb::Abandon).await
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        description: &str,
    ) -> Result<(), ServiceBusError> {
        let options = DeadLetterOptions {
            dead_letter_reason: Some(reason.to_string()),
            dead_letter_error_description: Some(description.to_string()),
            properties_to_modify: None,
        };
        self.settle(message, Verb::DeadLetter(options)).await
    }

    async fn renew_lock(
        &self,
        message: &ReceivedMessage,
    ) -> Result<OffsetDateTime, ServiceBusError> {
        let lost = || ServiceBusError::LockLost {
            lock_token: message.lock_token,
        };
        let (original, link) = {
            let tracked = self.tracked.lock().unwrap_or_else(|p| p.into_inner());
            let t = tracked.get(&message.lock_token).ok_or_else(lost)?;
            (t.message.clone(), t.link.clone())
        };
        let mut original = original.lock().await;
        let result = {
            let mut guard = link.receiver.lock().await;
            let receiver = guard.as_mut().ok_or_else(lost)?;
            receiver.renew_message_lock(&mut original).await
        };
        match result {
            Ok(()) => {
                let until = original
                    .locked_until()
                    .ok_or_else(|| ServiceBusError::Transport {
                        detail: format!("renew-lock reply for {} carried no expiry", self.entity),
                    })?;
                if let Some(t) = self
                    .tracked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&message.lock_token)
                {
                    t.locked_until = until;
                }
                Ok(until)
            }
            Err(e) => {
                let error = classify(
                    &e,
                    &self.entity.path(),
                    Some(message.lock_token),
                    &self.shared.redactor,
                );
                if matches!(error, ServiceBusError::LockLost { .. }) {
                    self.tracked
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&message.lock_token);
                    self.close_idle_links();
                }
                Err(error)
            }
        }
    }

    fn set_prefetch(&self, prefetch: u32) {
        self.desired_prefetch.store(prefetch, Ordering::Relaxed);
    }

    fn prefetch(&self) -> u32 {
        self.desired_prefetch.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &str = "c2VjcmV0LWtleS1uZXZlci1zaG93bg==";

    fn config_with_secret() -> ServiceBusConfig {
        ServiceBusConfig::from_connection_string(SecretString::new(format!(
            "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey={SECRET_KEY}"
        )))
    }

    #[test]
    fn config_debug_never_shows_the_connection_string() {
        let debug = format!("{:?}", config_with_secret());
        assert!(!debug.contains(SECRET_KEY), "{debug}");
        assert!(!debug.contains("SharedAccessKey="), "{debug}");
    }

    #[test]
    fn config_parses_from_toml_and_rejects_unknown_fields() {
        let text = r#"
            auth = "azure_ad"
            namespace = "contoso"
            tls = true
            prefetch = 20
            [azure_ad]
            credential = "managed_identity"
            client_id = "00000000-0000-0000-0000-000000000001"
            [retry]
            max_retries = 1
        "#;
        let config: ServiceBusConfig = toml::from_str(text).unwrap();
        assert_eq!(config.auth, AuthMode::AzureAd);
        assert_eq!(config.prefetch, 20);
        assert_eq!(config.retry.max_retries, 1);
        assert_eq!(config.retry.delay_ms, 800);
        config.validate().unwrap();
        let err = toml::from_str::<ServiceBusConfig>("prefech = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefech"), "{err}");
    }

    #[test]
    fn validation_names_what_is_missing() {
        let mut config = config_with_secret();
        config.auth = AuthMode::AzureAd;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: auth is azure_ad but namespace is not set"
        );
        let mut config = config_with_secret();
        config.connection_string = Some(SecretString::new(format!(
            "Endpoint=sb://h;SharedAccessKey={SECRET_KEY}"
        )));
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid configuration: connection string has no SharedAccessKeyName"
        );
        let mut config = config_with_secret();
        config.management_base_url = Some("ftp://x".into());
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not an http(s) url"));
    }

    #[test]
    fn broker_size_descriptions_are_read() {
        let real = "Rejected { error: Some(Error { condition: LinkError(MessageSizeExceeded), description: Some(\"The received message (delivery-id:0, size:269511 bytes) exceeds the limit (262144 bytes) currently allowed on the link.\") }) }";
        assert_eq!(broker_sizes(real), Some((269_511, 262_144)));
        assert_eq!(broker_sizes("message too big"), None);
    }

    #[test]
    fn redactor_removes_keys_and_signatures() {
        let redactor = Redactor {
            secrets: vec![SECRET_KEY.to_string()],
        };
        let text = format!(
            "put-token failed for SharedAccessSignature sr=amqp%3A%2F%2Fh%2Fq&sig=abc%2Bdef&se=1&skn=root with key {SECRET_KEY}; SharedAccessKey=zzz;"
        );
        let out = redactor.redact(&text);
        assert!(
            !out.contains(SECRET_KEY) && !out.contains("abc%2Bdef") && !out.contains("zzz"),
            "{out}"
        );
        assert!(
            out.contains("sr=amqp%3A%2F%2Fh%2Fq"),
            "non-secret parts stay readable: {out}"
        );
    }

    #[test]
    fn outgoing_messages_keep_their_properties() {
        let mut props = std::collections::BTreeMap::new();
        props.insert("kind".to_string(), "volume".to_string());
        let m = to_service_bus_message(OutgoingMessage {
            message_id: Some("m-1".into()),
            body: Bytes::from_static(b"{}"),
            partition_key: Some("s-1".into()),
            session_id: Some("s-1".into()),
            subject: Some("create".into()),
            application_properties: props,
            ..OutgoingMessage::default()
        })
        .unwrap();
        assert_eq!(m.message_id().as_deref(), Some("m-1"));
        assert_eq!(m.session_id(), Some("s-1"));
        assert_eq!(m.partition_key(), Some("s-1"));
        assert_eq!(m.subject(), Some("create"));
        assert_eq!(
            m.application_properties()
                .and_then(|p| p.0.get("kind"))
                .map(render)
                .as_deref(),
            Some("volume")
        );
        let err = to_service_bus_message(OutgoingMessage {
            session_id: Some("a".into()),
            partition_key: Some("b".into()),
            ..OutgoingMessage::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("partition_key"), "{err}");
    }
}
