//! Arrival traces: the Azure LLM-inference request log (one row per request) read into arrivals with sizes.
//!
//! The format is `TIMESTAMP,ContextTokens,GeneratedTokens` with timestamps like `2023-11-16 18:17:03.9799600`
//! (7 fractional digits, no time zone; read as UTC, by the metric loader's parser), kept to microseconds. Rows are
//! sorted here even if the file is not.

use std::path::Path;
use std::time::Duration;

use crate::metrics::series::parse_timestamp;

/// One request of the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Time since the first arrival of the trace.
    pub offset: Duration,
    /// Prompt size in tokens.
    pub context_tokens: u32,
    /// Output size in tokens.
    pub generated_tokens: u32,
}

/// A trace that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be opened or read.
    #[error("cannot read trace {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The header is not the expected one.
    #[error(
        "trace {path}: header is {found:?}, expected \"TIMESTAMP,ContextTokens,GeneratedTokens\""
    )]
    Header {
        /// The file.
        path: String,
        /// The header found.
        found: String,
    },
    /// A row does not parse.
    #[error("trace {path} line {line}: {detail}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        detail: String,
    },
    /// The file has no rows.
    #[error("trace {path} has no rows")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Reads the Azure LLM-inference trace from a string (`path` only names it in errors).
pub fn parse_azure_llm(path: &str, text: &str) -> Result<Vec<Arrival>, TraceError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    if header != "TIMESTAMP,ContextTokens,GeneratedTokens" {
        return Err(TraceError::Header {
            path: path.into(),
            found: header.into(),
        });
    }
    let mut rows = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row_error = |detail: String| TraceError::Row {
            path: path.into(),
            line: index + 1,
            detail,
        };
        let mut fields = line.split(',');
        let (Some(ts), Some(ctx), Some(gen), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(row_error(format!("expected 3 fields, found {line:?}")));
        };
        let at = parse_timestamp(ts).ok_or_else(|| {
            row_error(format!(
                "timestamp {ts:?} is not YYYY-MM-DD HH:MM:SS[.fraction]"
            ))
        })?;
        let context_tokens = ctx.trim().parse().map_err(|_| {
            row_error(format!(
                "ContextTokens {ctx:?} is not a non-negative integer"
            ))
        })?;
        let generated_tokens = gen.trim().parse().map_err(|_| {
            row_error(format!(
                "GeneratedTokens {gen:?} is not a non-negative integer"
            ))
        })?;
        rows.push((at, context_tokens, generated_tokens));
    }
    rows.sort_by(|(a, _, _), (b, _, _)| a.total_cmp(b));
    let Some(&(start, _, _)) = rows.first() else {
        return Err(TraceError::Empty { path: path.into() });
    };
    Ok(rows
        .into_iter()
        .map(|(at, context_tokens, generated_tokens)| Arrival {
            // Epoch seconds in f64 carry about 0.1 µs of error; microseconds are plenty for pacing a replay.
            offset: Duration::from_micros(((at - start).max(0.0) * 1e6).round() as u64),
            context_tokens,
            generated_tokens,
        })
        .collect())
}

/// Reads the Azure LLM-inference trace from a file.
pub fn load_azure_llm(path: &Path) -> Result<Vec<Arrival>, TraceError> {
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_azure_llm(&path.display().to_string(), &text)
}

/// The code-completion trace shipped in `data/traces/azure-llm-inference-2023/` (CC-BY-4.0, see its README).
pub const AZURE_CODE_TRACE: &str =
    include_str!("../../data/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seven_fractional_digits_and_sorts() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
                    2023-11-16 18:17:04.0319600,3180,8\n\
                    2023-11-16 18:17:03.9799600,4808,10\n";
        let rows = parse_azure_llm("t.csv", text).unwrap();
        assert_eq!(rows[0].context_tokens, 4808);
        assert_eq!(rows[1].offset, Duration::from_millis(52));
    }

    #[test]
    fn names_the_line_and_the_field_on_bad_rows() {
        let bad = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,x,1\n";
        let err = parse_azure_llm("t.csv", bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "trace t.csv line 2: ContextTokens \"x\" is not a non-negative integer"
        );
        let err = parse_azure_llm("t.csv", "a,b\n").unwrap_err().to_string();
        assert!(
            err.contains("expected \"TIMESTAMP,ContextTokens,GeneratedTokens\""),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_trace_has_every_request() {
        let rows = parse_azure_llm("code", AZURE_CODE_TRACE).unwrap();
        assert_eq!(
            rows.len(),
            8_819,
            "the README of the trace counts 8,819 requests"
        );
        let span = rows.last().unwrap().offset.as_secs();
        assert!(
            (3_400..3_500).contains(&span),
            "trace spans about 57 min, got {span} s"
        );
    }
}
