//! Routing: turns a received message into an event row, a volume request, or a dead-letter decision with its reason.

use crate::message::{self, Envelope, MessageError};
use crate::servicebus::ReceivedMessage;

use super::sink::EventRecord;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// To the Cassandra writer.
    Event(EventRecord),
    /// To the LINSTOR executor.
    Volume(crate::message::VolumeRequest),
    /// Straight to the dead-letter queue: the body can never be processed.
    DeadLetter {
        /// Short, stable reason (`DeadLetterReason`); a schema mismatch names the field: `SchemaMismatch: ts`.
        reason: String,
        /// What was wrong (`DeadLetterErrorDescription`).
        description: String,
    },
}

/// The dead-letter reason for a body that does not parse.
pub fn reason_for(error: &MessageError) -> &'static str {
    match error {
        MessageError::MalformedJson(_) => "MalformedJson",
        MessageError::UnsupportedVersion { .. } => "UnsupportedVersion",
        MessageError::UnknownKind { .. } => "UnknownKind",
        MessageError::Schema { .. } => "SchemaMismatch",
        MessageError::Oversize { .. } => "Oversize",
    }
}

/// The row id of a message: its message id, or its sequence number when the sender set none.
/// Both survive redelivery, so the row stays idempotent.
pub fn row_id(message: &ReceivedMessage) -> String {
    match &message.message_id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => format!("seq-{}", message.sequence_number),
    }
}

/// Decides where a message goes.
pub fn route(message: &ReceivedMessage, max_bytes: usize) -> Route {
    match message::parse(&message.body, max_bytes) {
        Ok(Envelope::Event(event)) => Route::Event(EventRecord {
            stream: event.stream,
            message_id: row_id(message),
            event_time: event.ts.unwrap_or(message.enqueued_at),
            enqueued_at: message.enqueued_at,
            payload: event.payload.to_string(),
        }),
        Ok(Envelope::Volume(request)) => Route::Volume(request),
        Err(error) => Route::DeadLetter {
            reason: match error.field() {
                Some(field) => format!("{}: {field}", reason_for(&error)),
                None => reason_for(&error).to_string(),
            },
            description: format!("message {}: {error}", row_id(message)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servicebus::Entity;

    fn message(body: &str, id: Option<&str>) -> ReceivedMessage {
        ReceivedMessage {
            entity: Entity::Queue("q".into()),
            message_id: id.map(str::to_string),
            lock_token: uuid::Uuid::nil(),
            sequence_number: 42,
            enqueued_at: time::macros::datetime!(2026-01-01 00:00 UTC),
            locked_until: time::macros::datetime!(2026-01-01 00:01 UTC),
            delivery_count: 1,
            partition_key: None,
            session_id: None,
            reply_to: None,
            correlation_id: None,
            content_type: None,
            subject: None,
            application_properties: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn check(body: &str, expected_reason: &str) {
        match route(&message(body, Some("m-1")), 4096) {
            Route::DeadLetter {
                reason,
                description,
            } => {
                assert_eq!(reason, expected_reason, "{description}");
                assert!(description.starts_with("message m-1: "), "{description}");
            }
            other => panic!("expected dead-letter {expected_reason}, got {other:?}"),
        }
    }

    #[test]
    fn bad_bodies_are_dead_lettered_with_a_reason() {
        check("{", "MalformedJson");
        check(r#"{"version":9,"kind":"event"}"#, "UnsupportedVersion");
        check(r#"{"version":1,"kind":"nope"}"#, "UnknownKind");
        check(
            r#"{"version":1,"kind":"event","stream":7,"payload":1}"#,
            "SchemaMismatch: stream",
        );
        check(&"x".repeat(5000), "Oversize");
    }

    #[test]
    fn events_take_the_enqueued_time_when_they_carry_none_and_the_sequence_number_when_unnamed() {
        let body = r#"{"version":1,"kind":"event","stream":"orders","payload":{"n":1}}"#;
        match route(&message(body, None), 4096) {
            Route::Event(row) => {
                assert_eq!(row.message_id, "seq-42");
                assert_eq!(
                    row.event_time,
                    time::macros::datetime!(2026-01-01 00:00 UTC)
                );
                assert_eq!(row.payload, r#"{"n":1}"#);
            }
            other => panic!("expected an event, got {other:?}"),
        }
    }
}
