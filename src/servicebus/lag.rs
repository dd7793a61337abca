//! Lag accounting per partition key or session: in-flight messages, the age of the oldest, end-to-end latency
//! at settlement (p50/p99 over a window) and settlement counts, with a cheap serializable snapshot.
//!
//! Service Bus has no offset or lag API; lag is measured in the agent from each message's enqueued time.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use super::ReceivedMessage;

/// How a message left the receiver's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// Completed: its effect is durable.
    Completed,
    /// Abandoned: it will be redelivered.
    Abandoned,
    /// Dead-lettered with a reason.
    DeadLettered,
    /// The lock was lost before settlement: it will be redelivered.
    LockLost,
}

/// Lag of one key, as plain data.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KeyLag {
    /// Messages received and not yet settled.
    pub in_flight: u64,
    /// Age of the oldest in-flight message (now − enqueued), in milliseconds; 0 when none is in flight.
    pub oldest_age_ms: u64,
    /// Median end-to-end latency (settled − enqueued) of completions in the window, in milliseconds.
    pub latency_p50_ms: Option<u64>,
    /// 99th percentile of the same, in milliseconds.
    pub latency_p99_ms: Option<u64>,
    /// Completions in the window (the sample count behind the percentiles).
    pub window_completed: u64,
    /// Completed since the tracker started.
    pub completed: u64,
    /// Abandoned since the tracker started.
    pub abandoned: u64,
    /// Dead-lettered since the tracker started.
    pub dead_lettered: u64,
    /// Lost locks since the tracker started.
    pub lock_lost: u64,
}

/// Lag of every key seen, as plain data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LagSnapshot {
    /// When the snapshot was taken.
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
    /// The latency window, in milliseconds.
    pub window_ms: u64,
    /// Per lag key (session id, else partition key, else `""`).
    pub keys: BTreeMap<String, KeyLag>,
    /// All keys together: in-flight count, oldest age, and percentiles over every sample in the window.
    pub overall: KeyLag,
}

#[derive(Default)]
struct KeyState {
    in_flight: HashMap<Uuid, OffsetDateTime>,
    latencies: VecDeque<(OffsetDateTime, u64)>,
    completed: u64,
    abandoned: u64,
    dead_lettered: u64,
    lock_lost: u64,
}

/// Tracks lag per key. Every method takes the lock briefly; `snapshot` sorts at most
/// `max_samples_per_key` samples per key.
pub struct LagTracker {
    window: Duration,
    max_samples_per_key: usize,
    keys: Mutex<HashMap<String, KeyState>>,
}

impl std::fmt::Debug for LagTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagTracker")
            .field("window", &self.window)
            .field("max_samples_per_key", &self.max_samples_per_key)
            .finish_non_exhaustive()
    }
}

impl LagTracker {
    /// A tracker whose latency percentiles cover the last `window`, keeping at most `max_samples_per_key`
    /// samples per key (the newest).
    pub fn new(window: Duration, max_samples_per_key: usize) -> Self {
        Self {
            window,
            max_samples_per_key: max_samples_per_key.max(1),
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn with_keys<R>(&self, f: impl FnOnce(&mut HashMap<String, KeyState>) -> R) -> R {
        // A panic while holding this lock leaves only counters behind; keep counting.
        let mut guard = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Records a received message (now).
    pub fn received(&self, message: &ReceivedMessage) {
        self.received_at(message, OffsetDateTime::now_utc());
    }

    /// Records a received message at `now`. A redelivery of the same lock token is counted once.
    pub fn received_at(&self, message: &ReceivedMessage, _now: OffsetDateTime) {
        self.with_keys(|keys| {
            keys.entry(message.lag_key().to_string())
                .or_default()
                .in_flight
                .insert(message.lock_token, message.enqueued_at);
        });
    }

    /// Records how a message was settled (now).
    pub fn settled(&self, message: &ReceivedMessage, how: Settlement) {
        self.settled_at(message, how, OffsetDateTime::now_utc());
    }

    /// Records how a message was settled at `now`. Only completions feed the latency percentiles: they are
    /// the end of the message's journey.
    pub fn settled_at(&self, message: &ReceivedMessage, how: Settlement, now: OffsetDateTime) {
        let window = self.window;
        let max = self.max_samples_per_key;
        self.with_keys(|keys| {
            let state = keys.entry(message.lag_key().to_string()).or_default();
            state.in_flight.remove(&message.lock_token);
            match how {
                Settlement::Completed => {
                    state.completed += 1;
                    let latency = (now - message.enqueued_at).whole_milliseconds().max(0) as u64;
                    state.latencies.push_back((now, latency));
                    while state.latencies.len() > max {
                        state.latencies.pop_front();
                    }
                    prune(&mut state.latencies, now, window);
                }
                Settlement::Abandoned => state.abandoned += 1,
                Settlement::DeadLettered => state.dead_lettered += 1,
                Settlement::LockLost => state.lock_lost += 1,
            }
        });
    }

    /// The current lag of every key (now).
    pub fn snapshot(&self) -> LagSnapshot {
        self.snapshot_at(OffsetDateTime::now_utc())
    }

    /// The current lag of every key, with percentiles over the completions of the last `window` only (at most
    /// the tracker's own window): what a control loop that runs faster than the tracker's window reacts to.
    pub fn snapshot_over(&self, window: Duration) -> LagSnapshot {
        self.snapshot_at_over(OffsetDateTime::now_utc(), window)
    }

    /// The lag of every key as of `now`.
    pub fn snapshot_at(&self, now: OffsetDateTime) -> LagSnapshot {
        self.snapshot_at_over(now, self.window)
    }

    /// The lag of every key as of `now`, percentiles over the last `window` (at most the tracker's own).
    pub fn snapshot_at_over(&self, now: OffsetDateTime, window: Duration) -> LagSnapshot {
        let kept = self.window;
        let window = window.min(kept);
        let mut all_samples: Vec<u64> = Vec::new();
        let keys: BTreeMap<String, KeyLag> = self.with_keys(|keys| {
            keys.iter_mut()
                .map(|(key, state)| {
                    prune(&mut state.latencies, now, kept);
                    let mut samples: Vec<u64> = state
                        .latencies
                        .iter()
                        .filter(|(at, _)| now - *at <= window)
                        .map(|(_, l)| *l)
                        .collect();
                    samples.sort_unstable();
                    all_samples.extend_from_slice(&samples);
                    let oldest = state.in_flight.values().min().copied();
                    let lag = KeyLag {
                        in_flight: state.in_flight.len() as u64,
                        oldest_age_ms: oldest
                            .map(|t| (now - t).whole_milliseconds().max(0) as u64)
                            .unwrap_or(0),
                        latency_p50_ms: percentile(&samples, 50),
                        latency_p99_ms: percentile(&samples, 99),
                        window_completed: samples.len() as u64,
                        completed: state.completed,
                        abandoned: state.abandoned,
                        dead_lettered: state.dead_lettered,
                        lock_lost: state.lock_lost,
                    };
                    (key.clone(), lag)
                })
                .collect()
        });
        all_samples.sort_unstable();
        let overall = KeyLag {
            in_flight: keys.values().map(|k| k.in_flight).sum(),
            oldest_age_ms: keys.values().map(|k| k.oldest_age_ms).max().unwrap_or(0),
            latency_p50_ms: percentile(&all_samples, 50),
            latency_p99_ms: percentile(&all_samples, 99),
            window_completed: all_samples.len() as u64,
            completed: keys.values().map(|k| k.completed).sum(),
            abandoned: keys.values().map(|k| k.abandoned).sum(),
            dead_lettered: keys.values().map(|k| k.dead_lettered).sum(),
            lock_lost: keys.values().map(|k| k.lock_lost).sum(),
        };
        LagSnapshot {
            taken_at: now,
            window_ms: window.as_millis() as u64,
            keys,
            overall,
        }
    }
}

fn prune(latencies: &mut VecDeque<(OffsetDateTime, u64)>, now: OffsetDateTime, window: Duration) {
    while let Some((at, _)) = latencies.front() {
        if now - *at > window {
            latencies.pop_front();
        } else {
            break;
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicebus::Entity;
    use bytes::Bytes;

    fn message(key: &str, enqueued_at: OffsetDateTime) -> ReceivedMessage {
        ReceivedMessage {
            entity: Entity::Queue("q".into()),
            message_id: None,
            lock_token: Uuid::new_v4(),
            sequence_number: 1,
            enqueued_at,
            locked_until: enqueued_at + Duration::from_secs(60),
            delivery_count: 1,
            partition_key: Some(key.to_string()),
            session_id: None,
            reply_to: None,
            correlation_id: None,
            content_type: None,
            subject: None,
            application_properties: BTreeMap::new(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn in_flight_and_oldest_age_per_key() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let lag = LagTracker::new(Duration::from_secs(60), 1000);
        let a1 = message("a", t0);
        let a2 = message("a", t0 + Duration::from_secs(5));
        let b1 = message("b", t0 + Duration::from_secs(8));
        for m in [&a1, &a2, &b1] {
            lag.received_at(m, t0 + Duration::from_secs(9));
        }
        let snap = lag.snapshot_at(t0 + Duration::from_secs(10));
        assert_eq!(snap.keys["a"].in_flight, 2);
        assert_eq!(snap.keys["a"].oldest_age_ms, 10_000);
        assert_eq!(snap.keys["b"].oldest_age_ms, 2_000);

        lag.settled_at(&a1, Settlement::Completed, t0 + Duration::from_secs(11));
        let snap = lag.snapshot_at(t0 + Duration::from_secs(12));
        assert_eq!(snap.keys["a"].in_flight, 1);
        assert_eq!(
            snap.keys["a"].oldest_age_ms, 7_000,
            "the oldest left, so a2 is now the oldest"
        );
        assert_eq!(snap.keys["a"].completed, 1);
        assert_eq!(snap.keys["a"].latency_p50_ms, Some(11_000));
    }

    #[test]
    fn percentiles_over_the_window_only() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let lag = LagTracker::new(Duration::from_secs(60), 10_000);
        // 100 completions with latencies 1..=100 ms, settled at t0 + 100 s.
        for ms in 1..=100u64 {
            let settled = t0 + Duration::from_secs(100);
            let m = message("k", settled - Duration::from_millis(ms));
            lag.received_at(&m, settled);
            lag.settled_at(&m, Settlement::Completed, settled);
        }
        let snap = lag.snapshot_at(t0 + Duration::from_secs(101));
        let k = &snap.keys["k"];
        assert_eq!((k.latency_p50_ms, k.latency_p99_ms), (Some(50), Some(99)));
        assert_eq!(k.window_completed, 100);
        // Two minutes later the window holds nothing; the totals stay.
        let snap = lag.snapshot_at(t0 + Duration::from_secs(221));
        let k = &snap.keys["k"];
        assert_eq!(
            (k.latency_p50_ms, k.window_completed, k.completed),
            (None, 0, 100)
        );
    }

    #[test]
    fn a_shorter_window_leaves_out_older_completions_that_the_tracker_still_keeps() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let lag = LagTracker::new(Duration::from_secs(300), 10_000);
        // A peak: ten completions of 2 s at t0 + 10 s; then ten of 100 ms at t0 + 50 s.
        for (at_s, ms) in [(10u64, 2_000u64), (50, 100)] {
            for _ in 0..10 {
                let settled = t0 + Duration::from_secs(at_s);
                let m = message("k", settled - Duration::from_millis(ms));
                lag.received_at(&m, settled);
                lag.settled_at(&m, Settlement::Completed, settled);
            }
        }
        let now = t0 + Duration::from_secs(55);
        let whole = lag.snapshot_at(now);
        assert_eq!(whole.overall.latency_p99_ms, Some(2_000));
        assert_eq!(whole.overall.window_completed, 20);
        let recent = lag.snapshot_at_over(now, Duration::from_secs(10));
        assert_eq!(
            recent.overall.latency_p99_ms,
            Some(100),
            "the peak has passed"
        );
        assert_eq!(recent.overall.window_completed, 10);
        assert_eq!(recent.window_ms, 10_000);
        // Never wider than what the tracker keeps.
        assert_eq!(
            lag.snapshot_at_over(now, Duration::from_secs(900))
                .window_ms,
            300_000
        );
    }

    #[test]
    fn counts_each_settlement_kind_and_serializes() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let lag = LagTracker::new(Duration::from_secs(60), 100);
        for how in [
            Settlement::Abandoned,
            Settlement::DeadLettered,
            Settlement::LockLost,
            Settlement::Abandoned,
        ] {
            let m = message("", t0);
            lag.received_at(&m, t0);
            lag.settled_at(&m, how, t0);
        }
        let snap = lag.snapshot_at(t0);
        let k = &snap.keys[""];
        assert_eq!(
            (
                k.abandoned,
                k.dead_lettered,
                k.lock_lost,
                k.completed,
                k.in_flight
            ),
            (2, 1, 1, 0, 0)
        );
        let json = serde_json::to_value(&snap).unwrap();
        assert_eq!(json["keys"][""]["abandoned"], 2);
        assert_eq!(json["window_ms"], 60_000);
    }

    #[test]
    fn sample_cap_keeps_the_newest() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        let lag = LagTracker::new(Duration::from_secs(600), 3);
        for ms in [1000u64, 1000, 1000, 5, 5, 5] {
            let m = message("k", t0 - Duration::from_millis(ms));
            lag.settled_at(&m, Settlement::Completed, t0);
        }
        let snap = lag.snapshot_at(t0);
        assert_eq!(snap.keys["k"].latency_p99_ms, Some(5));
        assert_eq!(snap.keys["k"].completed, 6);
    }
}
