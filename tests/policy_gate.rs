//! The policy gate with the shipped Rego files: allow, approval and deny with reasons; failing closed.

use std::path::{Path, PathBuf};

use trimtab::planner::{change_id, Action, Change, Reason, Settings};
use trimtab::policy::{Gate, GateContext, Mode, Verdict};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the shipped policies in a temporary directory, to break or edit.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(shipped()).expect("policies/") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name")))
            .expect("copy policy file");
    }
    dir
}

fn change(action: Action) -> Change {
    let target = action
        .resource()
        .map_or("pipeline".to_string(), |r| format!("resource:{r}"));
    Change {
        id: change_id(&target, &action),
        target,
        action,
        reason: Reason::default(),
        expected_effect: String::new(),
        uses_forecast: false,
    }
}

fn knobs(rows: u32, bytes: u64, concurrency: u32, prefetch: u32) -> Action {
    let from = Settings {
        batch_rows: 50,
        batch_bytes: 4096,
        concurrency: 4,
        prefetch: 400,
    };
    Action::SetKnobs {
        from,
        to: Settings {
            batch_rows: rows,
            batch_bytes: bytes,
            concurrency,
            prefetch,
        },
    }
}

fn mv() -> Action {
    Action::MoveReplica {
        resource: "pvc-1".into(),
        from_node: "n1".into(),
        from_pool: "data".into(),
        to_node: "n2".into(),
        to_pool: "data".into(),
    }
}

fn ctx(moves: u32, last_hour: u32) -> GateContext {
    GateContext {
        mode: Mode::Autonomous,
        concurrent_moves: moves,
        changes_last_hour: last_hour,
    }
}

#[track_caller]
fn check(gate: &Gate, action: Action, context: GateContext, verdict: Verdict, reason: &str) {
    let d = gate.evaluate(&change(action), &context);
    assert_eq!(d.verdict, verdict, "{d:?}");
    assert!(
        d.reasons.iter().any(|r| r.contains(reason)),
        "expected a reason containing {reason:?}, got {:?}",
        d.reasons
    );
}

#[test]
fn shipped_policy_allows_routine_changes_queues_moves_and_never_deletes() {
    let gate = Gate::load(&shipped());
    assert_eq!(gate.load_error(), None);
    check(
        &gate,
        knobs(60, 4096, 6, 500),
        ctx(0, 0),
        Verdict::Allow,
        "set_knobs is allowed automatically",
    );
    let add = Action::AddReplica {
        resource: "pvc-1".into(),
        node: "n3".into(),
        pool: "data".into(),
    };
    check(
        &gate,
        add,
        ctx(0, 0),
        Verdict::Allow,
        "add_replica is allowed automatically",
    );
    check(
        &gate,
        mv(),
        ctx(0, 0),
        Verdict::NeedsApproval,
        "move_replica needs a person's approval",
    );
    let pc = Action::SetPlaceCount {
        resource: "pvc-1".into(),
        from: 2,
        to: 3,
    };
    check(
        &gate,
        pc,
        ctx(0, 0),
        Verdict::NeedsApproval,
        "set_place_count needs a person's approval",
    );
    let del = Action::DeleteResource {
        resource: "pvc-1".into(),
    };
    check(
        &gate,
        del,
        ctx(0, 0),
        Verdict::Deny,
        "verb delete_resource is never done by trimtab",
    );
}

#[test]
fn blast_radius_and_bounds_deny_with_the_numbers() {
    let gate = Gate::load(&shipped());
    check(
        &gate,
        mv(),
        ctx(4, 0),
        Verdict::Deny,
        "concurrent moves 5 exceed limit 4",
    );
    check(
        &gate,
        knobs(60, 4096, 6, 500),
        ctx(0, 20),
        Verdict::Deny,
        "changes in the last hour 21 exceed limit 20",
    );
    check(
        &gate,
        knobs(60, 60000, 6, 500),
        ctx(0, 0),
        Verdict::Deny,
        "batch_bytes 60000 is above the maximum 49152",
    );
    check(
        &gate,
        knobs(60, 4096, 0, 500),
        ctx(0, 0),
        Verdict::Deny,
        "concurrency 0 is below the minimum 1",
    );
    check(
        &gate,
        knobs(50, 4096, 32, 400),
        ctx(0, 0),
        Verdict::NeedsApproval,
        "concurrency changes from 4 to 32, more than 4 times",
    );
}

#[test]
fn kill_switch_in_policy_data_denies_everything() {
    let dir = copy();
    let limits = dir.path().join("limits.json");
    let text = std::fs::read_to_string(&limits)
        .unwrap()
        .replace("\"kill_switch\": false", "\"kill_switch\": true");
    std::fs::write(&limits, text).unwrap();
    let gate = Gate::load(dir.path());
    assert!(gate.kill_switch());
    check(
        &gate,
        knobs(60, 4096, 6, 500),
        ctx(0, 0),
        Verdict::Deny,
        "kill switch is on",
    );
}

#[test]
fn a_broken_policy_file_denies_everything_and_says_why() {
    let dir = copy();
    std::fs::write(
        dir.path().join("gate.rego"),
        "package trimtab.gate\n\nallow contains msg if {\n  msg := \n",
    )
    .unwrap();
    let gate = Gate::load(dir.path());
    let error = gate
        .load_error()
        .expect("a broken policy must be reported")
        .to_string();
    assert!(
        error.contains("gate.rego"),
        "the error should name the file: {error}"
    );
    assert!(gate.grants().callable().is_empty(), "no policy, no grants");
    assert!(gate.kill_switch());
    for action in [knobs(60, 4096, 6, 500), mv()] {
        let d = gate.evaluate(&change(action), &ctx(0, 0));
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(
            d.reasons[0].contains("policy not loaded, denying everything")
                && d.reasons[0].contains("gate.rego"),
            "{d:?}"
        );
    }
}

#[test]
fn a_policy_that_does_not_evaluate_to_a_verdict_denies() {
    let dir = copy();
    let rego = std::fs::read_to_string(dir.path().join("gate.rego")).unwrap();
    let broken = rego
        .replace("default decision := \"deny\"", "default decision := 5")
        .replace("decision := \"allow\" if {", "decision := 7 if {");
    std::fs::write(dir.path().join("gate.rego"), broken).unwrap();
    let gate = Gate::load(dir.path());
    // It loads (its deny path still works), but where it would allow, it answers 7: that must deny.
    let d = gate.evaluate(&change(knobs(60, 4096, 6, 500)), &ctx(0, 0));
    assert_eq!(d.verdict, Verdict::Deny, "{d:?}");
    assert!(
        d.reasons[0].contains("policy evaluation failed") && d.reasons[0].contains("decision is 7"),
        "{d:?}"
    );
}

#[test]
fn bad_data_files_fail_validation_with_the_reason() {
    let cases = [
        (
            "grants.json",
            "\"version\": 1",
            "\"version\": 2",
            "grants.json: version is Some(2), expected 1",
        ),
        (
            "grants.json",
            "\"add_replica\"]",
            "\"add_replica\", \"format_disk\"]",
            "unknown verb format_disk",
        ),
        (
            "grants.json",
            "\"never\": [\"delete_resource\"]",
            "\"never\": [\"delete_resource\", \"add_replica\"]",
            "both granted and listed under never",
        ),
        (
            "limits.json",
            "\"kill_switch\": false",
            "\"kill_switch\": \"no\"",
            "kill_switch is",
        ),
    ];
    for (file, from, to, expected) in cases {
        let dir = copy();
        let path = dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} should contain {from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let gate = Gate::load(dir.path());
        let error = gate.load_error().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{file}: expected {expected:?} in {error:?}"
        );
    }
}

#[test]
fn a_failed_reload_keeps_the_old_policy() {
    let dir = copy();
    let mut gate = Gate::load(dir.path());
    let digest = gate.digest().expect("loaded").to_string();
    std::fs::write(dir.path().join("gate.rego"), "this is not rego").unwrap();
    let err = gate
        .reload()
        .expect_err("reload of a broken file must fail");
    assert!(err.to_string().contains("gate.rego"), "{err}");
    assert_eq!(
        gate.digest(),
        Some(digest.as_str()),
        "the old policy must stay in use"
    );
    assert_eq!(gate.load_error(), None);
    check(
        &gate,
        knobs(60, 4096, 6, 500),
        ctx(0, 0),
        Verdict::Allow,
        "allowed automatically",
    );

    // A good reload takes effect.
    let rego = std::fs::read_to_string(shipped().join("gate.rego")).unwrap();
    std::fs::write(dir.path().join("gate.rego"), rego).unwrap();
    let grants = std::fs::read_to_string(dir.path().join("grants.json"))
        .unwrap()
        .replace(
            "\"auto\": [\"set_knobs\", \"add_replica\"]",
            "\"auto\": [\"set_knobs\"]",
        )
        .replace(
            "\"approval\": [\"move_replica\"",
            "\"approval\": [\"add_replica\", \"move_replica\"",
        );
    std::fs::write(dir.path().join("grants.json"), grants).unwrap();
    gate.reload().expect("a valid policy reloads");
    let add = Action::AddReplica {
        resource: "pvc-1".into(),
        node: "n3".into(),
        pool: "data".into(),
    };
    check(
        &gate,
        add,
        ctx(0, 0),
        Verdict::NeedsApproval,
        "add_replica needs a person's approval",
    );
}
