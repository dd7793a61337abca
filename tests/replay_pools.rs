//! The LINSTOR fixture's pools fill as a replayed trace's volume requests create volumes: over the wire, the
//! pipeline creates the volumes, the controller's storage-pool view loses exactly the space the new replicas
//! take, and once `pool-ssd` is full further creates are dead-lettered with LINSTOR's reason.

use std::time::Duration;

use trimtab::app::App;
use trimtab::replay::generate::{self, Expect, ReplayOptions};
use trimtab::replay::trace;
use trimtab::servicebus::{Entity, MessageSender};
use trimtab::sim::cluster::{SimCluster, SimOptions};

const QUEUE: &str = "events";
const REPLIES: &str = "volume-replies";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_fill_as_the_trace_creates_volumes() {
    let sim = SimCluster::start(SimOptions::local(&[QUEUE, REPLIES]))
        .await
        .expect("stand-ins start");
    let config = sim.config(vec![Entity::Queue(QUEUE.into())]);
    let app = tokio::time::timeout(Duration::from_secs(30), App::build(&config))
        .await
        .expect("app build timed out")
        .expect("app builds");
    let reader = app.linstor_reader.clone();
    let stats = app.stats();
    let sender = app
        .servicebus
        .sender(&Entity::Queue(QUEUE.into()))
        .await
        .expect("sender");

    let ssd_used = |pools: &[trimtab::linstor::types::StoragePool]| -> (u64, u64) {
        pools
            .iter()
            .filter(|p| p.storage_pool_name == "pool-ssd")
            .fold((0, 0), |(used, total), p| {
                let t = p.total_capacity.unwrap_or(0);
                (used + t - p.free_capacity.unwrap_or(0), total + t)
            })
    };
    let before = reader.storage_pools().await.expect("pools");
    let (used_before, total) = ssd_used(&before);
    assert_eq!(used_before, 0, "the fixture starts empty");

    // Every request a volume request, all sent at once: about 70 % creates of 1 to 8 GiB with two replicas.
    let arrivals =
        trace::parse_azure_llm("code", trace::AZURE_CODE_TRACE).expect("shipped trace parses");
    let planned = generate::plan(
        &arrivals,
        &ReplayOptions {
            speedup: 1e9,
            volume_share: 1.0,
            malformed_share: 0.0,
            limit: Some(120),
            reply_to: REPLIES.into(),
            ..ReplayOptions::default()
        },
    );
    assert!(planned.iter().all(|p| p.expect != Expect::Row));
    let token = tokio_util::sync::CancellationToken::new();
    let pipeline = tokio::spawn(app.run(token.clone()));
    let messages: Vec<_> = planned.iter().map(|p| p.message.clone()).collect();
    tokio::time::timeout(Duration::from_secs(30), sender.send_batch(messages))
        .await
        .expect("send timed out")
        .expect("send");
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let s = stats.snapshot();
            if s.completed + s.dead_lettered >= planned.len() as u64 && s.in_flight == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("volume requests not settled: {:?}", stats.snapshot()));

    let after = reader.storage_pools().await.expect("pools");
    let (used_after, _) = ssd_used(&after);
    let placed: u64 = reader
        .resources(&[])
        .await
        .expect("resources")
        .iter()
        .flat_map(|r| r.volumes.iter())
        .filter(|v| v.storage_pool_name == "pool-ssd")
        .map(|v| v.usable_size_kib.or(v.allocated_size_kib).unwrap_or(0))
        .sum();
    assert!(placed > 0, "volumes were created");
    assert_eq!(
        used_after, placed,
        "the pools report exactly the space of the replicas placed in them"
    );
    assert!(
        used_after * 10 >= total * 7,
        "the ssd pools filled up: {used_after} of {total} KiB used"
    );
    for p in &after {
        assert!(
            p.free_capacity <= p.total_capacity,
            "{}/{}: free {:?} of {:?}",
            p.node_name,
            p.storage_pool_name,
            p.free_capacity,
            p.total_capacity
        );
    }
    let dead = sim.servicebus.peek_dead_letters(QUEUE);
    let full: Vec<_> = dead
        .iter()
        .filter_map(|(_, _, description)| description.as_deref())
        .filter(|d| d.contains("pool-ssd") && !d.contains("pool-missing"))
        .collect();
    assert!(
        !full.is_empty(),
        "creates that no longer fit were refused by LINSTOR: {:?}",
        dead.iter().map(|d| d.2.clone()).collect::<Vec<_>>()
    );

    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), pipeline)
        .await
        .expect("pipeline stops");
    drop(reader);
    sim.shutdown().await;
}
