//! trimtab's own writes (metric history, forecasts, the audit mirror) give way to the pipeline's on the node they
//! share.
//!
//! The agent's tables usually live in the cluster whose writes it tunes. Near saturation every request the agent
//! adds waits in the node's queue ahead of the pipeline's and takes worker time from it: in the replay the
//! agent's 190 or so writes a run (2.6 worker seconds against 108 of the pipeline's on NAB) raised the minutes
//! over the lag objective at a fixed setting from 34 to 67 (README, replay: "What the agent's presence costs").
//! None of those writes is urgent: the audit record is on local disk, synced, before its mirror is written, and
//! the samples and forecasts are in memory. So each write first waits, up to [`GiveWayConfig::max_hold`], while
//! the pipeline's writes use most of their slots; what queued in the meantime goes together afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ObservationWindow, WriterKnobs};

/// When the agent's writes hold back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GiveWayConfig {
    /// How far back the pipeline's slot use is measured.
    pub span: Duration,
    /// The share of the pipeline's write-slot time over `span` at and above which the node counts as busy.
    pub busy_share: f64,
    /// The longest a write waits; after it, it goes anyway, so history and the audit mirror cannot fall behind
    /// without bound under a pipeline that is always busy.
    pub max_hold: Duration,
    /// How often a held write looks again.
    pub poll: Duration,
}

/// The longest hold, in sample intervals: 5 minutes at the default sample of 10 s, 30 minutes at a sample a minute.
///
/// It has to outlast a busy stretch, not a sample: with a hold of 5 intervals, the writes held since a busy
/// stretch began could go inside it, and in the replay the agent cost about as many minutes over the lag objective
/// as it did before it gave way at all (README, replay: "The agent's writes wait out a busy stretch"). What a
/// longer hold costs: a crash loses up to this many intervals of metric history (the audit record is on local disk
/// first), and the history table is that far behind while the node stays busy.
pub const MAX_HOLD_INTERVALS: u32 = 30;

impl GiveWayConfig {
    /// Scaled to the agent's sample interval, so a replay that samples every second of wall time behaves as
    /// production does at its own sample: slot use over a sixth of the interval (1.7 s at the default 10 s), a
    /// hold of at most [`MAX_HOLD_INTERVALS`] (5 minutes), a look every sixtieth (167 ms).
    pub fn for_sample_interval(interval: Duration, busy_share: f64) -> GiveWayConfig {
        GiveWayConfig {
            span: interval / 6,
            busy_share,
            max_hold: interval * MAX_HOLD_INTERVALS,
            poll: (interval / 60).max(Duration::from_millis(1)),
        }
    }
}

/// Measures how busy the pipeline keeps its write slots, and holds the agent's writes while it is.
#[derive(Debug, Clone)]
pub struct GiveWay {
    window: Arc<ObservationWindow>,
    knobs: WriterKnobs,
    config: GiveWayConfig,
}

impl GiveWay {
    /// Over the event writer's observations and knobs.
    pub fn new(window: Arc<ObservationWindow>, knobs: WriterKnobs, config: GiveWayConfig) -> Self {
        GiveWay {
            window,
            knobs,
            config,
        }
    }

    /// The share of the pipeline's write-slot time in use over the `span` before `now`: the part of each write
    /// that fell in the span, over span × slots. A write still in flight has no end yet; it counts for half the
    /// span, so a node answering nothing (every slot stuck on a slow write) reads as busy, not idle.
    pub fn busy_share(&self, now: Instant) -> f64 {
        let span = self.config.span.as_secs_f64();
        let slots = self.knobs.max_in_flight().max(1) as f64;
        if span <= 0.0 {
            return 0.0;
        }
        let from = now.checked_sub(self.config.span).unwrap_or(now);
        let done: f64 = self
            .window
            .recent()
            .iter()
            .filter(|o| o.ended > from)
            .map(|o| {
                let start = o.started().max(from);
                let end = o.ended.min(now);
                end.saturating_duration_since(start).as_secs_f64()
            })
            .sum();
        let in_flight = self.window.in_flight() as f64 * span / 2.0;
        ((done + in_flight) / (span * slots)).min(1.0)
    }

    /// Whether the pipeline is using most of its write slots now.
    pub fn busy(&self) -> bool {
        self.busy_share(Instant::now()) >= self.config.busy_share
    }

    /// Waits while the pipeline is busy, at most `max_hold`; returns how long it waited.
    pub async fn wait(&self) -> Duration {
        let started = Instant::now();
        while self.busy() && started.elapsed() < self.config.max_hold {
            let left = self.config.max_hold.saturating_sub(started.elapsed());
            tokio::time::sleep(self.config.poll.min(left)).await;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cassandra::{BatchObservation, BatchOutcome};

    fn observation(ended: Instant, latency_ms: u64) -> BatchObservation {
        BatchObservation {
            rows: 8,
            call_rows: 8,
            bytes: 8_000,
            latency: Duration::from_millis(latency_ms),
            outcome: BatchOutcome::Ok,
            attempt: 1,
            batch_rows: 32,
            concurrency: 4,
            ended,
        }
    }

    fn give_way(window: Arc<ObservationWindow>) -> GiveWay {
        let knobs = WriterKnobs::new(32, 1 << 20, 4);
        GiveWay::new(
            window,
            knobs,
            GiveWayConfig {
                span: Duration::from_millis(1_000),
                busy_share: 0.8,
                max_hold: Duration::from_millis(200),
                poll: Duration::from_millis(10),
            },
        )
    }

    #[test]
    fn slots_full_over_the_span_are_busy_and_a_lull_is_not() {
        let now = Instant::now();
        let window = Arc::new(ObservationWindow::new(100));
        let g = give_way(window.clone());
        assert_eq!(g.busy_share(now), 0.0, "no writes: idle");
        // Four slots, each written back to back for the whole second.
        for _slot in 0..4 {
            for i in 0..4 {
                window.record(observation(now - Duration::from_millis(250 * i), 250));
            }
        }
        assert!(
            g.busy_share(now) > 0.95,
            "every slot busy: {}",
            g.busy_share(now)
        );
        // The same writes seen two seconds later have left the span.
        let later = now + Duration::from_secs(2);
        assert_eq!(g.busy_share(later), 0.0);
    }

    #[test]
    fn one_slot_in_four_is_not_busy() {
        let now = Instant::now();
        let window = Arc::new(ObservationWindow::new(100));
        let g = give_way(window.clone());
        for i in 0..4 {
            window.record(observation(now - Duration::from_millis(250 * i), 250));
        }
        let share = g.busy_share(now);
        assert!((share - 0.25).abs() < 0.01, "{share}");
    }

    #[tokio::test]
    async fn a_busy_pipeline_holds_a_write_no_longer_than_the_limit() {
        let now = Instant::now();
        let window = Arc::new(ObservationWindow::new(100));
        let g = give_way(window.clone());
        assert!(g.wait().await < Duration::from_millis(5), "idle: no wait");
        for _ in 0..4 {
            window.record(observation(now, 1_000));
        }
        let held = g.wait().await;
        assert!(
            held >= Duration::from_millis(200) && held < Duration::from_millis(400),
            "held {held:?}"
        );
    }

    #[test]
    fn the_default_cadence_measures_a_sixth_of_a_sample_and_holds_five_minutes() {
        let scaled = GiveWayConfig::for_sample_interval(
            crate::config::AgentConfig::default().sample_interval(),
            0.8,
        );
        assert_eq!(
            (scaled.span, scaled.max_hold, scaled.poll),
            (
                Duration::from_nanos(1_666_666_666),
                Duration::from_secs(300),
                Duration::from_nanos(166_666_666)
            )
        );
    }
}
