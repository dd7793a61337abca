//! The `trimtab forecast` command through the real binary: backtest JSON on a NAB series, the plot, the card.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nab(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/traces/nab")
        .join(relative)
}

/// Copies the first `rows` data rows of a NAB series (with its header) into `dir`.
fn truncated_copy(source: &Path, dir: &Path, rows: usize) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("read the NAB series");
    let kept: Vec<&str> = text.lines().take(rows + 1).collect();
    let path = dir.join(source.file_name().expect("file name"));
    std::fs::write(&path, kept.join("\n") + "\n").expect("write the copy");
    path
}

fn trimtab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(args)
        .output()
        .expect("run the trimtab binary")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "trimtab failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

#[test]
fn backtest_json_reports_every_model_and_the_chosen_one_beats_seasonal_naive() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Ten days of the 5-minute ELB request counts: enough for the daily season, quick in a debug build.
    let csv = truncated_copy(
        &nab("realAWSCloudwatch/elb_request_count_8c0756.csv"),
        dir.path(),
        2880,
    );
    let cards = dir.path().join("models");
    let output = trimtab(&[
        "forecast",
        "backtest",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--horizon",
        "12",
        "--holdout",
        "0.2",
        "--season",
        "288",
        "--json",
        "--card-dir",
        cards.to_str().expect("utf-8 path"),
    ]);
    let stdout = stdout_of(&output);
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "--json prints one line: {stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let models = report["models"].as_object().expect("models is an object");
    for name in [
        "naive",
        "seasonal_naive_288",
        "local_median_12",
        "local_median_48",
        "ridge",
        "elastic_net",
        "lad",
        "ridge_log",
        "elastic_net_log",
        "lad_log",
    ] {
        let model = &models
            .get(name)
            .unwrap_or_else(|| panic!("model {name} missing from {stdout}"));
        for field in ["mase", "smape", "mase_h", "smape_h"] {
            let v = model[field]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}.{field} is not a number"));
            assert!(v.is_finite() && v >= 0.0, "{name}.{field} = {v}");
        }
        let smape = model["smape"].as_f64().expect("number");
        assert!(smape <= 200.0, "sMAPE is on the 0-200 scale: {smape}");
    }
    let chosen = report["chosen"].as_str().expect("chosen names a model");
    let chosen_mase = models[chosen]["mase"].as_f64().expect("chosen mase");
    let seasonal_mase = models["seasonal_naive_288"]["mase"]
        .as_f64()
        .expect("seasonal naive mase");
    assert!(
        chosen_mase < seasonal_mase,
        "chosen {chosen} (MASE {chosen_mase:.3}) should beat seasonal naive ({seasonal_mase:.3})"
    );
    // The 80 % intervals are calibrated on validation residuals: on the held-out part they should cover
    // roughly their nominal share, neither a sliver nor everything.
    let coverage = models[chosen]["coverage"].as_f64().expect("coverage");
    assert!(
        (0.65..=0.95).contains(&coverage),
        "80 % intervals of {chosen} covered {coverage:.2} of held-out points"
    );
    // The loader fills the few 5-minute gaps of the trace, so the point count is at least the row count.
    let points = report["points"].as_u64().expect("points");
    let holdout = report["holdout_points"].as_u64().expect("holdout points");
    let train = report["train_points"].as_u64().expect("train points");
    assert!(points >= 2880, "{points} points");
    assert_eq!(holdout, (points as f64 * 0.2).round() as u64);
    assert_eq!(train + holdout, points);
    assert_eq!(report["origins"].as_u64(), Some(holdout.div_ceil(12)));
    assert!(report["seconds"].as_f64().is_some_and(|s| s > 0.0));

    let card_path = cards.join("elb_request_count_8c0756.json");
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&card_path).expect("model card written"))
            .expect("card json");
    assert_eq!(card["chosen"].as_str(), Some(chosen));
    assert_eq!(card["training_points"].as_u64(), Some(train));
    assert_eq!(
        card["training_start"].as_str(),
        Some("2014-04-10T00:04:00Z")
    );
    assert!(card["features"]
        .as_array()
        .is_some_and(|f| f.iter().any(|n| n == "lag_1")));
}

#[test]
fn plot_writes_an_svg_of_the_series_with_forecast_and_band() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = truncated_copy(
        &nab("realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"),
        dir.path(),
        2400,
    );
    let out = dir.path().join("plot.svg");
    let output = trimtab(&[
        "forecast",
        "plot",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--season",
        "288",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    stdout_of(&output);
    let svg = std::fs::read_to_string(&out).expect("the plot file exists");
    assert!(
        svg.starts_with("<svg") || svg.contains("<svg"),
        "not an SVG"
    );
    assert!(
        svg.contains("ec2_cpu_utilization_825cc2"),
        "the title names the series"
    );
    assert!(
        svg.contains("actual") && svg.contains("forecast") && svg.contains("interval"),
        "legend"
    );
    assert!(
        svg.matches("<polyline").count() >= 10,
        "actual and forecast lines are drawn"
    );
    assert!(
        svg.matches("<polygon").count() >= 10,
        "interval bands are drawn"
    );
}

#[test]
fn a_bad_row_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("broken.csv");
    std::fs::write(
        &csv,
        "timestamp,value\n2014-04-10 00:04:00,1\n2014-04-10 00:09:00,abc\n",
    )
    .expect("write");
    let output = trimtab(&[
        "forecast",
        "backtest",
        "--csv",
        csv.to_str().expect("utf-8 path"),
        "--json",
    ]);
    assert!(!output.status.success(), "a broken file must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.csv line 3") && stderr.contains("expected a number"),
        "stderr: {stderr}"
    );
}

#[test]
fn the_azure_llm_trace_bins_into_arrivals_per_ten_seconds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv");
    let (series, report) =
        trimtab::metrics::series::load_event_counts(&path, 10).expect("the trace loads");
    let rows = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(report.rows, rows);
    assert_eq!(
        series.values.iter().sum::<f64>() as usize,
        rows,
        "every request lands in one bin"
    );
    assert_eq!(series.step, 10);
    assert!(
        series.values.len() > 100,
        "an hour of trace gives hundreds of bins"
    );
}
