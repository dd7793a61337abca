//! What a replay did, counted from the stores afterwards, and how it is printed for a person.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The end-of-run summary of a replay through the pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Messages sent to Service Bus.
    pub sent: u64,
    /// Of those, events (expected to become rows).
    pub sent_events: u64,
    /// Of those, volume requests.
    pub sent_volume_requests: u64,
    /// Of those, deliberately malformed bodies.
    pub sent_malformed: u64,
    /// Rows found in Cassandra afterwards (read back, not counted in flight).
    pub rows_in_cassandra: u64,
    /// Messages found in the dead-letter queue afterwards.
    pub dead_lettered: u64,
    /// Dead-letter reasons and how many messages carry each.
    pub dead_letter_reasons: Vec<(String, u64)>,
    /// Volume operations that succeeded.
    pub volume_ops_done: u64,
    /// Replies found on the reply queue.
    pub replies: u64,
    /// Resources the LINSTOR controller holds afterwards.
    pub linstor_resources: u64,
    /// Messages still active on the queue when the replay ended.
    pub left_on_queue: u64,
    /// Wall time from the first send to the last settlement.
    pub elapsed: Duration,
    /// Median end-to-end latency (settled minus enqueued), milliseconds.
    pub e2e_p50_ms: f64,
    /// 99th percentile end-to-end latency, milliseconds.
    pub e2e_p99_ms: f64,
    /// Where the data is now, one line per store.
    pub locations: Vec<(String, String)>,
}

impl ReplaySummary {
    /// Rows per second over the run.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows_in_cassandra as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "summary")?;
        writeln!(
            f,
            "  sent            {:>8}  ({} events, {} volume requests, {} malformed)",
            self.sent, self.sent_events, self.sent_volume_requests, self.sent_malformed
        )?;
        writeln!(
            f,
            "  rows written    {:>8}  (read back from Cassandra)",
            self.rows_in_cassandra
        )?;
        writeln!(
            f,
            "  volume ops done {:>8}  ({} replies received)",
            self.volume_ops_done, self.replies
        )?;
        let reasons: Vec<String> = self
            .dead_letter_reasons
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        writeln!(
            f,
            "  dead-lettered   {:>8}  ({})",
            self.dead_lettered,
            reasons.join(", ")
        )?;
        writeln!(f, "  left on queue   {:>8}", self.left_on_queue)?;
        writeln!(
            f,
            "  throughput      {:>8.0} rows/s over {:.1} s",
            self.throughput(),
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  end-to-end      p50 {:.1} ms, p99 {:.1} ms (settled minus enqueued)",
            self.e2e_p50_ms, self.e2e_p99_ms
        )?;
        writeln!(f, "where the data is now")?;
        for (store, location) in &self.locations {
            writeln!(f, "  {store:<14}  {location}")?;
        }
        Ok(())
    }
}
