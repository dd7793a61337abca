//! The reply to a question: its text, the citations it rests on, the tool results, and how it was made.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::TimeSpan;
use super::tools::{Ledger, ToolRecord};

/// Who wrote the answer text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerSource {
    /// The language model, from tool results.
    Llm,
    /// trimtab's templates, because no model is configured.
    Templated,
    /// trimtab's templates, because the model failed or misbehaved (see `llm_failure`).
    Fallback,
}

/// One number-bearing item an answer used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Citation {
    /// The mark used in the text, such as `R3`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The tool that returned it.
    pub tool: String,
    /// The time or range the numbers describe.
    pub span: TimeSpan,
    /// The item itself (masked).
    pub data: Value,
}

/// A reply to one question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The answer, citing items as `[R1]`.
    pub text: String,
    /// Who wrote the text.
    pub source: AnswerSource,
    /// For templated answers, the question understood, such as `is the pipeline healthy?`.
    pub understood: Option<String>,
    /// Why the model's answer was not used, when it was not.
    pub llm_failure: Option<String>,
    /// The model asked, when one was.
    pub model: Option<String>,
    /// The cited items with their time ranges.
    pub citations: Vec<Citation>,
    /// Numbers in a model's answer that appear in no tool result (computed or invented).
    pub unverified_numbers: Vec<String>,
    /// Every tool call the answer was built on, with its results.
    pub tool_results: Vec<ToolRecord>,
    /// The prompt version used.
    pub prompt_version: String,
}

impl Answer {
    /// Renders the answer for a terminal: header, text, then the sources with their times.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        match self.source {
            AnswerSource::Llm => {
                out.push_str(&format!(
                    "(answered by model {})\n\n",
                    self.model.as_deref().unwrap_or("?")
                ));
            }
            AnswerSource::Templated | AnswerSource::Fallback => {
                if let Some(reason) = &self.llm_failure {
                    out.push_str(&format!(
                        "The language model's answer was not used: {reason}.\n"
                    ));
                    out.push_str("Nothing was changed; here is trimtab's own answer instead.\n\n");
                }
                if let Some(q) = &self.understood {
                    out.push_str(&format!("Understood as: \"{q}\"\n\n"));
                }
            }
        }
        out.push_str(self.text.trim_end());
        out.push('\n');
        if !self.unverified_numbers.is_empty() {
            out.push_str(&format!(
                "\nWarning: these numbers are not in trimtab's data (computed or invented): {}\n",
                self.unverified_numbers.join(", ")
            ));
        }
        if !self.citations.is_empty() {
            out.push_str("\nSources:\n");
            for c in &self.citations {
                out.push_str(&format!(
                    "  [{}] {} @ {}: {}\n",
                    c.reference,
                    c.tool,
                    c.span.render(),
                    compact(&c.data)
                ));
            }
        }
        out
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 240 {
        let cut: String = s.chars().take(240).collect();
        format!("{cut}…")
    } else {
        s
    }
}

/// The citation marks in a text, in order of first use: `[R1]`, `[R2, R5]`, `[R3][R4]`.
pub fn cited_refs(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        for part in after[..close].split(',') {
            let part = part.trim();
            let is_ref = part.len() > 1
                && part.starts_with('R')
                && part[1..].chars().all(|c| c.is_ascii_digit());
            if is_ref && !out.iter().any(|r| r == part) {
                out.push(part.to_owned());
            }
        }
        rest = &after[close..];
    }
    out
}

/// Citations for the marks used in `text` that exist in the ledger; unknown marks are dropped.
pub fn citations_for(text: &str, ledger: &Ledger) -> Vec<Citation> {
    cited_refs(text)
        .iter()
        .filter_map(|r| ledger.find(r))
        .map(|(record, item)| Citation {
            reference: item.reference.clone(),
            tool: record.tool.clone(),
            span: item.span,
            data: item.data.clone(),
        })
        .collect()
}

/// Numbers written in `text` (outside citation marks), as written.
pub fn numbers_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts = c.is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || matches!(chars[i - 1], '_' | '-')));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len()
            && (chars[j].is_ascii_digit()
                || ((chars[j] == '.' || chars[j] == ',')
                    && j + 1 < chars.len()
                    && chars[j + 1].is_ascii_digit()))
        {
            j += 1;
        }
        let s: String = chars[i..j].iter().collect();
        out.push(s);
        i = j;
    }
    out
}

fn numbers_of(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push(f);
            }
        }
        Value::String(s) => out.extend(numbers_in(s).iter().filter_map(|n| parse_number(n))),
        Value::Array(a) => a.iter().for_each(|x| numbers_of(x, out)),
        Value::Object(m) => m.values().for_each(|x| numbers_of(x, out)),
        _ => {}
    }
}

fn parse_number(s: &str) -> Option<f64> {
    s.replace(',', "").parse().ok()
}

/// Numbers in `text` that match nothing in the ledger (nor in `question`), allowing for rounding to the
/// precision written and for KiB shown as MiB or GiB.
pub fn unverified_numbers(text: &str, ledger: &Ledger, question: &str) -> Vec<String> {
    let mut known = Vec::new();
    for record in ledger.records() {
        for item in &record.items {
            numbers_of(&item.data, &mut known);
            numbers_of(&Value::String(item.span.render()), &mut known);
        }
    }
    numbers_of(&Value::String(question.to_owned()), &mut known);
    let mut without_marks = text.to_owned();
    for r in cited_refs(text) {
        without_marks = without_marks.replace(&r, "");
    }
    let mut out: Vec<String> = Vec::new();
    for written in numbers_in(&without_marks) {
        let Some(x) = parse_number(&written) else {
            continue;
        };
        let decimals = written.rsplit_once('.').map_or(0, |(_, d)| d.len());
        let tolerance = 0.5 * 10f64.powi(-(decimals as i32)) + 1e-9;
        let matches = known.iter().any(|k| {
            [1.0, 1024.0, 1024.0 * 1024.0, 1000.0]
                .iter()
                .any(|scale| (k / scale - x).abs() <= tolerance.max(x.abs() * 0.005))
        });
        // Small counts (0-10) are words as much as numbers ("2 proposals", "1 hour"); do not flag them.
        if !matches && x > 10.0 && !out.contains(&written) {
            out.push(written);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_citation_marks_in_every_style() {
        assert_eq!(
            cited_refs("a [R1] b [R2, R5][R3] [x] [R1] [Rx]"),
            ["R1", "R2", "R5", "R3"]
        );
        assert!(cited_refs("no marks, 12 [3]").is_empty());
    }

    #[test]
    fn numbers_match_tool_results_with_rounding_and_units() {
        use crate::chatops::redact::Redactor;
        let mut ledger = Ledger::new(Redactor::new(vec![], vec![], 200));
        let t = time::macros::datetime!(2026-11-22 03:00 UTC);
        ledger_push(
            &mut ledger,
            serde_json::json!({"oldest_age_s": 96.54, "free_kib": 146800640, "active": 1840}),
            t,
        );
        let check = |text: &str, expected: &[&str]| {
            assert_eq!(
                unverified_numbers(text, &ledger, "in the last 24 hours"),
                expected,
                "{text}"
            );
        };
        check("lag 96.5 s [R1]", &[]);
        check("lag 97 s", &[]);
        check("140 GiB free, 1,840 waiting", &[]);
        check("24 hours, 3 proposals", &[]);
        check("batch size 1000, lag 98.9 s", &["1000", "98.9"]);
    }

    fn ledger_push(ledger: &mut Ledger, data: Value, t: time::OffsetDateTime) {
        ledger.push_for_test(data, TimeSpan::at(t));
    }

    #[test]
    fn finds_numbers_as_written() {
        assert_eq!(
            numbers_in("lag 95.5 s on orders-2, 1,234 msgs, v1"),
            ["95.5", "1,234"]
        );
    }
}
