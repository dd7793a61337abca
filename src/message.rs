//! The pipeline's message schema: what a Service Bus message body must contain, in one documented place.
//!
//! Every body is one JSON object with a `version` (currently [`SCHEMA_VERSION`]) and a `kind`:
//!
//! ```json
//! {"version": 1, "kind": "event", "stream": "orders", "ts": "2023-11-16T18:17:03.979Z", "payload": {"any": "json"}}
//! {"version": 1, "kind": "volume", "op": "create", "resource": "pvc-1", "size_kib": 1048576,
//!  "place_count": 2, "storage_pool": "pool-ssd", "replicas_on_different": ["Aux/zone"]}
//! {"version": 1, "kind": "volume", "op": "snapshot", "resource": "pvc-1", "snapshot": "nightly"}
//! {"version": 1, "kind": "volume", "op": "attach", "resource": "pvc-1", "node": "n3"}
//! {"version": 1, "kind": "volume", "op": "resize", "resource": "pvc-1", "size_kib": 2097152}
//! {"version": 1, "kind": "volume", "op": "delete", "resource": "pvc-1"}
//! ```
//!
//! * `event`: one row for Cassandra. `stream` is the partition key (and the unit of lag); `ts` is the
//!   event's own time (RFC 3339), optional, defaulting to the message's enqueued time; `payload` is any JSON.
//!   The Service Bus `message_id` becomes part of the row's primary key, so a redelivery overwrites its own row.
//! * `volume`: a LINSTOR operation. Sizes are in KiB, as LINSTOR counts them. When the Service Bus message
//!   carries `reply_to`, a reply is sent there once the operation has succeeded or failed for good.
//!
//! A body that fails to parse is never retried: [`MessageError`] says what was wrong, and the pipeline
//! dead-letters the message with that text as the reason. A body that no longer fits the schema (and so the
//! Cassandra row) names the field: [`MessageError::field`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The schema version this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// A parsed message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// A row for the Cassandra writer.
    Event(Event),
    /// An operation for the LINSTOR executor.
    Volume(VolumeRequest),
}

/// One event: becomes one row in `events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Partition key: events of one stream share a Cassandra partition (per day) and a lag figure.
    pub stream: String,
    /// The event's own time; the enqueued time is used when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ts: Option<OffsetDateTime>,
    /// Free-form JSON, stored as text.
    pub payload: serde_json::Value,
}

/// A LINSTOR operation requested by a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum VolumeRequest {
    /// Create a resource definition, one volume definition and place `place_count` replicas.
    Create {
        /// Resource name (LINSTOR's rules: letters, digits, `_` and `-`, starting with a letter).
        resource: String,
        /// Volume size in KiB.
        size_kib: u64,
        /// Number of diskful replicas.
        #[serde(default = "default_place_count")]
        place_count: u32,
        /// Storage pool to place on; any pool when absent.
        #[serde(default)]
        storage_pool: Option<String>,
        /// Node properties whose values must differ between replicas, such as `Aux/zone`.
        #[serde(default)]
        replicas_on_different: Vec<String>,
        /// Node properties whose values must be equal between replicas.
        #[serde(default)]
        replicas_on_same: Vec<String>,
        /// Resource group for the definition; LINSTOR's default group when absent.
        #[serde(default)]
        resource_group: Option<String>,
    },
    /// Take a snapshot of every replica of a resource.
    Snapshot {
        /// Resource name.
        resource: String,
        /// Snapshot name.
        snapshot: String,
    },
    /// Attach a resource to a node without local storage (diskless).
    Attach {
        /// Resource name.
        resource: String,
        /// Node that gets the diskless replica.
        node: String,
    },
    /// Grow a volume.
    Resize {
        /// Resource name.
        resource: String,
        /// New size in KiB.
        size_kib: u64,
        /// Volume number inside the resource.
        #[serde(default)]
        volume_number: u32,
    },
    /// Delete a resource with all its replicas.
    Delete {
        /// Resource name.
        resource: String,
    },
}

const fn default_place_count() -> u32 {
    2
}

impl VolumeRequest {
    /// The resource the request is about.
    pub fn resource(&self) -> &str {
        match self {
            VolumeRequest::Create { resource, .. }
            | VolumeRequest::Snapshot { resource, .. }
            | VolumeRequest::Attach { resource, .. }
            | VolumeRequest::Resize { resource, .. }
            | VolumeRequest::Delete { resource } => resource,
        }
    }

    /// The operation's name as it appears in the `op` field.
    pub fn op(&self) -> &'static str {
        match self {
            VolumeRequest::Create { .. } => "create",
            VolumeRequest::Snapshot { .. } => "snapshot",
            VolumeRequest::Attach { .. } => "attach",
            VolumeRequest::Resize { .. } => "resize",
            VolumeRequest::Delete { .. } => "delete",
        }
    }
}

/// Why a body is not a valid message. Always permanent: the message is dead-lettered with this text.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The body is not JSON at all.
    #[error("malformed json: {0}")]
    MalformedJson(#[source] serde_json::Error),
    /// `version` is missing or not one this build understands.
    #[error("unsupported schema version {found:?}: expected {SCHEMA_VERSION}")]
    UnsupportedVersion {
        /// What the body said, if anything.
        found: Option<serde_json::Value>,
    },
    /// `kind` is missing or unknown.
    #[error("unknown kind {found:?}: expected \"event\" or \"volume\"")]
    UnknownKind {
        /// What the body said, if anything.
        found: Option<serde_json::Value>,
    },
    /// The fields do not match the schema of the kind.
    #[error("schema mismatch for kind {kind}, field {field}: {source}")]
    Schema {
        /// The kind whose schema was violated.
        kind: &'static str,
        /// The field that does not fit (`ts`, `payload`, `size_kib`), or `(body)` when serde names none.
        field: String,
        /// serde's description: which field and what was expected.
        #[source]
        source: serde_json::Error,
    },
    /// The body is larger than the pipeline accepts.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    Oversize {
        /// Body size in bytes.
        size: usize,
        /// Configured limit in bytes.
        limit: usize,
    },
}

impl MessageError {
    /// The field that no longer fits the schema, for a schema mismatch.
    pub fn field(&self) -> Option<&str> {
        match self {
            MessageError::Schema { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The field a deserialisation error is about: the one named in an unknown or missing field message,
/// else the path serde was at.
fn field_of(path: &serde_path_to_error::Path, error: &serde_json::Error) -> String {
    let text = error.to_string();
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|marker| {
            let rest = &text[text.find(marker)? + marker.len()..];
            Some(rest[..rest.find('`')?].to_string())
        });
    let at = path.to_string();
    match (named, at.as_str()) {
        (Some(name), "." | "?") => name,
        (Some(name), parent) if !parent.ends_with(&name) => format!("{parent}.{name}"),
        (Some(name), _) => name,
        (None, "." | "?") => "(body)".to_string(),
        (None, at) => at.to_string(),
    }
}

fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    kind: &'static str,
) -> Result<T, MessageError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = field_of(e.path(), e.inner());
        MessageError::Schema {
            kind,
            field,
            source: e.into_inner(),
        }
    })
}

/// Parses a message body, refusing bodies over `max_bytes`.
pub fn parse(body: &[u8], max_bytes: usize) -> Result<Envelope, MessageError> {
    if body.len() > max_bytes {
        return Err(MessageError::Oversize {
            size: body.len(),
            limit: max_bytes,
        });
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(MessageError::MalformedJson)?;
    let Some(object) = value.as_object_mut() else {
        return Err(MessageError::UnknownKind { found: None });
    };
    match object.remove("version") {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        found => return Err(MessageError::UnsupportedVersion { found }),
    }
    let kind = object.remove("kind");
    match kind.as_ref().and_then(|k| k.as_str()) {
        Some("event") => typed(value, "event").map(Envelope::Event),
        Some("volume") => typed(value, "volume").map(Envelope::Volume),
        _ => Err(MessageError::UnknownKind { found: kind }),
    }
}

/// Serialises an event body in the schema above.
pub fn event_body(event: &Event) -> Vec<u8> {
    let mut value = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("version".into(), SCHEMA_VERSION.into());
        object.insert("kind".into(), "event".into());
        if event.ts.is_none() {
            object.remove("ts");
        }
    }
    value.to_string().into_bytes()
}

/// Serialises a volume request body in the schema above.
pub fn volume_body(request: &VolumeRequest) -> Vec<u8> {
    let mut value = serde_json::to_value(request).unwrap_or(serde_json::Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("version".into(), SCHEMA_VERSION.into());
        object.insert("kind".into(), "volume".into());
    }
    value.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(body: &str, expected: &str) {
        let err = parse(body.as_bytes(), 1024).expect_err("body should be refused");
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "error {text:?} should mention {expected:?}"
        );
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason_naming_the_problem() {
        check_err("{not json", "malformed json");
        check_err(r#"{"kind":"event"}"#, "unsupported schema version None");
        check_err(
            r#"{"version":2,"kind":"event"}"#,
            "unsupported schema version",
        );
        check_err(
            r#"{"version":1,"kind":"banana"}"#,
            "unknown kind Some(String(\"banana\"))",
        );
        check_err(r#"[1,2]"#, "unknown kind");
        check_err(
            r#"{"version":1,"kind":"event","payload":{}}"#,
            "missing field `stream`",
        );
        check_err(
            r#"{"version":1,"kind":"volume","op":"create","resource":"r","size_kib":"big"}"#,
            "invalid type: string \"big\", expected u64",
        );
        check_err(
            r#"{"version":1,"kind":"volume","op":"explode","resource":"r"}"#,
            "explode",
        );
        let big = format!(
            r#"{{"version":1,"kind":"event","stream":"s","payload":"{}"}}"#,
            "x".repeat(2000)
        );
        check_err(&big, "exceeds the limit of 1024 bytes");
    }

    fn check_field(body: &str, expected: &str) {
        let err = parse(body.as_bytes(), 1024).expect_err("body should be refused");
        assert_eq!(err.field(), Some(expected), "{err}");
        assert!(
            err.to_string().contains(&format!("field {expected}:")),
            "{err}"
        );
    }

    #[test]
    fn a_body_that_no_longer_fits_names_the_field() {
        check_field(
            r#"{"version":1,"kind":"event","stream":"s","ts":17,"payload":{}}"#,
            "ts",
        );
        check_field(
            r#"{"version":1,"kind":"event","stream":"s","payload":{},"region":"eu"}"#,
            "region",
        );
        check_field(r#"{"version":1,"kind":"event","payload":{}}"#, "stream");
        check_field(
            r#"{"version":1,"kind":"event","stream":["a"],"payload":{}}"#,
            "stream",
        );
        check_field(
            r#"{"version":1,"kind":"volume","op":"create","resource":"r","size_kib":"big"}"#,
            "(body)",
        );
    }

    #[test]
    fn round_trips_both_kinds() {
        let event = Event {
            stream: "orders".into(),
            ts: Some(time::macros::datetime!(2023-11-16 18:17:03.979 UTC)),
            payload: serde_json::json!({"tokens": 12}),
        };
        assert_eq!(
            parse(&event_body(&event), 1 << 20).unwrap(),
            Envelope::Event(event)
        );
        let request = VolumeRequest::Create {
            resource: "pvc-1".into(),
            size_kib: 1024,
            place_count: 3,
            storage_pool: Some("pool-ssd".into()),
            replicas_on_different: vec!["Aux/zone".into()],
            replicas_on_same: vec![],
            resource_group: None,
        };
        assert_eq!(
            parse(&volume_body(&request), 1 << 20).unwrap(),
            Envelope::Volume(request)
        );
    }

    #[test]
    fn create_defaults_to_two_replicas() {
        let body = br#"{"version":1,"kind":"volume","op":"create","resource":"r","size_kib":10}"#;
        match parse(body, 1024).unwrap() {
            Envelope::Volume(VolumeRequest::Create { place_count, .. }) => {
                assert_eq!(place_count, 2)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
