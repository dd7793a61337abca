//! trimtab's Service Bus client (`AzureServiceBus` over `azservicebus`) against the in-process stand-in, over AMQP
//! and the management HTTP endpoint: every verb, lock renewal, redelivery, throttling and bad input.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use time::OffsetDateTime;
use trimtab::servicebus::azure::{AzureReceiver, AzureSender, AzureServiceBus, ServiceBusConfig};
use trimtab::servicebus::depth::{DepthCollector, DepthError, ManagementAuth};
use trimtab::servicebus::renewal::{LockRenewer, RenewalConfig};
use trimtab::servicebus::sas::SecretString;
use trimtab::servicebus::{
    Entity, MessageReceiver, MessageSender, OutgoingMessage, ServiceBusError,
};
use trimtab::sim::servicebus::{EntityCounts, StandIn, StandInConfig, TopicSpec};

/// Upper bound for any single step; a step that takes longer is a hang.
const STEP: Duration = Duration::from_secs(20);

async fn step<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}, likely deadlocked"))
}

fn queues(names: &[&str]) -> StandInConfig {
    StandInConfig {
        queues: names.iter().map(|s| s.to_string()).collect(),
        ..StandInConfig::default()
    }
}

async fn standin(config: StandInConfig) -> StandIn {
    // `RUST_LOG=debug cargo test --test servicebus_client` shows both sides of the wire.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    step("stand-in start", StandIn::start_on_free_loopback(config))
        .await
        .expect("stand-in starts on a free loopback address")
}

fn config_for(standin: &StandIn, connection_string: String) -> ServiceBusConfig {
    let mut config = ServiceBusConfig::from_connection_string(SecretString::new(connection_string));
    config.tls = false;
    config.management_base_url = Some(standin.management_base_url());
    // Errors must reach the test, not be retried into a timeout.
    config.retry.max_retries = 0;
    config.retry.try_timeout_ms = 10_000;
    config
}

async fn connect(standin: &StandIn) -> AzureServiceBus {
    let config = config_for(standin, standin.connection_string());
    step("connect", AzureServiceBus::connect(&config))
        .await
        .expect("trimtab connects to the stand-in")
}

fn queue(name: &str) -> Entity {
    Entity::Queue(name.to_string())
}

fn text(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: Bytes::from(body.to_string()),
        ..OutgoingMessage::default()
    }
}

async fn sender(bus: &AzureServiceBus, entity: &Entity) -> AzureSender {
    step("open sender", bus.sender(entity))
        .await
        .expect("sender opens")
}

async fn receiver(bus: &AzureServiceBus, entity: &Entity) -> AzureReceiver {
    step("open receiver", bus.receiver(entity))
        .await
        .expect("receiver opens")
}

/// Receives until `n` messages arrived (or fails the test after 10 s).
async fn receive_n(
    receiver: &AzureReceiver,
    n: usize,
) -> Vec<trimtab::servicebus::ReceivedMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived within 10 s",
            out.len()
        );
        let got = step(
            "receive",
            receiver.receive((n - out.len()) as u32, Duration::from_secs(2)),
        )
        .await
        .expect("receive succeeds");
        out.extend(got);
    }
    out
}

/// Settlement is a one-way disposition frame, so the broker applies it a moment after the call returns:
/// poll the stand-in's counts until `done` holds (or fail after 5 s).
async fn counts_when(
    standin: &StandIn,
    path: &str,
    done: impl Fn(&EntityCounts) -> bool,
) -> EntityCounts {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = standin.counts(path).expect("entity exists");
        if done(&counts) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{path} counts never reached the expected state: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(m: &trimtab::servicebus::ReceivedMessage) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

#[tokio::test]
async fn send_and_send_batch_then_receive_and_complete_keep_every_field() {
    let standin = standin(queues(&["orders"])).await;
    let bus = connect(&standin).await;
    let orders = queue("orders");
    let sender = sender(&bus, &orders).await;
    let mut props = BTreeMap::new();
    props.insert("kind".to_string(), "volume.create".to_string());
    let before = OffsetDateTime::now_utc() - Duration::from_secs(1);
    step(
        "send",
        sender.send(OutgoingMessage {
            message_id: Some("m-1".into()),
            body: Bytes::from_static(b"{\"v\":1}"),
            partition_key: Some("tenant-7".into()),
            content_type: Some("application/json".into()),
            subject: Some("create".into()),
            correlation_id: Some("c-1".into()),
            application_properties: props,
            ..OutgoingMessage::default()
        }),
    )
    .await
    .expect("single send is accepted");
    let batches = step(
        "send batch",
        sender.send_batch(vec![text("b1"), text("b2"), text("b3")]),
    )
    .await
    .expect("batch send is accepted");
    assert_eq!(batches, 1, "three small messages fit one batch");
    assert_eq!(standin.counts("orders").expect("queue exists").active, 4);

    let receiver = receiver(&bus, &orders).await;
    let got = receive_n(&receiver, 4).await;
    let bodies: Vec<String> = got.iter().map(body).collect();
    assert_eq!(bodies, ["{\"v\":1}", "b1", "b2", "b3"]);
    let first = &got[0];
    assert_eq!(first.message_id.as_deref(), Some("m-1"));
    assert_eq!(first.partition_key.as_deref(), Some("tenant-7"));
    assert_eq!(first.lag_key(), "tenant-7");
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.subject.as_deref(), Some("create"));
    assert_eq!(first.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(
        first.application_properties.get("kind").map(String::as_str),
        Some("volume.create")
    );
    assert_eq!(first.delivery_count, 1);
    assert_eq!(first.entity, orders);
    assert!(first.enqueued_at >= before && first.enqueued_at <= OffsetDateTime::now_utc());
    assert!(first.locked_until > OffsetDateTime::now_utc());
    let sequences: Vec<i64> = got.iter().map(|m| m.sequence_number).collect();
    assert!(
        sequences.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers increase: {sequences:?}"
    );

    for m in &got {
        step("complete", receiver.complete(m))
            .await
            .expect("complete succeeds");
    }
    counts_when(&standin, "orders", |c| c.active == 0 && c.locked == 0).await;
    let again = step(
        "receive after complete",
        receiver.receive(10, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(
        again.is_empty(),
        "nothing comes back after complete: {again:?}"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn send_batch_packs_by_the_link_maximum_into_several_batches() {
    let standin = standin(StandInConfig {
        max_message_size: 4_096,
        ..queues(&["small"])
    })
    .await;
    let bus = connect(&standin).await;
    let small = queue("small");
    let sender = sender(&bus, &small).await;
    let messages: Vec<_> = (0..20)
        .map(|i| text(&format!("{i:04}{}", "x".repeat(996))))
        .collect();
    let batches = step("send batch", sender.send_batch(messages))
        .await
        .expect("batch send succeeds");
    // 20 messages of 1000 body bytes are ~20 KB: at least 5 batches of 4 KB, never one per message.
    assert!(
        (5..20).contains(&batches),
        "expected between 5 and 19 batches, got {batches}"
    );
    assert_eq!(standin.counts("small").unwrap().active, 20);
    let receiver = receiver(&bus, &small).await;
    let got = receive_n(&receiver, 20).await;
    let order: Vec<String> = got.iter().map(|m| body(m)[..4].to_string()).collect();
    let expected: Vec<String> = (0..20).map(|i| format!("{i:04}")).collect();
    assert_eq!(order, expected, "batches keep the order of the messages");
    standin.shutdown().await;
}

#[tokio::test]
async fn many_small_messages_never_overflow_the_link_maximum() {
    // Per-message envelope overhead is what a size-by-sum batcher forgets; small messages make it count.
    let standin = standin(StandInConfig {
        max_message_size: 16_384,
        ..queues(&["tiny"])
    })
    .await;
    let bus = connect(&standin).await;
    let sender = sender(&bus, &queue("tiny")).await;
    let messages: Vec<_> = (0..1_000).map(|i| text(&format!("{i:064}"))).collect();
    let batches = step("send 1000 small messages", sender.send_batch(messages))
        .await
        .expect("no batch exceeds the link maximum");
    assert!(
        batches >= 5,
        "1000 messages of ~100 bytes need at least 5 batches of 16 KB, got {batches}"
    );
    assert_eq!(standin.counts("tiny").unwrap().active, 1_000);
    standin.shutdown().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_naming_its_size_and_nothing_is_sent() {
    let standin = standin(StandInConfig {
        max_message_size: 4_096,
        ..queues(&["small"])
    })
    .await;
    let bus = connect(&standin).await;
    let sender = sender(&bus, &queue("small")).await;
    let err = step("send oversized", sender.send(text(&"y".repeat(10_000))))
        .await
        .expect_err("a 10 KB message exceeds a 4 KB link");
    match &err {
        ServiceBusError::MessageTooLarge { size, max } => {
            assert!(
                *size > 10_000,
                "size {size} should count the whole encoded message"
            );
            assert_eq!(*max, 4_096);
        }
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("4096"), "{err}");
    assert!(!err.is_retriable());
    let err = step(
        "send batch with an oversized message",
        sender.send_batch(vec![text("fits"), text(&"y".repeat(10_000))]),
    )
    .await
    .expect_err("the oversized message fails the batch");
    assert!(
        matches!(err, ServiceBusError::MessageTooLarge { .. }),
        "{err:?}"
    );
    assert_eq!(
        standin.counts("small").unwrap().active,
        0,
        "nothing was sent before the refusal"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn receive_returns_empty_after_max_wait_and_early_when_messages_arrive() {
    let standin = standin(queues(&["idle"])).await;
    let bus = connect(&standin).await;
    let idle = queue("idle");
    let receiver = receiver(&bus, &idle).await;
    let started = Instant::now();
    let got = step(
        "receive on empty queue",
        receiver.receive(10, Duration::from_millis(700)),
    )
    .await
    .unwrap();
    let waited = started.elapsed();
    assert!(got.is_empty());
    assert!(
        waited >= Duration::from_millis(650) && waited < Duration::from_secs(3),
        "waited {waited:?} for a 700 ms max wait"
    );
    let sender = sender(&bus, &idle).await;
    step(
        "send 3",
        sender.send_batch(vec![text("1"), text("2"), text("3")]),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let got = step(
        "receive up to 100",
        receiver.receive(100, Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(!got.is_empty() && got.len() <= 3);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a receive of up to 100 must return once some arrived, not wait 10 s: {:?}",
        started.elapsed()
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn abandon_redelivers_and_dead_letter_keeps_reason_and_description() {
    let standin = standin(queues(&["work"])).await;
    let bus = connect(&standin).await;
    let work = queue("work");
    let sender = sender(&bus, &work).await;
    step("send", sender.send(text("retry-me"))).await.unwrap();
    let receiver = receiver(&bus, &work).await;
    let first = receive_n(&receiver, 1).await.remove(0);
    step("abandon", receiver.abandon(&first))
        .await
        .expect("abandon succeeds");
    let second = receive_n(&receiver, 1).await.remove(0);
    assert_eq!(second.sequence_number, first.sequence_number);
    assert_eq!(
        second.delivery_count, 2,
        "abandon raises the delivery count"
    );
    assert_ne!(
        second.lock_token, first.lock_token,
        "a redelivery has a new lock token"
    );
    step(
        "dead-letter",
        receiver.dead_letter(&second, "SchemaInvalid", "field `volume` is missing"),
    )
    .await
    .expect("dead-letter succeeds");
    let counts = counts_when(&standin, "work", |c| c.dead_letter == 1).await;
    assert_eq!(counts.active, 0);
    let dead = standin.peek_dead_letters("work");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, b"retry-me");
    assert_eq!(dead[0].1.as_deref(), Some("SchemaInvalid"));
    assert_eq!(dead[0].2.as_deref(), Some("field `volume` is missing"));
    // Settling twice is a lost lock, not a silent success.
    let err = step("settle again", receiver.complete(&second))
        .await
        .expect_err("already settled");
    assert!(
        matches!(err, ServiceBusError::LockLost { lock_token } if lock_token == second.lock_token),
        "{err:?}"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn renew_lock_moves_locked_until_forward() {
    let standin = standin(StandInConfig {
        lock_duration: Duration::from_secs(3),
        ..queues(&["renew"])
    })
    .await;
    let bus = connect(&standin).await;
    let renew = queue("renew");
    step("send", sender(&bus, &renew).await.send(text("r")))
        .await
        .unwrap();
    let receiver = receiver(&bus, &renew).await;
    let m = receive_n(&receiver, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let renewed = step("renew", receiver.renew_lock(&m))
        .await
        .expect("renew succeeds");
    assert!(
        renewed > m.locked_until + Duration::from_millis(500),
        "renewal should push the lock ~1 s further: {} -> {renewed}",
        m.locked_until
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    step(
        "complete after the original lock would have expired",
        receiver.complete(&m),
    )
    .await
    .expect("complete within the renewed lock succeeds");
    counts_when(&standin, "renew", |c| c.active == 0).await;
    standin.shutdown().await;
}

#[tokio::test]
async fn lock_renewal_keeps_a_message_through_slow_work_without_redelivery() {
    let standin = standin(StandInConfig {
        lock_duration: Duration::from_secs(2),
        ..queues(&["slow"])
    })
    .await;
    let bus = connect(&standin).await;
    let slow = queue("slow");
    step("send", sender(&bus, &slow).await.send(text("slow-work")))
        .await
        .unwrap();
    let receiver: Arc<dyn MessageReceiver> = Arc::new(receiver(&bus, &slow).await);
    let m = step("receive", receiver.receive(1, Duration::from_secs(5)))
        .await
        .unwrap()
        .remove(0);
    let renewer = LockRenewer::new(receiver.clone(), RenewalConfig::default());
    let guard = renewer.track(&m);
    // Six seconds of work: three lock durations.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !guard.is_lost(),
        "the lock was lost during renewed work: {:?}",
        guard.state()
    );
    step("complete", receiver.complete(&m))
        .await
        .expect("complete after renewed slow work succeeds");
    drop(guard);
    counts_when(&standin, "slow", |c| c.active == 0 && c.locked == 0).await;
    let ghost = step(
        "receive after complete",
        receiver.receive(1, Duration::from_secs(3)),
    )
    .await
    .unwrap();
    assert!(
        ghost.is_empty(),
        "the completed message came back as a ghost: {ghost:?}"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn without_renewal_the_lock_expires_the_message_is_redelivered_and_complete_reports_lock_lost(
) {
    let standin = standin(StandInConfig {
        lock_duration: Duration::from_millis(1_000),
        ..queues(&["expiring"])
    })
    .await;
    let bus = connect(&standin).await;
    let expiring = queue("expiring");
    step("send", sender(&bus, &expiring).await.send(text("e")))
        .await
        .unwrap();
    let receiver = receiver(&bus, &expiring).await;
    let first = receive_n(&receiver, 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let err = step("late complete", receiver.complete(&first))
        .await
        .expect_err("the lock expired");
    assert!(matches!(err, ServiceBusError::LockLost { .. }), "{err:?}");
    assert!(!err.is_retriable());
    let again = receive_n(&receiver, 1).await.remove(0);
    assert_eq!(again.sequence_number, first.sequence_number);
    assert_eq!(again.delivery_count, 2);
    step("complete redelivery", receiver.complete(&again))
        .await
        .unwrap();
    standin.shutdown().await;
}

#[tokio::test]
async fn a_renewal_after_the_broker_dropped_the_lock_reports_lock_lost() {
    let standin = standin(queues(&["forced"])).await;
    let bus = connect(&standin).await;
    let forced = queue("forced");
    step("send", sender(&bus, &forced).await.send(text("f")))
        .await
        .unwrap();
    let receiver = receiver(&bus, &forced).await;
    let m = receive_n(&receiver, 1).await.remove(0);
    standin.faults().expire_locks_now();
    let err = step("renew a dropped lock", receiver.renew_lock(&m))
        .await
        .expect_err("lock is gone");
    assert!(
        matches!(err, ServiceBusError::LockLost { lock_token } if lock_token == m.lock_token),
        "{err:?}"
    );
    standin.shutdown().await;
}

#[tokio::test]
async fn the_broker_dead_letters_after_the_max_delivery_count() {
    let standin = standin(StandInConfig {
        max_delivery_count: 3,
        ..queues(&["poison"])
    })
    .await;
    let bus = connect(&standin).await;
    let poison = queue("poison");
    step("send", sender(&bus, &poison).await.send(text("poison")))
        .await
        .unwrap();
    let receiver = receiver(&bus, &poison).await;
    for delivery in 1..=3 {
        let m = receive_n(&receiver, 1).await.remove(0);
        assert_eq!(m.delivery_count, delivery);
        step("abandon", receiver.abandon(&m)).await.unwrap();
    }
    let none = step(
        "receive after the limit",
        receiver.receive(1, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert!(
        none.is_empty(),
        "the poison message must not come back: {none:?}"
    );
    let dead = standin.peek_dead_letters("poison");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.as_deref(), Some("MaxDeliveryCountExceeded"));
    standin.shutdown().await;
}

#[tokio::test]
async fn throttling_is_server_busy_and_retriable() {
    let standin = standin(queues(&["busy"])).await;
    let bus = connect(&standin).await;
    let busy = queue("busy");
    let sender = sender(&bus, &busy).await;
    standin.faults().throttle_sends(Some(1));
    let err = step("throttled send", sender.send(text("t")))
        .await
        .expect_err("the send is throttled");
    assert!(matches!(err, ServiceBusError::ServerBusy { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert_eq!(err.backoff_hint(), Some(Duration::from_secs(10)));
    step("send after throttling", sender.send(text("t")))
        .await
        .expect("the next send goes through");
    assert_eq!(standin.counts("busy").unwrap().active, 1);

    standin.faults().throttle_receives(Some(1));
    let err = step("throttled receiver attach", bus.receiver(&busy))
        .await
        .expect_err("the receive attach is throttled");
    assert!(matches!(err, ServiceBusError::ServerBusy { .. }), "{err:?}");
    assert!(err.is_retriable());
    let receiver = step("receiver after throttling", bus.receiver(&busy))
        .await
        .expect("the next attach goes through");
    assert_eq!(receive_n(&receiver, 1).await.len(), 1);

    standin.shutdown().await;
}

#[tokio::test]
async fn a_topic_subscription_receives_what_was_sent_to_its_topic() {
    let standin = standin(StandInConfig {
        topics: vec![TopicSpec {
            name: "events".into(),
            subscriptions: vec!["audit".into(), "billing".into()],
        }],
        ..StandInConfig::default()
    })
    .await;
    let bus = connect(&standin).await;
    let audit = Entity::Subscription {
        topic: "events".into(),
        subscription: "audit".into(),
    };
    let billing = Entity::Subscription {
        topic: "events".into(),
        subscription: "billing".into(),
    };
    let sender = sender(&bus, &audit).await;
    step(
        "send batch to topic",
        sender.send_batch(vec![text("e1"), text("e2")]),
    )
    .await
    .unwrap();
    for sub in [&audit, &billing] {
        let receiver = receiver(&bus, sub).await;
        let got = receive_n(&receiver, 2).await;
        assert_eq!(
            got.iter().map(body).collect::<Vec<_>>(),
            ["e1", "e2"],
            "{sub}"
        );
        assert_eq!(&got[0].entity, sub);
        for m in &got {
            step("complete", receiver.complete(m)).await.unwrap();
        }
    }
    counts_when(&standin, "events/Subscriptions/audit", |c| c.active == 0).await;
    counts_when(&standin, "events/Subscriptions/billing", |c| c.active == 0).await;
    standin.shutdown().await;
}

#[tokio::test]
async fn an_unknown_entity_is_named_in_the_error() {
    let standin = standin(queues(&["real"])).await;
    let bus = connect(&standin).await;
    let err = step("sender to unknown", bus.sender(&queue("no-such-queue")))
        .await
        .expect_err("unknown queue");
    assert!(
        matches!(&err, ServiceBusError::EntityNotFound { entity } if entity == "no-such-queue"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "entity no-such-queue not found");
    let err = step(
        "receiver for unknown",
        bus.receiver(&queue("no-such-queue")),
    )
    .await
    .expect_err("unknown queue");
    assert!(
        matches!(&err, ServiceBusError::EntityNotFound { entity } if entity == "no-such-queue"),
        "{err:?}"
    );
    // The refused attaches must not leave the connection unusable for real entities.
    let real = queue("real");
    step(
        "send to a real queue",
        sender(&bus, &real).await.send(text("still works")),
    )
    .await
    .expect("the connection recovers after a refused attach");
    let got = receive_n(&receiver(&bus, &real).await, 1).await;
    assert_eq!(body(&got[0]), "still works");
    standin.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_no_secret_reaches_errors_or_debug_output() {
    let standin = standin(queues(&["guarded"])).await;
    let wrong_key = "d3Jvbmcta2V5LXRoYXQtbXVzdC1uZXZlci1sZWFr";
    let wrong = standin
        .connection_string()
        .split(';')
        .map(|part| {
            if part.starts_with("SharedAccessKey=") {
                format!("SharedAccessKey={wrong_key}")
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(";");
    let config = config_for(&standin, wrong.clone());
    let mut seen = format!("{config:?}");
    let err = match step(
        "connect with a wrong key",
        AzureServiceBus::connect(&config),
    )
    .await
    {
        Ok(bus) => {
            seen.push_str(&format!("{bus:?}"));
            step("sender with a wrong key", bus.sender(&queue("guarded")))
                .await
                .expect_err("a wrong key is refused")
        }
        Err(e) => e,
    };
    assert!(
        matches!(&err, ServiceBusError::Unauthorized { entity, .. } if entity == "guarded"),
        "{err:?}"
    );
    seen.push_str(&format!("{err} {err:?}"));
    assert!(!seen.contains(wrong_key), "the key leaked: {seen}");
    assert!(
        !seen.contains(&wrong),
        "the connection string leaked: {seen}"
    );

    // The right key's connection string never shows either.
    let bus = connect(&standin).await;
    let good_key = standin
        .connection_string()
        .split("SharedAccessKey=")
        .nth(1)
        .unwrap()
        .to_string();
    let shown = format!(
        "{bus:?} {:?}",
        config_for(&standin, standin.connection_string())
    );
    assert!(!shown.contains(&good_key), "the key leaked: {shown}");
    standin.shutdown().await;
}

#[tokio::test]
async fn a_pending_receive_does_not_hold_up_settlement() {
    let standin = standin(queues(&["fair"])).await;
    let bus = connect(&standin).await;
    let fair = queue("fair");
    step("send", sender(&bus, &fair).await.send(text("one")))
        .await
        .unwrap();
    let receiver = Arc::new(receiver(&bus, &fair).await);
    let m = receive_n(&receiver, 1).await.remove(0);
    // A long receive on the now-empty queue runs while the message is completed.
    let waiting = {
        let receiver = receiver.clone();
        tokio::spawn(async move { receiver.receive(10, Duration::from_secs(4)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    step("complete during a receive", receiver.complete(&m))
        .await
        .unwrap();
    let latency = started.elapsed();
    println!("complete latency during a pending 4 s receive: {latency:?}");
    assert!(
        latency < Duration::from_secs(1),
        "complete waited {latency:?} behind a receive"
    );
    let rest = step("pending receive", waiting).await.unwrap().unwrap();
    assert!(rest.is_empty());
    standin.shutdown().await;
}

#[tokio::test]
async fn a_prefetch_change_reopens_the_link_and_earlier_messages_still_settle() {
    let standin = standin(queues(&["knob"])).await;
    let bus = connect(&standin).await;
    let knob = queue("knob");
    let sender = sender(&bus, &knob).await;
    step(
        "send 6",
        sender.send_batch((0..6).map(|i| text(&i.to_string())).collect()),
    )
    .await
    .unwrap();
    let receiver = receiver(&bus, &knob).await;
    let early = receive_n(&receiver, 2).await;
    receiver.set_prefetch(3);
    assert_eq!(receiver.prefetch(), 3);
    // With prefetch the link's credit is refilled as messages are settled, so settle as they come.
    let mut later = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while later.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} of 4 arrived on the new link",
            later.len()
        );
        for m in step("receive", receiver.receive(4, Duration::from_secs(1)))
            .await
            .unwrap()
        {
            step("complete", receiver.complete(&m))
                .await
                .expect("messages of the new link settle");
            later.push(m);
        }
    }
    for m in &early {
        step("complete", receiver.complete(m))
            .await
            .expect("messages of the old link still settle");
    }
    counts_when(&standin, "knob", |c| c.active == 0 && c.locked == 0).await;
    let mut bodies: Vec<String> = early.iter().chain(later.iter()).map(body).collect();
    bodies.sort();
    assert_eq!(bodies, ["0", "1", "2", "3", "4", "5"]);
    standin.shutdown().await;
}

#[tokio::test]
async fn the_depth_collector_reads_counts_from_the_management_endpoint() {
    let standin = standin(StandInConfig {
        topics: vec![TopicSpec {
            name: "events".into(),
            subscriptions: vec!["audit".into()],
        }],
        ..queues(&["depth"])
    })
    .await;
    let bus = connect(&standin).await;
    let depth_q = queue("depth");
    let sender_q = sender(&bus, &depth_q).await;
    step(
        "send 3",
        sender_q.send_batch(vec![text("a"), text("b"), text("c")]),
    )
    .await
    .unwrap();
    let receiver = receiver(&bus, &depth_q).await;
    let m = receive_n(&receiver, 1).await.remove(0);
    step("dead-letter", receiver.dead_letter(&m, "Bad", "bad"))
        .await
        .unwrap();
    counts_when(&standin, "depth", |c| c.dead_letter == 1).await;

    let collector = bus.depth_collector().expect("collector builds");
    let reading = step("depth", collector.depth(&depth_q))
        .await
        .expect("depth reads");
    assert_eq!(reading.entity, "depth");
    assert_eq!((reading.counts.active, reading.counts.dead_letter), (2, 1));

    let audit = Entity::Subscription {
        topic: "events".into(),
        subscription: "audit".into(),
    };
    step("send to topic", sender(&bus, &audit).await.send(text("x")))
        .await
        .unwrap();
    let reading = step("subscription depth", collector.depth(&audit))
        .await
        .expect("depth reads");
    assert_eq!(reading.counts.active, 1);

    let err = step("unknown entity depth", collector.depth(&queue("ghost")))
        .await
        .expect_err("unknown entity");
    assert!(
        matches!(&err, DepthError::NotFound { entity } if entity == "ghost"),
        "{err:?}"
    );

    let wrong = DepthCollector::new(
        &standin.management_base_url(),
        ManagementAuth::Sas {
            key_name: "RootManageSharedAccessKey".into(),
            key: SecretString::new("bm90LXRoZS1rZXk="),
        },
        Duration::from_secs(5),
    )
    .unwrap();
    let err = step("depth with a wrong key", wrong.depth(&depth_q))
        .await
        .expect_err("wrong key");
    assert!(
        matches!(&err, DepthError::Unauthorized { entity, status: 401 } if entity == "depth"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("bm90LXRoZS1rZXk="));
    standin.shutdown().await;
}
