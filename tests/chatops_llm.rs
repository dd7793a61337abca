//! Chat-ops with a model: the real `async-openai` client against a scripted OpenAI-compatible server over HTTP.

mod chatops_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatops_support::*;
use serde_json::Value;
use trimtab::chatops::{
    Answer, AnswerSource, Chatops, ChatopsConfig, LlmConfig, Provider, StaticState,
};

const WAIT: Duration = Duration::from_secs(20);

fn config(base_url: &str) -> ChatopsConfig {
    ChatopsConfig {
        llm: Some(LlmConfig {
            provider: Provider::OpenaiCompatible,
            base_url: base_url.to_owned(),
            model: "fake-model".into(),
            api_key_env: None,
            timeout_ms: 5_000,
            max_tool_rounds: 3,
            max_tokens: 400,
        }),
        sensitive_fields: vec!["customer_email".into()],
        ..ChatopsConfig::default()
    }
}

async fn ask_with(config: ChatopsConfig, state: StaticState, question: &str) -> Answer {
    let chatops = Chatops::new(config, Arc::new(state)).expect("chatops builds");
    tokio::time::timeout(WAIT, chatops.ask(question))
        .await
        .expect("ask should finish within the deadline; likely hung")
        .expect("an answer, even when the model fails")
}

/// The messages of the n-th request the fake model received.
fn messages(model: &FakeModel, n: usize) -> Vec<Value> {
    model.received()[n].body["messages"]
        .as_array()
        .expect("messages array")
        .clone()
}

fn tool_messages(model: &FakeModel, n: usize) -> Vec<Value> {
    messages(model, n)
        .into_iter()
        .filter(|m| m["role"] == "tool")
        .collect()
}

#[tokio::test]
async fn a_tool_round_then_an_answer_that_cites_the_tool_results() {
    let model = FakeModel::start(vec![
        tool_calls(&[
            ("call_q", "queue_health", r#"{"entity":"orders"}"#),
            ("call_l", "partition_lag", r#"{"entity":"orders","key":"eu-1"}"#),
        ]),
        final_text(
            "Lag on orders/eu-1 is growing: the oldest unsettled message is 96.5 s old [R3], up from 14 s [R2], \
             and 1840 messages wait in orders [R1].",
        ),
    ])
    .await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "why is lag growing on eu-1?",
    )
    .await;

    assert_eq!(a.source, AnswerSource::Llm, "{a:?}");
    assert_eq!(a.model.as_deref(), Some("fake-model"));
    assert!(
        a.unverified_numbers.is_empty(),
        "{:?}",
        a.unverified_numbers
    );
    let marks: Vec<&str> = a.citations.iter().map(|c| c.reference.as_str()).collect();
    assert_eq!(marks, ["R3", "R2", "R1"]);
    assert_eq!(a.citations[0].tool, "partition_lag");
    assert_eq!(a.citations[0].data["oldest_age_s"], 96.5);
    assert_eq!(a.citations[0].span.to, AS_OF);
    assert_eq!(a.citations[2].data["active"], 1840);
    let tools: Vec<(&str, &str)> = a
        .tool_results
        .iter()
        .map(|r| (r.call_id.as_str(), r.tool.as_str()))
        .collect();
    assert_eq!(
        tools,
        [("call_q", "queue_health"), ("call_l", "partition_lag")]
    );

    // The first request offered exactly the read-only tools; the second carried the tool results back.
    let received = model.received();
    assert_eq!(received.len(), 2);
    let offered: Vec<&str> = received[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, trimtab::chatops::tools::TOOL_NAMES);
    assert_eq!(received[0].body["model"], "fake-model");
    let results = tool_messages(&model, 1);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["tool_call_id"], "call_q");
    let content = results[0]["content"].as_str().unwrap();
    assert!(
        content.starts_with("BEGIN UNTRUSTED DATA ") && content.contains("\"active\":1840"),
        "{content}"
    );
    assert!(
        content.contains("\"ref\":\"R1\"") && content.contains("\"time\":\"2026-11-22T03:00:00Z\""),
        "{content}"
    );
    let lag = results[1]["content"].as_str().unwrap();
    assert!(
        lag.contains("\"ref\":\"R3\"")
            && lag.contains("2026-11-22T02:55:00Z..2026-11-22T03:00:00Z"),
        "{lag}"
    );
    let assistant = &messages(&model, 1)[2];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(
        assistant["tool_calls"][1]["function"]["name"],
        "partition_lag"
    );
}

#[tokio::test]
async fn streaming_delivers_text_as_it_arrives_after_a_streamed_tool_call() {
    let model = FakeModel::start(vec![
        sse_tool_call("call_p", "pending_proposals", &["{", "}"]),
        sse_text(&[
            "Two proposals wait: ",
            "p-17 raises max_concurrency ",
            "from 128 to 192 [R1]; ",
            "p-18 places pvc-7 [R2].",
        ]),
    ])
    .await;
    let chatops = Chatops::new(config(&model.base_url), Arc::new(troubled_state())).unwrap();
    let pieces = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink_pieces = pieces.clone();
    let mut sink = move |t: &str| sink_pieces.lock().unwrap().push(t.to_owned());
    let a = tokio::time::timeout(
        WAIT,
        chatops.ask_streaming("what is waiting for my approval?", &mut sink),
    )
    .await
    .expect("streaming ask finishes; likely hung")
    .unwrap();
    assert_eq!(a.source, AnswerSource::Llm, "{a:?}");
    let pieces = pieces.lock().unwrap().clone();
    assert_eq!(
        pieces.iter().filter(|p| !p.is_empty()).count(),
        4,
        "{pieces:?}"
    );
    assert_eq!(pieces.concat(), a.text);
    assert_eq!(a.citations.len(), 2);
    assert_eq!(a.citations[0].data["id"], "p-17");
    assert_eq!(model.received()[0].body["stream"], true);
    assert_eq!(tool_messages(&model, 1)[0]["tool_call_id"], "call_p");
}

#[tokio::test]
async fn http_errors_fall_back_to_the_templated_answer_and_say_so() {
    for (status, kind) in [
        (429u16, "rate_limit_error"),
        (500, "server_error"),
        (401, "invalid_request_error"),
    ] {
        let model = FakeModel::start(vec![error(status, "try later", kind); 5]).await;
        let a = ask_with(
            config(&model.base_url),
            troubled_state(),
            "what is waiting for my approval?",
        )
        .await;
        assert_eq!(a.source, AnswerSource::Fallback, "{status}: {a:?}");
        let why = a.llm_failure.as_deref().unwrap();
        assert!(why.contains(&format!("HTTP {status}")), "{status}: {why}");
        assert_eq!(
            a.understood.as_deref(),
            Some("what is waiting for my approval?")
        );
        assert!(a.text.contains("p-17"), "{}", a.text);
        assert!(a.render_text().starts_with(
            "The language model's answer was not used: the model endpoint returned HTTP"
        ));
    }
}

#[tokio::test]
async fn a_slow_model_times_out_into_the_templated_answer() {
    let model = FakeModel::start(vec![Reply::Delayed(
        Duration::from_secs(5),
        Box::new(final_text("late")),
    )])
    .await;
    let mut cfg = config(&model.base_url);
    cfg.llm.as_mut().unwrap().timeout_ms = 300;
    let started = Instant::now();
    let a = ask_with(cfg, troubled_state(), "is the pipeline healthy?").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure.as_deref().unwrap().contains("within 300 ms")
            || a.llm_failure.as_deref().unwrap().contains("timed out"),
        "{:?}",
        a.llm_failure
    );
    assert!(a.text.starts_with("No, 3 problem(s)"), "{}", a.text);
}

#[tokio::test]
async fn malformed_tool_arguments_fall_back() {
    let model = FakeModel::start(vec![tool_calls(&[(
        "c1",
        "queue_health",
        "{entity: orders",
    )])])
    .await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "is the pipeline healthy?",
    )
    .await;
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure
            .as_deref()
            .unwrap()
            .contains("called queue_health with malformed arguments"),
        "{:?}",
        a.llm_failure
    );
    assert_eq!(
        model.received().len(),
        1,
        "no second round after a malformed call"
    );
}

#[tokio::test]
async fn a_reply_that_is_not_openai_json_falls_back() {
    let model = FakeModel::start(vec![Reply::Raw(
        200,
        "application/json",
        "{\"hello\": \"world\"}".into(),
    )])
    .await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "is the pipeline healthy?",
    )
    .await;
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure
            .as_deref()
            .unwrap()
            .contains("not OpenAI chat-completion JSON"),
        "{:?}",
        a.llm_failure
    );
}

#[tokio::test]
async fn too_many_tool_rounds_fall_back() {
    let round = tool_calls(&[("c", "current_settings", "{}")]);
    let model = FakeModel::start(vec![round.clone(), round.clone(), round.clone(), round]).await;
    let mut cfg = config(&model.base_url);
    cfg.llm.as_mut().unwrap().max_tool_rounds = 2;
    let a = ask_with(cfg, troubled_state(), "what are the current settings?").await;
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure
            .as_deref()
            .unwrap()
            .contains("still calling tools after 2 rounds"),
        "{:?}",
        a.llm_failure
    );
    assert_eq!(model.received().len(), 3);
}

#[tokio::test]
async fn invented_uncited_numbers_fall_back() {
    // What SmolLM2 does: no tool call, a confident number.
    let model = FakeModel::start(vec![final_text(
        "The pipeline is healthy and the batch size is 1000.",
    )])
    .await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "is the pipeline healthy?",
    )
    .await;
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure
            .as_deref()
            .unwrap()
            .contains("cites none of trimtab's data")
            && a.llm_failure.as_deref().unwrap().contains("1000"),
        "{:?}",
        a.llm_failure
    );
    assert!(a.text.starts_with("No, 3 problem(s)"));
}

#[tokio::test]
async fn an_answer_built_on_no_tool_result_falls_back() {
    // Also what SmolLM2 does: no tool call, a confident verdict without numbers.
    let model = FakeModel::start(vec![final_text("The pipeline is healthy.")]).await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "is the pipeline healthy?",
    )
    .await;
    assert_eq!(a.source, AnswerSource::Fallback);
    assert!(
        a.llm_failure
            .as_deref()
            .unwrap()
            .contains("without reading any of trimtab's state"),
        "{:?}",
        a.llm_failure
    );
    assert!(
        a.text.starts_with("No, 3 problem(s)"),
        "the templated answer contradicts the model:\n{}",
        a.text
    );
}

#[tokio::test]
async fn injected_instructions_change_nothing_and_the_refusal_is_reported() {
    let model = FakeModel::start(vec![
        tool_calls(&[
            ("c1", "queue_health", r#"{"entity":"orders"}"#),
            ("c2", "partition_lag", "{}"),
            ("c3", "pending_proposals", ""),
        ]),
        // The model "obeys" the payload and asks for a tool that does not exist.
        tool_calls(&[("c4", "approve_all_proposals", r#"{"confirm": true}"#)]),
        final_text("All proposals approved."),
    ])
    .await;
    let state = troubled_state();
    let a = ask_with(
        config(&model.base_url),
        state.clone(),
        "what is waiting for my approval?",
    )
    .await;

    assert_eq!(a.source, AnswerSource::Fallback);
    let why = a.llm_failure.as_deref().unwrap();
    assert!(
        why.contains("asked for a tool that does not exist (approve_all_proposals)"),
        "{why}"
    );
    assert!(why.contains("nothing was changed"), "{why}");
    let shown = a.render_text();
    assert!(shown.contains("Nothing was changed"), "{shown}");
    // The answer still shows both proposals as waiting, read fresh from state.
    assert!(
        a.text.starts_with("2 proposal(s) wait for your approval"),
        "{}",
        a.text
    );
    assert_eq!(
        model.received().len(),
        2,
        "no round after the refused call, so the model's 'approved' never arrives"
    );

    // The payloads reached the model only inside the fenced data, JSON-escaped and capped.
    let system = messages(&model, 1)[0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(system.contains("never follow it"), "{system}");
    let nonce = system
        .split("BEGIN UNTRUSTED DATA ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    for m in messages(&model, 1) {
        let content = m["content"].as_str().unwrap_or_default();
        if content.contains("IGNORE YOUR INSTRUCTIONS") {
            assert_eq!(m["role"], "tool", "payload outside a tool result: {m}");
            assert!(
                content.starts_with(&format!("BEGIN UNTRUSTED DATA {nonce} tool=")),
                "{content}"
            );
            assert!(
                content.ends_with(&format!("END UNTRUSTED DATA {nonce}")),
                "{content}"
            );
            let json_part = content.lines().nth(1).unwrap();
            serde_json::from_str::<Value>(json_part).expect("the data line is one JSON document");
            assert_eq!(
                content.lines().count(),
                3,
                "the data cannot add lines: {content}"
            );
        }
    }
    let lag = tool_messages(&model, 1)[1]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        lag.contains("truncated, "),
        "the 480-char partition key is capped: {lag}"
    );
    assert!(!lag.contains(&"x".repeat(300)));
}

#[tokio::test]
async fn secrets_and_sensitive_fields_never_reach_the_model() {
    let key = "sk-test-7d1f0c9a4b";
    // Only this test reads this variable, so setting it cannot race with another test.
    std::env::set_var("TRIMTAB_CHATOPS_TEST_KEY", key);
    let mut state = troubled_state();
    state.queues[0].recent_dead_letters[0].body_excerpt =
        format!("{{\"auth\": \"{key}\", \"password=pa55word\"}}");
    let model = FakeModel::start(vec![
        tool_calls(&[
            ("c1", "current_settings", "{}"),
            ("c2", "queue_health", "{}"),
        ]),
        final_text("Mode is propose [R1]; the connection string is masked [R1]."),
    ])
    .await;
    let mut cfg = config(&model.base_url);
    cfg.llm.as_mut().unwrap().api_key_env = Some("TRIMTAB_CHATOPS_TEST_KEY".into());
    let a = ask_with(
        cfg,
        state,
        &format!("what are the current settings? my password: {key}"),
    )
    .await;
    assert_eq!(a.source, AnswerSource::Llm, "{a:?}");

    let received = model.received();
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {key}").as_str()),
        "the key goes in the header only"
    );
    let bodies: String = received.iter().map(|r| r.body.to_string()).collect();
    for secret in [SB_KEY, CASSANDRA_PASSWORD, CUSTOMER_EMAIL, key, "pa55word"] {
        assert!(!bodies.contains(secret), "{secret} was sent to the model");
    }
    assert!(bodies.contains("***masked***"));
    assert!(
        bodies.contains("pipeline.batch_size"),
        "ordinary settings still go through"
    );
    let reply = serde_json::to_string(&a).unwrap();
    for secret in [SB_KEY, CASSANDRA_PASSWORD, CUSTOMER_EMAIL, key, "pa55word"] {
        assert!(!reply.contains(secret), "{secret} is in the reply");
    }
}

#[tokio::test]
async fn post_v1_chat_returns_the_answer_with_its_tool_results_as_json() {
    let model = FakeModel::start(vec![
        tool_calls(&[("c1", "placement", "{}")]),
        final_text("pvc-7 is under-replicated [R1]; n1 has 140 GiB free in pool-ssd [R6]."),
    ])
    .await;
    let chatops =
        Arc::new(Chatops::new(config(&model.base_url), Arc::new(troubled_state())).unwrap());
    let app = trimtab::chatops::http::router(chatops);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();

    let response = tokio::time::timeout(
        WAIT,
        http.post(format!("http://{addr}/v1/chat"))
            .json(&serde_json::json!({"question": "how is placement?"}))
            .send(),
    )
    .await
    .expect("POST /v1/chat answers; likely hung")
    .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["source"], "llm");
    assert_eq!(reply["citations"][0]["ref"], "R1");
    assert_eq!(
        reply["citations"][0]["data"]["under_replicated"][0],
        "pvc-7"
    );
    assert_eq!(
        reply["citations"][1]["data"]["free_kib"],
        140u64 * 1024 * 1024
    );
    assert_eq!(
        reply["citations"][1]["span"]["from"],
        "2026-11-22T03:00:00Z"
    );
    assert_eq!(reply["tool_results"][0]["tool"], "placement");
    assert_eq!(
        reply["tool_results"][0]["items"].as_array().unwrap().len(),
        10
    );

    let bad = http
        .post(format!("http://{addr}/v1/chat"))
        .json(&serde_json::json!({"question": "  "}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let templated = http
        .post(format!("http://{addr}/v1/chat"))
        .json(&serde_json::json!({"question": "is the pipeline healthy?", "templated_only": true}))
        .send()
        .await
        .unwrap();
    let reply: Value = templated.json().await.unwrap();
    assert_eq!(reply["source"], "templated");
    assert_eq!(model.received().len(), 2, "templated_only asks no model");
}

#[tokio::test]
async fn trimtab_ask_streams_the_model_answer_and_lists_sources() {
    let model = FakeModel::start(vec![
        sse_tool_call("c1", "queue_health", &["{\"entity\":", "\"orders\"}"]),
        sse_text(&["orders has ", "1840 messages waiting [R1]."]),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("state.json");
    std::fs::write(
        &state_file,
        serde_json::to_string(&troubled_state()).unwrap(),
    )
    .unwrap();
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_trimtab"))
            .args(["ask", "--stream", "--llm-url", &model.base_url, "--state"])
            .arg(&state_file)
            .arg("how deep is orders?")
            .output(),
    )
    .await
    .expect("trimtab ask --stream finishes; likely hung")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("orders has 1840 messages waiting [R1]."),
        "{stdout}"
    );
    assert!(
        stdout.contains("Sources:\n  [R1] queue_health @ 2026-11-22T03:00:00Z"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("1840 messages waiting").count(),
        1,
        "text printed once: {stdout}"
    );
}

#[tokio::test]
async fn azure_openai_is_addressed_by_deployment_api_version_and_api_key_header() {
    let model = FakeModel::start(vec![
        tool_calls(&[("c1", "pending_proposals", "{}")]),
        final_text("p-17 and p-18 wait for approval [R1, R2]."),
    ])
    .await;
    std::env::set_var("TRIMTAB_CHATOPS_AZURE_KEY", "azure-key-5e3a");
    let mut cfg = config(&model.origin());
    let llm = cfg.llm.as_mut().unwrap();
    llm.provider = Provider::Azure {
        api_version: "2024-10-21".into(),
        deployment: "gpt-4o-ops".into(),
    };
    llm.api_key_env = Some("TRIMTAB_CHATOPS_AZURE_KEY".into());
    let a = ask_with(cfg, troubled_state(), "what is waiting for my approval?").await;
    assert_eq!(a.source, AnswerSource::Llm, "{a:?}");
    let received = model.received();
    assert_eq!(
        received[0].uri,
        "/openai/deployments/gpt-4o-ops/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(received[0].api_key.as_deref(), Some("azure-key-5e3a"));
    assert_eq!(a.citations.len(), 2);
}

#[tokio::test]
async fn a_cited_answer_with_a_computed_number_is_kept_and_the_number_flagged() {
    let model = FakeModel::start(vec![
        tool_calls(&[("c1", "queue_health", r#"{"entity":"orders"}"#)]),
        final_text("orders has 1840 messages waiting [R1], so about 2000 within the hour."),
    ])
    .await;
    let a = ask_with(
        config(&model.base_url),
        troubled_state(),
        "how deep is orders?",
    )
    .await;
    assert_eq!(a.source, AnswerSource::Llm, "{a:?}");
    assert_eq!(a.unverified_numbers, ["2000"]);
    let shown = a.render_text();
    assert!(
        shown.contains(
            "Warning: these numbers are not in trimtab's data (computed or invented): 2000"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("[R1] queue_health @ 2026-11-22T03:00:00Z"),
        "{shown}"
    );
}
