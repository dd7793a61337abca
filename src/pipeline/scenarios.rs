//! Unit-level scenarios for the run loop on the in-memory bus: settlement after durability, retries,
//! dead-lettering, back-pressure, live knobs and draining on shutdown. The same paths run over the wire in `tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::knobs::{Knobs, LiveKnobs};
use super::run::Pipeline;
use super::sink::{EventRecord, EventSink, Replier, SinkError, VolumeHandler, VolumeOutcome};
use super::PipelineConfig;
use crate::message::{self, Event, VolumeRequest};
use crate::servicebus::memory::{MemoryBus, MemoryBusConfig};
use crate::servicebus::{
    Entity, MessageReceiver, MessageSender, OutgoingMessage, ReceivedMessage, ServiceBusError,
};

/// Rows by (stream, message id), with optional injected failures and a gate that holds writes.
#[derive(Default)]
struct TableSink {
    rows: Mutex<HashMap<(String, String), String>>,
    writes: AtomicU64,
    retriable_failures_left: AtomicU64,
    poison_id: Mutex<Option<String>>,
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl EventSink for TableSink {
    async fn write(&self, rows: Vec<EventRecord>) -> Vec<Result<(), SinkError>> {
        if let Some(gate) = &self.gate {
            let _pass = gate.acquire().await.expect("gate closed");
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .retriable_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let poison = self.poison_id.lock().unwrap().clone();
        rows.into_iter()
            .map(|row| {
                if fail {
                    return Err(SinkError {
                        retriable: true,
                        reason: "WriteTimeout",
                        message: "write timeout".into(),
                    });
                }
                if poison.as_deref() == Some(row.message_id.as_str()) {
                    return Err(SinkError {
                        retriable: false,
                        reason: "WriteRejected",
                        message: format!("message {}: row too large", row.message_id),
                    });
                }
                self.rows
                    .lock()
                    .unwrap()
                    .insert((row.stream, row.message_id), row.payload);
                Ok(())
            })
            .collect()
    }
}

struct NoVolumes;

#[async_trait]
impl VolumeHandler for NoVolumes {
    async fn handle(
        &self,
        request: &VolumeRequest,
    ) -> Result<VolumeOutcome, (SinkError, serde_json::Value)> {
        Ok(VolumeOutcome {
            reply: serde_json::json!({"op": request.op(), "ok": true}),
        })
    }
}

#[derive(Default)]
struct Replies(Mutex<Vec<(String, OutgoingMessage)>>);

#[async_trait]
impl Replier for Replies {
    async fn reply(&self, to: &str, message: OutgoingMessage) -> Result<(), ServiceBusError> {
        self.0.lock().unwrap().push((to.to_string(), message));
        Ok(())
    }
}

/// Wraps a receiver and records the most messages it ever had locked and unsettled at once.
struct Counting {
    inner: Arc<dyn MessageReceiver>,
    outstanding: AtomicUsize,
    max_outstanding: AtomicUsize,
}

impl Counting {
    fn settled(&self) {
        self.outstanding.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl MessageReceiver for Counting {
    async fn receive(
        &self,
        max: u32,
        wait: Duration,
    ) -> Result<Vec<ReceivedMessage>, ServiceBusError> {
        let got = self.inner.receive(max, wait).await?;
        let now = self.outstanding.fetch_add(got.len(), Ordering::SeqCst) + got.len();
        self.max_outstanding.fetch_max(now, Ordering::SeqCst);
        Ok(got)
    }
    async fn complete(&self, m: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settled();
        self.inner.complete(m).await
    }
    async fn abandon(&self, m: &ReceivedMessage) -> Result<(), ServiceBusError> {
        self.settled();
        self.inner.abandon(m).await
    }
    async fn dead_letter(
        &self,
        m: &ReceivedMessage,
        r: &str,
        d: &str,
    ) -> Result<(), ServiceBusError> {
        self.settled();
        self.inner.dead_letter(m, r, d).await
    }
    async fn renew_lock(
        &self,
        m: &ReceivedMessage,
    ) -> Result<time::OffsetDateTime, ServiceBusError> {
        self.inner.renew_lock(m).await
    }
    fn set_prefetch(&self, prefetch: u32) {
        self.inner.set_prefetch(prefetch)
    }
    fn prefetch(&self) -> u32 {
        self.inner.prefetch()
    }
}

fn event(i: usize) -> OutgoingMessage {
    let body = message::event_body(&Event {
        stream: format!("s{}", i % 4),
        ts: None,
        payload: serde_json::json!({ "i": i }),
    });
    OutgoingMessage {
        message_id: Some(format!("m{i}")),
        body: Bytes::from(body),
        ..OutgoingMessage::default()
    }
}

struct Harness {
    bus: MemoryBus,
    queue: Entity,
    receiver: Arc<Counting>,
    sink: Arc<TableSink>,
    knobs: LiveKnobs,
    config: PipelineConfig,
}

impl Harness {
    fn new(sink: TableSink, knobs: Knobs) -> Self {
        let bus = MemoryBus::new(MemoryBusConfig::default());
        let queue = Entity::Queue("q".into());
        bus.create_queue("q");
        let inner: Arc<dyn MessageReceiver> = Arc::new(bus.receiver(&queue).unwrap());
        let receiver = Arc::new(Counting {
            inner,
            outstanding: AtomicUsize::new(0),
            max_outstanding: AtomicUsize::new(0),
        });
        let mut config = PipelineConfig::for_entities(vec![queue.clone()]);
        config.receive_wait_ms = 20;
        config.backoff_initial_ms = 5;
        config.backoff_max_ms = 20;
        config.grace_ms = 5_000;
        Harness {
            bus,
            queue,
            receiver,
            sink: Arc::new(sink),
            knobs: LiveKnobs::new(knobs).unwrap(),
            config,
        }
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) {
        self.bus
            .sender(&self.queue)
            .unwrap()
            .send_batch(messages)
            .await
            .unwrap();
    }

    fn start(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<super::StatsSnapshot>,
        Arc<super::PipelineStats>,
    ) {
        let pipeline = Pipeline::new(
            vec![self.receiver.clone() as Arc<dyn MessageReceiver>],
            self.sink.clone(),
            Arc::new(NoVolumes),
            Arc::new(Replies::default()),
            self.knobs.clone(),
            self.config.clone(),
        );
        let stats = pipeline.stats();
        let token = CancellationToken::new();
        let handle = tokio::spawn(pipeline.run(token.clone()));
        (token, handle, stats)
    }

    async fn until(&self, what: &str, check: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(20), async {
            while !check() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

#[tokio::test]
async fn events_are_written_once_and_bad_bodies_are_dead_lettered_with_a_reason() {
    let h = Harness::new(TableSink::default(), Knobs::default());
    let mut messages: Vec<_> = (0..200).map(event).collect();
    messages.push(OutgoingMessage {
        message_id: Some("bad-json".into()),
        body: Bytes::from_static(b"{oops"),
        ..OutgoingMessage::default()
    });
    messages.push(OutgoingMessage {
        message_id: Some("bad-kind".into()),
        body: Bytes::from_static(br#"{"version":1,"kind":"gossip"}"#),
        ..OutgoingMessage::default()
    });
    h.send(messages).await;
    let (token, handle, stats) = h.start();
    h.until("every message settled", || {
        let s = stats.snapshot();
        s.completed + s.dead_lettered == 202
    })
    .await;
    token.cancel();
    let done = handle.await.unwrap();
    assert_eq!(h.sink.rows.lock().unwrap().len(), 200);
    assert_eq!(done.completed, 200);
    let counts = h.bus.counts(&h.queue).unwrap();
    assert_eq!(counts.active, 0, "nothing left on the queue");
    let mut reasons: Vec<_> = h
        .bus
        .dead_letters(&h.queue)
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert_eq!(reasons, vec!["MalformedJson", "UnknownKind"]);
}

#[tokio::test]
async fn retriable_write_failures_are_retried_and_permanent_ones_dead_lettered() {
    let sink = TableSink::default();
    sink.retriable_failures_left.store(3, Ordering::SeqCst);
    *sink.poison_id.lock().unwrap() = Some("m7".into());
    let h = Harness::new(sink, Knobs::default());
    h.send((0..50).map(event).collect()).await;
    let (token, handle, stats) = h.start();
    h.until("every message settled", || {
        let s = stats.snapshot();
        s.completed + s.dead_lettered == 50
    })
    .await;
    token.cancel();
    let done = handle.await.unwrap();
    assert!(
        done.write_retries > 0,
        "the failed writes were retried: {done:?}"
    );
    assert_eq!(done.completed, 49);
    assert_eq!(h.sink.rows.lock().unwrap().len(), 49);
    let dead = h.bus.dead_letters(&h.queue);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "WriteRejected");
    assert_eq!(dead[0].description, "message m7: row too large");
}

#[tokio::test]
async fn a_slow_sink_bounds_the_locked_messages_and_a_live_knob_moves_the_bound() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = TableSink {
        gate: Some(gate.clone()),
        ..TableSink::default()
    };
    let knobs = Knobs {
        max_in_flight: 10,
        prefetch: 4,
        ..Knobs::default()
    };
    let h = Harness::new(sink, knobs);
    h.send((0..100).map(event).collect()).await;
    let (token, handle, stats) = h.start();
    h.until("the bound to fill", || stats.snapshot().in_flight == 10)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.receiver.max_outstanding.load(Ordering::SeqCst),
        10,
        "receiving stopped at the bound"
    );

    h.knobs.update(|k| k.max_in_flight = 30).unwrap();
    h.until("the raised bound to fill", || {
        stats.snapshot().in_flight == 30
    })
    .await;
    gate.add_permits(1_000);
    h.until("every message settled", || {
        stats.snapshot().completed == 100
    })
    .await;
    token.cancel();
    handle.await.unwrap();
    assert_eq!(h.receiver.max_outstanding.load(Ordering::SeqCst), 30);
    assert_eq!(h.sink.rows.lock().unwrap().len(), 100);
}

#[tokio::test]
async fn shutdown_writes_and_settles_what_is_in_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let sink = TableSink {
        gate: Some(gate.clone()),
        ..TableSink::default()
    };
    let h = Harness::new(sink, Knobs::default());
    h.send((0..20).map(event).collect()).await;
    let (token, handle, stats) = h.start();
    h.until("messages in flight", || stats.snapshot().in_flight == 20)
        .await;
    token.cancel();
    // The writer is still busy when shutdown starts; it finishes within the grace period.
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(1_000);
    let done = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("pipeline should drain within the grace period")
        .unwrap();
    assert_eq!(done.completed, 20);
    assert_eq!(done.in_flight, 0);
    assert_eq!(h.bus.counts(&h.queue).unwrap().active, 0);
}
