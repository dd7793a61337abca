//! Re-drive: list, show and move dead-lettered messages back to their entity after a fix.
//!
//! A re-drive is a change like any other. It is planned first by peeking at the dead-letter sub-queue (nothing is
//! locked or changed), put to the policy gate as verb `redrive_dead_letters` (with the entity and the count, so
//! policy can cap it and maintenance windows can freeze it), audited before the first message moves and after the
//! last, and paced by a rate limit so it cannot swamp Cassandra. `--dry-run` stops after the gate: it changes
//! nothing and writes nothing.
//!
//! Each re-driven message is a copy sent to the entity with the same message id (so the idempotent Cassandra row
//! stays idempotent), body and properties, without the dead-letter properties, and with
//! [`REDRIVE_COUNT_PROPERTY`] raised by one; the dead-lettered original is completed only after the copy is sent.
//! A crash between the two leaves both: the copy is processed, the original is re-driven again later and
//! overwrites its own row.

pub mod cli;
mod filter;
mod pace;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use time::OffsetDateTime;

use crate::audit::{AuditError, AuditKind, AuditLog};
use crate::policy::{Decision, Gate, GateContext, Mode, Verdict};
use crate::servicebus::azure::AzureReceiver;
use crate::servicebus::{
    Entity, MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

pub use filter::{Filter, FilterError};
pub use pace::Pacer;
pub use service::DlqService;

/// The application property that counts how often a message was re-driven.
pub const REDRIVE_COUNT_PROPERTY: &str = "trimtab-redrive-count";
/// Properties Service Bus sets when dead-lettering; a re-driven copy does not carry them.
const DEAD_LETTER_PROPERTIES: [&str; 3] = [
    "DeadLetterReason",
    "DeadLetterErrorDescription",
    "DeadLetterSource",
];
/// Messages peeked per management call.
const PEEK_PAGE: u32 = 100;
/// Messages received from the dead-letter sub-queue per call.
const RECEIVE_BATCH: u32 = 50;
/// Characters of a body shown in a list.
const PREVIEW_CHARS: usize = 80;

/// A dead-letter sub-queue as re-drive uses it: peek without locking, then receive and settle in peek-lock mode.
#[async_trait]
pub trait DeadLetters: MessageReceiver {
    /// Up to `max` messages from sequence number `from` on, unlocked and unchanged.
    async fn peek(&self, from: i64, max: u32) -> Result<Vec<ReceivedMessage>, ServiceBusError>;
}

#[async_trait]
impl DeadLetters for AzureReceiver {
    async fn peek(&self, from: i64, max: u32) -> Result<Vec<ReceivedMessage>, ServiceBusError> {
        AzureReceiver::peek(self, from, max).await
    }
}

/// Why listing or re-driving failed.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// Service Bus failed.
    #[error("service bus")]
    ServiceBus(#[from] ServiceBusError),
    /// The audit log could not be written; nothing was moved after the failure.
    #[error("audit log")]
    Audit(#[from] AuditError),
    /// No dead-lettered message has this sequence number.
    #[error("no dead-lettered message with sequence number {0} on {1}")]
    NotFound(i64, String),
}

impl RedriveError {
    /// Whether the same call may succeed later.
    pub fn is_retriable(&self) -> bool {
        match self {
            RedriveError::ServiceBus(e) => e.is_retriable(),
            RedriveError::Audit(e) => e.is_retriable(),
            RedriveError::NotFound(..) => false,
        }
    }
}

/// One dead-lettered message as a list shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterEntry {
    /// Sequence number in the dead-letter sub-queue (what `show` takes).
    pub sequence_number: i64,
    /// The sender's message id.
    pub message_id: Option<String>,
    /// `DeadLetterReason`.
    pub reason: String,
    /// `DeadLetterErrorDescription`.
    pub description: String,
    /// `event`, `volume.<op>`, or `(unparseable)`.
    pub kind: String,
    /// When it was enqueued.
    #[serde(with = "time::serde::rfc3339")]
    pub enqueued_at: OffsetDateTime,
    /// Seconds since it was enqueued.
    pub age_s: i64,
    /// How often it was re-driven before.
    pub redrive_count: u32,
    /// Body size, bytes.
    pub size: usize,
    /// The start of the body.
    pub preview: String,
}

/// The message kind of a body: `event`, `volume.<op>`, or `(unparseable)`.
pub fn kind_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.as_object().and_then(crate::drift::shape::kind_of))
        .unwrap_or_else(|| "(unparseable)".to_string())
}

fn redrive_count(message: &ReceivedMessage) -> u32 {
    message
        .application_properties
        .get(REDRIVE_COUNT_PROPERTY)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl DeadLetterEntry {
    /// Describes a dead-lettered message as of `now`.
    pub fn of(message: &ReceivedMessage, now: OffsetDateTime) -> Self {
        let property = |name: &str| {
            message
                .application_properties
                .get(name)
                .cloned()
                .unwrap_or_default()
        };
        let text = String::from_utf8_lossy(&message.body);
        DeadLetterEntry {
            sequence_number: message.sequence_number,
            message_id: message.message_id.clone(),
            reason: property("DeadLetterReason"),
            description: property("DeadLetterErrorDescription"),
            kind: kind_of(&message.body),
            enqueued_at: message.enqueued_at,
            age_s: (now - message.enqueued_at).whole_seconds(),
            redrive_count: redrive_count(message),
            size: message.body.len(),
            preview: text.chars().take(PREVIEW_CHARS).collect(),
        }
    }
}

/// Peeks every dead-lettered message (up to `limit` matching `filter`), oldest first. Changes nothing.
pub async fn list(
    dead_letters: &dyn DeadLetters,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<DeadLetterEntry>, RedriveError> {
    let now = OffsetDateTime::now_utc();
    let mut out = Vec::new();
    let mut from = 0i64;
    loop {
        let page = dead_letters.peek(from, PEEK_PAGE).await?;
        let Some(last) = page.iter().map(|m| m.sequence_number).max() else {
            break;
        };
        for message in &page {
            let entry = DeadLetterEntry::of(message, now);
            if filter.matches(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        from = last + 1;
    }
    Ok(out)
}

/// One dead-lettered message with its whole body and properties. Changes nothing.
pub async fn show(
    dead_letters: &dyn DeadLetters,
    sequence_number: i64,
) -> Result<(DeadLetterEntry, ReceivedMessage), RedriveError> {
    let page = dead_letters.peek(sequence_number, 1).await?;
    match page.into_iter().next() {
        Some(m) if m.sequence_number == sequence_number => {
            Ok((DeadLetterEntry::of(&m, OffsetDateTime::now_utc()), m))
        }
        _ => Err(RedriveError::NotFound(
            sequence_number,
            dead_letters_name(dead_letters),
        )),
    }
}

fn dead_letters_name(_: &dyn DeadLetters) -> String {
    "the dead-letter queue".to_string()
}

/// What to re-drive and how.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedriveRequest {
    /// Which dead-lettered messages.
    pub filter: Filter,
    /// At most this many in this run.
    pub max_messages: usize,
    /// Messages sent per second at most.
    pub rate_per_second: u32,
    /// Plan and ask the gate, but move nothing and write nothing.
    pub dry_run: bool,
    /// Who asked (the audit records' actor).
    pub actor: String,
}

/// What a re-drive did, or would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RedriveReport {
    /// The change id the gate and the audit log know it by.
    pub id: String,
    /// The entity messages go back to.
    pub entity: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The gate's decision.
    pub decision: Decision,
    /// The messages selected, as listed before anything moved.
    pub selected: Vec<DeadLetterEntry>,
    /// Message ids sent back to the entity (their originals completed).
    pub redriven: Vec<String>,
    /// Selected messages that were gone by the time they were received, or could not be sent.
    pub missed: Vec<String>,
    /// How long the moving took, seconds.
    pub elapsed_s: f64,
}

/// The parts a re-drive works with.
pub struct RedriveContext<'a> {
    /// The entity whose dead letters are re-driven (and which receives the copies).
    pub entity: &'a Entity,
    /// Its dead-letter sub-queue.
    pub dead_letters: &'a dyn DeadLetters,
    /// A sender to the entity.
    pub sender: &'a dyn MessageSender,
    /// The policy gate.
    pub gate: &'a Gate,
    /// The audit log.
    pub audit: &'a Mutex<AuditLog>,
}

fn audit(
    log: &Mutex<AuditLog>,
    kind: AuditKind,
    actor: &str,
    subject: &str,
    detail: serde_json::Value,
) -> Result<(), AuditError> {
    log.lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(kind, actor, subject, detail)
        .map(|_| ())
}

/// The copy that goes back to the entity: same id, body and properties, one more re-drive, no dead-letter marks.
pub fn redriven_copy(message: &ReceivedMessage) -> OutgoingMessage {
    let mut properties: BTreeMap<String, String> = message
        .application_properties
        .iter()
        .filter(|(k, _)| !DEAD_LETTER_PROPERTIES.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    properties.insert(
        REDRIVE_COUNT_PROPERTY.to_string(),
        (redrive_count(message) + 1).to_string(),
    );
    OutgoingMessage {
        message_id: message.message_id.clone(),
        body: message.body.clone(),
        partition_key: message.partition_key.clone(),
        session_id: message.session_id.clone(),
        reply_to: message.reply_to.clone(),
        correlation_id: message.correlation_id.clone(),
        content_type: message.content_type.clone(),
        subject: message.subject.clone(),
        application_properties: properties,
    }
}

/// Plans, gates, audits and runs a re-drive. A gate that does not allow it is audited as refused and returned in
/// the report with nothing moved.
pub async fn redrive(
    ctx: RedriveContext<'_>,
    request: &RedriveRequest,
) -> Result<RedriveReport, RedriveError> {
    let selected = list(ctx.dead_letters, &request.filter, request.max_messages).await?;
    let entity = ctx.entity.path();
    let id = format!(
        "redrive-{}-{}",
        entity.replace('/', "_"),
        OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
    );
    let change = serde_json::json!({
        "id": id,
        "target": format!("entity:{entity}"),
        "action": {
            "verb": "redrive_dead_letters",
            "entity": entity,
            "count": selected.len(),
            "filter": request.filter,
            "rate_per_second": request.rate_per_second,
        },
        "reason": {"summary": format!("{} asked to re-drive {} dead-lettered messages", request.actor, selected.len()), "figures": {}},
        "expected_effect": "the selected messages are processed again, once each",
    });
    // An operator's operation is decided now, as in autonomous mode; policy still allows, queues or denies it.
    let context = GateContext {
        mode: Mode::Autonomous,
        concurrent_moves: 0,
        changes_last_hour: 0,
    };
    let decision = ctx.gate.evaluate_operation(&change, &context);
    let mut report = RedriveReport {
        id: id.clone(),
        entity: entity.clone(),
        dry_run: request.dry_run,
        decision: decision.clone(),
        selected,
        redriven: Vec::new(),
        missed: Vec::new(),
        elapsed_s: 0.0,
    };
    if request.dry_run {
        tracing::info!(id = %id, selected = report.selected.len(), verdict = ?decision.verdict, "re-drive dry run: nothing moved");
        return Ok(report);
    }
    if decision.verdict != Verdict::Allow {
        audit(
            ctx.audit,
            AuditKind::Refused,
            &request.actor,
            &id,
            serde_json::json!({"change": change, "decision": decision, "verdict": decision.verdict, "reasons": decision.reasons}),
        )?;
        tracing::warn!(id = %id, reasons = ?decision.reasons, "re-drive refused by the policy gate");
        return Ok(report);
    }
    audit(
        ctx.audit,
        AuditKind::Decision,
        "gate",
        &id,
        serde_json::json!({"verdict": decision.verdict, "reasons": decision.reasons, "policy_digest": decision.policy_digest, "operation": change}),
    )?;
    let wanted: BTreeSet<i64> = report.selected.iter().map(|e| e.sequence_number).collect();
    audit(
        ctx.audit,
        AuditKind::ApplyStart,
        &request.actor,
        &id,
        serde_json::json!({"phase": "redrive", "entity": entity, "sequence_numbers": wanted, "rate_per_second": request.rate_per_second}),
    )?;
    let started = Instant::now();
    let outcome = move_messages(&ctx, &wanted, request.rate_per_second, &mut report).await;
    report.elapsed_s = started.elapsed().as_secs_f64();
    let error = outcome
        .as_ref()
        .err()
        .map(|e| crate::pipeline::adapters::error_chain(e));
    audit(
        ctx.audit,
        AuditKind::ApplyOutcome,
        &request.actor,
        &id,
        serde_json::json!({
            "outcome": if error.is_none() { "redriven" } else { "stopped" },
            "redriven": report.redriven.len(), "missed": report.missed, "elapsed_s": report.elapsed_s,
            "error": error,
        }),
    )?;
    tracing::info!(id = %id, redriven = report.redriven.len(), missed = report.missed.len(), elapsed_s = report.elapsed_s, "re-drive finished");
    outcome.map(|()| report)
}

/// Receives the wanted messages, sends each copy at the paced rate and completes its original; others received
/// on the way are held and released at the end.
async fn move_messages(
    ctx: &RedriveContext<'_>,
    wanted: &BTreeSet<i64>,
    rate_per_second: u32,
    report: &mut RedriveReport,
) -> Result<(), RedriveError> {
    let mut left = wanted.clone();
    let mut held: Vec<ReceivedMessage> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut pacer = Pacer::new(rate_per_second);
    let mut result = Ok(());
    'receive: while !left.is_empty() {
        let batch = ctx
            .dead_letters
            .receive(
                RECEIVE_BATCH.min(left.len() as u32 + held.len() as u32 + 1),
                Duration::from_secs(2),
            )
            .await;
        let batch = match batch {
            Ok(b) if b.is_empty() => break,
            Ok(b) => b,
            Err(e) => {
                result = Err(e.into());
                break;
            }
        };
        for message in batch {
            let first_time = seen.insert(message.sequence_number);
            if !left.contains(&message.sequence_number) || !first_time {
                held.push(message);
                continue;
            }
            pacer.wait().await;
            let id = message.message_id.clone().unwrap_or_default();
            if let Err(e) = ctx.sender.send(redriven_copy(&message)).await {
                report.missed.push(id);
                held.push(message);
                result = Err(e.into());
                break 'receive;
            }
            left.remove(&message.sequence_number);
            // The copy is on the entity; if completing fails the original is re-driven again later and
            // overwrites its own row.
            if let Err(e) = ctx.dead_letters.complete(&message).await {
                tracing::warn!(error = %e, message_id = %id, "re-driven copy sent but the original could not be completed");
            }
            report.redriven.push(id);
        }
    }
    for message in held {
        if let Err(e) = ctx.dead_letters.abandon(&message).await {
            tracing::debug!(error = %e, sequence_number = message.sequence_number, "releasing a held dead letter failed; its lock expires");
        }
    }
    let by_seq: BTreeMap<i64, &DeadLetterEntry> = report
        .selected
        .iter()
        .map(|e| (e.sequence_number, e))
        .collect();
    report
        .missed
        .extend(left.iter().filter_map(|s| by_seq.get(s)).map(|e| {
            e.message_id
                .clone()
                .unwrap_or_else(|| format!("seq-{}", e.sequence_number))
        }));
    result
}
