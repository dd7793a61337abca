//! Schema drift: learn each message kind's shape and report when producers start sending something new.
//!
//! The pipeline hands every received body to a [`DriftMonitor`] (a bounded queue, so the receive loop never waits
//! on it); a task parses and compares bodies off the hot path with [`shape::ShapeLearner`]. Drift is reported as
//! events with examples: logged once when it opens, counted as a metric, and kept in the snapshot the state, the
//! API and chat-ops read. Drift is a warning, not a decision: a body that no longer fits the Cassandra schema is
//! dead-lettered by the router with a reason naming the field, whatever the learner thinks.

pub mod shape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use shape::{DriftChange, DriftEvent, DriftExample, KindShape, ShapeLearner};

/// Bodies waiting to be compared; beyond this, bodies are skipped (and counted) rather than slowing receipt.
const QUEUE: usize = 4_096;

/// How the learner decides what is normal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// Bodies of a kind learned from before its shape is frozen and later bodies are compared with it.
    #[serde(default = "default_learn_messages")]
    pub learn_messages: u64,
    /// A body larger than this many times the largest baseline body is a size jump.
    #[serde(default = "default_size_factor")]
    pub size_factor: f64,
}

const fn default_learn_messages() -> u64 {
    200
}
const fn default_size_factor() -> f64 {
    4.0
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            learn_messages: default_learn_messages(),
            size_factor: default_size_factor(),
        }
    }
}

/// A drift configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// `learn_messages` is zero.
    #[error("drift.learn_messages = 0: expected at least 1 body to learn from")]
    NoBaseline,
    /// `size_factor` is not above 1.
    #[error("drift.size_factor = {0}: expected a number above 1")]
    SizeFactor(f64),
}

impl DriftError {
    /// Configuration errors stay until the configuration is fixed.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

impl DriftConfig {
    /// Checks the configuration without IO.
    pub fn validate(self) -> Result<DriftConfig, DriftError> {
        if self.learn_messages == 0 {
            return Err(DriftError::NoBaseline);
        }
        if self.size_factor.is_nan() || self.size_factor <= 1.0 {
            return Err(DriftError::SizeFactor(self.size_factor));
        }
        Ok(self)
    }
}

/// What the monitor has seen.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct DriftSnapshot {
    /// Every drift so far, oldest first.
    pub events: Vec<DriftEvent>,
    /// Bodies compared or learned from.
    pub observed: u64,
    /// Bodies skipped because the queue was full.
    pub skipped: u64,
    /// Kinds with their baseline size (bodies learned from).
    pub kinds: Vec<(String, u64)>,
}

impl DriftSnapshot {
    /// The figures as metric samples: `trimtab_schema_drift_events_total{kind,change}` (bodies that showed it)
    /// and `trimtab_schema_drift_open{kind}` (distinct drifts).
    pub fn metric_samples(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        let mut open: std::collections::BTreeMap<&str, f64> = Default::default();
        for e in &self.events {
            out.push((
                format!(
                    "trimtab_schema_drift_events_total{{kind=\"{}\",field=\"{}\",change=\"{}\"}}",
                    e.kind,
                    e.field,
                    e.change.name()
                ),
                e.count as f64,
            ));
            *open.entry(e.kind.as_str()).or_default() += 1.0;
        }
        for (kind, n) in open {
            out.push((format!("trimtab_schema_drift_open{{kind=\"{kind}\"}}"), n));
        }
        out.push((
            "trimtab_schema_drift_skipped_total".into(),
            self.skipped as f64,
        ));
        out
    }
}

/// The pipeline's drift monitor: a bounded queue in front of the learner.
#[derive(Debug)]
pub struct DriftMonitor {
    learner: Mutex<ShapeLearner>,
    tx: mpsc::Sender<(String, Bytes)>,
    rx: Mutex<Option<mpsc::Receiver<(String, Bytes)>>>,
    observed: AtomicU64,
    skipped: AtomicU64,
}

impl Default for DriftMonitor {
    fn default() -> Self {
        DriftMonitor::new(DriftConfig::default())
    }
}

impl DriftMonitor {
    /// A monitor with a validated configuration.
    pub fn new(config: DriftConfig) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        DriftMonitor {
            learner: Mutex::new(ShapeLearner::new(config)),
            tx,
            rx: Mutex::new(Some(rx)),
            observed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    /// Queues a received body for comparison; never waits.
    pub fn offer(&self, message_id: String, body: Bytes) {
        if self.tx.try_send((message_id, body)).is_err() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Compares one body now (the task calls this; tests may too). Bodies that are not JSON objects are ignored:
    /// the router dead-letters them with their own reason.
    pub fn observe(&self, message_id: &str, body: &[u8]) -> Vec<DriftEvent> {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Vec::new();
        };
        self.observed.fetch_add(1, Ordering::Relaxed);
        let opened = self
            .learner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(
                message_id,
                &value,
                body.len(),
                time::OffsetDateTime::now_utc(),
            );
        for event in &opened {
            tracing::warn!(
                kind = %event.kind,
                field = %event.field,
                change = event.change.name(),
                example = event.examples.first().map(|e| e.message_id.as_str()).unwrap_or(""),
                "schema drift: {}",
                event.sentence()
            );
        }
        opened
    }

    /// Drains the queue until `stop` is cancelled. Only the first call gets the queue; later calls return at once.
    pub async fn run(&self, stop: CancellationToken) {
        let taken = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut rx) = taken else {
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                item = rx.recv() => match item {
                    Some((id, body)) => { self.observe(&id, &body); }
                    None => break,
                },
            }
        }
        // Put the queue back so a pipeline started again on the same counters keeps learning.
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = Some(rx);
    }

    /// What has been seen so far.
    pub fn snapshot(&self) -> DriftSnapshot {
        let learner = self.learner.lock().unwrap_or_else(|p| p.into_inner());
        DriftSnapshot {
            events: learner.events(),
            observed: self.observed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            kinds: learner
                .shapes()
                .iter()
                .map(|(k, s)| (k.clone(), s.learned))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(DriftConfig::default().validate().is_ok());
        let bad = DriftConfig {
            learn_messages: 0,
            ..DriftConfig::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "drift.learn_messages = 0: expected at least 1 body to learn from"
        );
        let err: Result<DriftConfig, _> = toml::from_str("learn_messages = 5\nfactor = 2");
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("unknown field `factor`"));
    }

    #[tokio::test]
    async fn the_task_compares_offered_bodies() {
        let monitor = std::sync::Arc::new(DriftMonitor::new(DriftConfig {
            learn_messages: 1,
            size_factor: 4.0,
        }));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let monitor = monitor.clone();
            let stop = stop.clone();
            async move { monitor.run(stop).await }
        });
        monitor.offer(
            "a".into(),
            Bytes::from_static(br#"{"kind":"event","stream":"s"}"#),
        );
        monitor.offer(
            "b".into(),
            Bytes::from_static(br#"{"kind":"event","stream":7}"#),
        );
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while monitor.snapshot().observed < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "drift task did not compare two bodies in 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        stop.cancel();
        task.await.unwrap();
        let snap = monitor.snapshot();
        assert_eq!(snap.events.len(), 1);
        assert_eq!(snap.events[0].field, "stream");
        assert!(snap
            .metric_samples()
            .iter()
            .any(|(n, v)| n.contains("change=\"type_changed\"") && *v == 1.0));
    }
}
