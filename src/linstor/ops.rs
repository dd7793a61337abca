//! Volume operations requested by messages: create, snapshot, attach, resize and delete, each idempotent.
//!
//! A message may be delivered more than once (after a crash, a lost lock or a duplicate send), so every
//! operation converges: a repeated create, snapshot, attach or delete of what is already there succeeds,
//! and a resize to the current size does nothing. What can never succeed (an unknown pool, a bad size,
//! too few nodes for the place count, a resource that exists in another shape) is a permanent error
//! carrying LINSTOR's own message, which the pipeline uses as the dead-letter reason and reply text.

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::client::{LinstorWriter, Outcome};
use super::types::{AutoPlaceRequest, AutoSelectFilter, ResourceWithVolumes};
use super::LinstorError;
use crate::message::VolumeRequest;

/// The reply sent to a volume request's `reply_to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeReply {
    /// The request's `op`: `create`, `snapshot`, `attach`, `resize` or `delete`.
    pub op: String,
    /// The resource the request was about.
    pub resource: String,
    /// Whether the operation succeeded.
    pub ok: bool,
    /// Why it failed, in LINSTOR's words where LINSTOR refused; absent on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the work was already done before this request (a redelivery or a duplicate).
    #[serde(default)]
    pub already_done: bool,
    /// The resource's replicas after the operation (empty after a delete or when it could not be read).
    #[serde(default)]
    pub replicas: Vec<ReplicaState>,
}

/// One replica of the resource as the controller reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Node name.
    pub node: String,
    /// Storage pool of volume 0; empty for a diskless replica without a pool.
    pub pool: String,
    /// Whether the replica has no local disk.
    pub diskless: bool,
    /// Disk state of volume 0 (`UpToDate`, `Inconsistent`, `Diskless`, `Unknown`, ...).
    pub disk_state: String,
    /// Whether the resource is in use on this node; unknown when the node is offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
}

impl VolumeReply {
    /// The reply for a request that failed for good.
    pub fn failed(request: &VolumeRequest, error: &VolumeOpError) -> VolumeReply {
        VolumeReply {
            op: request.op().to_owned(),
            resource: request.resource().to_owned(),
            ok: false,
            error: Some(error.reason()),
            already_done: false,
            replicas: Vec::new(),
        }
    }
}

/// A volume operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeOpError {
    /// The request itself is unusable; no call was made.
    #[error("{op} {resource}: invalid request: {reason}")]
    Invalid {
        /// The request's op.
        op: &'static str,
        /// The resource.
        resource: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A LINSTOR call failed.
    #[error("{op} {resource}: {source}")]
    Linstor {
        /// The request's op.
        op: &'static str,
        /// The resource.
        resource: String,
        /// The failed call.
        #[source]
        source: LinstorError,
    },
}

impl VolumeOpError {
    /// Whether redelivering the message may succeed (connection problems, timeouts, server errors).
    pub fn is_retriable(&self) -> bool {
        match self {
            VolumeOpError::Invalid { .. } => false,
            VolumeOpError::Linstor { source, .. } => source.is_retriable(),
        }
    }

    /// The text for a reply or a dead-letter reason: LINSTOR's own message and details where it refused.
    pub fn reason(&self) -> String {
        match self {
            VolumeOpError::Invalid { reason, .. } => reason.clone(),
            VolumeOpError::Linstor { source, .. } => source.reason(),
        }
    }
}

/// Runs volume requests against LINSTOR with the executor's write credential.
#[derive(Debug, Clone)]
pub struct VolumeExecutor {
    writer: LinstorWriter,
}

impl VolumeExecutor {
    /// An executor using `writer`.
    pub fn new(writer: LinstorWriter) -> VolumeExecutor {
        VolumeExecutor { writer }
    }

    /// Runs one request to completion. Safe to call again with the same request after any failure.
    pub async fn execute(&self, request: &VolumeRequest) -> Result<VolumeReply, VolumeOpError> {
        let span = tracing::info_span!(
            "volume_op",
            op = request.op(),
            resource = request.resource()
        );
        self.run(request).instrument(span).await
    }

    async fn run(&self, request: &VolumeRequest) -> Result<VolumeReply, VolumeOpError> {
        let op = request.op();
        let resource = request.resource();
        let wrap = |source: LinstorError| VolumeOpError::Linstor {
            op,
            resource: resource.to_owned(),
            source,
        };
        let already_done = match request {
            VolumeRequest::Create {
                resource,
                size_kib,
                place_count,
                storage_pool,
                replicas_on_different,
                replicas_on_same,
                resource_group,
            } => {
                if *size_kib == 0 {
                    return Err(invalid(op, resource, "size_kib must be greater than 0"));
                }
                if *place_count == 0 {
                    return Err(invalid(op, resource, "place_count must be at least 1"));
                }
                let rd = self
                    .writer
                    .ensure_resource_definition(resource, resource_group.as_deref())
                    .await
                    .map_err(wrap)?;
                let vd = self
                    .writer
                    .ensure_volume_definition(resource, 0, *size_kib)
                    .await
                    .map_err(wrap)?;
                let place = AutoPlaceRequest {
                    diskless_on_remaining: Some(false),
                    select_filter: AutoSelectFilter {
                        place_count: Some(*place_count),
                        storage_pool_list: storage_pool.as_ref().map(|p| vec![p.clone()]),
                        replicas_on_different: Some(replicas_on_different.clone())
                            .filter(|v| !v.is_empty()),
                        replicas_on_same: Some(replicas_on_same.clone()).filter(|v| !v.is_empty()),
                        diskless_on_remaining: Some(false),
                        ..AutoSelectFilter::default()
                    },
                    ..AutoPlaceRequest::default()
                };
                let replies = match self.writer.autoplace(resource, &place).await {
                    Ok(replies) => replies,
                    Err(e) if !e.is_retriable() && rd == Outcome::Changed => {
                        // The definition was made by this very call and can never be placed as asked:
                        // remove it so a corrected request under the same name starts clean.
                        if let Err(cleanup) = self
                            .writer
                            .ensure_resource_definition_deleted(resource)
                            .await
                        {
                            tracing::warn!(resource, error = %cleanup, "could not remove the unplaceable resource definition");
                        }
                        return Err(wrap(e));
                    }
                    Err(e) => return Err(wrap(e)),
                };
                let placed_before = replies.has_code(super::retcode::WARN_RSC_ALREADY_DEPLOYED);
                if let Some(pool) = storage_pool {
                    let current = self.replicas(resource).await.map_err(wrap)?;
                    if let Some(other) = current.iter().find(|r| !r.diskless && &r.pool != pool) {
                        return Err(wrap(LinstorError::Mismatch {
                            object: format!("resource {resource}"),
                            difference: format!(
                                "replica on {} is in pool {}, request asks {pool}",
                                other.node, other.pool
                            ),
                        }));
                    }
                }
                rd == Outcome::Unchanged && vd == Outcome::Unchanged && placed_before
            }
            VolumeRequest::Snapshot { resource, snapshot } => {
                self.writer
                    .ensure_snapshot(resource, snapshot)
                    .await
                    .map_err(wrap)?
                    == Outcome::Unchanged
            }
            VolumeRequest::Attach { resource, node } => {
                self.writer
                    .ensure_diskless(resource, node)
                    .await
                    .map_err(wrap)?
                    == Outcome::Unchanged
            }
            VolumeRequest::Resize {
                resource,
                size_kib,
                volume_number,
            } => {
                let definitions = self
                    .writer
                    .reader()
                    .volume_definitions(resource)
                    .await
                    .map_err(wrap)?;
                let Some(current) = definitions
                    .iter()
                    .find(|v| v.volume_number == Some(*volume_number))
                else {
                    return Err(invalid(
                        op,
                        resource,
                        &format!("{resource} has no volume {volume_number}"),
                    ));
                };
                if current.size_kib == *size_kib {
                    true
                } else if current.size_kib > *size_kib {
                    return Err(invalid(
                        op,
                        resource,
                        &format!(
                            "volume {volume_number} of {resource} is {} KiB, request asks {size_kib} KiB: linstor volumes cannot shrink",
                            current.size_kib
                        ),
                    ));
                } else {
                    self.writer
                        .resize_volume(resource, *volume_number, *size_kib)
                        .await
                        .map_err(wrap)?;
                    false
                }
            }
            VolumeRequest::Delete { resource } => {
                self.writer
                    .ensure_resource_definition_deleted(resource)
                    .await
                    .map_err(wrap)?
                    == Outcome::Unchanged
            }
        };
        let replicas = match request {
            VolumeRequest::Delete { .. } => Vec::new(),
            _ => self.replicas(resource).await.map_err(wrap)?,
        };
        tracing::info!(
            op,
            resource,
            already_done,
            replicas = replicas.len(),
            "volume operation done"
        );
        Ok(VolumeReply {
            op: op.to_owned(),
            resource: resource.to_owned(),
            ok: true,
            error: None,
            already_done,
            replicas,
        })
    }

    /// The resource's replicas as `/v1/view/resources` reports them.
    async fn replicas(&self, resource: &str) -> Result<Vec<ReplicaState>, LinstorError> {
        let view = self.writer.reader().resources(&[resource]).await?;
        Ok(view
            .iter()
            .filter(|r| r.resource.name == resource)
            .map(replica_state)
            .collect())
    }
}

fn invalid(op: &'static str, resource: &str, reason: &str) -> VolumeOpError {
    VolumeOpError::Invalid {
        op,
        resource: resource.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Summarises one placement: pool and disk state of its first volume.
pub fn replica_state(placement: &ResourceWithVolumes) -> ReplicaState {
    let first = placement.volumes.iter().min_by_key(|v| v.volume_number);
    let diskless = placement.resource.is_diskless();
    ReplicaState {
        node: placement.resource.node_name.clone(),
        pool: first
            .map(|v| v.storage_pool_name.clone())
            .or_else(|| placement.resource.props.get("StorPoolName").cloned())
            .unwrap_or_default(),
        diskless,
        disk_state: first
            .and_then(|v| v.state.disk_state.clone())
            .unwrap_or_else(|| {
                if diskless {
                    "Diskless".into()
                } else {
                    "Unknown".into()
                }
            }),
        in_use: placement.resource.state.as_ref().and_then(|s| s.in_use),
    }
}
