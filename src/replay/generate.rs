//! Turns trace arrivals into Service Bus messages: events sized by their token counts, a small share of volume
//! requests, and a small share of deliberately malformed bodies, each tagged with what it should become.

use std::time::Duration;

use bytes::Bytes;
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::message::{self, Event, VolumeRequest};
use crate::servicebus::OutgoingMessage;

use super::trace::Arrival;

/// How to turn a trace into messages.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Time compression: 60 plays one trace minute per second.
    pub speedup: f64,
    /// Share of requests that become volume requests (0..1).
    pub volume_share: f64,
    /// Share of requests whose body is deliberately malformed (0..1).
    pub malformed_share: f64,
    /// Number of event streams (partition keys) the requests are spread over.
    pub streams: u32,
    /// Seed for the deterministic choices above.
    pub seed: u64,
    /// Only the first N arrivals, if set.
    pub limit: Option<usize>,
    /// Queue that volume requests name in `reply_to`.
    pub reply_to: String,
    /// Storage pool for volume requests.
    pub storage_pool: String,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            speedup: 60.0,
            volume_share: 0.01,
            malformed_share: 0.002,
            streams: 16,
            seed: 7,
            limit: None,
            reply_to: "volume-replies".into(),
            storage_pool: "pool-ssd".into(),
        }
    }
}

/// What a planned message should become once the pipeline has handled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One row in `events`.
    Row,
    /// A volume operation that succeeds, and a reply.
    VolumeOk,
    /// A volume operation LINSTOR refuses for good: dead-letter with LINSTOR's reason, and a failure reply.
    VolumeRefused,
    /// A body that cannot be parsed: dead-letter.
    Malformed,
}

/// One message to send at a time offset (already compressed).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMessage {
    /// When to send it, from the start of the replay.
    pub at: Duration,
    /// The message.
    pub message: OutgoingMessage,
    /// What it should become.
    pub expect: Expect,
}

/// Plans the messages for a trace. Event payloads carry one byte per token (context plus generated), so their
/// sizes follow the trace's token counts.
pub fn plan(arrivals: &[Arrival], options: &ReplayOptions) -> Vec<PlannedMessage> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let speedup = if options.speedup > 0.0 {
        options.speedup
    } else {
        1.0
    };
    let take = options.limit.unwrap_or(arrivals.len()).min(arrivals.len());
    let mut created: Vec<String> = Vec::new();
    let mut planned = Vec::with_capacity(take);
    for (index, arrival) in arrivals[..take].iter().enumerate() {
        let at = Duration::from_secs_f64(arrival.offset.as_secs_f64() / speedup);
        let id = format!("req-{index:06}");
        let roll: f64 = rng.gen();
        let (body, expect, reply_to) = if roll < options.malformed_share {
            let body = if rng.gen_bool(0.5) {
                format!("{{\"version\":1,\"kind\":\"event\",\"stream\":\"s\",\"payload\":{{\"truncated\":{index}")
            } else {
                format!("{{\"version\":1,\"kind\":\"telemetry\",\"n\":{index}}}")
            };
            (body.into_bytes(), Expect::Malformed, None)
        } else if roll < options.malformed_share + options.volume_share {
            let (request, expect) = volume_request(&mut rng, index, &mut created, options);
            (
                message::volume_body(&request),
                expect,
                Some(options.reply_to.clone()),
            )
        } else {
            let stream = format!("tenant-{:02}", rng.gen_range(0..options.streams.max(1)));
            let filler = (arrival.context_tokens + arrival.generated_tokens) as usize;
            let event = Event {
                stream,
                ts: None,
                payload: serde_json::json!({
                    "request": index,
                    "context_tokens": arrival.context_tokens,
                    "generated_tokens": arrival.generated_tokens,
                    "tokens": "t".repeat(filler),
                }),
            };
            (message::event_body(&event), Expect::Row, None)
        };
        planned.push(PlannedMessage {
            at,
            message: OutgoingMessage {
                message_id: Some(id),
                body: Bytes::from(body),
                content_type: Some("application/json".into()),
                reply_to,
                ..OutgoingMessage::default()
            },
            expect,
        });
    }
    planned
}

fn volume_request(
    rng: &mut StdRng,
    index: usize,
    created: &mut Vec<String>,
    options: &ReplayOptions,
) -> (VolumeRequest, Expect) {
    let pick: f64 = rng.gen();
    if pick < 0.1 {
        // A pool that does not exist: LINSTOR refuses, the request can never succeed.
        let request = VolumeRequest::Create {
            resource: format!("pvc-{index:06}"),
            size_kib: 1024 * 1024,
            place_count: 2,
            storage_pool: Some("pool-missing".into()),
            replicas_on_different: vec![],
            replicas_on_same: vec![],
            resource_group: None,
        };
        return (request, Expect::VolumeRefused);
    }
    if pick < 0.3 {
        if let Some(resource) = created.last() {
            let request = VolumeRequest::Snapshot {
                resource: resource.clone(),
                snapshot: format!("snap-{index:06}"),
            };
            return (request, Expect::VolumeOk);
        }
    }
    let resource = format!("pvc-{index:06}");
    created.push(resource.clone());
    let request = VolumeRequest::Create {
        resource,
        size_kib: rng.gen_range(1..=8u64) * 1024 * 1024,
        place_count: 2,
        storage_pool: Some(options.storage_pool.clone()),
        replicas_on_different: vec!["Aux/zone".into()],
        replicas_on_same: vec![],
        resource_group: None,
    };
    (request, Expect::VolumeOk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrivals(n: usize) -> Vec<Arrival> {
        (0..n)
            .map(|i| Arrival {
                offset: Duration::from_millis(i as u64 * 100),
                context_tokens: 100 + i as u32,
                generated_tokens: 10,
            })
            .collect()
    }

    #[test]
    fn plans_are_deterministic_compressed_and_sized_by_tokens() {
        let options = ReplayOptions {
            speedup: 10.0,
            volume_share: 0.05,
            malformed_share: 0.05,
            ..ReplayOptions::default()
        };
        let a = plan(&arrivals(2_000), &options);
        assert_eq!(a, plan(&arrivals(2_000), &options), "same seed, same plan");
        assert_eq!(a[10].at, Duration::from_millis(100));
        let count = |e| a.iter().filter(|p| p.expect == e).count();
        assert!(
            (50..150).contains(&count(Expect::Malformed)),
            "about 5 % malformed"
        );
        assert!((50..150).contains(&(count(Expect::VolumeOk) + count(Expect::VolumeRefused))));
        let rows: Vec<_> = a.iter().filter(|p| p.expect == Expect::Row).collect();
        assert!(
            rows.last().unwrap().message.body.len()
                > rows.first().unwrap().message.body.len() + 1_000
        );
        for p in &a {
            let parsed = message::parse(&p.message.body, 1 << 20);
            assert_eq!(parsed.is_err(), p.expect == Expect::Malformed, "{p:?}");
        }
    }
}
