//! Parsing the controller's `/metrics` page (Prometheus text exposition format) into samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sample line: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// Metric name, e.g. `linstor_storage_pool_capacity_free_bytes`.
    pub name: String,
    /// Labels, e.g. `node`, `storage_pool`.
    pub labels: BTreeMap<String, String>,
    /// The value; `NaN`, `+Inf` and `-Inf` are kept as such.
    pub value: f64,
}

impl MetricSample {
    /// The value of one label, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metrics line {line}: {reason}: {text:?}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub reason: &'static str,
    /// The offending line.
    pub text: String,
}

/// Parses the text format: `# HELP`/`# TYPE` comments are skipped, timestamps after the value are ignored.
pub fn parse(text: &str) -> Result<Vec<MetricSample>, ExpositionError> {
    let mut samples = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason| ExpositionError {
            line: index + 1,
            reason,
            text: raw.to_owned(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| error("missing value"))?;
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(error("missing metric name"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after_brace) = rest.strip_prefix('{') {
            let (parsed, remaining) =
                parse_labels(after_brace).ok_or_else(|| error("malformed labels"))?;
            labels = parsed;
            rest = remaining;
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| error("missing value"))?;
        let value = match value_text {
            "+Inf" | "Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            other => other.parse().map_err(|_| error("value is not a number"))?,
        };
        samples.push(MetricSample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// Parses `a="x",b="y"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        text = text[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                other => value.push(other),
            }
        };
        labels.insert(key, value);
        text = &text[end + 1..];
    }
}

/// Escapes a label value for the text format.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_controller_metrics_with_escapes_and_timestamps() {
        let text = "# HELP linstor_info x\n# TYPE linstor_info gauge\nlinstor_info{version=\"1.31.0\",gitid=\"abc\"} 1\n\
            linstor_storage_pool_capacity_free_bytes{node=\"n1\",storage_pool=\"pool-ssd\",driver=\"LVM\"} 1.073741824E9 1700000000000\n\
            weird{path=\"a\\\"b\\\\c\"} NaN\nlinstor_scrape_requests_count 5\n";
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[1].label("node"), Some("n1"));
        assert_eq!(samples[1].value, 1_073_741_824.0);
        assert_eq!(samples[2].label("path"), Some("a\"b\\c"));
        assert!(samples[2].value.is_nan());
        assert_eq!(samples[3].value, 5.0);
        assert!(samples[3].labels.is_empty());
        let err = parse("ok 1\nbroken{a=\"x\" 1\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(
            parse(&format!("m{{v=\"{}\"}} 2", escape_label("q\"\\"))).unwrap()[0].label("v"),
            Some("q\"\\")
        );
    }
}
