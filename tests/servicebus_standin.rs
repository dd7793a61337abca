//! The Service Bus stand-in driven over the wire by the real `azservicebus` client (unsecured AMQP on port 5672).

use std::time::Duration;

use azservicebus::core::BasicRetryPolicy;
use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{
    CreateMessageBatchOptions, ServiceBusClient, ServiceBusClientOptions, ServiceBusReceiveMode,
    ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusReceiverOptions,
    ServiceBusRetryOptions, SubQueue,
};
use time::OffsetDateTime;
use trimtab::sim::servicebus::{StandIn, StandInConfig, TopicSpec};

/// Upper bound for any single client call; a hang past this is a stand-in bug.
const STEP: Duration = Duration::from_secs(20);

async fn standin(config: StandInConfig) -> StandIn {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(STEP, StandIn::start_on_free_loopback(config))
        .await
        .expect("stand-in start timed out")
        .expect("stand-in starts on a free loopback address")
}

fn queues(names: &[&str]) -> StandInConfig {
    StandInConfig {
        queues: names.iter().map(|s| s.to_string()).collect(),
        ..StandInConfig::default()
    }
}

fn options() -> ServiceBusClientOptions {
    ServiceBusClientOptions {
        // Errors must surface to the test, not be retried into a timeout.
        retry_options: ServiceBusRetryOptions {
            max_retries: 0,
            try_timeout: Duration::from_secs(10),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn client(standin: &StandIn) -> ServiceBusClient<BasicRetryPolicy> {
    client_for(&standin.connection_string())
        .await
        .expect("client connects to the stand-in")
}

async fn client_for(
    connection_string: &str,
) -> Result<ServiceBusClient<BasicRetryPolicy>, azure_core::Error> {
    tokio::time::timeout(
        STEP,
        ServiceBusClient::unsecured().new_from_connection_string(connection_string, options()),
    )
    .await
    .expect("client connect timed out")
}

async fn receiver(
    client: &mut ServiceBusClient<BasicRetryPolicy>,
    queue: &str,
    sub_queue: SubQueue,
) -> ServiceBusReceiver {
    let options = ServiceBusReceiverOptions {
        sub_queue,
        ..Default::default()
    };
    tokio::time::timeout(STEP, client.create_receiver_for_queue(queue, options))
        .await
        .expect("create receiver timed out")
        .expect("receiver attaches")
}

async fn receive(receiver: &mut ServiceBusReceiver, n: u32) -> Vec<ServiceBusReceivedMessage> {
    let mut all = Vec::new();
    // A single call may return fewer than asked; keep asking until n arrive or the step times out.
    tokio::time::timeout(STEP, async {
        while all.len() < n as usize {
            let batch = receiver
                .receive_messages_with_max_wait_time(
                    n - all.len() as u32,
                    Duration::from_millis(500),
                )
                .await
                .expect("receive succeeds");
            all.extend(batch);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("expected {n} messages, got {} before timing out", all.len()));
    all
}

/// Waits until the counts of `path` satisfy `done`: `azservicebus` returns from a settlement once its disposition
/// is queued, before the stand-in has applied it.
async fn counts_reach(
    standin: &StandIn,
    path: &str,
    done: impl Fn(&trimtab::sim::servicebus::EntityCounts) -> bool,
) -> trimtab::sim::servicebus::EntityCounts {
    let mut last = None;
    let reached = tokio::time::timeout(STEP, async {
        loop {
            let counts = standin.counts(path).expect("entity exists");
            if done(&counts) {
                return counts;
            }
            last = Some(counts);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    reached.unwrap_or_else(|_| {
        panic!("counts of {path} never reached the expected state; last {last:?}")
    })
}

async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out: likely deadlocked"))
}

/// Runs a scenario on a current-thread runtime inside a thread with room for the client's deep futures (debug
/// builds overflow the default 2 MiB test-thread stack), re-raising its panic.
fn run<F, Fut>(scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let thread = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(scenario());
        })
        .expect("spawn test thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn send_batch_receive_renew_and_complete() {
    run(send_batch_receive_renew_and_complete_scenario);
}

/// The same scenario with the client and the stand-in on a multi-threaded runtime, as `trimtab demo` runs them:
/// guards the stand-in's workaround for the client's settlement race (see `SENDER_OUTCOME_DELAY`).
#[test]
fn send_batch_receive_renew_and_complete_on_a_multi_threaded_runtime() {
    let thread = std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(32 << 20)
                .enable_all()
                .build()
                .expect("test runtime");
            runtime.block_on(async {
                tokio::spawn(send_batch_receive_renew_and_complete_scenario()).await
            })
        })
        .expect("spawn test thread");
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn send_batch_receive_renew_and_complete_scenario() {
    let standin = standin(StandInConfig {
        lock_duration: Duration::from_secs(5),
        ..queues(&["orders"])
    })
    .await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("orders", Default::default()),
    )
    .await
    .expect("sender attaches");
    step("send", sender.send_message("single"))
        .await
        .expect("single send is accepted");
    let mut batch = sender
        .create_message_batch(CreateMessageBatchOptions::default())
        .expect("batch");
    for body in ["b1", "b2", "b3"] {
        batch
            .try_add_message(body)
            .expect("a small message fits the batch");
    }
    step("send batch", sender.send_message_batch(batch))
        .await
        .expect("batch send is accepted");
    assert_eq!(
        standin.counts("orders").expect("queue exists").active,
        4,
        "the batch was unpacked into 3 messages"
    );

    let before = OffsetDateTime::now_utc();
    let mut receiver = receiver(&mut client, "orders", SubQueue::None).await;
    let mut messages = receive(&mut receiver, 4).await;
    let bodies: Vec<&[u8]> = messages
        .iter()
        .map(|m| m.body().expect("data body"))
        .collect();
    assert_eq!(bodies, [&b"single"[..], b"b1", b"b2", b"b3"]);
    let sequences: Vec<i64> = messages.iter().map(|m| m.sequence_number()).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    let mut tokens: Vec<_> = messages
        .iter()
        .map(|m| *m.lock_token().as_inner())
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 4, "each delivery has its own lock token");
    assert!(tokens.iter().all(|t| *t != [0u8; 16]));
    for m in &messages {
        let enqueued = m.enqueued_time();
        assert!(
            (before - enqueued).whole_seconds().abs() < 10,
            "enqueued time {enqueued} is close to now"
        );
        assert!(m.locked_until().expect("locked until") > OffsetDateTime::now_utc());
        assert_eq!(m.delivery_count(), Some(1), "first delivery");
    }
    assert_eq!(standin.counts("orders").unwrap().locked, 4);

    let peeked = step("peek", receiver.peek_messages(10, Some(3)))
        .await
        .expect("peek-message succeeds");
    let peeked: Vec<(i64, Vec<u8>)> = peeked
        .iter()
        .map(|m| (m.sequence_number(), m.body().expect("data body").to_vec()))
        .collect();
    assert_eq!(
        peeked,
        [(3, b"b2".to_vec()), (4, b"b3".to_vec())],
        "peek reads from the sequence number on, locked or not"
    );
    assert_eq!(
        standin.counts("orders").unwrap().locked,
        4,
        "peek takes no locks"
    );

    let first_until = messages[0].locked_until().unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    step("renew", receiver.renew_message_lock(&mut messages[0]))
        .await
        .expect("renew-lock succeeds");
    let renewed = messages[0].locked_until().unwrap();
    assert!(
        renewed > first_until,
        "locked-until moved from {first_until} to {renewed}"
    );

    for m in &messages {
        step("complete", receiver.complete_message(m))
            .await
            .expect("complete succeeds");
    }
    counts_reach(&standin, "orders", |c| {
        (c.active, c.locked, c.dead_letter) == (0, 0, 0)
    })
    .await;
    step("dispose receiver", receiver.dispose())
        .await
        .expect("dispose");
    step("dispose sender", sender.dispose())
        .await
        .expect("dispose");
    step("dispose client", client.dispose())
        .await
        .expect("dispose");
    standin.shutdown().await;
}

#[test]
fn abandon_redelivers_dead_letter_reaches_the_dlq_and_defer_holds_back() {
    run(abandon_redelivers_dead_letter_reaches_the_dlq_and_defer_holds_back_scenario);
}

async fn abandon_redelivers_dead_letter_reaches_the_dlq_and_defer_holds_back_scenario() {
    let standin = standin(queues(&["work"])).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("work", Default::default()),
    )
    .await
    .unwrap();
    step("send", sender.send_messages(["retry-me", "poison"]))
        .await
        .unwrap();
    let mut receiver = receiver(&mut client, "work", SubQueue::None).await;
    let first = receive(&mut receiver, 2).await;
    let (retry, poison) = (&first[0], &first[1]);
    step("abandon", receiver.abandon_message(retry, None))
        .await
        .expect("abandon succeeds");
    let options = DeadLetterOptions {
        dead_letter_reason: Some("BadSchema".into()),
        dead_letter_error_description: Some("field `volume` missing".into()),
        properties_to_modify: None,
    };
    step("dead-letter", receiver.dead_letter_message(poison, options))
        .await
        .expect("dead-letter succeeds");

    let again = receive(&mut receiver, 1).await;
    assert_eq!(again[0].body().unwrap(), b"retry-me");
    assert_eq!(
        again[0].sequence_number(),
        retry.sequence_number(),
        "the same message comes back"
    );
    assert_eq!(
        again[0].delivery_count(),
        Some(2),
        "abandon raised the delivery count"
    );
    assert_ne!(
        again[0].lock_token(),
        retry.lock_token(),
        "a redelivery has a new lock token"
    );
    step("complete", receiver.complete_message(&again[0]))
        .await
        .unwrap();

    counts_reach(&standin, "work", |c| (c.active, c.dead_letter) == (0, 1)).await;
    let mut dlq = self::receiver(&mut client, "work", SubQueue::DeadLetter).await;
    let dead = receive(&mut dlq, 1).await;
    assert_eq!(dead[0].body().unwrap(), b"poison");
    assert_eq!(dead[0].dead_letter_reason(), Some("BadSchema"));
    assert_eq!(
        dead[0].dead_letter_error_description(),
        Some("field `volume` missing")
    );
    step("complete from dlq", dlq.complete_message(&dead[0]))
        .await
        .expect("dead letters can be completed");
    counts_reach(&standin, "work", |c| c.dead_letter == 0).await;

    // Defer keeps the message on the entity (it still counts as active) but out of normal receives.
    step("send", sender.send_message("deferred")).await.unwrap();
    let held = receive(&mut receiver, 1).await;
    step("defer", receiver.defer_message(&held[0], None))
        .await
        .expect("defer succeeds");
    counts_reach(&standin, "work", |c| (c.active, c.locked) == (1, 0)).await;
    let none = step(
        "receive after defer",
        receiver.receive_messages_with_max_wait_time(1, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(none.is_empty(), "a deferred message is not delivered again");
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn an_expired_lock_is_lost_and_the_message_redelivered() {
    run(an_expired_lock_is_lost_and_the_message_redelivered_scenario);
}

async fn an_expired_lock_is_lost_and_the_message_redelivered_scenario() {
    let standin = standin(StandInConfig {
        lock_duration: Duration::from_millis(800),
        ..queues(&["slow"])
    })
    .await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("slow", Default::default()),
    )
    .await
    .unwrap();
    step("send", sender.send_message("late")).await.unwrap();
    let mut receiver = receiver(&mut client, "slow", SubQueue::None).await;
    let mut first = receive(&mut receiver, 1).await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let err = step(
        "renew after expiry",
        receiver.renew_message_lock(&mut first[0]),
    )
    .await
    .expect_err("the lock has expired");
    assert!(
        format!("{err:?}").to_lowercase().contains("lock"),
        "error should say the lock was lost: {err:?}"
    );
    // azservicebus does not wait for the outcome of a settlement, so a late complete returns Ok on the client; the
    // stand-in answers it with message-lock-lost and the message stays on the queue.
    let _ = step("late complete", receiver.complete_message(&first[0])).await;
    let mut again = receive(&mut receiver, 1).await;
    assert_eq!(
        again[0].sequence_number(),
        first[0].sequence_number(),
        "the late complete did not remove the message"
    );
    assert_eq!(again[0].delivery_count(), Some(2));

    // The lock-loss fault has the same effect without waiting.
    standin.faults().expire_locks_now();
    let err = step(
        "renew after forced expiry",
        receiver.renew_message_lock(&mut again[0]),
    )
    .await
    .expect_err("lock is gone");
    assert!(
        format!("{err:?}").to_lowercase().contains("lock"),
        "{err:?}"
    );
    let third = receive(&mut receiver, 1).await;
    assert_eq!(third[0].delivery_count(), Some(3));
    step("complete", receiver.complete_message(&third[0]))
        .await
        .expect("a fresh lock completes");
    counts_reach(&standin, "slow", |c| c.active == 0).await;
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn reaching_the_max_delivery_count_dead_letters_the_message() {
    run(reaching_the_max_delivery_count_dead_letters_the_message_scenario);
}

async fn reaching_the_max_delivery_count_dead_letters_the_message_scenario() {
    let standin = standin(StandInConfig {
        max_delivery_count: 3,
        ..queues(&["flaky"])
    })
    .await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("flaky", Default::default()),
    )
    .await
    .unwrap();
    step("send", sender.send_message("doomed")).await.unwrap();
    let mut receiver = receiver(&mut client, "flaky", SubQueue::None).await;
    for attempt in 1..=3u32 {
        let m = receive(&mut receiver, 1).await;
        assert_eq!(m[0].delivery_count(), Some(attempt));
        step("abandon", receiver.abandon_message(&m[0], None))
            .await
            .unwrap();
    }
    counts_reach(&standin, "flaky", |c| c.dead_letter == 1).await;
    let none = step(
        "receive",
        receiver.receive_messages_with_max_wait_time(1, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(
        none.is_empty(),
        "the message must not be delivered a fourth time"
    );
    let dead = standin.peek_dead_letters("flaky");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, b"doomed");
    assert_eq!(dead[0].1.as_deref(), Some("MaxDeliveryCountExceeded"));
    let mut dlq = self::receiver(&mut client, "flaky", SubQueue::DeadLetter).await;
    let from_dlq = receive(&mut dlq, 1).await;
    assert_eq!(
        from_dlq[0].dead_letter_reason(),
        Some("MaxDeliveryCountExceeded")
    );
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn throttled_sends_and_receive_links_fail_with_server_busy_until_spent_or_cleared() {
    run(throttled_sends_and_receive_links_fail_with_server_busy_until_spent_or_cleared_scenario);
}

async fn throttled_sends_and_receive_links_fail_with_server_busy_until_spent_or_cleared_scenario() {
    let standin = standin(queues(&["busy"])).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("busy", Default::default()),
    )
    .await
    .unwrap();
    standin.faults().throttle_sends(None);
    let err = step("throttled send", sender.send_message("x"))
        .await
        .expect_err("a throttled send fails");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("server-busy") || text.contains("serverbusy") || text.contains("throttled"),
        "{text}"
    );
    assert_eq!(
        standin.counts("busy").unwrap().active,
        0,
        "a refused message is not stored"
    );
    standin.faults().clear_throttling();
    step("send", sender.send_message("y"))
        .await
        .expect("sends work again once throttling is cleared");
    assert_eq!(standin.counts("busy").unwrap().active, 1);

    standin.faults().throttle_receives(Some(1));
    let err = step(
        "throttled receiver",
        client.create_receiver_for_queue("busy", Default::default()),
    )
    .await
    .expect_err("a throttled receive link is detached");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("server-busy") || text.contains("throttled"),
        "{text}"
    );
    let mut receiver = receiver(&mut client, "busy", SubQueue::None).await;
    let got = receive(&mut receiver, 1).await;
    assert_eq!(
        got[0].body().unwrap(),
        b"y",
        "the throttle was spent on one link; the next one receives"
    );
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn a_topic_copies_each_message_to_every_subscription() {
    run(a_topic_copies_each_message_to_every_subscription_scenario);
}

async fn a_topic_copies_each_message_to_every_subscription_scenario() {
    let config = StandInConfig {
        topics: vec![TopicSpec {
            name: "events".into(),
            subscriptions: vec!["audit".into(), "writer".into()],
        }],
        ..StandInConfig::default()
    };
    let standin = standin(config).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("events", Default::default()),
    )
    .await
    .unwrap();
    step("send", sender.send_messages(["e1", "e2"]))
        .await
        .unwrap();
    for sub in ["audit", "writer"] {
        assert_eq!(
            standin
                .counts(&format!("events/Subscriptions/{sub}"))
                .unwrap()
                .active,
            2
        );
        let mut receiver = step(
            "create receiver",
            client.create_receiver_for_subscription("events", sub, Default::default()),
        )
        .await
        .expect("subscription receiver attaches");
        let got = receive(&mut receiver, 2).await;
        assert_eq!(
            got.iter()
                .map(|m| m.body().unwrap().to_vec())
                .collect::<Vec<_>>(),
            [b"e1".to_vec(), b"e2".to_vec()]
        );
        for m in &got {
            step("complete", receiver.complete_message(m))
                .await
                .unwrap();
        }
        step("dispose", receiver.dispose()).await.unwrap();
    }
    counts_reach(&standin, "events/Subscriptions/audit", |c| c.active == 0).await;
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn unknown_entities_wrong_keys_and_oversized_messages_fail_clearly() {
    run(unknown_entities_wrong_keys_and_oversized_messages_fail_clearly_scenario);
}

async fn unknown_entities_wrong_keys_and_oversized_messages_fail_clearly_scenario() {
    let standin = standin(StandInConfig {
        max_message_size: 1_024,
        ..queues(&["small"])
    })
    .await;
    let mut client = client(&standin).await;
    let err = step(
        "sender to a missing queue",
        client.create_sender("no-such-queue", Default::default()),
    )
    .await
    .expect_err("attaching to a missing entity fails");
    assert!(
        format!("{err:?}").contains("no-such-queue"),
        "the error names the entity: {err:?}"
    );

    let mut sender = step(
        "create sender",
        client.create_sender("small", Default::default()),
    )
    .await
    .unwrap();
    let err = step("oversized send", sender.send_message(vec![7u8; 4_000]))
        .await
        .expect_err("a message over the limit fails");
    let text = format!("{err:?}");
    assert!(
        text.contains("MessageSizeExceeded")
            && text.contains("1024 bytes")
            && text.contains("size 40"),
        "{text}"
    );
    assert_eq!(standin.counts("small").unwrap().active, 0);
    step("dispose", client.dispose()).await.unwrap();

    let wrong = standin
        .connection_string()
        .replace(&StandInConfig::default().key, "d3Jvbmcta2V5");
    let outcome = async {
        let mut client = client_for(&wrong).await?;
        step(
            "sender with a wrong key",
            client.create_sender("small", Default::default()),
        )
        .await
        .map(|_| ())
    }
    .await;
    let err = outcome.expect_err("a wrong key must be refused");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("unauthorized") || text.contains("401"),
        "{text}"
    );
    standin.shutdown().await;
}

#[test]
fn receive_and_delete_removes_the_message_and_a_forced_detach_requeues_locks() {
    run(receive_and_delete_removes_the_message_and_a_forced_detach_requeues_locks_scenario);
}

async fn receive_and_delete_removes_the_message_and_a_forced_detach_requeues_locks_scenario() {
    let standin = standin(queues(&["fast"])).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("fast", Default::default()),
    )
    .await
    .unwrap();
    step("send", sender.send_messages(["gone", "kept"]))
        .await
        .unwrap();
    let options = ServiceBusReceiverOptions {
        receive_mode: ServiceBusReceiveMode::ReceiveAndDelete,
        ..Default::default()
    };
    let mut deleting = step(
        "create receiver",
        client.create_receiver_for_queue("fast", options),
    )
    .await
    .unwrap();
    let got = step(
        "receive",
        deleting.receive_messages_with_max_wait_time(1, Duration::from_secs(2)),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body().unwrap(), b"gone");
    step("dispose", deleting.dispose()).await.unwrap();
    assert_eq!(
        standin.counts("fast").unwrap().active,
        1,
        "receive-and-delete took the message for good"
    );

    let mut receiver = receiver(&mut client, "fast", SubQueue::None).await;
    let held = receive(&mut receiver, 1).await;
    assert_eq!(standin.counts("fast").unwrap().locked, 1);
    standin.faults().detach_all_links();
    // The forced detach requeues what the link held, so nothing accepted is lost.
    step("requeue after detach", async {
        while standin.counts("fast").unwrap().locked != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(standin.counts("fast").unwrap().active, 1);
    drop(held);

    let mut receiver = self::receiver(&mut client, "fast", SubQueue::None).await;
    let again = receive(&mut receiver, 1).await;
    assert_eq!(
        again[0].delivery_count(),
        Some(2),
        "the detached delivery counted"
    );
    step("complete", receiver.complete_message(&again[0]))
        .await
        .expect("complete succeeds");
    counts_reach(&standin, "fast", |c| c.active == 0).await;
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn a_message_larger_than_a_frame_crosses_in_several_transfers_both_ways() {
    run(a_message_larger_than_a_frame_crosses_in_several_transfers_both_ways_scenario);
}

async fn a_message_larger_than_a_frame_crosses_in_several_transfers_both_ways_scenario() {
    let standin = standin(queues(&["bulk"])).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("bulk", Default::default()),
    )
    .await
    .unwrap();
    // 200 KB: over the 64 KiB frame size both sides announce, under the 256 KiB message limit.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    step("send", sender.send_message(body.clone()))
        .await
        .expect("a multi-frame message is accepted");
    let mut receiver = receiver(&mut client, "bulk", SubQueue::None).await;
    let got = receive(&mut receiver, 1).await;
    assert_eq!(got[0].body().unwrap().len(), body.len());
    assert!(
        got[0].body().unwrap() == body.as_slice(),
        "the body survives reassembly"
    );
    step("complete", receiver.complete_message(&got[0]))
        .await
        .unwrap();
    counts_reach(&standin, "bulk", |c| c.active == 0).await;
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}

#[test]
fn scheduled_messages_wait_for_their_enqueue_time_and_can_be_cancelled() {
    run(scheduled_messages_wait_for_their_enqueue_time_and_can_be_cancelled_scenario);
}

async fn scheduled_messages_wait_for_their_enqueue_time_and_can_be_cancelled_scenario() {
    let standin = standin(queues(&["later"])).await;
    let mut client = client(&standin).await;
    let mut sender = step(
        "create sender",
        client.create_sender("later", Default::default()),
    )
    .await
    .unwrap();
    let mut message = azservicebus::ServiceBusMessage::new("wake up");
    message.set_scheduled_enqueue_time(OffsetDateTime::now_utc() + Duration::from_millis(1_500));
    step("send", sender.send_message(message)).await.unwrap();
    let counts = standin.counts("later").unwrap();
    assert_eq!((counts.scheduled, counts.active), (1, 0));
    let mut receiver = receiver(&mut client, "later", SubQueue::None).await;
    let early = step(
        "early receive",
        receiver.receive_messages_with_max_wait_time(1, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(
        early.is_empty(),
        "a scheduled message is not delivered early"
    );
    let got = receive(&mut receiver, 1).await;
    assert_eq!(got[0].body().unwrap(), b"wake up");
    assert_eq!(standin.counts("later").unwrap().scheduled, 0);

    // The management operations: schedule two, cancel one, and only the other arrives.
    let at = OffsetDateTime::now_utc() + Duration::from_millis(800);
    let keep = step("schedule", sender.schedule_message("kept", at))
        .await
        .expect("schedule-message");
    let drop = step("schedule", sender.schedule_message("cancelled", at))
        .await
        .expect("schedule-message");
    assert!(
        drop > keep && keep > got[0].sequence_number(),
        "sequence numbers rise: {keep}, {drop}"
    );
    assert_eq!(standin.counts("later").unwrap().scheduled, 2);
    step("cancel", sender.cancel_scheduled_message(drop))
        .await
        .expect("cancel-scheduled-message");
    assert_eq!(standin.counts("later").unwrap().scheduled, 1);
    let kept = receive(&mut receiver, 1).await;
    assert_eq!(
        (kept[0].body().unwrap(), kept[0].sequence_number()),
        (&b"kept"[..], keep)
    );
    let none = step(
        "receive after cancel",
        receiver.receive_messages_with_max_wait_time(1, Duration::from_millis(1_000)),
    )
    .await
    .unwrap();
    assert!(none.is_empty(), "the cancelled message never arrives");
    step("dispose", client.dispose()).await.unwrap();
    standin.shutdown().await;
}
