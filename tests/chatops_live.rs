//! Chat-ops without a model over a running agent on the stand-ins: each common question, with the numbers it cites
//! checked against what the stand-ins hold.

mod agent_support;

use std::sync::Arc;
use std::time::Duration;

use agent_support::*;
use trimtab::chatops::{Answer, AnswerSource, Chatops, ChatopsConfig};
use trimtab::policy::Mode;

async fn ask(chatops: &Chatops, question: &str) -> Answer {
    let answer = tokio::time::timeout(Duration::from_secs(20), chatops.ask(question))
        .await
        .expect("a templated answer over the agent's state took too long; likely deadlocked")
        .expect("templated answer");
    assert_eq!(answer.source, AnswerSource::Templated);
    assert!(
        answer.understood.is_some(),
        "question not understood: {question}\n{}",
        answer.text
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_common_questions_are_answered_from_the_running_agent_with_the_stand_ins_numbers() {
    let h = Harness::start(Options {
        mode: Mode::Recommend,
        ..Options::default()
    })
    .await;
    create_volume(
        &h.writer,
        "vol-q",
        2 * 1024 * 1024,
        "pool-ssd",
        &["n1", "n3"],
    )
    .await;
    assert!(h.sim.linstor.faults().pool_full("n1", "pool-ssd", true));
    h.send_events(300, "orders-q", "q").await;

    // Wait until the agent has drained the queue, sampled it, and recorded the move as a recommendation.
    let proposals = h.agent().proposals();
    let agent = h.agent();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let s = agent.snapshot();
            let drained = s.collected.as_ref().is_some_and(|c| {
                c.depth
                    .iter()
                    .any(|d| d.entity == QUEUE && d.counts.active == 0)
            }) && h
                .sim
                .servicebus
                .counts(QUEUE)
                .is_some_and(|c| c.active == 0);
            let lagged = s
                .lag_history
                .iter()
                .any(|l| l.keys.contains_key("orders-q"));
            let proposed = proposals.list().unwrap().iter().any(|p| p.status.is_open());
            if drained && lagged && proposed && s.steps > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("the agent never drained, sampled lag and proposed");

    let config = ChatopsConfig::default();
    let chatops = Chatops::new(config, Arc::new(h.agent().state_source()))
        .expect("chatops builds without a model");

    let health = ask(&chatops, "is the pipeline healthy?").await;
    assert!(health.text.contains("orders: 0 active"), "{}", health.text);
    assert!(!health.tool_results.is_empty());

    let lag = ask(&chatops, "why is lag growing on orders-q?").await;
    assert!(lag.text.contains("orders-q"), "{}", lag.text);

    let open = proposals
        .list()
        .unwrap()
        .into_iter()
        .find(|p| p.status.is_open())
        .unwrap();
    let approvals = ask(&chatops, "what is waiting for my approval?").await;
    assert!(
        approvals.text.contains(&open.id),
        "the open proposal {} is not listed:\n{}",
        open.id,
        approvals.text
    );

    let changes = ask(&chatops, "what did you change in the last hour and why?").await;
    // Recommend mode applied nothing; the answer must not claim a change was applied.
    assert!(
        !changes.text.to_lowercase().contains("applied:"),
        "{}",
        changes.text
    );

    let fill = ask(&chatops, "will pool-ssd fill up this week?").await;
    let free: u64 = ["n1", "n2", "n3", "n5", "n6"]
        .iter()
        .map(|n| h.sim.linstor.free_kib(n, "pool-ssd").expect("pool exists"))
        .sum();
    assert!(
        fill.text.contains(&format!("pool-ssd: {free} KiB")),
        "free space cited does not match the fake controller ({free} KiB):\n{}",
        fill.text
    );

    // The same question through the HTTP API a running `trimtab run` serves, asked by the real CLI.
    let state = trimtab::api::ApiState {
        stats: std::sync::Arc::new(trimtab::pipeline::PipelineStats::default()),
        lag: std::sync::Arc::new(trimtab::servicebus::lag::LagTracker::new(
            Duration::from_secs(60),
            100,
        )),
        knobs: h.knobs.clone(),
        agent: None,
        proposals: Some(proposals.clone()),
    };
    let router = trimtab::api::router(
        state,
        Some(trimtab::chatops::http::router(Arc::new(chatops))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let cli_url = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trimtab"))
            .args([
                "ask",
                "--no-llm",
                "--api",
                &cli_url,
                "what is waiting for my approval?",
            ])
            .output()
            .expect("run trimtab ask")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "trimtab ask --api failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&open.id),
        "the CLI's answer lists the open proposal {}:\n{text}",
        open.id
    );
    let listed: serde_json::Value = reqwest::get(format!("{url}/v1/proposals"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed.to_string().contains(&open.id),
        "GET /v1/proposals lists it too: {listed}"
    );
    server.abort();
    h.stop().await;
}
