//! Message-triggered LINSTOR operations end to end: a message on the Service Bus stand-in creates a replicated
//! volume on the fake controller and a reply arrives on the reply queue; a request that can never succeed is
//! dead-lettered with LINSTOR's own reason and answered with a failure reply.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{self, Harness};
use tokio_util::sync::CancellationToken;
use trimtab::app::App;
use trimtab::message::{self, VolumeRequest};
use trimtab::servicebus::azure::AzureServiceBus;
use trimtab::servicebus::{Entity, MessageReceiver, OutgoingMessage};

fn request(id: &str, request: &VolumeRequest) -> OutgoingMessage {
    OutgoingMessage {
        message_id: Some(id.into()),
        body: Bytes::from(message::volume_body(request)),
        reply_to: Some("volume-replies".into()),
        ..OutgoingMessage::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_creates_a_replicated_volume_and_a_bad_one_is_dead_lettered_with_linstors_reason()
{
    let h = Harness::start(Duration::from_secs(10)).await;
    let create = VolumeRequest::Create {
        resource: "pvc-orders".into(),
        size_kib: 4 * 1024 * 1024,
        place_count: 3,
        storage_pool: Some("pool-ssd".into()),
        replicas_on_different: vec!["Aux/zone".into()],
        replicas_on_same: vec![],
        resource_group: None,
    };
    let snapshot = VolumeRequest::Snapshot {
        resource: "pvc-orders".into(),
        snapshot: "nightly".into(),
    };
    let too_many = VolumeRequest::Create {
        resource: "pvc-wide".into(),
        size_kib: 1024 * 1024,
        place_count: 9,
        storage_pool: Some("pool-ssd".into()),
        replicas_on_different: vec![],
        replicas_on_same: vec![],
        resource_group: None,
    };
    h.send(vec![request("create-1", &create)]).await;

    let app = App::build(&h.config).await.expect("build the pipeline");
    let stats = app.stats();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run(stop.clone()));
    harness::wait_until("the create to complete", Duration::from_secs(60), || {
        let s = stats.snapshot();
        async move { s.completed >= 1 }
    })
    .await;
    h.send(vec![
        request("snap-1", &snapshot),
        request("wide-1", &too_many),
    ])
    .await;
    harness::wait_until("both requests settled", Duration::from_secs(60), || {
        let s = stats.snapshot();
        async move { s.completed + s.dead_lettered >= 3 }
    })
    .await;
    stop.cancel();
    running.await.expect("pipeline task");

    // The controller holds three diskful replicas in three zones.
    let replicas: Vec<_> = h
        .sim
        .linstor
        .resources()
        .into_iter()
        .filter(|p| p.resource == "pvc-orders")
        .collect();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    assert!(
        h.sim
            .linstor
            .resources()
            .iter()
            .all(|p| p.resource != "pvc-wide"),
        "nothing placed for the refused request"
    );

    // Replies arrive on the reply queue, correlated to their requests.
    let bus = AzureServiceBus::connect(&h.config.servicebus)
        .await
        .unwrap();
    let replies = bus
        .receiver(&Entity::Queue("volume-replies".into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        for m in replies
            .receive(10, Duration::from_millis(500))
            .await
            .unwrap()
        {
            replies.complete(&m).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            got.push((m.correlation_id.clone().unwrap_or_default(), body));
        }
        if got.len() == 3 {
            break;
        }
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["create-1", "snap-1", "wide-1"]);
    let created = &got[0].1;
    assert_eq!(created["ok"], true);
    assert_eq!(
        created["replicas"].as_array().unwrap().len(),
        3,
        "{created}"
    );
    assert_eq!(got[1].1["ok"], true);
    let refused = &got[2].1;
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Not enough available nodes"),
        "{refused}"
    );

    // The refused request is in the dead-letter queue with LINSTOR's words.
    let dead = h.sim.servicebus.peek_dead_letters("events");
    assert_eq!(dead.len(), 1);
    let (_, reason, description) = &dead[0];
    assert_eq!(reason.as_deref(), Some("LinstorRejected"));
    assert!(
        description
            .as_deref()
            .unwrap_or("")
            .contains("Not enough available nodes"),
        "{description:?}"
    );
    h.sim.shutdown().await;
}
