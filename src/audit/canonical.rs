//! Canonical JSON (sorted keys, no whitespace) and its sha256, the basis of every hash trimtab records.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Serializes `value` to canonical JSON: object keys sorted bytewise, no insignificant whitespace.
///
/// Two values that are equal as JSON always give the same bytes, whatever order their maps were built in,
/// so a hash over this text identifies the content and not the serializer's mood.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let tree = serde_json::to_value(value)?;
    let mut out = String::new();
    write_value(&tree, &mut out)?;
    Ok(out)
}

/// The lowercase hex sha256 of the canonical JSON of `value`.
pub fn canonical_sha256<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let text = to_canonical_json(value)?;
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

fn write_value(value: &serde_json::Value, out: &mut String) -> Result<(), serde_json::Error> {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key)?);
                out.push(':');
                write_value(&map[key.as_str()], out)?;
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_change_the_hash() {
        let a = json!({"b": 1, "a": {"y": [1, 2], "x": "s"}});
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();
        assert_eq!(
            to_canonical_json(&a).unwrap(),
            r#"{"a":{"x":"s","y":[1,2]},"b":1}"#
        );
        assert_eq!(canonical_sha256(&a).unwrap(), canonical_sha256(&b).unwrap());
    }

    #[test]
    fn different_content_gives_a_different_hash() {
        assert_ne!(
            canonical_sha256(&json!({"a": 1})).unwrap(),
            canonical_sha256(&json!({"a": 2})).unwrap()
        );
    }
}
