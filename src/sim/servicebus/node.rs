//! Request/reply nodes: `$cbs` (put-token) and `<entity>/$management` (renew-lock, peek, schedule, cancel).

use fe2o3_amqp_types::messaging::{
    message::__private::{Deserializable, Serializable},
    AmqpValue, ApplicationProperties, Body, Message, Properties,
};
use fe2o3_amqp_types::primitives::{
    Array, Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value,
};
use uuid::Uuid;

use super::broker::{AmqpMessage, Broker, Source};
use super::sas::SasKey;

/// Which node a request or reply link belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Cbs,
    /// The management node of an entity (its path as the client wrote it, without `/$management`).
    Management(String),
}

fn property<'m>(message: &'m AmqpMessage, name: &str) -> Option<&'m str> {
    match message.application_properties.as_ref()?.0.get(name)? {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

fn body_map(message: &AmqpMessage) -> Option<&OrderedMap<Value, Value>> {
    match &message.body {
        Body::Value(AmqpValue(Value::Map(map))) => Some(map),
        _ => None,
    }
}

fn map_entry<'m>(map: &'m OrderedMap<Value, Value>, key: &str) -> Option<&'m Value> {
    map.get(&Value::String(key.to_string()))
        .or_else(|| map.get(&Value::Symbol(Symbol::from(key))))
}

/// A reply correlated to `request`, with the given application properties and body.
fn reply(request: &AmqpMessage, properties: Vec<(&str, SimpleValue)>, body: Value) -> AmqpMessage {
    let mut application = OrderedMap::new();
    for (name, value) in properties {
        application.insert(name.to_string(), value);
    }
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            correlation_id: request
                .properties
                .as_ref()
                .and_then(|p| p.message_id.clone()),
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(application)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    }
}

/// The `reply_to` of a request, if it has one.
pub(crate) fn reply_to(request: &AmqpMessage) -> Option<String> {
    request.properties.as_ref().and_then(|p| p.reply_to.clone())
}

/// Answers a `$cbs` request: `put-token` with a valid SAS token gets 202, anything else 401 or 400.
pub(crate) fn cbs(request: &AmqpMessage, key: &SasKey, now_unix: i64) -> AmqpMessage {
    let status = |code: i32, description: String| {
        reply(
            request,
            vec![
                ("status-code", SimpleValue::Int(code)),
                ("status-description", SimpleValue::String(description)),
            ],
            Value::Null,
        )
    };
    if property(request, "operation") != Some("put-token") {
        return status(
            400,
            format!(
                "unsupported $cbs operation {:?}",
                property(request, "operation")
            ),
        );
    }
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(s))) => s.clone(),
        Body::Value(AmqpValue(Value::Binary(b))) => String::from_utf8_lossy(b).into_owned(),
        _ => return status(400, "put-token body must be the token string".into()),
    };
    match key.verify(&token, now_unix) {
        Ok(()) => status(202, "Accepted".into()),
        Err(e) => {
            tracing::info!(error = %e, name = property(request, "name"), "put-token refused");
            status(401, format!("Unauthorized: InvalidSignature: {e}"))
        }
    }
}

fn management_status(
    request: &AmqpMessage,
    code: i32,
    description: &str,
    condition: Option<&str>,
    body: Value,
) -> AmqpMessage {
    let mut properties = vec![
        ("statusCode", SimpleValue::Int(code)),
        ("statusDescription", SimpleValue::String(description.into())),
    ];
    if let Some(condition) = condition {
        properties.push((
            "errorCondition",
            SimpleValue::Symbol(Symbol::from(condition)),
        ));
    }
    reply(request, properties, body)
}

/// Answers a request to `entity/$management`.
pub(crate) fn management(broker: &Broker, entity: &str, request: &AmqpMessage) -> AmqpMessage {
    match property(request, "operation") {
        Some("com.microsoft:renew-lock") => renew_lock(broker, request),
        Some("com.microsoft:peek-message") => peek(broker, entity, request),
        Some("com.microsoft:schedule-message") => schedule(broker, entity, request),
        Some("com.microsoft:cancel-scheduled-message") => cancel_scheduled(broker, entity, request),
        other => management_status(
            request,
            501,
            &format!("the stand-in does not implement management operation {other:?}"),
            Some("amqp:not-implemented"),
            Value::Null,
        ),
    }
}

fn renew_lock(broker: &Broker, request: &AmqpMessage) -> AmqpMessage {
    let tokens: Option<Vec<Uuid>> = body_map(request)
        .and_then(|m| map_entry(m, "lock-tokens"))
        .and_then(|v| {
            let items = match v {
                Value::Array(a) => a.0.as_slice(),
                Value::List(l) => l.as_slice(),
                _ => return None,
            };
            items
                .iter()
                .map(|i| {
                    if let Value::Uuid(u) = i {
                        Some(Uuid::from_bytes(*u.as_inner()))
                    } else {
                        None
                    }
                })
                .collect()
        });
    let Some(tokens) = tokens else {
        return management_status(
            request,
            400,
            "renew-lock needs `lock-tokens`: an array of uuids",
            Some("amqp:invalid-field"),
            Value::Null,
        );
    };
    match broker.renew(&tokens) {
        Ok(until) => {
            let expirations = until.into_iter().map(|ms| Value::Timestamp(Timestamp::from_milliseconds(ms))).collect();
            let mut body = OrderedMap::new();
            body.insert(Value::String("expirations".into()), Value::Array(Array(expirations)));
            management_status(request, 200, "OK", None, Value::Map(body))
        }
        Err(lost) => management_status(
            request,
            410,
            &format!("The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue. Lock token: {lost}"),
            Some("com.microsoft:message-lock-lost"),
            Value::Null,
        ),
    }
}

fn schedule(broker: &Broker, entity: &str, request: &AmqpMessage) -> AmqpMessage {
    let targets = match broker.send_targets(entity) {
        Ok(t) => t,
        Err(e) => {
            return management_status(
                request,
                404,
                &e.to_string(),
                Some("amqp:not-found"),
                Value::Null,
            )
        }
    };
    let entries = match body_map(request).and_then(|m| map_entry(m, "messages")) {
        Some(Value::List(entries)) => entries,
        Some(Value::Array(entries)) => &entries.0,
        _ => {
            return management_status(
                request,
                400,
                "schedule-message needs `messages`: a list of maps with an encoded `message`",
                Some("amqp:invalid-field"),
                Value::Null,
            )
        }
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let encoded = match entry {
            Value::Map(m) => match map_entry(m, "message") {
                Some(Value::Binary(b)) => b,
                _ => {
                    return management_status(
                        request,
                        400,
                        "a scheduled entry lacks its binary `message`",
                        Some("amqp:invalid-field"),
                        Value::Null,
                    )
                }
            },
            _ => {
                return management_status(
                    request,
                    400,
                    "a scheduled entry is not a map",
                    Some("amqp:invalid-field"),
                    Value::Null,
                )
            }
        };
        match serde_amqp::from_slice::<Deserializable<AmqpMessage>>(encoded) {
            Ok(m) => messages.push(m.0),
            Err(e) => {
                return management_status(
                    request,
                    400,
                    &format!("a scheduled message does not decode: {e}"),
                    Some("amqp:decode-error"),
                    Value::Null,
                )
            }
        }
    }
    let numbers = broker.enqueue(&targets, messages);
    let mut body = OrderedMap::new();
    body.insert(
        Value::String("sequence-numbers".into()),
        Value::Array(Array(numbers.into_iter().map(Value::Long).collect())),
    );
    management_status(request, 200, "OK", None, Value::Map(body))
}

fn cancel_scheduled(broker: &Broker, entity: &str, request: &AmqpMessage) -> AmqpMessage {
    let targets = match broker.send_targets(entity) {
        Ok(t) => t,
        Err(e) => {
            return management_status(
                request,
                404,
                &e.to_string(),
                Some("amqp:not-found"),
                Value::Null,
            )
        }
    };
    let numbers: Option<Vec<i64>> = body_map(request)
        .and_then(|m| map_entry(m, "sequence-numbers"))
        .and_then(|v| {
            let items = match v {
                Value::Array(a) => a.0.as_slice(),
                Value::List(l) => l.as_slice(),
                _ => return None,
            };
            items
                .iter()
                .map(|i| {
                    if let Value::Long(n) = i {
                        Some(*n)
                    } else {
                        None
                    }
                })
                .collect()
        });
    let Some(numbers) = numbers else {
        return management_status(
            request,
            400,
            "cancel-scheduled-message needs `sequence-numbers`: an array of longs",
            Some("amqp:invalid-field"),
            Value::Null,
        );
    };
    broker.cancel_scheduled(&targets, &numbers);
    management_status(request, 200, "OK", None, Value::Null)
}

fn peek(broker: &Broker, entity: &str, request: &AmqpMessage) -> AmqpMessage {
    let map = body_map(request);
    let from = match map.and_then(|m| map_entry(m, "from-sequence-number")) {
        Some(Value::Long(n)) => *n,
        _ => 0,
    };
    let count = match map.and_then(|m| map_entry(m, "message-count")) {
        Some(Value::Int(n)) => (*n).max(1) as usize,
        _ => 1,
    };
    let source: Source = match broker.receive_source(entity) {
        Ok(s) => s,
        Err(e) => {
            return management_status(
                request,
                404,
                &e.to_string(),
                Some("amqp:not-found"),
                Value::Null,
            )
        }
    };
    let messages = broker.peek(&source, from, count);
    if messages.is_empty() {
        return management_status(request, 204, "No messages", None, Value::Null);
    }
    let mut encoded = Vec::new();
    for message in messages {
        match serde_amqp::to_vec(&Serializable(&message)) {
            Ok(bytes) => {
                let mut entry = OrderedMap::new();
                entry.insert(
                    Value::String("message".into()),
                    Value::Binary(Binary::from(bytes)),
                );
                encoded.push(Value::Map(entry));
            }
            Err(e) => tracing::warn!(error = %e, "a stored message failed to encode for peek"),
        }
    }
    let mut body = OrderedMap::new();
    body.insert(Value::String("messages".into()), Value::List(encoded));
    management_status(request, 200, "OK", None, Value::Map(body))
}
