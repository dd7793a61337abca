//! The dead-letter operations over a live Service Bus connection, for the command line and the HTTP API alike.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{
    list, redrive, show, DeadLetterEntry, Filter, RedriveContext, RedriveError, RedriveReport,
    RedriveRequest,
};
use crate::audit::AuditLog;
use crate::policy::Gate;
use crate::servicebus::azure::AzureServiceBus;
use crate::servicebus::{Entity, ReceivedMessage};

/// List, show and re-drive against one namespace, with the policy and audit log of one trimtab.
#[derive(Clone)]
pub struct DlqService {
    bus: Arc<AzureServiceBus>,
    policies_dir: PathBuf,
    audit_log: PathBuf,
}

impl std::fmt::Debug for DlqService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlqService")
            .field("policies_dir", &self.policies_dir)
            .field("audit_log", &self.audit_log)
            .finish_non_exhaustive()
    }
}

impl DlqService {
    /// Operations over `bus`, gated by the policy in `policies_dir`, audited into `audit_log`.
    pub fn new(bus: Arc<AzureServiceBus>, policies_dir: PathBuf, audit_log: PathBuf) -> Self {
        DlqService {
            bus,
            policies_dir,
            audit_log,
        }
    }

    /// Dead-lettered messages of `entity` matching `filter`, up to `limit`. Changes nothing.
    pub async fn list(
        &self,
        entity: &Entity,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetterEntry>, RedriveError> {
        let dead_letters = self.bus.dead_letter_receiver(entity).await?;
        list(&dead_letters, filter, limit).await
    }

    /// One dead-lettered message in full. Changes nothing.
    pub async fn show(
        &self,
        entity: &Entity,
        sequence_number: i64,
    ) -> Result<(DeadLetterEntry, ReceivedMessage), RedriveError> {
        let dead_letters = self.bus.dead_letter_receiver(entity).await?;
        show(&dead_letters, sequence_number).await
    }

    /// Re-drives `entity`'s dead letters per `request`: gated by the policy as it is on disk now, audited.
    pub async fn redrive(
        &self,
        entity: &Entity,
        request: &RedriveRequest,
    ) -> Result<RedriveReport, RedriveError> {
        let dead_letters = self.bus.dead_letter_receiver(entity).await?;
        let sender = self.bus.sender(entity).await?;
        let gate = Gate::load(&self.policies_dir);
        let (log, torn) = AuditLog::open(&self.audit_log)?;
        if let Some(t) = torn {
            tracing::warn!(saved_to = %t.saved_to.display(), "the audit log had a torn last line; saved aside and recorded");
        }
        let audit = Mutex::new(log);
        redrive(
            RedriveContext {
                entity,
                dead_letters: &dead_letters,
                sender: &sender,
                gate: &gate,
                audit: &audit,
            },
            request,
        )
        .await
    }
}
