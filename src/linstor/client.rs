//! The REST client: one HTTP transport, a GET-only [`LinstorReader`] and a [`LinstorWriter`] for the mutating verbs.
//!
//! Success is decided from the `ApiCallRc` masks of the reply, not from the HTTP status alone: a reply with
//! an error entry is an error whatever the status, and a warning-only reply is a success.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use url::Url;

use super::config::{Credential, ValidatedLinstorConfig};
use super::exposition::{self, MetricSample};
use super::retcode::{self, ApiCallRcList};
use super::types::*;
use super::LinstorError;

/// Characters escaped in path segments: everything but letters, digits and `-_.~`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Escapes one path segment (a resource, node or snapshot name).
fn seg(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The bytes of an error body shown in an error message, at most.
const BODY_SNIPPET: usize = 300;

/// One HTTP client towards a list of controllers, carrying one credential.
struct Transport {
    controllers: Vec<Url>,
    /// Index of the controller that answered last; requests start there.
    active: AtomicUsize,
    client: reqwest::Client,
    token: Option<String>,
    timeout_ms: u64,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed, only whether there is one.
        f.debug_struct("Transport")
            .field(
                "controllers",
                &self.controllers.iter().map(Url::as_str).collect::<Vec<_>>(),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl Transport {
    fn build(
        config: &ValidatedLinstorConfig,
        credential: &Credential,
    ) -> Result<Transport, LinstorError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("trimtab/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.root_ca {
            let pem = read_file("root ca", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                LinstorError::Client {
                    reason: format!("root ca {} is not a PEM certificate bundle", path.display()),
                    source,
                }
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&credential.user_certificate, &credential.user_key) {
            let mut pem = read_file("user certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read_file("user key", key)?);
            let identity =
                reqwest::Identity::from_pem(&pem).map_err(|source| LinstorError::Client {
                    reason: format!(
                        "{} and {} are not a PEM certificate and key",
                        cert.display(),
                        key.display()
                    ),
                    source,
                })?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|source| LinstorError::Client {
            reason: "tls settings".into(),
            source,
        })?;
        Ok(Transport {
            controllers: config.controllers.clone(),
            active: AtomicUsize::new(0),
            client,
            token: credential.load_token()?,
            timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Sends one request, trying the next controller when one cannot be reached.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<(StatusCode, bytes::Bytes), LinstorError> {
        let start = self.active.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.controllers.len() {
            let index = (start + offset) % self.controllers.len();
            let base = &self.controllers[index];
            let url = format!("{}{}", base.as_str().trim_end_matches('/'), path);
            let mut request = self.client.request(method.clone(), &url).query(query);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_json());
            }
            let result = async {
                let response = request.send().await?;
                let status = response.status();
                let bytes = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            match result {
                Ok(reply) => {
                    self.active.store(index, Ordering::Relaxed);
                    tracing::debug!(method = %method, path, status = reply.0.as_u16(), controller = %base, "linstor reply");
                    return Ok(reply);
                }
                Err(e) if e.is_timeout() => {
                    return Err(LinstorError::Timeout {
                        method: method.to_string(),
                        path: path.to_owned(),
                        controller: base.to_string(),
                        timeout_ms: self.timeout_ms,
                    })
                }
                Err(e) => {
                    tracing::warn!(method = %method, path, controller = %base, error = %e, "linstor controller unreachable");
                    last_error = Some(LinstorError::Transport {
                        method: method.to_string(),
                        path: path.to_owned(),
                        controller: base.to_string(),
                        source: e,
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| LinstorError::InvalidConfig {
            field: "controllers",
            reason: "no controller configured".into(),
        }))
    }

    /// A GET whose success body is `T`.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, LinstorError> {
        let (status, body) = self.send(Method::GET, path, query, None).await?;
        if !status.is_success() {
            return Err(failure("GET", path, status, &body));
        }
        serde_json::from_slice(&body).map_err(|source| LinstorError::Decode {
            method: "GET".into(),
            path: path.to_owned(),
            source,
        })
    }

    /// A mutating call whose reply is an `ApiCallRc` list.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&(dyn erased::Body + Sync)>,
    ) -> Result<ApiCallRcList, LinstorError> {
        let (status, bytes) = self.send(method.clone(), path, query, body).await?;
        if !status.is_success() {
            return Err(failure(method.as_str(), path, status, &bytes));
        }
        let replies: ApiCallRcList = if bytes.iter().all(u8::is_ascii_whitespace) {
            ApiCallRcList::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|source| LinstorError::Decode {
                method: method.to_string(),
                path: path.to_owned(),
                source,
            })?
        };
        if let Some(error) = replies.first_error() {
            return Err(LinstorError::Api {
                method: method.to_string(),
                path: path.to_owned(),
                status: status.as_u16(),
                error: Box::new(error.clone()),
                replies: replies.0.clone(),
            });
        }
        for warning in replies.entries().iter().filter(|rc| rc.ret_code.is_warn()) {
            tracing::info!(method = %method, path, code = warning.ret_code.code(), message = %warning.message, "linstor warning");
        }
        Ok(replies)
    }
}

/// Object-safe JSON bodies, so `send` is not generic over every request type.
mod erased {
    pub trait Body {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Body for T {
        fn to_json(&self) -> Vec<u8> {
            // Serializing these plain structs and maps into a Vec cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

fn read_file(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, LinstorError> {
    std::fs::read(path).map_err(|source| LinstorError::ReadCredential {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Turns a failing reply into an error: LINSTOR's error entry when the body has one, the status otherwise.
fn failure(method: &str, path: &str, status: StatusCode, body: &[u8]) -> LinstorError {
    if let Ok(replies) = serde_json::from_slice::<ApiCallRcList>(body) {
        if let Some(error) = replies.first_error() {
            return LinstorError::Api {
                method: method.to_owned(),
                path: path.to_owned(),
                status: status.as_u16(),
                error: Box::new(error.clone()),
                replies: replies.0.clone(),
            };
        }
    }
    let text = String::from_utf8_lossy(body);
    let mut snippet: String = text.chars().take(BODY_SNIPPET).collect();
    if text.chars().count() > BODY_SNIPPET {
        snippet.push('…');
    }
    LinstorError::Http {
        method: method.to_owned(),
        path: path.to_owned(),
        status: status.as_u16(),
        body: snippet,
    }
}

/// Read-only access to the controller: every method is a GET. Collectors, the planner and chat-ops hold this.
#[derive(Debug, Clone)]
pub struct LinstorReader {
    transport: Arc<Transport>,
}

impl LinstorReader {
    /// Builds a reader with the configuration's `reader` credential. Reads certificate and token files.
    pub fn new(config: &ValidatedLinstorConfig) -> Result<LinstorReader, LinstorError> {
        Ok(LinstorReader {
            transport: Arc::new(Transport::build(config, &config.reader)?),
        })
    }

    /// `GET /v1/controller/version`.
    pub async fn version(&self) -> Result<ControllerVersion, LinstorError> {
        self.transport.get("/v1/controller/version", &[]).await
    }

    /// `GET /v1/controller/properties`: the controller-level properties (`BalanceResourcesEnabled`, ...).
    pub async fn controller_properties(&self) -> Result<BTreeMap<String, String>, LinstorError> {
        self.transport.get("/v1/controller/properties", &[]).await
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<Node>, LinstorError> {
        self.transport.get("/v1/nodes", &[]).await
    }

    /// `GET /v1/nodes/{node}`.
    pub async fn node(&self, node: &str) -> Result<Node, LinstorError> {
        self.transport
            .get(&format!("/v1/nodes/{}", seg(node)), &[])
            .await
    }

    /// `GET /v1/view/storage-pools`: every pool on every node, with capacities in KiB.
    pub async fn storage_pools(&self) -> Result<Vec<StoragePool>, LinstorError> {
        self.transport.get("/v1/view/storage-pools", &[]).await
    }

    /// `GET /v1/resource-groups`.
    pub async fn resource_groups(&self) -> Result<Vec<ResourceGroup>, LinstorError> {
        self.transport.get("/v1/resource-groups", &[]).await
    }

    /// `GET /v1/resource-groups/{rg}`.
    pub async fn resource_group(&self, name: &str) -> Result<ResourceGroup, LinstorError> {
        self.transport
            .get(&format!("/v1/resource-groups/{}", seg(name)), &[])
            .await
    }

    /// `GET /v1/resource-definitions?with_volume_definitions=true`.
    pub async fn resource_definitions(&self) -> Result<Vec<ResourceDefinition>, LinstorError> {
        self.transport
            .get(
                "/v1/resource-definitions",
                &[("with_volume_definitions", "true".into())],
            )
            .await
    }

    /// `GET /v1/resource-definitions/{rsc}`.
    pub async fn resource_definition(
        &self,
        name: &str,
    ) -> Result<ResourceDefinition, LinstorError> {
        self.transport
            .get(&format!("/v1/resource-definitions/{}", seg(name)), &[])
            .await
    }

    /// `GET /v1/resource-definitions/{rsc}/volume-definitions`.
    pub async fn volume_definitions(
        &self,
        resource: &str,
    ) -> Result<Vec<VolumeDefinition>, LinstorError> {
        self.transport
            .get(
                &format!(
                    "/v1/resource-definitions/{}/volume-definitions",
                    seg(resource)
                ),
                &[],
            )
            .await
    }

    /// `GET /v1/view/resources`, optionally only for some resources: placements with volume disk states and in-use.
    pub async fn resources(&self, only: &[&str]) -> Result<Vec<ResourceWithVolumes>, LinstorError> {
        let query: Vec<(&str, String)> = only
            .iter()
            .map(|r| ("resources", (*r).to_owned()))
            .collect();
        self.transport.get("/v1/view/resources", &query).await
    }

    /// `GET /v1/resource-definitions/{rsc}/snapshots`.
    pub async fn snapshots(&self, resource: &str) -> Result<Vec<Snapshot>, LinstorError> {
        self.transport
            .get(
                &format!("/v1/resource-definitions/{}/snapshots", seg(resource)),
                &[],
            )
            .await
    }

    /// `GET /metrics`, parsed into samples.
    pub async fn metrics(&self) -> Result<Vec<MetricSample>, LinstorError> {
        let (status, body) = self
            .transport
            .send(Method::GET, "/metrics", &[], None)
            .await?;
        if !status.is_success() {
            return Err(failure("GET", "/metrics", status, &body));
        }
        let text = String::from_utf8_lossy(&body);
        exposition::parse(&text).map_err(|e| LinstorError::Http {
            method: "GET".into(),
            path: "/metrics".into(),
            status: status.as_u16(),
            body: e.to_string(),
        })
    }
}

/// What an idempotent `ensure_*` call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call changed the cluster (created or deleted the object).
    Changed,
    /// The cluster was already in the requested state (a retry after a crash, or a duplicate message).
    Unchanged,
}

/// The mutating verbs. Built only from the `executor` credential; only the executor holds one.
#[derive(Debug, Clone)]
pub struct LinstorWriter {
    transport: Arc<Transport>,
}

impl LinstorWriter {
    /// Builds a writer with the configuration's `executor` credential; an error when none is configured.
    pub fn new(config: &ValidatedLinstorConfig) -> Result<LinstorWriter, LinstorError> {
        let credential = config
            .executor
            .as_ref()
            .ok_or_else(|| LinstorError::InvalidConfig {
                field: "executor",
                reason: "no executor credential configured: trimtab may only read from linstor"
                    .into(),
            })?;
        Ok(LinstorWriter {
            transport: Arc::new(Transport::build(config, credential)?),
        })
    }

    /// A reader sharing this writer's connection and credential, for read-backs during execution.
    pub fn reader(&self) -> LinstorReader {
        LinstorReader {
            transport: Arc::clone(&self.transport),
        }
    }

    /// `POST /v1/resource-groups`.
    pub async fn create_resource_group(
        &self,
        group: &ResourceGroup,
    ) -> Result<ApiCallRcList, LinstorError> {
        self.transport
            .call(Method::POST, "/v1/resource-groups", &[], Some(group))
            .await
    }

    /// `PUT /v1/resource-groups/{rg}`. Changing `select_filter.place_count` changes it for every resource
    /// definition in the group; the controller places replicas up to a raised count.
    pub async fn modify_resource_group(
        &self,
        name: &str,
        modify: &ResourceGroupModify,
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!("/v1/resource-groups/{}", seg(name));
        self.transport
            .call(Method::PUT, &path, &[], Some(modify))
            .await
    }

    /// `POST /v1/resource-definitions`.
    pub async fn create_resource_definition(
        &self,
        name: &str,
        resource_group: Option<&str>,
    ) -> Result<ApiCallRcList, LinstorError> {
        let body = ResourceDefinitionCreate {
            resource_definition: ResourceDefinition {
                name: name.to_owned(),
                resource_group_name: resource_group.map(str::to_owned),
                ..ResourceDefinition::default()
            },
            extra: Default::default(),
        };
        self.transport
            .call(Method::POST, "/v1/resource-definitions", &[], Some(&body))
            .await
    }

    /// `DELETE /v1/resource-definitions/{rsc}`: the definition with every replica and snapshot.
    pub async fn delete_resource_definition(
        &self,
        name: &str,
    ) -> Result<ApiCallRcList, LinstorError> {
        self.transport
            .call(
                Method::DELETE,
                &format!("/v1/resource-definitions/{}", seg(name)),
                &[],
                None,
            )
            .await
    }

    /// `POST /v1/resource-definitions/{rsc}/volume-definitions` with an explicit volume number.
    pub async fn create_volume_definition(
        &self,
        resource: &str,
        volume_number: u32,
        size_kib: u64,
    ) -> Result<ApiCallRcList, LinstorError> {
        let body = VolumeDefinitionCreate {
            volume_definition: VolumeDefinition {
                volume_number: Some(volume_number),
                size_kib,
                props: Default::default(),
                flags: Vec::new(),
                uuid: None,
                extra: Default::default(),
            },
            extra: Default::default(),
        };
        let path = format!(
            "/v1/resource-definitions/{}/volume-definitions",
            seg(resource)
        );
        self.transport
            .call(Method::POST, &path, &[], Some(&body))
            .await
    }

    /// `PUT /v1/resource-definitions/{rsc}/volume-definitions/{nr}` with a new size: grows every replica.
    pub async fn resize_volume(
        &self,
        resource: &str,
        volume_number: u32,
        size_kib: u64,
    ) -> Result<ApiCallRcList, LinstorError> {
        let body = VolumeDefinitionModify {
            size_kib: Some(size_kib),
            ..VolumeDefinitionModify::default()
        };
        let path = format!(
            "/v1/resource-definitions/{}/volume-definitions/{volume_number}",
            seg(resource)
        );
        self.transport
            .call(Method::PUT, &path, &[], Some(&body))
            .await
    }

    /// `POST /v1/resource-definitions/{rsc}/resources`.
    pub async fn create_resources(
        &self,
        resource: &str,
        resources: &[ResourceCreate],
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!("/v1/resource-definitions/{}/resources", seg(resource));
        self.transport
            .call(Method::POST, &path, &[], Some(&resources))
            .await
    }

    /// Creates a diskful replica of `resource` on `node` in `pool`.
    pub async fn create_diskful(
        &self,
        resource: &str,
        node: &str,
        pool: &str,
    ) -> Result<ApiCallRcList, LinstorError> {
        let mut props = Props::new();
        props.insert("StorPoolName".into(), pool.to_owned());
        let create = ResourceCreate {
            resource: Resource {
                node_name: node.to_owned(),
                props,
                ..Resource::default()
            },
            ..ResourceCreate::default()
        };
        self.create_resources(resource, &[create]).await
    }

    /// Creates a diskless replica of `resource` on `node` (attach).
    pub async fn create_diskless(
        &self,
        resource: &str,
        node: &str,
    ) -> Result<ApiCallRcList, LinstorError> {
        let create = ResourceCreate {
            resource: Resource {
                node_name: node.to_owned(),
                flags: vec!["DISKLESS".into()],
                ..Resource::default()
            },
            ..ResourceCreate::default()
        };
        self.create_resources(resource, &[create]).await
    }

    /// `DELETE /v1/resource-definitions/{rsc}/resources/{node}`.
    pub async fn delete_resource(
        &self,
        resource: &str,
        node: &str,
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!(
            "/v1/resource-definitions/{}/resources/{}",
            seg(resource),
            seg(node)
        );
        self.transport.call(Method::DELETE, &path, &[], None).await
    }

    /// `PUT /v1/resource-definitions/{rsc}/resources/{node}/toggle-disk`. With `migrate_from`, a move:
    /// the replica on `node` gets a disk in `pool` and the one on `migrate_from` is deleted once synced.
    pub async fn toggle_disk(
        &self,
        resource: &str,
        node: &str,
        toggle: &ToggleDisk,
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!(
            "/v1/resource-definitions/{}/resources/{}/toggle-disk",
            seg(resource),
            seg(node)
        );
        self.transport
            .call(Method::PUT, &path, &[], Some(toggle))
            .await
    }

    /// `POST /v1/resource-definitions/{rsc}/autoplace`. A warning that the place count is already met is a success.
    pub async fn autoplace(
        &self,
        resource: &str,
        request: &AutoPlaceRequest,
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!("/v1/resource-definitions/{}/autoplace", seg(resource));
        self.transport
            .call(Method::POST, &path, &[], Some(request))
            .await
    }

    /// `POST /v1/resource-definitions/{rsc}/snapshots`; on every node holding the resource when `nodes` is empty.
    pub async fn create_snapshot(
        &self,
        resource: &str,
        name: &str,
        nodes: &[String],
    ) -> Result<ApiCallRcList, LinstorError> {
        #[derive(Serialize)]
        struct Create<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            nodes: &'a [String],
        }
        let path = format!("/v1/resource-definitions/{}/snapshots", seg(resource));
        self.transport
            .call(Method::POST, &path, &[], Some(&Create { name, nodes }))
            .await
    }

    /// `DELETE /v1/resource-definitions/{rsc}/snapshots/{name}`.
    pub async fn delete_snapshot(
        &self,
        resource: &str,
        name: &str,
    ) -> Result<ApiCallRcList, LinstorError> {
        let path = format!(
            "/v1/resource-definitions/{}/snapshots/{}",
            seg(resource),
            seg(name)
        );
        self.transport.call(Method::DELETE, &path, &[], None).await
    }

    /// Creates the resource definition unless it exists; an existing one in another resource group is an error.
    pub async fn ensure_resource_definition(
        &self,
        name: &str,
        resource_group: Option<&str>,
    ) -> Result<Outcome, LinstorError> {
        match self.create_resource_definition(name, resource_group).await {
            Ok(_) => Ok(Outcome::Changed),
            Err(e) if e.api_code() == Some(retcode::FAIL_EXISTS_RSC_DFN) => {
                let existing = self.reader().resource_definition(name).await?;
                match (resource_group, existing.resource_group_name.as_deref()) {
                    (Some(wanted), Some(actual)) if wanted != actual => {
                        Err(LinstorError::Mismatch {
                            object: format!("resource definition {name}"),
                            difference: format!(
                                "it is in resource group {actual}, request asks {wanted}"
                            ),
                        })
                    }
                    _ => Ok(Outcome::Unchanged),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Creates volume `volume_number` of `resource` unless it exists with this size; another size is an error.
    pub async fn ensure_volume_definition(
        &self,
        resource: &str,
        volume_number: u32,
        size_kib: u64,
    ) -> Result<Outcome, LinstorError> {
        let check = |existing: &[VolumeDefinition]| -> Result<Option<Outcome>, LinstorError> {
            match existing.iter().find(|v| v.volume_number == Some(volume_number)) {
                Some(v) if v.size_kib == size_kib => Ok(Some(Outcome::Unchanged)),
                Some(v) => Err(LinstorError::Mismatch {
                    object: format!("volume definition {volume_number} of {resource}"),
                    difference: format!(
                        "volume {volume_number} of {resource} is {} KiB, request asks {size_kib} KiB",
                        v.size_kib
                    ),
                }),
                None => Ok(None),
            }
        };
        if let Some(outcome) = check(&self.reader().volume_definitions(resource).await?)? {
            return Ok(outcome);
        }
        match self
            .create_volume_definition(resource, volume_number, size_kib)
            .await
        {
            Ok(_) => Ok(Outcome::Changed),
            Err(e) if e.api_code() == Some(retcode::FAIL_EXISTS_VLM_DFN) => {
                // Created concurrently between the read and the create: compare again.
                check(&self.reader().volume_definitions(resource).await?)?.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives `node` access to `resource` without local storage, unless it has a replica there already.
    pub async fn ensure_diskless(
        &self,
        resource: &str,
        node: &str,
    ) -> Result<Outcome, LinstorError> {
        match self.create_diskless(resource, node).await {
            Ok(_) => Ok(Outcome::Changed),
            Err(e) if e.api_code() == Some(retcode::FAIL_EXISTS_RSC) => Ok(Outcome::Unchanged),
            Err(e) => Err(e),
        }
    }

    /// Takes snapshot `name` of `resource` unless it exists.
    pub async fn ensure_snapshot(
        &self,
        resource: &str,
        name: &str,
    ) -> Result<Outcome, LinstorError> {
        match self.create_snapshot(resource, name, &[]).await {
            Ok(_) => Ok(Outcome::Changed),
            Err(e)
                if matches!(
                    e.api_code(),
                    Some(retcode::FAIL_EXISTS_SNAPSHOT | retcode::FAIL_EXISTS_SNAPSHOT_DFN)
                ) =>
            {
                Ok(Outcome::Unchanged)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the resource definition unless it is already gone.
    pub async fn ensure_resource_definition_deleted(
        &self,
        name: &str,
    ) -> Result<Outcome, LinstorError> {
        match self.delete_resource_definition(name).await {
            Ok(_) => Ok(Outcome::Changed),
            Err(e) if e.api_code() == Some(retcode::FAIL_NOT_FOUND_RSC_DFN) => {
                Ok(Outcome::Unchanged)
            }
            Err(e) => Err(e),
        }
    }
}
