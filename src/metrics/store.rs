//! The metric store: bounded windows of recent samples in memory, written through to a durable history.
//!
//! [`SampleHistory`] is the durable side (a Cassandra table in production, [`MemoryHistory`] in tests and the
//! embedded default). [`MetricStore::restore`] rebuilds the windows from it after a restart, so none are lost; the
//! agent's history in production is written behind the collector (`metrics::collect::WriteBehindHistory`), and a
//! crash loses what it still had queued.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use super::series::{Sample, SeriesKey};

/// Why the store or its history failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The durable history could not be read or written.
    #[error("sample history unavailable")]
    History {
        /// Whether the history says a retry can succeed (a timeout, an unavailable replica).
        retriable: bool,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A sample is not a finite number.
    #[error("sample for {key} at {at} is not a finite number")]
    NotFinite {
        /// The series.
        key: String,
        /// The sample's timestamp.
        at: i64,
    },
}

impl StoreError {
    /// Whether trying again could succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            StoreError::History {
                retriable: true,
                ..
            }
        )
    }
}

/// Durable sample history. Appending the same `(key, at)` twice keeps the later value (idempotent upsert), so a
/// retried write never duplicates a sample.
#[async_trait::async_trait]
pub trait SampleHistory: Send + Sync {
    /// Stores `samples`, of any series, all or nothing as far as the history can promise: one collection step
    /// is one call. A history that writes behind returns once they are queued; [`SampleHistory::flush`] writes
    /// them.
    async fn append(&self, samples: &[(SeriesKey, Sample)]) -> Result<(), StoreError>;
    /// The samples of `key` with `from <= at < to`, oldest first.
    async fn range(&self, key: &SeriesKey, from: i64, to: i64) -> Result<Vec<Sample>, StoreError>;
    /// Every series that has samples.
    async fn keys(&self) -> Result<Vec<SeriesKey>, StoreError>;
    /// The latest `capacity` samples of every series before `before`, oldest first: what a restart reloads.
    async fn recent(
        &self,
        capacity: usize,
        before: i64,
    ) -> Result<HashMap<SeriesKey, Vec<Sample>>, StoreError> {
        let mut out = HashMap::new();
        for key in self.keys().await? {
            let mut samples = self.range(&key, i64::MIN, before).await?;
            samples.drain(..samples.len().saturating_sub(capacity));
            out.insert(key, samples);
        }
        Ok(out)
    }
    /// Writes whatever the history queued and has not written yet; histories that write at once have nothing.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// History held in memory: durable only for the life of the process, which is what tests and `demo` need.
#[derive(Debug, Default)]
pub struct MemoryHistory {
    samples: Mutex<BTreeMap<SeriesKey, BTreeMap<i64, f64>>>,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl SampleHistory for MemoryHistory {
    async fn append(&self, samples: &[(SeriesKey, Sample)]) -> Result<(), StoreError> {
        let mut all = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (key, s) in samples {
            all.entry(key.clone()).or_default().insert(s.at, s.value);
        }
        Ok(())
    }

    async fn range(&self, key: &SeriesKey, from: i64, to: i64) -> Result<Vec<Sample>, StoreError> {
        let all = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(all
            .get(key)
            .map(|s| {
                s.range(from..to)
                    .map(|(&at, &value)| Sample { at, value })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn keys(&self) -> Result<Vec<SeriesKey>, StoreError> {
        let all = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(all.keys().cloned().collect())
    }
}

/// Recent samples per series (at most `capacity` each, oldest dropped first) over a durable history.
pub struct MetricStore {
    history: Arc<dyn SampleHistory>,
    capacity: usize,
    windows: Mutex<HashMap<SeriesKey, VecDeque<Sample>>>,
}

impl std::fmt::Debug for MetricStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricStore")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl MetricStore {
    /// An empty store keeping `capacity` recent samples per series.
    pub fn new(history: Arc<dyn SampleHistory>, capacity: usize) -> Self {
        Self {
            history,
            capacity: capacity.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// A store whose windows are reloaded from `history`: the latest `capacity` samples of every series up to
    /// `now` (exclusive).
    pub async fn restore(
        history: Arc<dyn SampleHistory>,
        capacity: usize,
        now: i64,
    ) -> Result<Self, StoreError> {
        let store = Self::new(history, capacity);
        let windows = store
            .history
            .recent(store.capacity, now)
            .await?
            .into_iter()
            .map(|(key, samples)| (key, VecDeque::from(samples)))
            .collect();
        *store.lock() = windows;
        Ok(store)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, VecDeque<Sample>>> {
        // A panic while holding the lock cannot leave a window half-updated in a way that matters: each update
        // is a single push or pop, so the data is still usable.
        self.windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a sample: history first (which may only queue it, see [`SampleHistory::append`]), then the window.
    /// Out-of-order samples are placed in time order.
    pub async fn record(&self, key: &SeriesKey, sample: Sample) -> Result<(), StoreError> {
        self.record_all(vec![(key.clone(), sample)]).await
    }

    /// Records the samples of one step with a single write to the history, then the windows; nothing reaches a
    /// window unless the history took it (wrote it, or queued it to write behind). A non-finite sample refuses
    /// the whole step before anything is written.
    pub async fn record_all(&self, samples: Vec<(SeriesKey, Sample)>) -> Result<(), StoreError> {
        if let Some((key, sample)) = samples.iter().find(|(_, s)| !s.value.is_finite()) {
            return Err(StoreError::NotFinite {
                key: key.to_string(),
                at: sample.at,
            });
        }
        if samples.is_empty() {
            return Ok(());
        }
        self.history.append(&samples).await?;
        let mut windows = self.lock();
        for (key, sample) in samples {
            let window = windows.entry(key).or_default();
            let position = window.partition_point(|s| s.at < sample.at);
            if window.get(position).is_some_and(|s| s.at == sample.at) {
                window[position] = sample;
            } else {
                window.insert(position, sample);
            }
            while window.len() > self.capacity {
                window.pop_front();
            }
        }
        Ok(())
    }

    /// The recent samples of a series, oldest first.
    pub fn window(&self, key: &SeriesKey) -> Vec<Sample> {
        self.lock()
            .get(key)
            .map(|w| w.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The series that have samples in memory.
    pub fn keys(&self) -> Vec<SeriesKey> {
        let mut keys: Vec<SeriesKey> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The durable history, for reading further back than the windows.
    pub fn history(&self) -> &Arc<dyn SampleHistory> {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn windows_are_bounded_and_survive_a_restart_through_the_history() {
        let history: Arc<dyn SampleHistory> = Arc::new(MemoryHistory::new());
        let depth = SeriesKey::new("queue_depth").with_label("queue", "orders");
        let lag = SeriesKey::new("partition_lag").with_label("partition", "3");
        {
            let store = MetricStore::new(history.clone(), 5);
            for i in 0..8 {
                store
                    .record(
                        &depth,
                        Sample {
                            at: i * 10,
                            value: i as f64,
                        },
                    )
                    .await
                    .expect("record");
            }
            // Out of order and a rewrite of an existing timestamp.
            store
                .record(&lag, Sample { at: 20, value: 2.0 })
                .await
                .expect("record");
            store
                .record(&lag, Sample { at: 10, value: 1.0 })
                .await
                .expect("record");
            store
                .record(&lag, Sample { at: 20, value: 2.5 })
                .await
                .expect("record");
            let window: Vec<f64> = store.window(&depth).iter().map(|s| s.value).collect();
            assert_eq!(window, vec![3.0, 4.0, 5.0, 6.0, 7.0]);
            assert_eq!(
                store.window(&lag),
                vec![Sample { at: 10, value: 1.0 }, Sample { at: 20, value: 2.5 }]
            );
        }
        // The process restarts: a new store over the same durable history.
        let restored = MetricStore::restore(history.clone(), 5, 1_000)
            .await
            .expect("restore");
        assert_eq!(restored.keys(), vec![lag.clone(), depth.clone()]);
        let window: Vec<f64> = restored.window(&depth).iter().map(|s| s.value).collect();
        assert_eq!(window, vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(
            restored.window(&lag),
            vec![Sample { at: 10, value: 1.0 }, Sample { at: 20, value: 2.5 }]
        );
        assert_eq!(
            history.range(&depth, 0, 30).await.expect("range").len(),
            3,
            "history keeps everything"
        );
    }

    #[tokio::test]
    async fn a_non_finite_sample_is_refused() {
        let store = MetricStore::new(Arc::new(MemoryHistory::new()), 4);
        let err = store
            .record(
                &SeriesKey::new("x"),
                Sample {
                    at: 0,
                    value: f64::NAN,
                },
            )
            .await
            .expect_err("nan");
        assert!(!err.is_retriable());
        assert!(store.window(&SeriesKey::new("x")).is_empty());
    }
}
