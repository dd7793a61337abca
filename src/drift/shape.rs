//! The shape learner: what each message kind's bodies look like (fields, types, sizes), and what no longer does.
//!
//! Pure and synchronous: [`ShapeLearner::observe`] takes one parsed body and returns the drift it shows, if any.
//! The first `learn_messages` bodies of a kind are its baseline; after that the baseline is frozen and every body
//! is compared with it, so a producer that changes slowly is still noticed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::DriftConfig;

/// Fields nested deeper than this are treated as one opaque value.
const MAX_DEPTH: usize = 4;
/// Examples kept per drift event.
const MAX_EXAMPLES: usize = 3;
/// Longest value excerpt kept in an example, in characters.
const EXCERPT_CHARS: usize = 120;

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DriftChange {
    /// A field the baseline never had.
    FieldAdded,
    /// A field every baseline body had is missing.
    FieldMissing,
    /// A field has a JSON type the baseline never saw for it.
    TypeChanged {
        /// The types seen in the baseline.
        from: Vec<String>,
        /// The new type.
        to: String,
    },
    /// The body is much larger than any baseline body.
    SizeJump {
        /// The largest baseline body, bytes.
        baseline_max_bytes: usize,
    },
}

impl DriftChange {
    /// A short name: `field_added`, `field_missing`, `type_changed` or `size_jump`.
    pub fn name(&self) -> &'static str {
        match self {
            DriftChange::FieldAdded => "field_added",
            DriftChange::FieldMissing => "field_missing",
            DriftChange::TypeChanged { .. } => "type_changed",
            DriftChange::SizeJump { .. } => "size_jump",
        }
    }
}

/// One body that showed the drift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftExample {
    /// The message id (or sequence number) of the body.
    pub message_id: String,
    /// The field's value, cut to a short excerpt; `absent` for a missing field; the size for a size jump.
    pub value: String,
}

/// A drift: one kind of change to one field of one message kind, with when it was seen and examples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftEvent {
    /// The message kind: `event`, or `volume.<op>`.
    pub kind: String,
    /// The field path (`payload.tokens`), or `(body)` for a size jump.
    pub field: String,
    /// What changed.
    #[serde(flatten)]
    pub change: DriftChange,
    /// Bodies that showed it.
    pub count: u64,
    /// First seen.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// Last seen.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// Up to three bodies that showed it, the first ones.
    pub examples: Vec<DriftExample>,
}

impl DriftEvent {
    /// One sentence, for logs and chat-ops: `event: field payload.region added (3 messages, e.g. m-1 = "eu")`.
    pub fn sentence(&self) -> String {
        let what = match &self.change {
            DriftChange::FieldAdded => format!("field {} added", self.field),
            DriftChange::FieldMissing => format!("field {} missing", self.field),
            DriftChange::TypeChanged { from, to } => {
                format!(
                    "field {} changed type from {} to {to}",
                    self.field,
                    from.join("|")
                )
            }
            DriftChange::SizeJump { baseline_max_bytes } => {
                format!("body size jumped above {baseline_max_bytes} bytes")
            }
        };
        let example = self
            .examples
            .first()
            .map(|e| format!(", e.g. {} = {}", e.message_id, e.value))
            .unwrap_or_default();
        format!("{}: {what} ({} messages{example})", self.kind, self.count)
    }
}

/// What the baseline knows about one field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FieldShape {
    /// Baseline bodies that had it.
    pub seen: u64,
    /// The JSON types it had.
    pub types: BTreeSet<String>,
}

/// What one message kind looks like.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindShape {
    /// Bodies learned from (at most `learn_messages`).
    pub learned: u64,
    /// Bodies compared after the baseline was frozen.
    pub checked: u64,
    /// Fields by path.
    pub fields: BTreeMap<String, FieldShape>,
    /// Smallest and largest baseline body, bytes.
    pub min_bytes: usize,
    /// Largest baseline body, bytes.
    pub max_bytes: usize,
}

/// The learner: shapes per kind and the drift seen so far.
#[derive(Debug, Clone)]
pub struct ShapeLearner {
    config: DriftConfig,
    kinds: BTreeMap<String, KindShape>,
    events: BTreeMap<(String, String, String), DriftEvent>,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every field path of an object with its value, objects descended into up to [`MAX_DEPTH`].
fn flatten<'a>(
    prefix: &str,
    object: &'a serde_json::Map<String, Value>,
    depth: usize,
    out: &mut Vec<(String, &'a Value)>,
) {
    for (key, value) in object {
        if depth == 0 && (key == "version" || key == "kind") {
            continue;
        }
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) if depth + 1 < MAX_DEPTH && !inner.is_empty() => {
                out.push((path.clone(), value));
                flatten(&path, inner, depth + 1, out);
            }
            _ => out.push((path, value)),
        }
    }
}

fn excerpt(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= EXCERPT_CHARS {
        text
    } else {
        let cut: String = text.chars().take(EXCERPT_CHARS).collect();
        format!("{cut}…")
    }
}

/// The message kind of a body: `event`, `volume.<op>`, or `None` when it names no kind.
pub fn kind_of(body: &serde_json::Map<String, Value>) -> Option<String> {
    let kind = body.get("kind")?.as_str()?;
    Some(match body.get("op").and_then(Value::as_str) {
        Some(op) if kind == "volume" => format!("volume.{op}"),
        _ => kind.to_string(),
    })
}

impl ShapeLearner {
    /// An empty learner.
    pub fn new(config: DriftConfig) -> Self {
        ShapeLearner {
            config,
            kinds: BTreeMap::new(),
            events: BTreeMap::new(),
        }
    }

    /// Learns from or checks one body of `size` bytes; returns the drift events this body opened
    /// (a change already reported only raises its count).
    pub fn observe(
        &mut self,
        message_id: &str,
        body: &Value,
        size: usize,
        at: OffsetDateTime,
    ) -> Vec<DriftEvent> {
        let Some(object) = body.as_object() else {
            return Vec::new();
        };
        let Some(kind) = kind_of(object) else {
            return Vec::new();
        };
        let mut fields = Vec::new();
        flatten("", object, 0, &mut fields);
        let shape = self.kinds.entry(kind.clone()).or_default();
        if shape.learned < self.config.learn_messages {
            shape.min_bytes = if shape.learned == 0 {
                size
            } else {
                shape.min_bytes.min(size)
            };
            shape.max_bytes = shape.max_bytes.max(size);
            shape.learned += 1;
            for (path, value) in fields {
                let field = shape.fields.entry(path).or_default();
                field.seen += 1;
                field.types.insert(type_name(value).to_string());
            }
            return Vec::new();
        }
        shape.checked += 1;
        let mut found: Vec<(String, DriftChange, String)> = Vec::new();
        let present: BTreeSet<&str> = fields.iter().map(|(p, _)| p.as_str()).collect();
        for (path, value) in &fields {
            match shape.fields.get(path) {
                None => {
                    // Report only the outermost new field: its children are new by implication.
                    let parent_new = path
                        .rsplit_once('.')
                        .is_some_and(|(parent, _)| !shape.fields.contains_key(parent));
                    if !parent_new {
                        found.push((path.clone(), DriftChange::FieldAdded, excerpt(value)));
                    }
                }
                Some(known) if !known.types.contains(type_name(value)) => {
                    let widening = type_name(value) == "float" && known.types.contains("integer");
                    if !widening {
                        found.push((
                            path.clone(),
                            DriftChange::TypeChanged {
                                from: known.types.iter().cloned().collect(),
                                to: type_name(value).to_string(),
                            },
                            excerpt(value),
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        for (path, known) in &shape.fields {
            let parent_present = path
                .rsplit_once('.')
                .is_none_or(|(parent, _)| present.contains(parent));
            if known.seen == shape.learned && !present.contains(path.as_str()) && parent_present {
                found.push((
                    path.clone(),
                    DriftChange::FieldMissing,
                    "absent".to_string(),
                ));
            }
        }
        let limit = (shape.max_bytes as f64 * self.config.size_factor) as usize;
        if shape.max_bytes > 0 && size > limit {
            found.push((
                "(body)".to_string(),
                DriftChange::SizeJump {
                    baseline_max_bytes: shape.max_bytes,
                },
                format!("{size} bytes"),
            ));
        }
        let mut opened = Vec::new();
        for (field, change, value) in found {
            let key = (kind.clone(), field.clone(), change.name().to_string());
            let example = DriftExample {
                message_id: message_id.to_string(),
                value,
            };
            match self.events.get_mut(&key) {
                Some(event) => {
                    event.count += 1;
                    event.last_seen = at;
                    if event.examples.len() < MAX_EXAMPLES {
                        event.examples.push(example);
                    }
                }
                None => {
                    let event = DriftEvent {
                        kind: kind.clone(),
                        field,
                        change,
                        count: 1,
                        first_seen: at,
                        last_seen: at,
                        examples: vec![example],
                    };
                    self.events.insert(key, event.clone());
                    opened.push(event);
                }
            }
        }
        opened
    }

    /// Every drift seen so far, oldest first.
    pub fn events(&self) -> Vec<DriftEvent> {
        let mut events: Vec<DriftEvent> = self.events.values().cloned().collect();
        events.sort_by(|a, b| a.first_seen.cmp(&b.first_seen).then(a.field.cmp(&b.field)));
        events
    }

    /// The learned shapes by kind.
    pub fn shapes(&self) -> &BTreeMap<String, KindShape> {
        &self.kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

    fn learner() -> ShapeLearner {
        let mut l = ShapeLearner::new(DriftConfig {
            learn_messages: 3,
            size_factor: 4.0,
        });
        for i in 0..3 {
            let body = json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": i, "model": "m"}});
            assert!(
                l.observe(&format!("b-{i}"), &body, 80, T).is_empty(),
                "baseline bodies report nothing"
            );
        }
        l
    }

    fn check(body: Value, size: usize, expected: &[(&str, &str)]) {
        let mut l = learner();
        let got: Vec<(String, String)> = l
            .observe("m-1", &body, size, T)
            .into_iter()
            .map(|e| (e.field, e.change.name().to_string()))
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .map(|(f, c)| (f.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want, "for {body}");
    }

    #[test]
    fn drift_is_named_by_field_and_change() {
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4, "model": "m"}}),
            80,
            &[],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4.5, "model": "m"}}),
            80,
            &[],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4, "model": "m", "region": "eu"}}),
            80,
            &[("payload.region", "field_added")],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": "4", "model": "m"}}),
            80,
            &[("payload.tokens", "type_changed")],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4}}),
            80,
            &[("payload.model", "field_missing")],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4, "model": "m"}}),
            400,
            &[("(body)", "size_jump")],
        );
        check(
            json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 4, "model": "m", "extra": {"a": 1}}}),
            80,
            &[("payload.extra", "field_added")],
        );
    }

    #[test]
    fn repeated_drift_counts_up_and_keeps_three_examples() {
        let mut l = learner();
        for i in 0..5 {
            let body = json!({"version":1,"kind":"event","stream":"s","payload":{"tokens": 1, "model": "m", "region": format!("r{i}")}});
            let opened = l.observe(&format!("m-{i}"), &body, 80, T);
            assert_eq!(opened.len(), usize::from(i == 0));
        }
        let events = l.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].count, 5);
        assert_eq!(events[0].examples.len(), 3);
        assert_eq!(
            events[0].sentence(),
            "event: field payload.region added (5 messages, e.g. m-0 = \"r0\")"
        );
    }

    #[test]
    fn kinds_are_learned_apart() {
        let mut l = learner();
        let volume = json!({"version":1,"kind":"volume","op":"create","resource":"r","size_kib":1});
        assert!(
            l.observe("v-1", &volume, 60, T).is_empty(),
            "a new kind starts its own baseline"
        );
        assert_eq!(
            l.shapes().keys().cloned().collect::<Vec<_>>(),
            vec!["event", "volume.create"]
        );
    }
}
