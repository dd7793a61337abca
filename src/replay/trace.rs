//! Arrival traces read into arrivals with sizes: the Azure LLM-inference request log (one row per request) and
//! NAB-style `timestamp,value` series (the value is the number of arrivals in that step).
//!
//! The Azure format is `TIMESTAMP,ContextTokens,GeneratedTokens` with timestamps like `2023-11-16 18:17:03.9799600`
//! (7 fractional digits, no time zone; read as UTC, by the metric loader's parser), kept to microseconds. Rows are
//! sorted here even if the file is not.
//!
//! A NAB series gives counts per step, not requests: each row's value (times a scale) becomes that many arrivals
//! spread evenly over the step up to the next row (the last row takes the median step). The series carries no
//! payload sizes, so every arrival gets the median size of the Azure code trace ([`NAB_CONTEXT_TOKENS`]).
//! Rows are sorted, and a timestamp seen twice keeps its first value.

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
    /// The header is neither format's.
    #[error("trace {path}: header is {found:?}, expected \"TIMESTAMP,ContextTokens,GeneratedTokens\" (Azure request log) or \"timestamp,value\" (NAB series)")]
    UnknownFormat {
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

/// Prompt size given to every arrival of a NAB series: the median of the Azure code trace.
pub const NAB_CONTEXT_TOKENS: u32 = 1_469;
/// Output size given to every arrival of a NAB series: the median of the Azure code trace.
pub const NAB_GENERATED_TOKENS: u32 = 13;

/// Which rows of a NAB series to replay and how many arrivals a unit of value is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NabOptions {
    /// Replay only the last N rows (the most recent part of the series), if set.
    pub last_rows: Option<usize>,
    /// Arrivals per unit of value; `None` picks the scale that gives `mean_per_step` arrivals per row on average.
    pub scale: Option<f64>,
    /// The mean arrivals per row that the automatic scale aims for.
    pub mean_per_step: f64,
}

impl Default for NabOptions {
    fn default() -> Self {
        NabOptions {
            last_rows: Some(576),
            scale: None,
            mean_per_step: 16.0,
        }
    }
}

/// A trace read from a file, whichever its format.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The file name, for reports.
    pub name: String,
    /// `azure` or `nab`.
    pub format: &'static str,
    /// The arrivals, sorted by offset.
    pub arrivals: Vec<Arrival>,
    /// How long the trace lasts, from the first arrival to the end of its last step.
    pub span: Duration,
}

/// Reads a NAB `timestamp,value` series as arrivals per step (`path` only names it in errors).
pub fn parse_nab(path: &str, text: &str, options: &NabOptions) -> Result<Trace, TraceError> {
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
    if header != "timestamp,value" {
        return Err(TraceError::Header {
            path: path.into(),
            found: header.into(),
        });
    }
    let mut rows: Vec<(f64, f64)> = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let row_error = |detail: String| TraceError::Row {
            path: path.into(),
            line: index + 1,
            detail,
        };
        let Some((ts, value)) = line.split_once(',') else {
            return Err(row_error(format!("expected 2 fields, found {line:?}")));
        };
        let at = parse_timestamp(ts)
            .ok_or_else(|| row_error(format!("timestamp {ts:?} is not YYYY-MM-DD HH:MM:SS")))?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| row_error(format!("value {value:?} is not a non-negative number")))?;
        rows.push((at, value));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows.dedup_by(|later, earlier| later.0 == earlier.0);
    if let Some(n) = options.last_rows {
        let cut = rows.len().saturating_sub(n);
        rows.drain(..cut);
    }
    let Some(&(start, _)) = rows.first() else {
        return Err(TraceError::Empty { path: path.into() });
    };
    let mut steps: Vec<f64> = rows.windows(2).map(|w| w[1].0 - w[0].0).collect();
    steps.sort_by(f64::total_cmp);
    let median_step = steps.get(steps.len() / 2).copied().unwrap_or(60.0);
    let total: f64 = rows.iter().map(|(_, v)| v).sum();
    let scale = options.scale.unwrap_or(if total > 0.0 {
        options.mean_per_step * rows.len() as f64 / total
    } else {
        1.0
    });
    let mut arrivals = Vec::new();
    // Carry the fractions, so a scale below 1 still replays the right total.
    let mut carry = 0.0;
    for (i, &(at, value)) in rows.iter().enumerate() {
        let step = rows.get(i + 1).map_or(median_step, |next| next.0 - at);
        let wanted = value * scale + carry;
        let n = wanted.floor() as usize;
        carry = wanted - n as f64;
        for k in 0..n {
            let offset = at - start + step * k as f64 / n as f64;
            arrivals.push(Arrival {
                offset: Duration::from_micros((offset * 1e6).round() as u64),
                context_tokens: NAB_CONTEXT_TOKENS,
                generated_tokens: NAB_GENERATED_TOKENS,
            });
        }
    }
    let last = rows.last().map_or(start, |r| r.0);
    Ok(Trace {
        name: file_name(path),
        format: "nab",
        arrivals,
        span: Duration::from_secs_f64(last - start + median_step),
    })
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// Reads a trace file, telling the format by its header: the Azure request log or a NAB series.
pub fn load(path: &Path, nab: &NabOptions) -> Result<Trace, TraceError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
        path: name.clone(),
        source,
    })?;
    parse(&name, &text, nab)
}

/// Reads a trace from text, telling the format by its header.
pub fn parse(name: &str, text: &str, nab: &NabOptions) -> Result<Trace, TraceError> {
    let header = text.lines().next().unwrap_or_default().trim();
    if header == "timestamp,value" {
        return parse_nab(name, text, nab);
    }
    if header != "TIMESTAMP,ContextTokens,GeneratedTokens" {
        return Err(TraceError::UnknownFormat {
            path: name.into(),
            found: header.into(),
        });
    }
    let arrivals = parse_azure_llm(name, text)?;
    let span = arrivals.last().map_or(Duration::ZERO, |a| a.offset);
    Ok(Trace {
        name: file_name(name),
        format: "azure",
        arrivals,
        span,
    })
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
    fn nab_values_become_arrivals_spread_over_their_step() {
        let text = "timestamp,value\n\
                    2015-01-01 00:10:00,4\n\
                    2015-01-01 00:00:00,2\n\
                    2015-01-01 00:05:00,0\n\
                    2015-01-01 00:05:00,9\n";
        let options = NabOptions {
            last_rows: None,
            scale: Some(1.0),
            ..NabOptions::default()
        };
        let trace = parse("x/series.csv", text, &options).unwrap();
        assert_eq!((trace.name.as_str(), trace.format), ("series.csv", "nab"));
        let secs: Vec<u64> = trace.arrivals.iter().map(|a| a.offset.as_secs()).collect();
        // 2 in the first 5 minutes, none in the second (the duplicate 9 is dropped), 4 in the last.
        assert_eq!(secs, vec![0, 150, 600, 675, 750, 825]);
        assert_eq!(trace.span, Duration::from_secs(900));
        let scaled = parse(
            "s.csv",
            text,
            &NabOptions {
                last_rows: Some(2),
                scale: None,
                mean_per_step: 3.0,
            },
        )
        .unwrap();
        assert_eq!(scaled.arrivals.len(), 6, "two rows at a mean of 3 per row");
        let err = parse(
            "s.csv",
            "timestamp,value\n2015-01-01 00:00:00,-1\n",
            &options,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "trace s.csv line 2: value \"-1\" is not a non-negative number"
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
