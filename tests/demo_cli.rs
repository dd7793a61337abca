//! The README's first command, as a user runs it: `trimtab demo` ends by itself with a summary whose counts
//! were read back from the stores; every verb explains itself in `--help`.

use std::process::Command;

fn trimtab(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run trimtab")
}

#[test]
fn the_demo_runs_to_a_summary_that_accounts_for_every_message() {
    let out = trimtab(&[
        "demo",
        "--limit",
        "600",
        "--speedup",
        "240",
        "--volume-share",
        "0.03",
        "--malformed-share",
        "0.02",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).expect("--json prints one JSON object");
    let n = |k: &str| {
        summary[k]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no {k}: {summary}"))
    };
    assert_eq!(n("sent"), 600);
    assert!(
        n("sent_malformed") > 0 && n("sent_volume_requests") > 0,
        "{summary}"
    );
    assert_eq!(
        n("rows_in_cassandra"),
        n("sent_events"),
        "one row per event, read back from the CQL server"
    );
    assert_eq!(n("left_on_queue"), 0);
    let reasons: std::collections::BTreeMap<String, u64> = summary["dead_letter_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    let malformed: u64 = reasons.get("MalformedJson").copied().unwrap_or(0)
        + reasons.get("UnknownKind").copied().unwrap_or(0);
    assert_eq!(
        malformed,
        n("sent_malformed"),
        "every malformed body dead-lettered: {reasons:?}"
    );
    let refused = reasons.get("LinstorRejected").copied().unwrap_or(0);
    assert_eq!(
        n("volume_ops_done") + refused,
        n("sent_volume_requests"),
        "{summary}"
    );
    assert_eq!(
        n("replies"),
        n("sent_volume_requests"),
        "every volume request answered"
    );
    assert!(summary["e2e_p99_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_verb_says_what_it_does() {
    let out = trimtab(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in [
        "demo",
        "sim",
        "run",
        "forecast",
        "proposals",
        "pause",
        "resume",
        "audit",
        "ask",
    ] {
        assert!(help.contains(verb), "trimtab --help lists {verb}:\n{help}");
        let out = trimtab(&[verb, "--help"]);
        assert!(out.status.success(), "{verb} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().count() >= 3,
            "{verb} --help explains itself:\n{text}"
        );
    }
}

#[test]
fn a_bad_config_file_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[pipeline]\nentities = [\"q\"]\nbatchsize = 3\n").unwrap();
    let out = trimtab(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("batchsize"),
        "{err}"
    );
}
