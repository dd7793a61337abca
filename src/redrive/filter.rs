//! Which dead-lettered messages a list or re-drive is about: by reason, kind and age.

use std::time::Duration;

use serde::Serialize;

use super::DeadLetterEntry;

/// A selection of dead-lettered messages; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// The dead-letter reason starts with this (`SchemaMismatch` matches `SchemaMismatch: ts`).
    pub reason: Option<String>,
    /// The kind is this, or starts with it and a dot (`volume` matches `volume.create`).
    pub kind: Option<String>,
    /// Enqueued at least this long ago, seconds.
    pub older_than_s: Option<u64>,
    /// Enqueued at most this long ago, seconds.
    pub newer_than_s: Option<u64>,
}

/// A filter expression that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("filter {expression:?}: {problem}")]
pub struct FilterError {
    /// What was given.
    pub expression: String,
    /// What was expected.
    pub problem: String,
}

impl FilterError {
    /// Bad input stays bad.
    pub fn is_retriable(&self) -> bool {
        false
    }
}

/// `90`, `90s`, `15m`, `2h`, `7d`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3_600,
        "d" => n * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

impl Filter {
    /// Reads expressions `reason=X`, `kind=K`, `age>15m`, `age<2h`.
    pub fn parse<S: AsRef<str>>(expressions: &[S]) -> Result<Filter, FilterError> {
        let mut filter = Filter::default();
        for e in expressions {
            let e = e.as_ref();
            let bad = |problem: &str| FilterError {
                expression: e.to_string(),
                problem: problem.to_string(),
            };
            if let Some(v) = e.strip_prefix("reason=") {
                filter.reason = Some(v.to_string());
            } else if let Some(v) = e.strip_prefix("kind=") {
                filter.kind = Some(v.to_string());
            } else if let Some(v) = e.strip_prefix("age>") {
                let d = duration(v)
                    .ok_or_else(|| bad("expected a duration such as 90s, 15m, 2h or 7d"))?;
                filter.older_than_s = Some(d.as_secs());
            } else if let Some(v) = e.strip_prefix("age<") {
                let d = duration(v)
                    .ok_or_else(|| bad("expected a duration such as 90s, 15m, 2h or 7d"))?;
                filter.newer_than_s = Some(d.as_secs());
            } else {
                return Err(bad(
                    "expected reason=REASON, kind=KIND, age>DURATION or age<DURATION",
                ));
            }
        }
        Ok(filter)
    }

    /// Whether an entry is selected.
    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        let reason = self
            .reason
            .as_ref()
            .is_none_or(|r| entry.reason.starts_with(r.as_str()));
        let kind = self.kind.as_ref().is_none_or(|k| {
            entry.kind == *k
                || entry
                    .kind
                    .strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        let age = entry.age_s.max(0) as u64;
        let older = self.older_than_s.is_none_or(|s| age >= s);
        let newer = self.newer_than_s.is_none_or(|s| age <= s);
        reason && kind && older && newer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(reason: &str, kind: &str, age_s: i64) -> DeadLetterEntry {
        DeadLetterEntry {
            sequence_number: 1,
            message_id: Some("m".into()),
            reason: reason.into(),
            description: String::new(),
            kind: kind.into(),
            enqueued_at: time::OffsetDateTime::UNIX_EPOCH,
            age_s,
            redrive_count: 0,
            size: 0,
            preview: String::new(),
        }
    }

    fn check(expressions: &[&str], e: &DeadLetterEntry, expected: bool) {
        let f = Filter::parse(expressions).unwrap();
        assert_eq!(f.matches(e), expected, "{expressions:?} on {e:?}");
    }

    #[test]
    fn filters_by_reason_kind_and_age() {
        let e = entry("SchemaMismatch: ts", "volume.create", 600);
        check(&[], &e, true);
        check(&["reason=SchemaMismatch"], &e, true);
        check(&["reason=MalformedJson"], &e, false);
        check(&["kind=volume"], &e, true);
        check(&["kind=volume.create"], &e, true);
        check(&["kind=vol"], &e, false);
        check(&["kind=event"], &e, false);
        check(&["age>5m"], &e, true);
        check(&["age>11m"], &e, false);
        check(&["age<1h", "reason=Schema"], &e, true);
        check(&["age<9m"], &e, false);
    }

    #[test]
    fn bad_expressions_say_what_was_expected() {
        let err = Filter::parse(&["age>soon"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "filter \"age>soon\": expected a duration such as 90s, 15m, 2h or 7d"
        );
        let err = Filter::parse(&["colour=red"]).unwrap_err().to_string();
        assert!(err.contains("expected reason=REASON"), "{err}");
    }
}
