//! Where the time goes, over the wire: the per-stage breakdown (queued in Service Bus, waiting for a batch, the
//! write or LINSTOR call, settlement) adds up to the end-to-end latency, agrees with the lag tracker's own
//! measurement, names the stage that was made slow, and shows as metrics, in the state and in chat-ops.

mod common;

use std::time::Duration;

use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::agent::state::{InsightSources, WithInsights};
use trimtab::app::App;
use trimtab::chatops::redact::Redactor;
use trimtab::chatops::state::{StateSource, StaticState};
use trimtab::chatops::templated;
use trimtab::chatops::tools::Ledger;
use trimtab::pipeline::stages::PathBreakdown;

fn empty_state() -> StaticState {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::from_value(serde_json::json!({
        "as_of": now, "queues": [], "lag": [], "forecasts": [],
        "placement": {"sampled_at": now, "pools": [], "replicas_per_node": [], "under_replicated": [], "degraded": []},
        "pending_proposals": [], "audit": [], "settings": {"mode": "recommend", "settings": [], "as_of": now},
    }))
    .expect("an empty state snapshot")
}

fn stage(p: &PathBreakdown, name: &str) -> f64 {
    p.stages
        .iter()
        .find(|s| s.stage == name)
        .map(|s| s.recent_mean_ms)
        .unwrap_or_else(|| panic!("no stage {name} in {p:?}"))
}

/// The four stages add up to the end-to-end mean, each is non-negative, and the shares sum to one.
fn assert_adds_up(p: &PathBreakdown) {
    let sum: f64 = p.stages.iter().map(|s| s.recent_mean_ms).sum();
    assert!(
        (sum - p.recent_end_to_end_mean_ms).abs() < 1e-6,
        "stages {sum} ms vs end to end {} ms",
        p.recent_end_to_end_mean_ms
    );
    assert!(p.stages.iter().all(|s| s.recent_mean_ms >= 0.0), "{p:?}");
    let shares: f64 = p.stages.iter().map(|s| s.recent_share).sum();
    assert!((shares - 1.0).abs() < 1e-9, "shares sum to {shares}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_shows_as_time_queued_and_agrees_with_the_lag_tracker() {
    let h = Harness::start(Duration::from_secs(10)).await;
    let messages = harness::events("q", 200);
    h.send(messages).await;
    // The backlog waits in Service Bus before the pipeline starts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let app = App::build(&h.config).await.expect("build the pipeline");
    let stats = app.stats();
    let lag = app.lag.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    harness::wait_until("200 completed", Duration::from_secs(60), || {
        let n = stats.snapshot().completed;
        async move { n == 200 }
    })
    .await;

    let snapshot = stats.stages().snapshot();
    let event = snapshot.path("event").expect("event path measured");
    assert_eq!(event.settled, 200);
    assert_adds_up(event);
    assert_eq!(event.dominant, Some("queued"), "{event:#?}");
    assert!(stage(event, "queued") >= 1_400.0, "{event:#?}");

    // The lag tracker measures enqueued-to-settled on its own; the breakdown's total must agree with it.
    let tracked = lag.snapshot().overall;
    let tracked_p50 = tracked.latency_p50_ms.expect("lag tracker has latencies") as f64;
    let ours = event.recent_end_to_end_p50_ms;
    assert!(
        (ours - tracked_p50).abs() <= 25.0,
        "stage breakdown p50 {ours} ms vs lag tracker p50 {tracked_p50} ms"
    );

    // As metrics.
    let text = snapshot.prometheus();
    for name in ["queued", "batch_wait", "work", "settle"] {
        assert!(
            text.contains(&format!(
                "trimtab_stage_{name}_seconds_total{{path=\"event\"}}"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("trimtab_stage_settled_total{path=\"event\"} 200"),
        "{text}"
    );

    h.stop_pipeline(stop, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_linger_and_a_slow_linstor_are_named_as_the_stage_where_time_goes() {
    let mut h = Harness::start(Duration::from_secs(10)).await;
    // A few events and a long linger: each waits for a batch that never fills.
    h.config.pipeline.linger_ms = 400;
    let app = App::build(&h.config).await.expect("build the pipeline");
    let stats = app.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));

    h.sim
        .linstor
        .faults()
        .slow_replies(Duration::from_millis(800));
    let mut all = harness::events("s", 10);
    all.extend(harness::volume_creates("sv", 2));
    h.send(all).await;
    harness::wait_until("12 completed", Duration::from_secs(60), || {
        let n = stats.snapshot().completed;
        async move { n == 12 }
    })
    .await;

    let snapshot = stats.stages().snapshot();
    let event = snapshot.path("event").expect("event path measured");
    assert_adds_up(event);
    assert_eq!(event.dominant, Some("batch_wait"), "{event:#?}");
    assert!(stage(event, "batch_wait") >= 350.0, "{event:#?}");
    let volume = snapshot.path("volume").expect("volume path measured");
    assert_adds_up(volume);
    assert_eq!(
        volume.dominant,
        Some("work"),
        "the LINSTOR call: {volume:#?}"
    );
    assert!(stage(volume, "work") >= 800.0, "{volume:#?}");

    // In the state and as a chat-ops answer that names the stage.
    let state = WithInsights::new(
        empty_state(),
        InsightSources {
            stats: stats.clone(),
            windows: None,
        },
    );
    let insights = state.insights().await.unwrap();
    let in_state = insights
        .stages
        .iter()
        .find(|s| s.path == "event")
        .expect("event stages in the state");
    assert_eq!(in_state.dominant.as_deref(), Some("batch_wait"));
    let mut ledger = Ledger::new(Redactor::new(vec![], vec![], 4_000));
    let answer = templated::answer("where does the time go?", &state, &mut ledger)
        .await
        .expect("an answer");
    assert!(
        answer.text.contains("Most of the time goes to batch_wait."),
        "{}",
        answer.text
    );
    assert!(
        answer.text.contains("Most of the time goes to work."),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("[R1]"), "{}", answer.text);

    h.stop_pipeline(stop, running).await;
}
