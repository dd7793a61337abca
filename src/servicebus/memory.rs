//! An in-memory Service Bus with the trait's semantics (peek-lock, lock expiry, delivery count, dead-lettering
//! after the maximum delivery count), for unit tests only.
//!
//! Time is tokio's, so a test may pause it; [`MemoryBus::clock`] gives the matching wall clock for
//! [`super::renewal::LockRenewer::with_clock`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::Notify;
use uuid::Uuid;

use super::depth::Counts;
use super::renewal::Clock;
use super::{
    Entity, MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

/// Behaviour of every entity on the bus.
#[derive(Debug, Clone)]
pub struct MemoryBusConfig {
    /// How long a receive locks a message.
    pub lock_duration: Duration,
    /// Deliveries after which a message is dead-lettered with `MaxDeliveryCountExceeded`.
    pub max_delivery_count: u32,
    /// The largest message (body plus properties, approximately as encoded) and batch, in bytes.
    pub max_message_size: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            max_message_size: 256 * 1024,
        }
    }
}

/// A message that was dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The message as it was sent.
    pub message: OutgoingMessage,
    /// Its sequence number.
    pub sequence_number: i64,
    /// `DeadLetterReason`.
    pub reason: String,
    /// `DeadLetterErrorDescription`.
    pub description: String,
    /// Deliveries before it was dead-lettered.
    pub delivery_count: u32,
}

#[derive(Debug, Clone)]
struct Stored {
    message: OutgoingMessage,
    sequence_number: i64,
    enqueued_at: OffsetDateTime,
    deliveries: u32,
}

#[derive(Debug, Default)]
struct EntityState {
    available: VecDeque<Stored>,
    locked: HashMap<Uuid, (Stored, OffsetDateTime)>,
    dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Default)]
struct State {
    entities: HashMap<String, EntityState>,
    topics: HashMap<String, Vec<String>>,
    next_sequence_number: i64,
}

struct Inner {
    config: MemoryBusConfig,
    base_wall: OffsetDateTime,
    base: tokio::time::Instant,
    state: Mutex<State>,
    arrived: Notify,
}

/// The in-memory bus. Clones share the same entities.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Approximate encoded size: body, properties and a fixed allowance for the header sections.
fn encoded_size(message: &OutgoingMessage) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    64 + message.body.len()
        + opt(&message.message_id)
        + opt(&message.partition_key)
        + opt(&message.session_id)
        + opt(&message.reply_to)
        + opt(&message.correlation_id)
        + opt(&message.content_type)
        + opt(&message.subject)
        + message
            .application_properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
}

impl MemoryBus {
    /// An empty bus.
    pub fn new(config: MemoryBusConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                base_wall: OffsetDateTime::now_utc(),
                base: tokio::time::Instant::now(),
                state: Mutex::new(State::default()),
                arrived: Notify::new(),
            }),
        }
    }

    /// The bus's wall clock (follows tokio's clock, so paused time moves it too).
    pub fn clock(&self) -> Clock {
        let inner = self.inner.clone();
        Arc::new(move || inner.now())
    }

    /// Creates a queue (idempotent).
    pub fn create_queue(&self, name: &str) {
        self.inner.with_state(|s| {
            s.entities.entry(name.to_string()).or_default();
        });
    }

    /// Creates a topic subscription, and the topic if needed (idempotent).
    pub fn create_subscription(&self, topic: &str, subscription: &str) {
        let entity = Entity::Subscription {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
        };
        self.inner.with_state(|s| {
            let subs = s.topics.entry(topic.to_string()).or_default();
            if !subs.iter().any(|p| *p == entity.path()) {
                subs.push(entity.path());
            }
            s.entities.entry(entity.path()).or_default();
        });
    }

    /// A sender to a queue, or to the topic of a subscription.
    pub fn sender(&self, entity: &Entity) -> Result<MemorySender, ServiceBusError> {
        let target = match entity {
            Entity::Queue(q) => q.clone(),
            Entity::Subscription { topic, .. } => topic.clone(),
        };
        let known = self
            .inner
            .with_state(|s| s.entities.contains_key(&target) || s.topics.contains_key(&target));
        if !known {
            return Err(ServiceBusError::EntityNotFound { entity: target });
        }
        Ok(MemorySender {
            bus: self.clone(),
            target,
        })
    }

    /// A peek-lock receiver for a queue or subscription.
    pub fn receiver(&self, entity: &Entity) -> Result<MemoryReceiver, ServiceBusError> {
        let path = entity.path();
        if !self.inner.with_state(|s| s.entities.contains_key(&path)) {
            return Err(ServiceBusError::EntityNotFound { entity: path });
        }
        Ok(MemoryReceiver {
            bus: self.clone(),
            entity: entity.clone(),
            prefetch: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The entity's counts; `active` includes locked messages, as on Service Bus.
    pub fn counts(&self, entity: &Entity) -> Option<Counts> {
        let now = self.inner.now();
        let max = self.inner.config.max_delivery_count;
        self.inner.with_state(|s| {
            let e = s.entities.get_mut(&entity.path())?;
            e.expire_locks(now, max);
            Some(Counts {
                active: (e.available.len() + e.locked.len()) as u64,
                dead_letter: e.dead_letters.len() as u64,
                scheduled: 0,
                transfer: 0,
                transfer_dead_letter: 0,
            })
        })
    }

    /// The dead-lettered messages of an entity, oldest first.
    pub fn dead_letters(&self, entity: &Entity) -> Vec<DeadLetter> {
        self.inner.with_state(|s| {
            s.entities
                .get(&entity.path())
                .map(|e| e.dead_letters.clone())
                .unwrap_or_default()
        })
    }
}

impl Inner {
    fn now(&self) -> OffsetDateTime {
        self.base_wall + (tokio::time::Instant::now() - self.base)
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A test that panicked while holding the lock leaves consistent collections behind.
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl EntityState {
    fn release(&mut self, stored: Stored, max_delivery_count: u32) {
        if stored.deliveries >= max_delivery_count {
            self.dead_letters.push(DeadLetter {
                message: stored.message,
                sequence_number: stored.sequence_number,
                reason: "MaxDeliveryCountExceeded".to_string(),
                description: format!("message was delivered {} times", stored.deliveries),
                delivery_count: stored.deliveries,
            });
        } else {
            // Keep sequence order so a redelivered message goes back ahead of newer ones.
            let at = self
                .available
                .iter()
                .position(|m| m.sequence_number > stored.sequence_number)
                .unwrap_or(self.available.len());
            self.available.insert(at, stored);
        }
    }

    fn expire_locks(&mut self, now: OffsetDateTime, max_delivery_count: u32) {
        let expired: Vec<Uuid> = self
            .locked
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(token, _)| *token)
            .collect();
        for token in expired {
            if let Some((stored, _)) = self.locked.remove(&token) {
                self.release(stored, max_delivery_count);
            }
        }
    }

    fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.locked.values().map(|(_, until)| *until).min()
    }
}

/// Sends to a queue or topic of a [`MemoryBus`].
#[derive(Debug, Clone)]
pub struct MemorySender {
    bus: MemoryBus,
    target: String,
}

impl MemorySender {
    fn enqueue(&self, messages: Vec<OutgoingMessage>) -> Result<(), ServiceBusError> {
        let now = self.bus.inner.now();
        self.bus.inner.with_state(|s| {
            let paths = match s.topics.get(&self.target) {
                Some(subs) => subs.clone(),
                None => vec![self.target.clone()],
            };
            for message in messages {
                s.next_sequence_number += 1;
                let sequence_number = s.next_sequence_number;
                for path in &paths {
                    let entity = s.entities.get_mut(path).ok_or_else(|| {
                        ServiceBusError::EntityNotFound {
                            entity: path.clone(),
                        }
                    })?;
                    entity.available.push_back(Stored {
                        message: message.clone(),
                        sequence_number,
                        enqueued_at: now,
                        deliveries: 0,
                    });
                }
            }
            Ok(())
        })?;
        self.bus.inner.arrived.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl MessageSender for MemorySender {
    async fn send(&self, message: OutgoingMessage) -> Result<(), ServiceBusError> {
        let max = self.bus.inner.config.max_message_size;
        let size = encoded_size(&message);
        if size > max {
            return Err(ServiceBusError::MessageTooLarge {
                size,
                max: max as u64,
            });
        }
        self.enqueue(vec![message])
    }

    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<usize, ServiceBusError> {
        let max = self.bus.inner.config.max_message_size;
        for message in &messages {
            let size = encoded_size(message);
            if size > max {
                return Err(ServiceBusError::MessageTooLarge {
                    size,
                    max: max as u64,
                });
            }
        }
        let mut batches = 0;
        let mut batch = Vec::new();
        let mut batch_size = 0;
        for message in messages {
            let size = encoded_size(&message);
            if batch_size + size > max {
                self.enqueue(std::mem::take(&mut batch))?;
                batches += 1;
                batch_size = 0;
            }
            batch_size += size;
            batch.push(message);
        }
        if !batch.is_empty() {
            self.enqueue(batch)?;
            batches += 1;
        }
        Ok(batches)
    }
}

/// Receives from one entity of a [`MemoryBus`] in peek-lock mode.
#[derive(Debug)]
pub struct MemoryReceiver {
    bus: MemoryBus,
    entity: Entity,
    prefetch: std::sync::atomic::AtomicU32,
}

impl MemoryReceiver {
    fn settle<R>(
        &self,
        message: &ReceivedMessage,
        f: impl FnOnce(&mut EntityState, Stored, u32) -> R,
    ) -> Result<R, ServiceBusError> {
        let inner = &self.bus.inner;
        let now = inner.now();
        let max = inner.config.max_delivery_count;
        let path = self.entity.path();
        inner.with_state(|s| {
            let e = s
                .entities
                .get_mut(&path)
                .ok_or(ServiceBusError::EntityNotFound {
                    entity: path.clone(),
                })?;
            e.expire_locks(now, max);
            let (stored, _) =
                e.locked
                    .remove(&message.lock_token)
                    .ok_or(ServiceBusError::LockLost {
                        lock_token: message.lock_token,
                    })?;
            Ok(f(e, stored, max))
        })
    }
}

#[async_trait]
impl MessageReceiver for MemoryReceiver {
    async fn receive(
        &self,
        max: u32,
        max_wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, ServiceBusError> {
        let inner = &self.bus.inner;
        let deadline = tokio::time::Instant::now() + max_wait;
        let path = self.entity.path();
        loop {
            let arrived = inner.arrived.notified();
            let now = inner.now();
            let lock_duration = inner.config.lock_duration;
            let max_deliveries = inner.config.max_delivery_count;
            let (batch, next_expiry) = inner.with_state(|s| {
                let e = s
                    .entities
                    .get_mut(&path)
                    .ok_or(ServiceBusError::EntityNotFound {
                        entity: path.clone(),
                    })?;
                e.expire_locks(now, max_deliveries);
                let mut batch = Vec::new();
                while batch.len() < max as usize {
                    let Some(mut stored) = e.available.pop_front() else {
                        break;
                    };
                    stored.deliveries += 1;
                    let token = Uuid::new_v4();
                    let locked_until = now + lock_duration;
                    batch.push(received(&self.entity, &stored, token, locked_until));
                    e.locked.insert(token, (stored, locked_until));
                }
                Ok::<_, ServiceBusError>((batch, e.next_expiry()))
            })?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let mut wake = deadline;
            if let Some(expiry) = next_expiry {
                let until: Duration = (expiry - now).try_into().unwrap_or(Duration::ZERO);
                wake = wake.min(tokio::time::Instant::now() + until);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = arrived => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn complete(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settle(message, |_, _, _| ())
    }

    async fn abandon(&self, message: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settle(message, |e, stored, max| e.release(stored, max))?;
        self.bus.inner.arrived.notify_waiters();
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &str,
        description: &str,
    ) -> Result<(), ServiceBusError> {
        self.settle(message, |e, stored, _| {
            e.dead_letters.push(DeadLetter {
                message: stored.message,
                sequence_number: stored.sequence_number,
                reason: reason.to_string(),
                description: description.to_string(),
                delivery_count: stored.deliveries,
            })
        })
    }

    async fn renew_lock(
        &self,
        message: &ReceivedMessage,
    ) -> Result<OffsetDateTime, ServiceBusError> {
        let inner = &self.bus.inner;
        let now = inner.now();
        let max = inner.config.max_delivery_count;
        let until = now + inner.config.lock_duration;
        let path = self.entity.path();
        inner.with_state(|s| {
            let e = s
                .entities
                .get_mut(&path)
                .ok_or(ServiceBusError::EntityNotFound {
                    entity: path.clone(),
                })?;
            e.expire_locks(now, max);
            let (_, locked_until) =
                e.locked
                    .get_mut(&message.lock_token)
                    .ok_or(ServiceBusError::LockLost {
                        lock_token: message.lock_token,
                    })?;
            *locked_until = until;
            Ok(until)
        })
    }

    fn set_prefetch(&self, prefetch: u32) {
        // Nothing is prefetched in memory; the value is kept so tests can read it back.
        self.prefetch
            .store(prefetch, std::sync::atomic::Ordering::Relaxed);
    }

    fn prefetch(&self) -> u32 {
        self.prefetch.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn received(
    entity: &Entity,
    stored: &Stored,
    lock_token: Uuid,
    locked_until: OffsetDateTime,
) -> ReceivedMessage {
    let m = &stored.message;
    ReceivedMessage {
        entity: entity.clone(),
        message_id: m.message_id.clone(),
        lock_token,
        sequence_number: stored.sequence_number,
        enqueued_at: stored.enqueued_at,
        locked_until,
        delivery_count: stored.deliveries,
        partition_key: m.partition_key.clone(),
        session_id: m.session_id.clone(),
        reply_to: m.reply_to.clone(),
        correlation_id: m.correlation_id.clone(),
        content_type: m.content_type.clone(),
        subject: m.subject.clone(),
        application_properties: m
            .application_properties
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        body: m.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &str) -> OutgoingMessage {
        OutgoingMessage {
            message_id: Some(body.to_string()),
            body: Bytes::from(body.to_string()),
            ..OutgoingMessage::default()
        }
    }

    fn setup(max_delivery_count: u32) -> (MemoryBus, Entity) {
        let bus = MemoryBus::new(MemoryBusConfig {
            lock_duration: Duration::from_millis(300),
            max_delivery_count,
            max_message_size: 1000,
        });
        bus.create_queue("q");
        (bus, Entity::Queue("q".into()))
    }

    #[tokio::test]
    async fn abandon_redelivers_with_a_higher_delivery_count() {
        let (bus, q) = setup(10);
        bus.sender(&q).unwrap().send(msg("a")).await.unwrap();
        let r = bus.receiver(&q).unwrap();
        let first = r.receive(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!((first.len(), first[0].delivery_count), (1, 1));
        r.abandon(&first[0]).await.unwrap();
        let second = r.receive(10, Duration::from_secs(1)).await.unwrap();
        assert_eq!(second[0].delivery_count, 2);
        assert_eq!(second[0].body, Bytes::from("a"));
        assert!(matches!(
            r.complete(&first[0]).await,
            Err(ServiceBusError::LockLost { .. })
        ));
        r.complete(&second[0]).await.unwrap();
        assert_eq!(bus.counts(&q).unwrap().active, 0);
    }

    #[tokio::test]
    async fn expired_lock_redelivers_and_max_delivery_count_dead_letters() {
        let (bus, q) = setup(2);
        bus.sender(&q).unwrap().send(msg("poison")).await.unwrap();
        let r = bus.receiver(&q).unwrap();
        assert_eq!(
            r.receive(1, Duration::from_secs(1)).await.unwrap()[0].delivery_count,
            1
        );
        // The second receive waits for the first lock to expire and gets the redelivery.
        let again = r.receive(1, Duration::from_secs(2)).await.unwrap();
        assert_eq!(again[0].delivery_count, 2);
        tokio::time::sleep(Duration::from_millis(450)).await;
        assert!(r
            .receive(1, Duration::from_millis(100))
            .await
            .unwrap()
            .is_empty());
        let dead = bus.dead_letters(&q);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, "MaxDeliveryCountExceeded");
        assert_eq!(bus.counts(&q).unwrap().dead_letter, 1);
    }

    #[tokio::test]
    async fn dead_letter_keeps_reason_and_description() {
        let (bus, q) = setup(10);
        bus.sender(&q).unwrap().send(msg("bad")).await.unwrap();
        let r = bus.receiver(&q).unwrap();
        let m = r
            .receive(1, Duration::from_secs(1))
            .await
            .unwrap()
            .remove(0);
        r.dead_letter(&m, "SchemaInvalid", "field volume missing")
            .await
            .unwrap();
        let dead = bus.dead_letters(&q);
        assert_eq!(
            (dead[0].reason.as_str(), dead[0].description.as_str()),
            ("SchemaInvalid", "field volume missing")
        );
    }

    #[tokio::test]
    async fn batches_pack_by_size_and_topics_fan_out() {
        let bus = MemoryBus::new(MemoryBusConfig {
            max_message_size: 1000,
            ..MemoryBusConfig::default()
        });
        bus.create_subscription("t", "a");
        bus.create_subscription("t", "b");
        let a = Entity::Subscription {
            topic: "t".into(),
            subscription: "a".into(),
        };
        let b = Entity::Subscription {
            topic: "t".into(),
            subscription: "b".into(),
        };
        let messages: Vec<_> = (0..10).map(|_| msg(&"x".repeat(300))).collect();
        let batches = bus.sender(&a).unwrap().send_batch(messages).await.unwrap();
        assert!(
            batches >= 4,
            "10 messages of ~370 bytes cannot fit in fewer than 4 batches of 1000, got {batches}"
        );
        assert_eq!(bus.counts(&a).unwrap().active, 10);
        assert_eq!(bus.counts(&b).unwrap().active, 10);
        let too_big = bus
            .sender(&a)
            .unwrap()
            .send(msg(&"x".repeat(2000)))
            .await
            .unwrap_err();
        assert!(
            matches!(too_big, ServiceBusError::MessageTooLarge { max: 1000, .. }),
            "{too_big}"
        );
    }

    #[tokio::test]
    async fn receive_waits_for_a_late_message() {
        let (bus, q) = setup(10);
        let r = bus.receiver(&q).unwrap();
        let sender = bus.sender(&q).unwrap();
        let send_later = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sender.send(msg("late")).await.unwrap();
        };
        let (got, ()) = tokio::join!(r.receive(5, Duration::from_secs(3)), send_later);
        assert_eq!(got.unwrap().len(), 1);
        assert!(
            matches!(bus.receiver(&Entity::Queue("nope".into())), Err(ServiceBusError::EntityNotFound { entity }) if entity == "nope")
        );
    }
}
