//! Throughput of trimtab's Service Bus client against the in-process stand-in: batched send, single send (the
//! baseline), and receive + complete with and without prefetch, all measured in the same run.
//!
//! Run: `cargo bench --bench servicebus_throughput -- [messages] [body_bytes]` (defaults 5000 and 256).
//! `--profile dev` works too when a release build of the dependencies is not at hand; the figures then
//! describe an unoptimised build.

use std::time::{Duration, Instant};

use bytes::Bytes;
use trimtab::servicebus::azure::{AzureServiceBus, ServiceBusConfig};
use trimtab::servicebus::sas::SecretString;
use trimtab::servicebus::{Entity, MessageReceiver, MessageSender, OutgoingMessage};
use trimtab::sim::servicebus::{StandIn, StandInConfig};

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn messages(count: usize, body_bytes: usize) -> Vec<OutgoingMessage> {
    (0..count)
        .map(|i| OutgoingMessage {
            message_id: Some(format!("m-{i}")),
            body: Bytes::from(vec![b'x'; body_bytes]),
            ..OutgoingMessage::default()
        })
        .collect()
}

/// Receives and completes `count` messages; returns the elapsed time.
async fn drain(
    bus: &AzureServiceBus,
    entity: &Entity,
    count: usize,
    prefetch: u32,
) -> anyhow::Result<Duration> {
    let receiver = bus.receiver(entity).await?;
    receiver.set_prefetch(prefetch);
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            receiver.receive(200, Duration::from_secs(2)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("receive hung after {done} of {count} messages"))??;
        anyhow::ensure!(
            !got.is_empty(),
            "no message arrived after {done} of {count}"
        );
        for m in &got {
            receiver.complete(m).await?;
        }
        done += got.len();
    }
    Ok(started.elapsed())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let count: usize = args
        .first()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(5_000);
    let body_bytes: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(256);

    let standin = StandIn::start_on_free_loopback(StandInConfig {
        queues: vec!["batched".into(), "single".into()],
        lock_duration: Duration::from_secs(300),
        ..StandInConfig::default()
    })
    .await?;
    let mut config =
        ServiceBusConfig::from_connection_string(SecretString::new(standin.connection_string()));
    config.tls = false;
    config.management_base_url = Some(standin.management_base_url());
    config.retry.max_retries = 0;
    let bus = AzureServiceBus::connect(&config).await?;
    let batched = Entity::Queue("batched".into());
    let single = Entity::Queue("single".into());
    println!(
        "servicebus_throughput: {count} messages of {body_bytes} body bytes, stand-in on {}",
        standin.amqp_addr()
    );

    let sender = bus.sender(&batched).await?;
    let started = Instant::now();
    let batches = sender.send_batch(messages(count, body_bytes)).await?;
    let batch_send = started.elapsed();
    anyhow::ensure!(
        standin.counts("batched").map(|c| c.active) == Some(count as u64),
        "not every batched message arrived"
    );

    println!("send_batch done in {batch_send:?}");
    let sender = bus.sender(&single).await?;
    let started = Instant::now();
    for m in messages(count, body_bytes) {
        sender.send(m).await?;
    }
    let single_send = started.elapsed();
    anyhow::ensure!(
        standin.counts("single").map(|c| c.active) == Some(count as u64),
        "not every single message arrived"
    );

    println!("single sends done in {single_send:?}");
    let receive_no_prefetch = drain(&bus, &batched, count, 0).await?;
    println!("receive+complete (prefetch 0) done in {receive_no_prefetch:?}");
    let receive_prefetch = drain(&bus, &single, count, 200).await?;

    let batch_rate = rate(count, batch_send);
    let single_rate = rate(count, single_send);
    println!(
        "send_batch      : {:>10.0} msg/s ({batches} batches, {batch_send:?})",
        batch_rate
    );
    println!(
        "send (baseline) : {:>10.0} msg/s ({single_send:?})",
        single_rate
    );
    println!("batch / single  : {:>10.1}x", batch_rate / single_rate);
    let r0 = rate(count, receive_no_prefetch);
    let r200 = rate(count, receive_prefetch);
    println!(
        "receive+complete, prefetch 0   : {:>10.0} msg/s ({receive_no_prefetch:?})",
        r0
    );
    println!(
        "receive+complete, prefetch 200 : {:>10.0} msg/s ({receive_prefetch:?})",
        r200
    );
    println!("prefetch 200 / prefetch 0      : {:>10.1}x", r200 / r0);
    Ok(())
}
