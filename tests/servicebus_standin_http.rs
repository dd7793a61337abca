//! The Service Bus stand-in's management HTTP endpoint: Atom entries with runtime counts, 404s and 401s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azservicebus::receiver::DeadLetterOptions;
use azservicebus::{ServiceBusClient, ServiceBusClientOptions, ServiceBusRetryOptions};
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use sha2::Sha256;
use trimtab::sim::servicebus::{StandIn, StandInConfig, TopicSpec};

const STEP: Duration = Duration::from_secs(20);
const CONNECT: &[u8] = b"http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
const COUNTS: &[u8] = b"http://schemas.microsoft.com/netservices/2011/06/servicebus";

/// A SAS token as every Service Bus SDK builds it, written here independently of the stand-in.
fn sas_token(resource: &str, key_name: &str, key: &str) -> String {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let encoded = utf8_percent_encode(resource, NON_ALPHANUMERIC).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{encoded}\n{expiry}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={encoded}&sig={}&se={expiry}&skn={key_name}",
        utf8_percent_encode(&sig, NON_ALPHANUMERIC)
    )
}

/// The text of the first element named `local` in namespace `ns`.
fn element(xml: &str, ns: &[u8], local: &str) -> Option<String> {
    let mut reader = NsReader::from_str(xml);
    let mut inside = false;
    loop {
        match reader.read_resolved_event().ok()? {
            (ResolveResult::Bound(namespace), Event::Start(e))
                if namespace.as_ref() == ns && e.local_name().as_ref() == local.as_bytes() =>
            {
                inside = true;
            }
            (_, Event::Text(t)) if inside => return Some(t.unescape().ok()?.into_owned()),
            (_, Event::Eof) => return None,
            _ => {}
        }
    }
}

fn count(xml: &str, name: &str) -> u64 {
    element(xml, COUNTS, name)
        .unwrap_or_else(|| panic!("no {name} in the counts namespace: {xml}"))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number: {e}"))
}

async fn get(url: &str, authorization: &str) -> (u16, String) {
    let response = tokio::time::timeout(
        STEP,
        reqwest::Client::new()
            .get(url)
            .header("Authorization", authorization)
            .send(),
    )
    .await
    .expect("management request timed out")
    .expect("management endpoint answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
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
fn the_management_endpoint_reports_counts_and_refuses_unknown_entities_and_bad_signatures() {
    run(the_management_endpoint_reports_counts_and_refuses_unknown_entities_and_bad_signatures_scenario);
}

async fn the_management_endpoint_reports_counts_and_refuses_unknown_entities_and_bad_signatures_scenario(
) {
    let config = StandInConfig {
        queues: vec!["depth".into()],
        topics: vec![TopicSpec {
            name: "events".into(),
            subscriptions: vec!["audit".into()],
        }],
        lock_duration: Duration::from_secs(30),
        max_delivery_count: 7,
        ..StandInConfig::default()
    };
    let (key_name, key) = (config.key_name.clone(), config.key.clone());
    let standin = tokio::time::timeout(STEP, StandIn::start_on_free_loopback(config))
        .await
        .expect("start timed out")
        .expect("start");
    let base = standin.management_base_url();
    let auth = sas_token(&base, &key_name, &key);

    let options = ServiceBusClientOptions {
        retry_options: ServiceBusRetryOptions {
            max_retries: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut client = tokio::time::timeout(
        STEP,
        ServiceBusClient::unsecured()
            .new_from_connection_string(standin.connection_string(), options),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let mut sender = tokio::time::timeout(STEP, client.create_sender("depth", Default::default()))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(STEP, sender.send_messages(["a", "b", "c", "d"]))
        .await
        .unwrap()
        .unwrap();
    let mut receiver = tokio::time::timeout(
        STEP,
        client.create_receiver_for_queue("depth", Default::default()),
    )
    .await
    .unwrap()
    .unwrap();
    let got = tokio::time::timeout(
        STEP,
        receiver.receive_messages_with_max_wait_time(1, Duration::from_secs(2)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.len(), 1);
    let options = DeadLetterOptions {
        dead_letter_reason: Some("Test".into()),
        ..Default::default()
    };
    tokio::time::timeout(STEP, receiver.dead_letter_message(&got[0], options))
        .await
        .unwrap()
        .unwrap();

    let (status, xml) = get(&format!("{base}/depth?api-version=2021-05"), &auth).await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(count(&xml, "ActiveMessageCount"), 3);
    assert_eq!(count(&xml, "DeadLetterMessageCount"), 1);
    assert_eq!(count(&xml, "ScheduledMessageCount"), 0);
    assert_eq!(count(&xml, "TransferMessageCount"), 0);
    assert_eq!(count(&xml, "TransferDeadLetterMessageCount"), 0);
    assert_eq!(element(&xml, CONNECT, "MessageCount").as_deref(), Some("4"));
    assert_eq!(
        element(&xml, CONNECT, "LockDuration").as_deref(),
        Some("PT30S")
    );
    assert_eq!(
        element(&xml, CONNECT, "MaxDeliveryCount").as_deref(),
        Some("7")
    );
    assert!(xml.contains("<QueueDescription"), "{xml}");

    let (status, xml) = get(
        &format!("{base}/events/Subscriptions/audit?api-version=2021-05"),
        &auth,
    )
    .await;
    assert_eq!(status, 200, "{xml}");
    assert!(xml.contains("<SubscriptionDescription"), "{xml}");
    assert_eq!(count(&xml, "ActiveMessageCount"), 0);

    let (status, xml) = get(&format!("{base}/missing-queue?api-version=2021-05"), &auth).await;
    assert_eq!(status, 404);
    assert!(
        xml.contains("missing-queue"),
        "the 404 names the entity: {xml}"
    );

    let forged = sas_token(&base, &key_name, "not-the-key");
    let (status, xml) = get(&format!("{base}/depth?api-version=2021-05"), &forged).await;
    assert_eq!(status, 401, "{xml}");
    let (status, _) = get(&format!("{base}/depth?api-version=2021-05"), "").await;
    assert_eq!(status, 401, "no authorization header");

    tokio::time::timeout(STEP, client.dispose())
        .await
        .unwrap()
        .unwrap();
    standin.shutdown().await;
}
