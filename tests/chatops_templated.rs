//! Chat-ops without a model: each common question gets a deterministic answer that cites its numbers.

mod chatops_support;

use std::sync::Arc;

use chatops_support::*;
use trimtab::chatops::state::{StaticState, TimeSpan};
use trimtab::chatops::{Answer, AnswerSource, Chatops, ChatopsConfig};

fn chatops(state: StaticState) -> Chatops {
    let config = ChatopsConfig {
        sensitive_fields: vec!["customer_email".into()],
        ..ChatopsConfig::default()
    };
    Chatops::new(config, Arc::new(state)).expect("chatops without a model builds")
}

async fn ask(state: StaticState, question: &str) -> Answer {
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        chatops(state).ask(question),
    )
    .await
    .expect("a templated answer takes no time; likely deadlocked")
    .expect("templated answer");
    assert_eq!(answer.source, AnswerSource::Templated);
    assert!(answer.llm_failure.is_none());
    answer
}

/// The citation for `mark`, which must exist and be used in the text.
fn cited<'a>(answer: &'a Answer, mark: &str) -> &'a trimtab::chatops::Citation {
    assert!(
        answer.text.contains(&format!("[{mark}")) || answer.text.contains(&format!(", {mark}]")),
        "{mark} not in text:\n{}",
        answer.text
    );
    answer
        .citations
        .iter()
        .find(|c| c.reference == mark)
        .unwrap_or_else(|| panic!("no citation {mark} in {:?}", answer.citations))
}

fn assert_every_mark_resolves(answer: &Answer) {
    for mark in trimtab::chatops::answer::cited_refs(&answer.text) {
        assert!(
            answer.citations.iter().any(|c| c.reference == mark),
            "mark {mark} has no citation"
        );
        assert!(
            answer
                .tool_results
                .iter()
                .any(|r| r.items.iter().any(|i| i.reference == mark)),
            "mark {mark} is in no tool result"
        );
    }
}

#[tokio::test]
async fn troubled_pipeline_is_reported_unhealthy_with_each_problem_cited() {
    let a = ask(troubled_state(), "Is the pipeline healthy?").await;
    assert_eq!(a.understood.as_deref(), Some("is the pipeline healthy?"));
    assert!(a.text.starts_with("No, 3 problem(s)"), "{}", a.text);
    assert!(
        a.text.contains("orders has 3 dead-lettered messages [R1]"),
        "{}",
        a.text
    );
    assert!(
        a.text
            .contains("orders/eu-1 is behind: its oldest unsettled message is 96.5 s old"),
        "{}",
        a.text
    );
    assert!(a.text.contains("pvc-7"), "{}", a.text);
    assert!(
        a.text.contains("pool_free_kib:pool-hdd"),
        "untrusted forecast named:\n{}",
        a.text
    );
    // The lag figure cites the latest eu-1 window, with its time range.
    let lag = cited(&a, "R6");
    assert_eq!(lag.tool, "partition_lag");
    assert_eq!(lag.data["oldest_age_s"], 96.5);
    assert_eq!(
        lag.span,
        TimeSpan {
            from: AS_OF - time::Duration::minutes(5),
            to: AS_OF
        }
    );
    assert_eq!(cited(&a, "R1").data["dead_letter"], 3);
    let tools: Vec<&str> = a.tool_results.iter().map(|r| r.tool.as_str()).collect();
    assert_eq!(
        tools,
        ["queue_health", "partition_lag", "placement", "forecasts"]
    );
    assert_every_mark_resolves(&a);
}

#[tokio::test]
async fn healthy_pipeline_is_reported_healthy_with_its_measurements() {
    let a = ask(healthy_state(), "is the pipeline healthy?").await;
    assert!(
        a.text.starts_with("Yes, the pipeline looks healthy"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("orders: 35 active, 0 dead-lettered"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("orders/eu-1: oldest unsettled 2.4 s"),
        "{}",
        a.text
    );
    assert_every_mark_resolves(&a);
}

#[tokio::test]
async fn lag_growth_is_explained_from_throughput_concurrency_and_recent_changes() {
    let a = ask(troubled_state(), "why is lag growing on orders/eu-1?").await;
    assert_eq!(a.understood.as_deref(), Some("why is lag growing on eu-1?"));
    let t = &a.text;
    assert!(t.contains("Lag on orders/eu-1 grew: the oldest unsettled message went from 14 s [R1] to 96.5 s [R4]"), "{t}");
    assert!(
        t.contains("3100 messages settled in the last window against 5200 before"),
        "{t}"
    );
    assert!(t.contains("p99 rose from 900 ms to 4100 ms"), "{t}");
    assert!(
        t.contains("128 messages are in flight, at the limit pipeline.max_concurrency = 128"),
        "{t}"
    );
    assert!(t.contains("1840 messages are waiting in orders"), "{t}");
    assert!(
        t.contains("knob:pipeline.batch_size (500 -> 250, verified)"),
        "the batch-size cut 40 min ago is named:\n{t}"
    );
    assert!(
        !t.contains("pipeline.prefetch"),
        "the 95-minute-old change is outside the hour:\n{t}"
    );
    assert_eq!(cited(&a, "R4").data["in_flight"], 128);
    assert_every_mark_resolves(&a);
}

#[tokio::test]
async fn lag_question_naming_only_the_entity_picks_the_fastest_growing_key_first() {
    let a = ask(troubled_state(), "why is lag growing on orders?").await;
    assert_eq!(
        a.understood.as_deref(),
        Some("why is lag growing on orders?")
    );
    let eu = a
        .text
        .find("Lag on orders/eu-1 grew")
        .expect("eu-1 explained");
    let us = a
        .text
        .find("Lag on orders/us-1 is not growing")
        .expect("us-1 reported flat");
    assert!(eu < us, "{}", a.text);
}

#[tokio::test]
async fn recent_changes_list_what_and_why_within_the_hour() {
    let a = ask(
        troubled_state(),
        "What did you change in the last hour and why?",
    )
    .await;
    assert_eq!(
        a.understood.as_deref(),
        Some("what did you change in the last hour and why?")
    );
    let t = &a.text;
    assert!(
        t.starts_with(
            "2 audit record(s) in the last hour (2026-11-22T02:00:00Z..2026-11-22T03:00:00Z)"
        ),
        "{t}"
    );
    assert!(t.contains("set_knob knob:pipeline.batch_size from 500 to 250 (verified); why: Cassandra p99 write latency 310 ms above the 250 ms limit [R1]"), "{t}");
    assert!(t.contains("[R2]") && !t.contains("prefetch"), "{t}");
    assert_eq!(cited(&a, "R1").data["seq"], 41);

    let longer = ask(troubled_state(), "what changed in the last 2 hours?").await;
    assert!(
        longer
            .text
            .starts_with("3 audit record(s) in the last 2 hours"),
        "{}",
        longer.text
    );
}

#[tokio::test]
async fn pending_approvals_are_listed_and_approval_is_left_to_people() {
    let a = ask(troubled_state(), "what is waiting for my approval?").await;
    assert_eq!(
        a.understood.as_deref(),
        Some("what is waiting for my approval?")
    );
    assert!(
        a.text.starts_with("2 proposal(s) wait for your approval"),
        "{}",
        a.text
    );
    assert!(
        a.text
            .contains("p-17: knob:pipeline.max_concurrency from 128 to 192"),
        "{}",
        a.text
    );
    assert!(
        a.text
            .contains("policy: needs_approval: step above 1.25x [R1]"),
        "{}",
        a.text
    );
    assert!(a.text.contains("chat-ops cannot"), "{}", a.text);
    assert_every_mark_resolves(&a);

    let none = ask(healthy_state(), "anything pending approval?").await;
    assert_eq!(none.text.trim(), "Nothing is waiting for your approval.");
}

#[tokio::test]
async fn pool_fill_uses_a_trusted_forecast() {
    let a = ask(troubled_state(), "will pool-ssd fill up this week?").await;
    assert_eq!(
        a.understood.as_deref(),
        Some("will pool-ssd fill up this week?")
    );
    let t = &a.text;
    assert!(
        t.contains("pool-ssd: 304087040 KiB (290.0 GiB) free of 2147483648 KiB"),
        "{t}"
    );
    assert!(
        t.contains("Yes: the forecast made 2026-11-22T02:30:00Z, rolling MASE 0.85 [R11]"),
        "{t}"
    );
    // 300 GiB - 70 GiB a day first drops below zero on day 5.
    assert!(
        t.contains("on 2026-11-27T03:00:00Z, within 7 day(s)"),
        "{t}"
    );
    assert!(!t.contains("pool-hdd"), "only the named pool:\n{t}");
    assert_eq!(cited(&a, "R11").data["trusted"], true);
    assert_every_mark_resolves(&a);
}

#[tokio::test]
async fn pool_fill_falls_back_to_the_sample_trend_when_the_forecast_is_not_trusted() {
    let a = ask(troubled_state(), "will pool-hdd fill up this week?").await;
    let t = &a.text;
    assert!(
        t.contains("forecast for pool-hdd [R12] is not trusted (rolling MASE 1.60)"),
        "{t}"
    );
    // 1000 -> 980 GiB over two days: 10 GiB a day, 980 GiB left.
    assert!(
        t.contains("losing 10485760 KiB (10.0 GiB) a day; at that rate it is full in 98.0 days"),
        "{t}"
    );
    assert!(
        t.contains("No: at the current trend pool-hdd lasts beyond 7 day(s)"),
        "{t}"
    );
    assert_every_mark_resolves(&a);
}

#[tokio::test]
async fn settings_are_listed_with_secrets_masked() {
    let a = ask(troubled_state(), "what are the current settings?").await;
    assert_eq!(
        a.understood.as_deref(),
        Some("what are the current settings?")
    );
    assert!(
        a.text
            .starts_with("Mode: propose (as of 2026-11-22T03:00:00Z) [R1]"),
        "{}",
        a.text
    );
    assert!(
        a.text
            .contains("pipeline.batch_size = 250 (changed 2026-11-22T02:20:00Z) [R1]"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("cassandra.password = ***masked***"),
        "{}",
        a.text
    );
    let whole = serde_json::to_string(&a).unwrap();
    for secret in [SB_KEY, CASSANDRA_PASSWORD, CUSTOMER_EMAIL] {
        assert!(!whole.contains(secret), "{secret} leaked into the reply");
    }
}

#[tokio::test]
async fn other_questions_get_the_list_of_what_can_be_answered() {
    let a = ask(troubled_state(), "write a haiku about Cassandra").await;
    assert!(a.understood.is_none());
    assert!(
        a.text.contains("I did not recognise that question"),
        "{}",
        a.text
    );
    assert!(
        a.text.contains("will <pool> fill up this week?"),
        "{}",
        a.text
    );
    assert!(a.tool_results.is_empty() && a.citations.is_empty());
}

#[tokio::test]
async fn trimtab_ask_prints_the_templated_answer_and_its_sources() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    std::fs::write(
        &state_file,
        serde_json::to_string(&troubled_state()).unwrap(),
    )
    .unwrap();
    let run = |args: Vec<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_trimtab"));
        cmd.arg("ask")
            .arg("--state")
            .arg(&state_file)
            .args(args)
            .env_remove("TRIMTAB_LLM_URL");
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
                .await
                .expect("trimtab ask should finish; likely hung")
                .expect("run trimtab")
        }
    };
    let out = run(vec!["what is waiting for my approval?"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("Understood as: \"what is waiting for my approval?\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("Sources:\n  [R1] pending_proposals @ 2026-11-22T02:41:00Z"),
        "{stdout}"
    );

    let out = run(vec!["--json", "is the pipeline healthy?"]).await;
    let reply: Answer = serde_json::from_slice(&out.stdout).expect("--json prints an Answer");
    assert_eq!(reply.source, AnswerSource::Templated);
    assert!(!reply.tool_results.is_empty());

    let out = run(vec!["--state-typo", "x"]).await;
    assert!(!out.status.success());
}
