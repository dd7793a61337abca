//! The stand-in's entity store: queues, topic subscriptions, dead-letter sub-queues, scheduled messages and locks.
//!
//! Every operation takes one short-lived mutex; nothing here awaits. Connections are woken through a `watch`
//! counter whenever a message becomes available, so they can hand it to a link with credit.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp_types::messaging::{
    annotations::OwnedKey, ApplicationProperties, Body, DeliveryAnnotations, Header, Message,
    MessageAnnotations,
};
use fe2o3_amqp_types::primitives::{OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use tokio::sync::watch;
use uuid::Uuid;

use super::faults::Faults;
use super::EntityCounts;

/// A decoded AMQP message as the store keeps it.
pub(crate) type AmqpMessage = Message<Body<Value>>;

/// Which part of an entity a receive link reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubQueue {
    Main,
    DeadLetter,
}

/// A receivable node: a queue or subscription (by its lower-cased path) and the sub-queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    pub(crate) entity: String,
    pub(crate) sub: SubQueue,
}

/// The link that holds a lock, so that a detach or a dropped connection can release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinkOwner {
    pub(crate) connection: u64,
    pub(crate) channel: u16,
    pub(crate) handle: u32,
}

/// How a receiver settled a locked message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Settlement {
    Complete,
    Abandon,
    Defer,
    DeadLetter {
        reason: Option<String>,
        description: Option<String>,
    },
}

/// The lock token named does not exist (never issued, expired, or already settled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockLost;

/// A message handed to a receive link.
pub(crate) struct Delivery {
    pub(crate) message: AmqpMessage,
    /// `None` for receive-and-delete.
    pub(crate) lock_token: Option<Uuid>,
}

/// Why an address does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    #[error("the messaging entity '{0}' could not be found")]
    NotFound(String),
    #[error("cannot send to '{0}': send to a queue or a topic")]
    NotSendable(String),
}

#[derive(Debug, Clone)]
struct Stored {
    message: AmqpMessage,
    sequence: i64,
    /// The sequence number in the first entity this message was sent to; shared by the copies of a topic message.
    group: i64,
    enqueued_ms: i64,
    /// Deliveries so far: the wire `delivery-count` of the next delivery.
    delivery_count: u32,
}

#[derive(Debug, Default)]
struct Entity {
    /// The name as created, for messages and the management endpoint.
    display: String,
    active: VecDeque<Stored>,
    dead: VecDeque<Stored>,
    scheduled: Vec<(i64, Stored)>,
    deferred: Vec<Stored>,
    next_sequence: i64,
}

#[derive(Debug)]
struct Lock {
    source: Source,
    stored: Stored,
    locked_until_ms: i64,
    owner: LinkOwner,
}

#[derive(Debug, Default)]
struct State {
    /// Queues and subscriptions, by lower-cased path (`q` or `topic/subscriptions/sub`).
    entities: HashMap<String, Entity>,
    /// Topics, by lower-cased name, with the lower-cased paths of their subscriptions.
    topics: HashMap<String, (String, Vec<String>)>,
    locks: HashMap<Uuid, Lock>,
    expire_generation_seen: u64,
}

/// Limits that apply to every entity of the stand-in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) lock_duration: Duration,
    pub(crate) max_delivery_count: u32,
}

pub(crate) struct Broker {
    state: Mutex<State>,
    wake: watch::Sender<u64>,
    pub(crate) faults: Faults,
    pub(crate) limits: Limits,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn symbol_key(name: &str) -> OwnedKey {
    OwnedKey::Symbol(Symbol::from(name))
}

fn annotation<'m>(message: &'m AmqpMessage, name: &str) -> Option<&'m Value> {
    message
        .message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&symbol_key(name)))
}

const DLQ_SUFFIX: &str = "/$deadletterqueue";

impl Broker {
    pub(crate) fn new(limits: Limits, faults: Faults, wake: watch::Sender<u64>) -> Self {
        Broker {
            state: Mutex::new(State::default()),
            wake,
            faults,
            limits,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation below keeps the state consistent between statements that could panic, so a poisoned
        // lock still guards usable data.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.faults.expire_generation();
        if generation != state.expire_generation_seen {
            state.expire_generation_seen = generation;
            let tokens: Vec<Uuid> = state.locks.keys().copied().collect();
            for token in tokens {
                self.requeue_locked(&mut state, token);
            }
        }
        state
    }

    fn poke(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn create_queue(&self, name: &str) {
        let mut state = self.lock();
        state
            .entities
            .entry(name.to_lowercase())
            .or_insert_with(|| Entity {
                display: name.to_string(),
                ..Entity::default()
            });
    }

    pub(crate) fn create_topic(&self, name: &str, subscriptions: &[String]) {
        let mut state = self.lock();
        let key = name.to_lowercase();
        let mut paths = state
            .topics
            .remove(&key)
            .map(|(_, p)| p)
            .unwrap_or_default();
        for sub in subscriptions {
            let display = format!("{name}/Subscriptions/{sub}");
            let path = display.to_lowercase();
            if !paths.contains(&path) {
                paths.push(path.clone());
            }
            state.entities.entry(path).or_insert_with(|| Entity {
                display,
                ..Entity::default()
            });
        }
        state.topics.insert(key, (name.to_string(), paths));
    }

    /// Resolves a send address (already stripped of scheme and host) to the entities a message lands in.
    pub(crate) fn send_targets(&self, path: &str) -> Result<Vec<String>, AddressError> {
        let key = path.trim_matches('/').to_lowercase();
        let state = self.lock();
        if let Some((_, subs)) = state.topics.get(&key) {
            return Ok(subs.clone());
        }
        if state.entities.contains_key(&key) && !key.contains('/') {
            return Ok(vec![key]);
        }
        if state.entities.contains_key(&key) || self.receive_source_locked(&state, &key).is_some() {
            return Err(AddressError::NotSendable(path.to_string()));
        }
        Err(AddressError::NotFound(path.to_string()))
    }

    /// Resolves a receive address to a queue or subscription and its sub-queue.
    pub(crate) fn receive_source(&self, path: &str) -> Result<Source, AddressError> {
        let key = path.trim_matches('/').to_lowercase();
        let state = self.lock();
        self.receive_source_locked(&state, &key)
            .ok_or_else(|| AddressError::NotFound(path.to_string()))
    }

    fn receive_source_locked(&self, state: &State, key: &str) -> Option<Source> {
        let (entity, sub) = match key.strip_suffix(DLQ_SUFFIX) {
            Some(entity) => (entity, SubQueue::DeadLetter),
            None => (key, SubQueue::Main),
        };
        state.entities.contains_key(entity).then(|| Source {
            entity: entity.to_string(),
            sub,
        })
    }

    /// True when `path` names a topic, queue or subscription, or a dead-letter sub-queue (for `$management`).
    pub(crate) fn entity_exists(&self, path: &str) -> bool {
        let key = path.trim_matches('/').to_lowercase();
        let state = self.lock();
        state.topics.contains_key(&key) || self.receive_source_locked(&state, &key).is_some()
    }

    /// Stores messages sent to `targets`, stamping sequence numbers and enqueued times. Returns each message's
    /// sequence number in the first target (the number a scheduling client is given back).
    pub(crate) fn enqueue(&self, targets: &[String], messages: Vec<AmqpMessage>) -> Vec<i64> {
        let now = now_ms();
        let mut state = self.lock();
        let mut numbers = Vec::with_capacity(messages.len());
        for message in messages {
            let scheduled_for = match annotation(&message, "x-opt-scheduled-enqueue-time") {
                Some(Value::Timestamp(t)) if t.milliseconds() > now => Some(t.milliseconds()),
                _ => None,
            };
            let mut group = None;
            for target in targets {
                let Some(entity) = state.entities.get_mut(target) else {
                    continue;
                };
                entity.next_sequence += 1;
                let sequence = entity.next_sequence;
                let group = *group.get_or_insert(sequence);
                let stored = Stored {
                    message: message.clone(),
                    sequence,
                    group,
                    enqueued_ms: now,
                    delivery_count: 0,
                };
                match scheduled_for {
                    Some(due) => entity.scheduled.push((due, stored)),
                    None => entity.active.push_back(stored),
                }
            }
            numbers.extend(group);
        }
        drop(state);
        self.poke();
        numbers
    }

    /// Drops scheduled messages by the sequence numbers [`Broker::enqueue`] returned for them (every copy of a
    /// message sent to a topic goes). Unknown numbers are ignored, as Service Bus does.
    pub(crate) fn cancel_scheduled(&self, targets: &[String], sequences: &[i64]) {
        let mut state = self.lock();
        for target in targets {
            if let Some(entity) = state.entities.get_mut(target) {
                entity
                    .scheduled
                    .retain(|(_, s)| !sequences.contains(&s.group));
            }
        }
    }

    /// Takes the next available message of `source` for a receive link; peek-lock keeps it locked to `owner`.
    pub(crate) fn acquire(
        &self,
        source: &Source,
        owner: LinkOwner,
        peek_lock: bool,
    ) -> Option<Delivery> {
        let now = now_ms();
        let mut state = self.lock();
        let entity = state.entities.get_mut(&source.entity)?;
        let stored = match source.sub {
            SubQueue::Main => entity.active.pop_front(),
            SubQueue::DeadLetter => entity.dead.pop_front(),
        }?;
        let mut message = stored.message.clone();
        let header = message.header.get_or_insert_with(Header::default);
        header.delivery_count = stored.delivery_count;
        let annotations = message
            .message_annotations
            .get_or_insert_with(|| MessageAnnotations(OrderedMap::new()));
        annotations.0.insert(
            symbol_key("x-opt-sequence-number"),
            Value::Long(stored.sequence),
        );
        annotations.0.insert(
            symbol_key("x-opt-enqueued-time"),
            Value::Timestamp(Timestamp::from_milliseconds(stored.enqueued_ms)),
        );
        if !peek_lock {
            return Some(Delivery {
                message,
                lock_token: None,
            });
        }
        let token = Uuid::new_v4();
        let locked_until_ms = now + self.limits.lock_duration.as_millis() as i64;
        annotations.0.insert(
            symbol_key("x-opt-lock-token"),
            Value::Uuid((*token.as_bytes()).into()),
        );
        annotations.0.insert(
            symbol_key("x-opt-locked-until"),
            Value::Timestamp(Timestamp::from_milliseconds(locked_until_ms)),
        );
        let delivery_annotations = message
            .delivery_annotations
            .get_or_insert_with(|| DeliveryAnnotations(OrderedMap::new()));
        delivery_annotations.0.insert(
            symbol_key("x-opt-lock-token"),
            Value::Uuid((*token.as_bytes()).into()),
        );
        state.locks.insert(
            token,
            Lock {
                source: source.clone(),
                stored,
                locked_until_ms,
                owner,
            },
        );
        Some(Delivery {
            message,
            lock_token: Some(token),
        })
    }

    /// Settles a locked message; a missing lock (expired, settled, never issued) is [`LockLost`].
    pub(crate) fn settle(&self, token: Uuid, settlement: Settlement) -> Result<(), LockLost> {
        let mut state = self.lock();
        if self.faults.take_lost_settlement() {
            if state.locks.contains_key(&token) {
                self.requeue_locked(&mut state, token);
            }
            drop(state);
            self.poke();
            return Err(LockLost);
        }
        let lock = state.locks.remove(&token).ok_or(LockLost)?;
        let Some(entity) = state.entities.get_mut(&lock.source.entity) else {
            return Ok(());
        };
        let mut stored = lock.stored;
        match settlement {
            Settlement::Complete => {}
            Settlement::Abandon => {
                stored.delivery_count += 1;
                self.put_back(entity, lock.source.sub, stored);
            }
            Settlement::Defer => {
                stored.delivery_count += 1;
                entity.deferred.push(stored);
            }
            Settlement::DeadLetter {
                reason,
                description,
            } => {
                dead_letter(entity, stored, reason, description);
            }
        }
        drop(state);
        self.poke();
        Ok(())
    }

    /// Puts a message that was delivered and not completed back, dead-lettering it at the delivery limit.
    fn put_back(&self, entity: &mut Entity, sub: SubQueue, stored: Stored) {
        match sub {
            SubQueue::DeadLetter => entity.dead.push_front(stored),
            SubQueue::Main if stored.delivery_count >= self.limits.max_delivery_count => {
                let description = format!(
                    "Message could not be consumed after {} delivery attempts.",
                    self.limits.max_delivery_count
                );
                dead_letter(
                    entity,
                    stored,
                    Some("MaxDeliveryCountExceeded".into()),
                    Some(description),
                );
            }
            SubQueue::Main => entity.active.push_front(stored),
        }
    }

    fn requeue_locked(&self, state: &mut State, token: Uuid) {
        let Some(lock) = state.locks.remove(&token) else {
            return;
        };
        let Some(entity) = state.entities.get_mut(&lock.source.entity) else {
            return;
        };
        let mut stored = lock.stored;
        stored.delivery_count += 1;
        self.put_back(entity, lock.source.sub, stored);
    }

    /// Extends locks; returns the new locked-until times (unix ms) in order, or the first token that is lost.
    pub(crate) fn renew(&self, tokens: &[Uuid]) -> Result<Vec<i64>, Uuid> {
        let until = now_ms() + self.limits.lock_duration.as_millis() as i64;
        let mut state = self.lock();
        if let Some(lost) = tokens.iter().find(|t| !state.locks.contains_key(t)) {
            return Err(*lost);
        }
        Ok(tokens
            .iter()
            .map(|t| {
                if let Some(lock) = state.locks.get_mut(t) {
                    lock.locked_until_ms = until;
                }
                until
            })
            .collect())
    }

    /// Requeues every message locked by links matching `owned` (a detach or a dropped connection).
    pub(crate) fn release(&self, owned: impl Fn(&LinkOwner) -> bool) {
        let mut state = self.lock();
        let tokens: Vec<Uuid> = state
            .locks
            .iter()
            .filter(|(_, l)| owned(&l.owner))
            .map(|(t, _)| *t)
            .collect();
        if tokens.is_empty() {
            return;
        }
        for token in tokens {
            self.requeue_locked(&mut state, token);
        }
        drop(state);
        self.poke();
    }

    /// Expires due locks and enqueues due scheduled messages.
    pub(crate) fn sweep(&self) {
        let now = now_ms();
        let mut state = self.lock();
        let expired: Vec<Uuid> = state
            .locks
            .iter()
            .filter(|(_, l)| l.locked_until_ms <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut changed = !expired.is_empty();
        for token in expired {
            tracing::debug!(%token, "lock expired; message requeued");
            self.requeue_locked(&mut state, token);
        }
        for entity in state.entities.values_mut() {
            if entity.scheduled.iter().any(|(due, _)| *due <= now) {
                let (due, later): (Vec<_>, Vec<_>) =
                    entity.scheduled.drain(..).partition(|(due, _)| *due <= now);
                entity.scheduled = later;
                let mut due: Vec<Stored> = due.into_iter().map(|(_, s)| s).collect();
                due.sort_by_key(|s| s.sequence);
                entity.active.extend(due);
                changed = true;
            }
        }
        drop(state);
        if changed {
            self.poke();
        }
    }

    /// Messages from `from_sequence` on, without locking them (the `peek-message` operation).
    pub(crate) fn peek(
        &self,
        source: &Source,
        from_sequence: i64,
        count: usize,
    ) -> Vec<AmqpMessage> {
        let state = self.lock();
        let Some(entity) = state.entities.get(&source.entity) else {
            return Vec::new();
        };
        let mut all: Vec<&Stored> = match source.sub {
            SubQueue::Main => entity
                .active
                .iter()
                .chain(entity.deferred.iter())
                .chain(
                    state
                        .locks
                        .values()
                        .filter(|l| l.source == *source)
                        .map(|l| &l.stored),
                )
                .collect(),
            SubQueue::DeadLetter => entity.dead.iter().collect(),
        };
        all.retain(|s| s.sequence >= from_sequence);
        all.sort_by_key(|s| s.sequence);
        all.into_iter()
            .take(count)
            .map(|s| {
                let mut message = s.message.clone();
                let annotations = message
                    .message_annotations
                    .get_or_insert_with(|| MessageAnnotations(OrderedMap::new()));
                annotations
                    .0
                    .insert(symbol_key("x-opt-sequence-number"), Value::Long(s.sequence));
                annotations.0.insert(
                    symbol_key("x-opt-enqueued-time"),
                    Value::Timestamp(Timestamp::from_milliseconds(s.enqueued_ms)),
                );
                message
                    .header
                    .get_or_insert_with(Header::default)
                    .delivery_count = s.delivery_count;
                message
            })
            .collect()
    }

    /// Message counts of a queue or subscription (`topic/Subscriptions/sub`).
    pub(crate) fn counts(&self, path: &str) -> Option<(String, EntityCounts)> {
        let key = path.trim_matches('/').to_lowercase();
        let state = self.lock();
        let entity = state.entities.get(&key)?;
        let locked = state
            .locks
            .values()
            .filter(|l| l.source.entity == key && l.source.sub == SubQueue::Main)
            .count() as u64;
        let locked_dead = state
            .locks
            .values()
            .filter(|l| l.source.entity == key && l.source.sub == SubQueue::DeadLetter)
            .count() as u64;
        Some((
            entity.display.clone(),
            EntityCounts {
                active: (entity.active.len() + entity.deferred.len()) as u64 + locked,
                dead_letter: entity.dead.len() as u64 + locked_dead,
                scheduled: entity.scheduled.len() as u64,
                transfer: 0,
                transfer_dead_letter: 0,
                locked,
            },
        ))
    }

    /// The dead-lettered messages of a queue or subscription: body bytes, reason and description.
    pub(crate) fn dead_letters(
        &self,
        path: &str,
    ) -> Vec<(Vec<u8>, Option<String>, Option<String>)> {
        let key = path.trim_matches('/').to_lowercase();
        let state = self.lock();
        let Some(entity) = state.entities.get(&key) else {
            return Vec::new();
        };
        let mut dead: Vec<&Stored> = entity.dead.iter().collect();
        dead.extend(
            state
                .locks
                .values()
                .filter(|l| l.source.entity == key && l.source.sub == SubQueue::DeadLetter)
                .map(|l| &l.stored),
        );
        dead.sort_by_key(|s| s.sequence);
        dead.into_iter()
            .map(|s| {
                let property = |name: &str| match s
                    .message
                    .application_properties
                    .as_ref()
                    .and_then(|p| p.0.get(name))
                {
                    Some(SimpleValue::String(v)) => Some(v.clone()),
                    _ => None,
                };
                (
                    body_bytes(&s.message),
                    property("DeadLetterReason"),
                    property("DeadLetterErrorDescription"),
                )
            })
            .collect()
    }
}

fn dead_letter(
    entity: &mut Entity,
    mut stored: Stored,
    reason: Option<String>,
    description: Option<String>,
) {
    let properties = stored
        .message
        .application_properties
        .get_or_insert_with(|| ApplicationProperties(OrderedMap::new()));
    if let Some(reason) = reason {
        properties
            .0
            .insert("DeadLetterReason".into(), SimpleValue::String(reason));
    }
    if let Some(description) = description {
        properties.0.insert(
            "DeadLetterErrorDescription".into(),
            SimpleValue::String(description),
        );
    }
    tracing::debug!(entity = %entity.display, sequence = stored.sequence, "message dead-lettered");
    entity.dead.push_back(stored);
}

/// The body as bytes: data sections concatenated, a string or binary value as is, anything else empty.
pub(crate) fn body_bytes(message: &AmqpMessage) -> Vec<u8> {
    match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => b.to_vec(),
            Value::String(s) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
