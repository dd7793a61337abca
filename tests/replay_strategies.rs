//! A short replay of the Azure trace under two strategies, over the wire through the stand-ins (capacity model
//! on): nothing is lost or duplicated, recommend mode changes nothing yet lists what it would have done, and the
//! report a person opens is written with its charts.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use trimtab::replay::cli::{write_report, Comparison, ReplayArgs};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_replay_loses_nothing_and_recommend_changes_nothing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let scratch = tempfile::tempdir().expect("scratch");
    let args = ReplayArgs {
        trace: repo("data/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv"),
        speedup: Some(60.0),
        duration: 60.0,
        strategies: vec!["static:32x4".into(), "recommend".into()],
        fixture: None,
        out: scratch.path().join("report"),
        policies: repo("policies"),
        // The first ten trace minutes: a burst of about 500 requests in the fourth.
        limit: Some(1_100),
        nab_rows: 0,
        nab_mean: 16.0,
        sweep_seconds: 2.0,
        repeat: 1,
        quiet: true,
    };
    let comparison =
        Comparison::from_args(&args, scratch.path().join("state")).expect("arguments resolve");
    let events = comparison
        .planned
        .iter()
        .filter(|p| p.expect == trimtab::replay::generate::Expect::Row)
        .count();
    let result = tokio::time::timeout(
        Duration::from_secs(240),
        comparison.run(&CancellationToken::new(), &|_| {}),
    )
    .await
    .expect("two short replays finish within 4 minutes; likely stuck draining")
    .expect("both replays run");

    assert_eq!(result.rows.len(), 2);
    for (row, run) in result.rows.iter().zip(&result.runs) {
        assert_eq!(
            (row.lost, row.duplicated, row.left_on_queue),
            (0, 0, 0),
            "{}: every message has exactly one effect",
            row.label
        );
        assert_eq!(
            run.rows.len() + row.events_dead_lettered as usize,
            events,
            "{}: every event was read back from Cassandra",
            row.label
        );
        assert!(
            row.lag_p50_ms > 0.0 && row.lag_p99_ms >= row.lag_p50_ms,
            "{row:?}"
        );
        assert!(
            run.capacity.writes > 0,
            "the writes went through the capacity model: {:?}",
            run.capacity
        );
    }
    let fixed = &result.rows[0];
    assert_eq!(fixed.label, "static 32x4 (given)");
    assert_eq!(fixed.changes, 0, "a static strategy changes nothing");
    // The node's worker time is split between the pipeline's event writes and the rest: a static run has no
    // agent, so only the schema's and the pipeline's writes reach the node; recommend's agent writes its own tables.
    assert!(
        fixed.events_node_work.writes > 0 && fixed.events_node_work.busy > Duration::ZERO,
        "{:?}",
        fixed.events_node_work
    );
    assert!(
        fixed
            .other_node_work
            .iter()
            .all(|(t, _)| !t.ends_with(".metric_history")),
        "a static run has no agent writing history: {:?}",
        fixed.other_node_work
    );
    assert!(
        result.rows[1]
            .other_node_work
            .iter()
            .any(|(t, w)| t.ends_with(".metric_history")
                && w.writes > 0
                && w.busy > Duration::ZERO),
        "recommend's agent wrote its metric history to the node: {:?}",
        result.rows[1].other_node_work
    );

    let recommend = &result.rows[1];
    let recommend_run = &result.runs[1];
    assert_eq!(recommend.label, "recommend");
    assert_eq!(
        (recommend_run.knob_changes, recommend_run.placement_changes),
        (0, 0),
        "recommend mode must change nothing"
    );
    assert!(
        recommend_run
            .timeline
            .iter()
            .all(|p| (p.batch_rows, p.concurrency) == (32, 32)),
        "the knobs stayed at their defaults the whole run"
    );
    assert!(
        !recommend.proposals.is_empty(),
        "recommend lists what it would have done; mode notes: {:?}",
        recommend.mode_notes
    );
    assert!(
        recommend.decisions.values().sum::<u64>() >= recommend.proposals.len() as u64,
        "every proposal went through the gate: {:?}",
        recommend.decisions
    );

    let report = write_report(&args.out, &comparison, &result).expect("report written");
    let text = std::fs::read_to_string(&report).expect("report readable");
    assert!(
        text.contains("| static 32x4 (given) |") && text.contains("| recommend |"),
        "{text}"
    );
    for chart in ["lag.png", "batch.png"] {
        let bytes = std::fs::read(args.out.join(chart)).expect("chart written");
        assert_eq!(&bytes[1..4], b"PNG", "{chart} is a PNG");
        assert!(text.contains(chart), "the report shows {chart}");
    }
    assert!(
        text.contains("Where the minutes over the objective fell"),
        "{text}"
    );
    assert!(
        text.contains("node work, events / other (worker s)")
            && text.contains("The other node writes of recommend by table: "),
        "{text}"
    );
    // A sum over no tables prints as 0.0, never as -0.0 (an empty float sum).
    assert!(!text.contains("-0.0"), "{text}");
    if fixed.other_node_work.is_empty() {
        assert!(
            text.lines()
                .any(|l| l.starts_with("| static 32x4 (given) |") && l.ends_with(" / 0.0 |")),
            "{text}"
        );
    }
    for r in &result.rows {
        let parts: f64 = r.minutes_over_by_part.iter().sum();
        assert!(
            (parts - r.minutes_over).abs() < 1e-6,
            "{}: the parts add up to the total ({parts} vs {})",
            r.label,
            r.minutes_over
        );
    }
    let csv = std::fs::read_to_string(args.out.join("timeline.csv")).expect("timeline written");
    let sampled: usize = result.runs.iter().map(|r| r.timeline.len()).sum();
    assert_eq!(
        csv.lines().count(),
        sampled + 1,
        "a header and one line per sampled point"
    );
    assert!(csv.lines().any(|l| l.starts_with("recommend,")), "{csv}");
}

/// Run from outside the repository, `policies` is not there. The agent's gate would then deny every change and
/// the comparison would show a trimtab that cannot act, so the replay refuses to start and says which input is
/// wrong; strategies that do not use the gate still run without it.
#[test]
fn a_replay_of_trimtab_without_a_policy_refuses_to_start_and_names_the_directory() {
    let scratch = tempfile::tempdir().expect("scratch");
    let missing = scratch.path().join("no-policies-here");
    let out = scratch.path().join("report");
    let replay = |strategy: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_trimtab"))
            .arg("replay")
            .arg("--trace")
            .arg(repo(
                "data/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv",
            ))
            .args(["--strategy", strategy, "--limit", "20", "--quiet"])
            .arg("--policies")
            .arg(&missing)
            .arg("--out")
            .arg(&out)
            .current_dir(scratch.path())
            .output()
            .expect("run the trimtab binary")
    };
    for strategy in ["trimtab", "recommend"] {
        let output = replay(strategy);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{strategy}: {stderr}");
        assert!(
            stderr.contains("--policies") && stderr.contains("no-policies-here"),
            "{strategy}: the error names the flag and the directory: {stderr}"
        );
        assert!(
            !out.exists(),
            "{strategy}: no report of a run that did not happen"
        );
    }
    let output = replay("static:32x4");
    assert!(
        output.status.success(),
        "a static replay needs no policy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.join("report.md").exists());
}
