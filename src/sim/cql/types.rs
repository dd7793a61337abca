//! CQL column types: parsing their names, describing them on the wire, and checking and encoding values.

use cassandra_protocol::frame::message_result::{ColType, ColTypeOption, ColTypeOptionValue};

/// A column type the server understands. `frozen<..>` is accepted and dropped: the server stores
/// collections as their serialized bytes either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CqlType {
    Ascii,
    Text,
    Uuid,
    Timeuuid,
    Timestamp,
    Date,
    Time,
    Bigint,
    Counter,
    Int,
    Smallint,
    Tinyint,
    Varint,
    Decimal,
    Double,
    Float,
    Boolean,
    Blob,
    Inet,
    Duration,
    List(Box<CqlType>),
    Set(Box<CqlType>),
    Map(Box<CqlType>, Box<CqlType>),
}

impl CqlType {
    /// Parses a type name as written in CREATE TABLE, such as `text` or `frozen<map<text, int>>`.
    pub fn parse(text: &str) -> Option<CqlType> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        if let Some(open) = lower.find('<') {
            let outer = lower[..open].trim();
            let inner = lower.get(open + 1..lower.len().checked_sub(1)?)?;
            if !lower.ends_with('>') {
                return None;
            }
            let args = split_top_level(inner);
            return match (outer, args.as_slice()) {
                ("frozen", [one]) => CqlType::parse(one),
                ("list", [one]) => Some(CqlType::List(Box::new(CqlType::parse(one)?))),
                ("set", [one]) => Some(CqlType::Set(Box::new(CqlType::parse(one)?))),
                ("map", [k, v]) => Some(CqlType::Map(
                    Box::new(CqlType::parse(k)?),
                    Box::new(CqlType::parse(v)?),
                )),
                _ => None,
            };
        }
        Some(match lower.as_str() {
            "ascii" => CqlType::Ascii,
            "text" | "varchar" => CqlType::Text,
            "uuid" => CqlType::Uuid,
            "timeuuid" => CqlType::Timeuuid,
            "timestamp" => CqlType::Timestamp,
            "date" => CqlType::Date,
            "time" => CqlType::Time,
            "bigint" => CqlType::Bigint,
            "counter" => CqlType::Counter,
            "int" => CqlType::Int,
            "smallint" => CqlType::Smallint,
            "tinyint" => CqlType::Tinyint,
            "varint" => CqlType::Varint,
            "decimal" => CqlType::Decimal,
            "double" => CqlType::Double,
            "float" => CqlType::Float,
            "boolean" => CqlType::Boolean,
            "blob" => CqlType::Blob,
            "inet" => CqlType::Inet,
            "duration" => CqlType::Duration,
            _ => return None,
        })
    }

    /// The name as `system_schema.columns.type` spells it.
    pub fn name(&self) -> String {
        match self {
            CqlType::Ascii => "ascii".into(),
            CqlType::Text => "text".into(),
            CqlType::Uuid => "uuid".into(),
            CqlType::Timeuuid => "timeuuid".into(),
            CqlType::Timestamp => "timestamp".into(),
            CqlType::Date => "date".into(),
            CqlType::Time => "time".into(),
            CqlType::Bigint => "bigint".into(),
            CqlType::Counter => "counter".into(),
            CqlType::Int => "int".into(),
            CqlType::Smallint => "smallint".into(),
            CqlType::Tinyint => "tinyint".into(),
            CqlType::Varint => "varint".into(),
            CqlType::Decimal => "decimal".into(),
            CqlType::Double => "double".into(),
            CqlType::Float => "float".into(),
            CqlType::Boolean => "boolean".into(),
            CqlType::Blob => "blob".into(),
            CqlType::Inet => "inet".into(),
            CqlType::Duration => "duration".into(),
            CqlType::List(t) => format!("frozen<list<{}>>", t.name()),
            CqlType::Set(t) => format!("frozen<set<{}>>", t.name()),
            CqlType::Map(k, v) => format!("frozen<map<{}, {}>>", k.name(), v.name()),
        }
    }

    /// The type as a result or bind-marker column spec.
    pub fn wire(&self) -> ColTypeOption {
        let simple = |id| ColTypeOption { id, value: None };
        match self {
            CqlType::Ascii => simple(ColType::Ascii),
            CqlType::Text => simple(ColType::Varchar),
            CqlType::Uuid => simple(ColType::Uuid),
            CqlType::Timeuuid => simple(ColType::Timeuuid),
            CqlType::Timestamp => simple(ColType::Timestamp),
            CqlType::Date => simple(ColType::Date),
            CqlType::Time => simple(ColType::Time),
            CqlType::Bigint => simple(ColType::Bigint),
            CqlType::Counter => simple(ColType::Counter),
            CqlType::Int => simple(ColType::Int),
            CqlType::Smallint => simple(ColType::Smallint),
            CqlType::Tinyint => simple(ColType::Tinyint),
            CqlType::Varint => simple(ColType::Varint),
            CqlType::Decimal => simple(ColType::Decimal),
            CqlType::Double => simple(ColType::Double),
            CqlType::Float => simple(ColType::Float),
            CqlType::Boolean => simple(ColType::Boolean),
            CqlType::Blob => simple(ColType::Blob),
            CqlType::Inet => simple(ColType::Inet),
            CqlType::Duration => simple(ColType::Duration),
            CqlType::List(t) => ColTypeOption {
                id: ColType::List,
                value: Some(ColTypeOptionValue::CList(Box::new(t.wire()))),
            },
            CqlType::Set(t) => ColTypeOption {
                id: ColType::Set,
                value: Some(ColTypeOptionValue::CSet(Box::new(t.wire()))),
            },
            CqlType::Map(k, v) => ColTypeOption {
                id: ColType::Map,
                value: Some(ColTypeOptionValue::CMap(
                    Box::new(k.wire()),
                    Box::new(v.wire()),
                )),
            },
        }
    }

    /// Checks that serialized bytes are a valid value of this type; the error says what was expected.
    pub fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let fixed = |n: usize| {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "expected {n} bytes for {}, got {}",
                    self.name(),
                    bytes.len()
                ))
            }
        };
        match self {
            CqlType::Uuid | CqlType::Timeuuid => fixed(16),
            CqlType::Timestamp
            | CqlType::Bigint
            | CqlType::Counter
            | CqlType::Double
            | CqlType::Time => fixed(8),
            CqlType::Int | CqlType::Float | CqlType::Date => fixed(4),
            CqlType::Smallint => fixed(2),
            CqlType::Tinyint | CqlType::Boolean => fixed(1),
            CqlType::Inet => match bytes.len() {
                4 | 16 => Ok(()),
                n => Err(format!("expected 4 or 16 bytes for inet, got {n}")),
            },
            CqlType::Text => std::str::from_utf8(bytes)
                .map(|_| ())
                .map_err(|_| "expected utf-8 text".to_string()),
            CqlType::Ascii => {
                if bytes.is_ascii() {
                    Ok(())
                } else {
                    Err("expected ascii text".to_string())
                }
            }
            _ => Ok(()),
        }
    }

    /// Encodes a literal from a CQL statement as a value of this type.
    pub fn encode_literal(&self, literal: &Literal) -> Result<Option<Vec<u8>>, String> {
        let mismatch = || format!("cannot use {literal:?} as a value of type {}", self.name());
        Ok(Some(match (self, literal) {
            (_, Literal::Null) => return Ok(None),
            (CqlType::Text | CqlType::Ascii, Literal::Str(s)) => s.as_bytes().to_vec(),
            (CqlType::Timestamp, Literal::Str(s)) => {
                let parsed =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| format!("expected an rfc 3339 timestamp, got '{s}'"))?;
                ((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
                    .to_be_bytes()
                    .to_vec()
            }
            (CqlType::Uuid | CqlType::Timeuuid, Literal::Str(s) | Literal::Word(s)) => {
                uuid::Uuid::parse_str(s)
                    .map_err(|_| mismatch())?
                    .as_bytes()
                    .to_vec()
            }
            (
                CqlType::Bigint | CqlType::Timestamp | CqlType::Counter | CqlType::Time,
                Literal::Int(i),
            ) => i.to_be_bytes().to_vec(),
            (CqlType::Int, Literal::Int(i)) => i32::try_from(*i)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            (CqlType::Smallint, Literal::Int(i)) => i16::try_from(*i)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            (CqlType::Tinyint, Literal::Int(i)) => i8::try_from(*i)
                .map_err(|_| mismatch())?
                .to_be_bytes()
                .to_vec(),
            (CqlType::Varint, Literal::Int(i)) => varint(*i),
            (CqlType::Double, Literal::Int(i)) => (*i as f64).to_be_bytes().to_vec(),
            (CqlType::Double, Literal::Float(f)) => f.to_be_bytes().to_vec(),
            (CqlType::Float, Literal::Int(i)) => (*i as f32).to_be_bytes().to_vec(),
            (CqlType::Float, Literal::Float(f)) => (*f as f32).to_be_bytes().to_vec(),
            (CqlType::Boolean, Literal::Bool(b)) => vec![u8::from(*b)],
            (CqlType::Blob, Literal::Blob(b)) => b.clone(),
            (CqlType::List(t) | CqlType::Set(t), Literal::List(items)) => {
                let mut out = (items.len() as i32).to_be_bytes().to_vec();
                for item in items {
                    push_cell(&mut out, t.encode_literal(item)?.as_deref());
                }
                out
            }
            (CqlType::Map(k, v), Literal::Map(pairs)) => {
                let mut out = (pairs.len() as i32).to_be_bytes().to_vec();
                for (key, value) in pairs {
                    push_cell(&mut out, k.encode_literal(key)?.as_deref());
                    push_cell(&mut out, v.encode_literal(value)?.as_deref());
                }
                out
            }
            (CqlType::Map(_, _), Literal::List(items)) if items.is_empty() => {
                0i32.to_be_bytes().to_vec()
            }
            (CqlType::List(_) | CqlType::Set(_), Literal::Map(pairs)) if pairs.is_empty() => {
                0i32.to_be_bytes().to_vec()
            }
            _ => return Err(mismatch()),
        }))
    }

    /// A sort key that orders stored values the way Cassandra orders clustering columns.
    pub fn sort_key(&self, bytes: Option<&[u8]>) -> SortKey {
        let Some(bytes) = bytes else {
            return SortKey::Null;
        };
        let signed = |b: &[u8]| {
            b.iter().fold(
                if b.first().is_some_and(|x| x & 0x80 != 0) {
                    -1i64
                } else {
                    0
                },
                |acc, x| (acc << 8) | i64::from(*x),
            )
        };
        match self {
            CqlType::Bigint
            | CqlType::Timestamp
            | CqlType::Counter
            | CqlType::Int
            | CqlType::Smallint
            | CqlType::Tinyint
            | CqlType::Time
            | CqlType::Varint => SortKey::Int(signed(bytes)),
            CqlType::Double => SortKey::Float(
                <[u8; 8]>::try_from(bytes)
                    .map(f64::from_be_bytes)
                    .unwrap_or_default()
                    .to_bits() as i64,
            ),
            _ => SortKey::Bytes(bytes.to_vec()),
        }
        .normalise()
    }
}

/// A totally ordered image of a clustering value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SortKey {
    Null,
    Int(i64),
    Float(i64),
    Bytes(Vec<u8>),
}

impl SortKey {
    fn normalise(self) -> SortKey {
        match self {
            // Map IEEE-754 bits onto a signed integer that sorts the same way as the float.
            SortKey::Float(bits) => SortKey::Float(if bits < 0 { i64::MIN - bits } else { bits }),
            other => other,
        }
    }
}

/// A literal value written inside a CQL statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Str(String),
    /// A bare word, such as an unquoted uuid.
    Word(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Blob(Vec<u8>),
    List(Vec<Literal>),
    Map(Vec<(Literal, Literal)>),
}

/// Appends one `[int length][bytes]` cell (length -1 for null), as collections and rows are laid out.
pub fn push_cell(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn varint(value: i64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (this, next) = (bytes[start], bytes[start + 1]);
        if (this == 0 && next & 0x80 == 0) || (this == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// Splits `a, map<b, c>` at the commas that are not inside angle brackets.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_types_and_names_them_back() {
        let t = CqlType::parse("frozen<map<text, list<int>>>").expect("parse");
        assert_eq!(
            t,
            CqlType::Map(
                Box::new(CqlType::Text),
                Box::new(CqlType::List(Box::new(CqlType::Int)))
            )
        );
        assert_eq!(t.name(), "frozen<map<text, frozen<list<int>>>>");
        assert_eq!(CqlType::parse("wat"), None);
    }

    #[test]
    fn sort_keys_order_negative_numbers_first() {
        let t = CqlType::Bigint;
        let a = t.sort_key(Some(&(-5i64).to_be_bytes()));
        let b = t.sort_key(Some(&3i64.to_be_bytes()));
        assert!(a < b);
        let d = CqlType::Double;
        assert!(
            d.sort_key(Some(&(-1.5f64).to_be_bytes())) < d.sort_key(Some(&(0.25f64).to_be_bytes()))
        );
        assert!(
            d.sort_key(Some(&(-2.5f64).to_be_bytes())) < d.sort_key(Some(&(-1.5f64).to_be_bytes()))
        );
    }

    #[test]
    fn checks_fixed_width_values() {
        assert!(CqlType::Uuid.check(&[0; 16]).is_ok());
        assert!(CqlType::Uuid
            .check(&[0; 3])
            .unwrap_err()
            .contains("16 bytes"));
        assert!(CqlType::Text.check(&[0xff]).is_err());
    }
}
