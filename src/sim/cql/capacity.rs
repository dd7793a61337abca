//! The CQL server's capacity model: a node with a fixed number of write workers, a queue behind them, write
//! timeouts for requests that wait too long, and Overloaded past a backlog limit.
//!
//! # The model
//!
//! Every write request (EXECUTE of an INSERT, BATCH, or a QUERY that writes) needs one of `workers` for its
//! service time
//!
//! ```text
//! service = per_request_us + per_kib_us × request KiB + per_extra_partition_us × (partitions − 1)
//! ```
//!
//! where the request size is its frame on the wire and `partitions` counts the distinct partitions a batch
//! touches, so a batch spread over many partitions costs more than the same rows in one. Requests are served
//! first come, first served: each takes the worker that frees up first, so with `n` requests arriving together
//! and `w` workers the k-th waits `⌊k / w⌋ × service` before it starts.
//!
//! # The shape of the latency curve
//!
//! With `c` requests kept in flight by a client (its concurrency) and everything else equal:
//!
//! * `c ≤ workers`: latency is flat at `service`, throughput grows linearly with `c`.
//! * `c > workers`: throughput stays at `workers / service` requests per second, and latency grows linearly with
//!   the queue behind the workers, about `service × c / workers` (Little's law).
//! * once the queue wait would pass `write_timeout_ms`, the request is dropped without being applied (Cassandra's
//!   dropped MUTATION) and answered with WriteTimeout when the timeout has passed: for a steady client that is
//!   `c > workers × (1 + write_timeout / service)`.
//! * once `max_backlog` requests are already waiting, a new one is refused at once with Overloaded and not
//!   applied.
//!
//! Reads, schema statements and the system tables are not modelled: they are answered at once, so drivers
//! connect and read their metadata as fast as without the model.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Parameters of the capacity model (the `[cql.capacity]` part of a fixture). Off unless given.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityModel {
    /// Write requests served at the same time (Cassandra's `concurrent_writes`).
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Fixed cost of one write request, microseconds of a worker.
    #[serde(default = "default_per_request_us")]
    pub per_request_us: u64,
    /// Cost per KiB of the request on the wire, microseconds of a worker.
    #[serde(default = "default_per_kib_us")]
    pub per_kib_us: u64,
    /// Extra cost for every partition a batch touches beyond the first, microseconds of a worker.
    #[serde(default = "default_per_extra_partition_us")]
    pub per_extra_partition_us: u64,
    /// Longest a write may wait for a worker before it is dropped and answered with WriteTimeout, milliseconds
    /// (Cassandra's `write_request_timeout`).
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Writes waiting for a worker at which a new one is refused with Overloaded.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: u32,
}

// The defaults describe a small node for `trimtab replay`, which compresses a trace in time (60× for the Azure
// trace): the node is slowed down by about as much, so that the trace's busiest minutes come near its capacity.
// With 2 KiB rows it serves about 170 rows/s one row per request, 330 rows/s in batches of 4 and 460 rows/s in
// batches of 23 rows, against a mean of 190 and a busiest minute of 630 messages per second for the Azure trace.
const fn default_workers() -> u32 {
    2
}
const fn default_per_request_us() -> u64 {
    8_000
}
const fn default_per_kib_us() -> u64 {
    2_000
}
const fn default_per_extra_partition_us() -> u64 {
    2_000
}
const fn default_write_timeout_ms() -> u64 {
    500
}
const fn default_max_backlog() -> u32 {
    32
}

impl Default for CapacityModel {
    fn default() -> Self {
        CapacityModel {
            workers: default_workers(),
            per_request_us: default_per_request_us(),
            per_kib_us: default_per_kib_us(),
            per_extra_partition_us: default_per_extra_partition_us(),
            write_timeout_ms: default_write_timeout_ms(),
            max_backlog: default_max_backlog(),
        }
    }
}

impl CapacityModel {
    /// A worker's time for one write of `bytes` on the wire touching `partitions` partitions.
    pub fn service_time(&self, bytes: usize, partitions: usize) -> Duration {
        let kib_us = (bytes as u64).saturating_mul(self.per_kib_us) / 1024;
        let extra = (partitions.max(1) as u64 - 1).saturating_mul(self.per_extra_partition_us);
        Duration::from_micros(
            self.per_request_us
                .saturating_add(kib_us)
                .saturating_add(extra),
        )
    }

    /// Most write requests per second the node serves at `service` each.
    pub fn max_requests_per_s(&self, service: Duration) -> f64 {
        f64::from(self.workers.max(1)) / service.as_secs_f64().max(1e-9)
    }
}

/// What the model decided for one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Apply it and answer at this time.
    Run {
        /// When the worker finishes it.
        answer_at: Instant,
    },
    /// Do not apply it; answer WriteTimeout at this time.
    TimedOut {
        /// When the timeout has passed.
        answer_at: Instant,
    },
    /// Do not apply it; answer Overloaded now.
    Overloaded,
}

/// The applied writes to one table and the worker time they took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableWork {
    /// Writes applied.
    pub writes: u64,
    /// Worker time they took.
    pub busy: Duration,
}

/// What the model has done so far, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CapacityStats {
    /// Writes admitted and applied.
    pub writes: u64,
    /// Writes answered with WriteTimeout.
    pub write_timeouts: u64,
    /// Writes refused with Overloaded.
    pub overloaded: u64,
    /// The most writes seen waiting for a worker at once.
    pub peak_backlog: u64,
}

#[derive(Debug)]
struct Queue {
    /// When each worker is next free.
    free_at: Vec<Instant>,
    /// Start times of admitted writes still waiting for their worker, oldest first.
    waiting: VecDeque<Instant>,
}

/// The model at run time: first come, first served over the workers, shared by every connection.
#[derive(Debug)]
pub struct Capacity {
    model: CapacityModel,
    queue: Mutex<Queue>,
    writes: AtomicU64,
    timeouts: AtomicU64,
    overloaded: AtomicU64,
    peak_backlog: AtomicU64,
    /// Worker time booked by applied writes, per table they write to.
    busy: Mutex<BTreeMap<String, TableWork>>,
}

impl Capacity {
    /// Idle workers and an empty queue.
    pub fn new(model: CapacityModel) -> Capacity {
        let now = Instant::now();
        Capacity {
            model,
            queue: Mutex::new(Queue {
                free_at: vec![now; model.workers.max(1) as usize],
                waiting: VecDeque::new(),
            }),
            writes: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            peak_backlog: AtomicU64::new(0),
            busy: Mutex::new(BTreeMap::new()),
        }
    }

    /// The parameters.
    pub fn model(&self) -> &CapacityModel {
        &self.model
    }

    /// Decides the fate of a write to `table` (`keyspace.table`) arriving `now` that needs `service` of a worker,
    /// and books the worker.
    pub fn admit(&self, now: Instant, service: Duration, table: &str) -> Admission {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while q.waiting.front().is_some_and(|&start| start <= now) {
            q.waiting.pop_front();
        }
        let backlog = q.waiting.len() as u64;
        self.peak_backlog.fetch_max(backlog, Ordering::Relaxed);
        if backlog >= u64::from(self.model.max_backlog) {
            self.overloaded.fetch_add(1, Ordering::Relaxed);
            return Admission::Overloaded;
        }
        // The worker that frees up first; `free_at` is never empty (at least one worker).
        let (index, free) = q
            .free_at
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(_, at)| at)
            .unwrap_or((0, now));
        let start = free.max(now);
        let timeout = Duration::from_millis(self.model.write_timeout_ms);
        if start - now > timeout {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            return Admission::TimedOut {
                answer_at: now + timeout,
            };
        }
        let done = start + service;
        q.free_at[index] = done;
        if start > now {
            // Starts are handed out in non-decreasing order (each takes the earliest free worker), so the queue
            // stays sorted by pushing at the back.
            q.waiting.push_back(start);
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        drop(q);
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let work = busy.entry(table.to_string()).or_default();
        work.writes += 1;
        work.busy += service;
        Admission::Run { answer_at: done }
    }

    /// The counters so far.
    pub fn stats(&self) -> CapacityStats {
        CapacityStats {
            writes: self.writes.load(Ordering::Relaxed),
            write_timeouts: self.timeouts.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            peak_backlog: self.peak_backlog.load(Ordering::Relaxed),
        }
    }

    /// Worker time the applied writes took so far, per table (`keyspace.table`), so a report can say whose writes
    /// kept the node busy.
    pub fn busy_by_table(&self) -> BTreeMap<String, TableWork> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(workers: u32, timeout_ms: u64, backlog: u32) -> CapacityModel {
        CapacityModel {
            workers,
            per_request_us: 10_000,
            per_kib_us: 0,
            per_extra_partition_us: 0,
            write_timeout_ms: timeout_ms,
            max_backlog: backlog,
        }
    }

    #[test]
    fn service_time_adds_request_bytes_and_extra_partitions() {
        let m = CapacityModel {
            per_request_us: 1_000,
            per_kib_us: 100,
            per_extra_partition_us: 500,
            ..CapacityModel::default()
        };
        assert_eq!(m.service_time(0, 1), Duration::from_micros(1_000));
        assert_eq!(m.service_time(10 * 1024, 1), Duration::from_micros(2_000));
        assert_eq!(m.service_time(10 * 1024, 4), Duration::from_micros(3_500));
        assert_eq!(
            m.service_time(10 * 1024, 0),
            m.service_time(10 * 1024, 1),
            "a write touches at least one partition"
        );
    }

    #[test]
    fn latency_is_flat_up_to_the_workers_then_grows_with_the_queue() {
        let c = Capacity::new(model(2, 1_000, 100));
        let now = Instant::now();
        let service = Duration::from_millis(10);
        let answers: Vec<_> = (0..6)
            .map(|_| match c.admit(now, service, "ks.t") {
                Admission::Run { answer_at } => answer_at - now,
                other => panic!("{other:?}"),
            })
            .collect();
        let ms: Vec<u128> = answers.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![10, 10, 20, 20, 30, 30]);
    }

    #[test]
    fn a_wait_past_the_timeout_times_out_and_a_full_backlog_is_overloaded() {
        let c = Capacity::new(model(1, 25, 100));
        let now = Instant::now();
        let service = Duration::from_millis(10);
        let kinds: Vec<_> = (0..5)
            .map(|_| match c.admit(now, service, "ks.t") {
                Admission::Run { .. } => "run",
                Admission::TimedOut { answer_at } => {
                    assert_eq!(answer_at - now, Duration::from_millis(25));
                    "timeout"
                }
                Admission::Overloaded => "overloaded",
            })
            .collect();
        // Waits of 0, 10 and 20 ms are within 25 ms; the fourth would wait 30 ms.
        assert_eq!(kinds, vec!["run", "run", "run", "timeout", "timeout"]);

        let c = Capacity::new(model(1, 1_000, 2));
        let now = Instant::now();
        let kinds: Vec<_> = (0..5)
            .map(|_| matches!(c.admit(now, service, "ks.t"), Admission::Overloaded))
            .collect();
        // One runs, two wait, the rest find the backlog full.
        assert_eq!(kinds, vec![false, false, false, true, true]);
        let stats = c.stats();
        assert_eq!((stats.writes, stats.overloaded), (3, 2));
    }

    #[test]
    fn worker_time_is_booked_per_table_for_applied_writes_only() {
        let c = Capacity::new(model(1, 15, 100));
        let now = Instant::now();
        let service = Duration::from_millis(10);
        assert!(matches!(
            c.admit(now, service, "ks.events"),
            Admission::Run { .. }
        ));
        assert!(matches!(
            c.admit(now, service, "ks.metrics"),
            Admission::Run { .. }
        ));
        // Waits 20 ms, past the 15 ms timeout: not applied, so not booked.
        assert!(matches!(
            c.admit(now, service, "ks.events"),
            Admission::TimedOut { .. }
        ));
        let busy = c.busy_by_table();
        let one = TableWork {
            writes: 1,
            busy: service,
        };
        assert_eq!(busy.get("ks.events"), Some(&one));
        assert_eq!(busy.get("ks.metrics"), Some(&one));
        assert_eq!(busy.len(), 2);
    }

    #[test]
    fn the_queue_drains_as_time_passes() {
        let c = Capacity::new(model(1, 1_000, 1));
        let now = Instant::now();
        let service = Duration::from_millis(10);
        assert!(matches!(
            c.admit(now, service, "ks.t"),
            Admission::Run { .. }
        ));
        assert!(matches!(
            c.admit(now, service, "ks.t"),
            Admission::Run { .. }
        ));
        assert_eq!(c.admit(now, service, "ks.t"), Admission::Overloaded);
        let later = now + Duration::from_millis(15);
        assert!(
            matches!(c.admit(later, service, "ks.t"), Admission::Run { answer_at } if answer_at - later == Duration::from_millis(15)),
            "the waiting write started at 10 ms, so the queue has room again"
        );
    }
}
