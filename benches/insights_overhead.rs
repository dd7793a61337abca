//! What the pipeline's insight hooks cost per message, against baselines measured in the same run: the drift
//! monitor's comparison against parsing the body alone, and the stage clock's record against a bare counter.
//!
//! `cargo bench --bench insights_overhead [-- MESSAGES]` (default 200000).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use trimtab::drift::{DriftConfig, DriftMonitor};
use trimtab::message::{self, Event};
use trimtab::pipeline::stages::{Breakdown, Path, StageClock, Stamps};

fn bodies(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let event = Event {
                stream: format!("s{}", i % 16),
                ts: Some(time::macros::datetime!(2026-01-01 12:00 UTC)),
                payload: serde_json::json!({"i": i, "tokens": i % 4096, "model": "m-7b", "text": "x".repeat(100 + i % 400)}),
            };
            message::event_body(&event)
        })
        .collect()
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let bodies = bodies(n);

    // Baseline: parse each body into a JSON value (what the drift task must do at least).
    let started = Instant::now();
    for b in &bodies {
        black_box(serde_json::from_slice::<serde_json::Value>(b).ok());
    }
    let parse = started.elapsed();

    let monitor = DriftMonitor::new(DriftConfig::default());
    let started = Instant::now();
    for (i, b) in bodies.iter().enumerate() {
        black_box(monitor.observe(&format!("m-{i}"), b));
    }
    let drift = started.elapsed();
    assert!(
        monitor.snapshot().events.is_empty(),
        "the benchmark's bodies do not drift"
    );

    // Baseline: one relaxed atomic add per message.
    let counter = AtomicU64::new(0);
    let started = Instant::now();
    for _ in 0..n {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    black_box(counter.load(Ordering::Relaxed));
    let count = started.elapsed();

    let clock = StageClock::default();
    let enqueued = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    for _ in 0..n {
        let mut stamps = Stamps::received(enqueued);
        let now = Instant::now();
        stamps.work_started(now);
        stamps.work_ended(now);
        clock.record(Path::Event, Breakdown::of(&stamps, Instant::now()));
    }
    let stages = started.elapsed();
    let snapshot_started = Instant::now();
    black_box(clock.snapshot());
    let snapshot = snapshot_started.elapsed();

    println!("insights_overhead: {n} messages, one thread");
    println!(
        "  parse body (baseline)   {:>12.0} msg/s  {:>7.2} µs/msg",
        rate(n, parse),
        parse.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "  drift compare           {:>12.0} msg/s  {:>7.2} µs/msg  ({:.2}x the parse)",
        rate(n, drift),
        drift.as_secs_f64() * 1e6 / n as f64,
        drift.as_secs_f64() / parse.as_secs_f64()
    );
    println!(
        "  atomic add (baseline)   {:>12.0} msg/s  {:>7.3} µs/msg",
        rate(n, count),
        count.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "  stage stamps + record   {:>12.0} msg/s  {:>7.3} µs/msg  ({:.1}x the atomic add)",
        rate(n, stages),
        stages.as_secs_f64() * 1e6 / n as f64,
        stages.as_secs_f64() / count.as_secs_f64()
    );
    println!(
        "  stage snapshot          {:>12.3} ms (2048 recent messages per path)",
        snapshot.as_secs_f64() * 1e3
    );
}
