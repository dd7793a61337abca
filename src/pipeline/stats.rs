//! Counters the pipeline keeps, emitted once per batch, with a cheap snapshot for the API, the tests and chat-ops.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::stages::StageClock;
use crate::drift::DriftMonitor;

/// Running totals since start.
#[derive(Debug, Default)]
pub struct PipelineStats {
    received: AtomicU64,
    events_written: AtomicU64,
    volume_ops_done: AtomicU64,
    completed: AtomicU64,
    abandoned: AtomicU64,
    dead_lettered: AtomicU64,
    lock_lost: AtomicU64,
    write_batches: AtomicU64,
    write_retries: AtomicU64,
    settle_errors: AtomicU64,
    in_flight: AtomicU64,
    stages: StageClock,
    drift: DriftMonitor,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Messages received (each delivery counts).
    pub received: u64,
    /// Event rows confirmed durable by the writer.
    pub events_written: u64,
    /// Volume operations that succeeded.
    pub volume_ops_done: u64,
    /// Messages completed.
    pub completed: u64,
    /// Messages abandoned for redelivery.
    pub abandoned: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Settlements refused because the lock was lost (the message will be redelivered).
    pub lock_lost: u64,
    /// Write calls made to the event sink.
    pub write_batches: u64,
    /// Rows written again after a retriable failure.
    pub write_retries: u64,
    /// Settlements that failed for another reason.
    pub settle_errors: u64,
    /// Messages received and not yet settled.
    pub in_flight: u64,
}

macro_rules! counter {
    ($($name:ident),*) => {
        impl PipelineStats {
            $(
                #[doc = concat!("Adds `n` to `", stringify!($name), "`.")]
                pub fn $name(&self, n: u64) {
                    self.$name.fetch_add(n, Ordering::Relaxed);
                }
            )*
        }
    };
}

counter!(
    received,
    events_written,
    volume_ops_done,
    completed,
    abandoned,
    dead_lettered,
    lock_lost,
    write_batches,
    write_retries,
    settle_errors
);

impl PipelineStats {
    /// Marks messages as in flight (`delta` > 0) or settled (`delta` < 0).
    pub fn in_flight(&self, delta: i64) {
        if delta >= 0 {
            self.in_flight.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    /// Where the time goes, per stage (see [`super::stages`]).
    pub fn stages(&self) -> &StageClock {
        &self.stages
    }

    /// The schema-drift monitor the receive loop offers every body to (see [`crate::drift`]).
    pub fn drift(&self) -> &DriftMonitor {
        &self.drift
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            events_written: get(&self.events_written),
            volume_ops_done: get(&self.volume_ops_done),
            completed: get(&self.completed),
            abandoned: get(&self.abandoned),
            dead_lettered: get(&self.dead_lettered),
            lock_lost: get(&self.lock_lost),
            write_batches: get(&self.write_batches),
            write_retries: get(&self.write_retries),
            settle_errors: get(&self.settle_errors),
            in_flight: get(&self.in_flight),
        }
    }
}
