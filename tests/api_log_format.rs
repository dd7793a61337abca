//! `--log-format json` makes every log line one JSON object with its structured fields; the default is text.

use std::process::Command;

fn demo_stderr(extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend([
        "demo",
        "--limit",
        "60",
        "--speedup",
        "600",
        "--json",
        "--api",
        "",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(&args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run trimtab demo");
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn json_logs_are_one_object_per_line_with_level_message_and_fields() {
    let stderr = demo_stderr(&["--log-format", "json"]);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {stderr}");
    let mut with_fields = 0;
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["message"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        if v.as_object().unwrap().len() > 4 {
            with_fields += 1;
        }
    }
    assert!(
        with_fields > 0,
        "no line carried structured fields: {stderr}"
    );
}

#[test]
fn logs_are_human_readable_text_by_default() {
    let stderr = demo_stderr(&[]);
    let first = stderr.lines().next().expect("some log output");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_err(),
        "the default format is text, got JSON: {first}"
    );
    assert!(first.contains("INFO"), "{first}");
}
