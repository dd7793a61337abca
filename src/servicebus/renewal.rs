//! Lock renewal: keeps the peek-lock of each in-flight message alive until its guard is dropped, and reports a
//! lost lock so the pipeline stops work on that message and does not complete it.
//!
//! Each tracked message gets a small task that renews the lock once a fraction (half, by default) of the
//! remaining lock time has passed. Renewal stops when the [`LockGuard`] is dropped (after settlement), when the
//! lock is lost, or when the message has been held longer than `max_hold` — a stuck handler must not keep a
//! message locked forever. Loss is observable at once through [`LockGuard::is_lost`] and [`LockGuard::lost`].

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{MessageReceiver, ReceivedMessage, ServiceBusError};

/// How and when locks are renewed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewalConfig {
    /// Renew once this fraction of the remaining lock time has passed (0.5 = at half). Between 0.1 and 0.9.
    #[serde(default = "default_renew_at_fraction")]
    pub renew_at_fraction: f64,
    /// Wait between attempts after a retriable renewal failure, in milliseconds.
    #[serde(default = "default_retry_interval_ms")]
    pub retry_interval_ms: u64,
    /// Stop renewing and report the lock lost once a message has been held this long, in milliseconds.
    #[serde(default = "default_max_hold_ms")]
    pub max_hold_ms: u64,
}

const fn default_renew_at_fraction() -> f64 {
    0.5
}
const fn default_retry_interval_ms() -> u64 {
    200
}
const fn default_max_hold_ms() -> u64 {
    // Five minutes, the same bound the .NET processor puts on automatic lock renewal.
    300_000
}

impl Default for RenewalConfig {
    fn default() -> Self {
        Self {
            renew_at_fraction: default_renew_at_fraction(),
            retry_interval_ms: default_retry_interval_ms(),
            max_hold_ms: default_max_hold_ms(),
        }
    }
}

impl RenewalConfig {
    /// Checks the values without IO.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.1..=0.9).contains(&self.renew_at_fraction) {
            return Err(format!(
                "renew_at_fraction is {}, expected a value between 0.1 and 0.9",
                self.renew_at_fraction
            ));
        }
        if self.retry_interval_ms == 0 {
            return Err("retry_interval_ms is 0, expected at least 1".to_string());
        }
        Ok(())
    }
}

/// The lock of one tracked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Held until the given time (it moves on with every renewal).
    Held {
        /// Current lock expiry.
        locked_until: OffsetDateTime,
    },
    /// Lost: stop work on the message and do not complete it; it will be redelivered.
    Lost {
        /// Why, for logs and the abandon/dead-letter decision.
        reason: String,
    },
}

/// The clock the renewer schedules by; tests substitute the in-memory bus's clock.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Starts renewal for in-flight messages of one receiver.
#[derive(Clone)]
pub struct LockRenewer {
    receiver: Arc<dyn MessageReceiver>,
    config: RenewalConfig,
    clock: Clock,
}

impl std::fmt::Debug for LockRenewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockRenewer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LockRenewer {
    /// A renewer that renews through `receiver` (the receiver the messages came from).
    pub fn new(receiver: Arc<dyn MessageReceiver>, config: RenewalConfig) -> Self {
        Self::with_clock(receiver, config, Arc::new(OffsetDateTime::now_utc))
    }

    /// As [`LockRenewer::new`], scheduling by `clock`.
    pub fn with_clock(
        receiver: Arc<dyn MessageReceiver>,
        config: RenewalConfig,
        clock: Clock,
    ) -> Self {
        Self {
            receiver,
            config,
            clock,
        }
    }

    /// Starts keeping `message`'s lock alive. Renewal stops when the returned guard is dropped.
    /// Must be called inside a tokio runtime.
    pub fn track(&self, message: &ReceivedMessage) -> LockGuard {
        let (tx, rx) = watch::channel(LockState::Held {
            locked_until: message.locked_until,
        });
        let task = tokio::spawn(renew_loop(
            self.receiver.clone(),
            self.config.clone(),
            self.clock.clone(),
            message.clone(),
            tx,
        ));
        LockGuard { state: rx, task }
    }
}

/// Keeps one message's lock alive while it exists. Drop it once the message is settled (or given up).
#[derive(Debug)]
pub struct LockGuard {
    state: watch::Receiver<LockState>,
    task: JoinHandle<()>,
}

impl LockGuard {
    /// The lock as last known.
    pub fn state(&self) -> LockState {
        self.state.borrow().clone()
    }

    /// Whether the lock is lost; if so, do not complete the message.
    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), LockState::Lost { .. })
    }

    /// Resolves with the reason once the lock is lost; never resolves while it is held. Use it in a
    /// `select!` next to the work so the work stops as soon as the message is no longer ours.
    pub async fn lost(&mut self) -> String {
        loop {
            if let LockState::Lost { reason } = &*self.state.borrow_and_update() {
                return reason.clone();
            }
            if self.state.changed().await.is_err() {
                // The renewal task ended without reporting a loss: it only does that when aborted by
                // our own drop, which cannot happen while we are borrowed. Wait forever rather than lie.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew_loop(
    receiver: Arc<dyn MessageReceiver>,
    config: RenewalConfig,
    clock: Clock,
    mut message: ReceivedMessage,
    state: watch::Sender<LockState>,
) {
    let started = clock();
    let max_hold = Duration::from_millis(config.max_hold_ms);
    let retry = Duration::from_millis(config.retry_interval_ms);
    let lose = |reason: String| {
        tracing::warn!(
            entity = %message.entity,
            lock_token = %message.lock_token,
            sequence_number = message.sequence_number,
            %reason,
            "message lock lost"
        );
        state.send_replace(LockState::Lost { reason });
    };
    let mut next_delay = None;
    loop {
        let now = clock();
        let remaining = message.locked_until - now;
        if remaining <= time::Duration::ZERO {
            lose(format!("lock expired at {}", message.locked_until));
            return;
        }
        let delay = next_delay.take().unwrap_or_else(|| {
            let remaining: Duration = remaining.try_into().unwrap_or(Duration::ZERO);
            remaining.mul_f64(config.renew_at_fraction)
        });
        if now + delay - started >= max_hold {
            let wait: Duration = (started + max_hold - now)
                .try_into()
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            lose(format!(
                "held for longer than max_hold of {} ms",
                config.max_hold_ms
            ));
            return;
        }
        tokio::time::sleep(delay).await;
        match receiver.renew_lock(&message).await {
            Ok(locked_until) => {
                message.locked_until = locked_until;
                tracing::trace!(lock_token = %message.lock_token, %locked_until, "renewed message lock");
                state.send_replace(LockState::Held { locked_until });
            }
            Err(ServiceBusError::LockLost { .. }) => {
                lose("the broker reports the lock lost".to_string());
                return;
            }
            Err(e) if e.is_retriable() => {
                tracing::debug!(lock_token = %message.lock_token, error = %e, "lock renewal failed, retrying");
                // Retry soon even when the broker asks for a longer back-off: the lock will not wait for it.
                next_delay = Some(retry);
            }
            Err(e) => {
                lose(format!("renewal failed: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicebus::memory::{MemoryBus, MemoryBusConfig};
    use crate::servicebus::{Entity, MessageSender, OutgoingMessage};

    fn bus(lock_ms: u64) -> MemoryBus {
        let bus = MemoryBus::new(MemoryBusConfig {
            lock_duration: Duration::from_millis(lock_ms),
            max_delivery_count: 10,
            max_message_size: 1024,
        });
        bus.create_queue("q");
        bus
    }

    async fn one(bus: &MemoryBus) -> (Arc<dyn MessageReceiver>, ReceivedMessage) {
        let q = Entity::Queue("q".into());
        bus.sender(&q)
            .unwrap()
            .send(OutgoingMessage::default())
            .await
            .unwrap();
        let receiver: Arc<dyn MessageReceiver> = Arc::new(bus.receiver(&q).unwrap());
        let mut got = receiver.receive(1, Duration::from_secs(1)).await.unwrap();
        (receiver, got.remove(0))
    }

    #[tokio::test]
    async fn slow_work_keeps_the_lock_and_completes_without_redelivery() {
        let bus = bus(300);
        let (receiver, message) = one(&bus).await;
        let renewer =
            LockRenewer::with_clock(receiver.clone(), RenewalConfig::default(), bus.clock());
        let guard = renewer.track(&message);
        // Three lock durations of work.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            !guard.is_lost(),
            "lock lost during slow work: {:?}",
            guard.state()
        );
        receiver
            .complete(&message)
            .await
            .expect("complete after renewed slow work");
        drop(guard);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let again = receiver
            .receive(1, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(again.is_empty(), "completed message came back: {again:?}");
    }

    #[tokio::test]
    async fn dropping_the_guard_stops_renewal_and_the_lock_expires() {
        let bus = bus(300);
        let (receiver, message) = one(&bus).await;
        let renewer =
            LockRenewer::with_clock(receiver.clone(), RenewalConfig::default(), bus.clock());
        drop(renewer.track(&message));
        tokio::time::sleep(Duration::from_millis(450)).await;
        let again = receiver.receive(1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            again.len(),
            1,
            "the lock should have expired without renewal"
        );
        assert_eq!(again[0].delivery_count, 2);
        assert!(matches!(
            receiver.complete(&message).await,
            Err(ServiceBusError::LockLost { .. })
        ));
    }

    #[tokio::test]
    async fn a_lost_lock_is_reported_and_wakes_the_waiter() {
        let bus = bus(300);
        let (receiver, message) = one(&bus).await;
        let renewer =
            LockRenewer::with_clock(receiver.clone(), RenewalConfig::default(), bus.clock());
        let mut guard = renewer.track(&message);
        // Someone else settles the message: the next renewal finds no lock.
        receiver.abandon(&message).await.unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
            .await
            .expect("loss not reported within 2 s, likely deadlocked");
        assert!(reason.contains("lock lost"), "{reason}");
        assert!(guard.is_lost());
    }

    #[tokio::test]
    async fn max_hold_gives_up_on_stuck_work() {
        let bus = bus(300);
        let (receiver, message) = one(&bus).await;
        let config = RenewalConfig {
            max_hold_ms: 700,
            ..RenewalConfig::default()
        };
        let renewer = LockRenewer::with_clock(receiver.clone(), config, bus.clock());
        let mut guard = renewer.track(&message);
        let reason = tokio::time::timeout(Duration::from_secs(2), guard.lost())
            .await
            .expect("max hold not enforced within 2 s");
        assert!(reason.contains("max_hold"), "{reason}");
    }

    #[test]
    fn config_rejects_a_fraction_out_of_range() {
        let config: RenewalConfig = toml::from_str("renew_at_fraction = 1.5").unwrap();
        assert_eq!(
            config.validate().unwrap_err(),
            "renew_at_fraction is 1.5, expected a value between 0.1 and 0.9"
        );
        assert!(
            toml::from_str::<RenewalConfig>("renew_at = 0.5").is_err(),
            "unknown fields are refused"
        );
    }
}
