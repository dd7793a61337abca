//! Metric time series on a fixed step, and the loader that turns messy CSV rows or event logs into one.
//!
//! Real exports are untidy, so the loader regularises them and reports what it did:
//!
//! * rows may come in any order; they are sorted by time (stably, so file order breaks ties);
//! * rows with the same timestamp are merged by a [`DuplicatePolicy`] (mean or last);
//! * irregular sampling is put on a fixed step (given, or the median spacing of the rows) by snapping
//!   each row to the nearest step; rows that land on the same step are averaged;
//! * steps with no row are gaps, either filled by linear interpolation or kept as missing
//!   (`NaN` value, `missing[i] == true`) by a [`GapPolicy`];
//! * event logs (one row per event, such as the Azure LLM trace's requests) are binned into counts per step.
//!
//! Bad input gives a [`SeriesError`] that names the input, the line and what was expected.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The name and labels that identify one series, such as `arrival_rate{queue="orders"}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct SeriesKey {
    /// The metric name.
    pub name: String,
    /// Label pairs that tell series of one metric apart.
    pub labels: BTreeMap<String, String>,
}

impl SeriesKey {
    /// A key with no labels.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
        }
    }

    /// The same key with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

impl std::fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let pairs: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            write!(f, "{{{}}}", pairs.join(","))?;
        }
        Ok(())
    }
}

/// One observation: seconds since the Unix epoch and a value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the Unix epoch (UTC).
    pub at: i64,
    /// The observed value.
    pub value: f64,
}

/// A series on a fixed step: point `i` is at `start + i * step` seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// What the series measures.
    pub key: SeriesKey,
    /// Seconds since the Unix epoch of the first point.
    pub start: i64,
    /// Seconds between points.
    pub step: i64,
    /// The values; `NaN` where `missing` is set.
    pub values: Vec<f64>,
    /// Which points had no observation and were not filled.
    pub missing: Vec<bool>,
}

impl Series {
    /// The timestamp of point `i`.
    pub fn time_of(&self, i: usize) -> i64 {
        self.start + self.step * i as i64
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the series has no points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// What to do with several rows that carry the same timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DuplicatePolicy {
    /// Keep their mean.
    #[default]
    Mean,
    /// Keep the last one in file order.
    Last,
}

/// What to do with steps that have no observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapPolicy {
    /// Fill them by linear interpolation between the neighbouring observations.
    #[default]
    Interpolate,
    /// Keep them as missing: value `NaN` and `missing[i] == true`.
    MarkMissing,
}

/// How to load a `timestamp,value` CSV.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The step in seconds; `None` takes the median spacing of the rows.
    pub step: Option<i64>,
    /// How rows with equal timestamps are merged.
    pub duplicates: DuplicatePolicy,
    /// How steps without a row are treated.
    pub gaps: GapPolicy,
}

/// What the loader did to get a regular series out of the input.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Data rows read.
    pub rows: usize,
    /// Whether the rows were out of time order.
    pub unsorted: bool,
    /// Rows merged into another row with the same timestamp.
    pub duplicates_merged: usize,
    /// Rows that were not on the step grid and were snapped to it.
    pub snapped: usize,
    /// Rows averaged with another row that snapped to the same step.
    pub binned_together: usize,
    /// Steps without a row that were filled by interpolation.
    pub gaps_filled: usize,
    /// Steps without a row that were kept as missing.
    pub gaps_missing: usize,
    /// The step used, in seconds.
    pub step: i64,
    /// The duplicate policy applied.
    pub duplicate_policy: DuplicatePolicy,
    /// The gap policy applied.
    pub gap_policy: GapPolicy,
}

/// Why a series could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The file could not be read.
    #[error("cannot read {input}")]
    Io {
        /// The file.
        input: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A CSV record could not be read.
    #[error("{input} line {line}: malformed csv record")]
    Csv {
        /// The file.
        input: String,
        /// The 1-based line.
        line: u64,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// The first line is data, or is missing a needed column.
    #[error("{input} line 1: expected a header naming the columns ({expected}), found {found:?}")]
    Header {
        /// The file.
        input: String,
        /// What the header must contain.
        expected: String,
        /// What the first line holds.
        found: String,
    },
    /// A timestamp did not parse.
    #[error("{input} line {line}: expected a timestamp like 2014-07-01 00:30:00 or unix seconds, found {found:?}")]
    Timestamp {
        /// The file.
        input: String,
        /// The 1-based line.
        line: u64,
        /// The text found.
        found: String,
    },
    /// A value did not parse.
    #[error("{input} line {line}: expected a number in column {column:?}, found {found:?}")]
    Value {
        /// The file.
        input: String,
        /// The 1-based line.
        line: u64,
        /// The column name.
        column: String,
        /// The text found.
        found: String,
    },
    /// A row has fewer fields than the header.
    #[error("{input} line {line}: expected a field for column {column:?}")]
    MissingField {
        /// The file.
        input: String,
        /// The 1-based line.
        line: u64,
        /// The column name.
        column: String,
    },
    /// There is nothing to build a series from.
    #[error("{input}: expected at least {expected} data rows, found {found}")]
    TooShort {
        /// The file.
        input: String,
        /// The minimum.
        expected: usize,
        /// The rows found.
        found: usize,
    },
    /// The step is not positive.
    #[error("{input}: expected a positive step in seconds, found {found}")]
    Step {
        /// The file.
        input: String,
        /// The step asked for or inferred.
        found: i64,
    },
}

impl SeriesError {
    /// Whether trying again could succeed: only a transient read failure.
    pub fn is_retriable(&self) -> bool {
        matches!(self, SeriesError::Io { source, .. }
            if matches!(source.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut))
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fraction]` (a `T` may separate date and time, a trailing `Z` is allowed)
/// as UTC, or plain Unix seconds, into seconds since the epoch.
pub fn parse_timestamp(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, clock) = text.split_once([' ', 'T'])?;
    let mut date_parts = date.split('-');
    let year: i32 = date_parts.next()?.parse().ok()?;
    let month: u8 = date_parts.next()?.parse().ok()?;
    let day: u8 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() {
        return None;
    }
    let (whole, fraction) = match clock.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, f),
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut clock_parts = whole.split(':');
    let hour: u8 = clock_parts.next()?.parse().ok()?;
    let minute: u8 = clock_parts.next()?.parse().ok()?;
    let second: u8 = clock_parts.next().map_or(Some(0), |s| s.parse().ok())?;
    if clock_parts.next().is_some() {
        return None;
    }
    let month = time::Month::try_from(month).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let time = time::Time::from_hms(hour, minute, second).ok()?;
    let whole = time::PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp();
    let fraction = if fraction.is_empty() {
        0.0
    } else {
        format!("0.{fraction}").parse::<f64>().ok()?
    };
    Some(whole as f64 + fraction)
}

/// Loads a `timestamp,value` CSV file (the NAB format) into a regular series named after the file.
pub fn load_csv(path: &Path, options: &LoadOptions) -> Result<(Series, LoadReport), SeriesError> {
    let input = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SeriesError::Io {
        input: input.clone(),
        source,
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("series");
    parse_csv(&input, SeriesKey::new(name), file, options)
}

/// Reads `timestamp,value` rows from `reader` into a regular series; `input` names the source in errors.
///
/// The columns are found by the header: `timestamp` (or `time`) and `value`, in any case; a header with
/// other names uses its first column as the time and its second as the value.
pub fn parse_csv(
    input: &str,
    key: SeriesKey,
    reader: impl Read,
    options: &LoadOptions,
) -> Result<(Series, LoadReport), SeriesError> {
    let mut rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut records = rows.records();
    let header = match records.next() {
        Some(record) => record.map_err(|source| SeriesError::Csv {
            input: input.to_string(),
            line: 1,
            source,
        })?,
        None => {
            return Err(SeriesError::TooShort {
                input: input.to_string(),
                expected: 2,
                found: 0,
            })
        }
    };
    let expected = "timestamp,value";
    let first = header.get(0).unwrap_or("");
    if header.len() < 2 || parse_timestamp(first).is_some() {
        return Err(SeriesError::Header {
            input: input.to_string(),
            expected: expected.to_string(),
            found: header.iter().collect::<Vec<_>>().join(","),
        });
    }
    let find = |names: &[&str], fallback: usize| {
        header
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
            .unwrap_or(fallback)
    };
    let time_col = find(&["timestamp", "time"], 0);
    let value_col = find(&["value"], if time_col == 0 { 1 } else { 0 });
    let value_name = header.get(value_col).unwrap_or("value").trim().to_string();
    let time_name = header
        .get(time_col)
        .unwrap_or("timestamp")
        .trim()
        .to_string();

    let mut samples: Vec<(f64, f64)> = Vec::new();
    for (index, record) in records.enumerate() {
        let line = index as u64 + 2;
        let record = record.map_err(|source| SeriesError::Csv {
            input: input.to_string(),
            line,
            source,
        })?;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |col: usize, column: &str| {
            record.get(col).ok_or_else(|| SeriesError::MissingField {
                input: input.to_string(),
                line,
                column: column.to_string(),
            })
        };
        let stamp = field(time_col, &time_name)?;
        let at = parse_timestamp(stamp).ok_or_else(|| SeriesError::Timestamp {
            input: input.to_string(),
            line,
            found: stamp.to_string(),
        })?;
        let raw = field(value_col, &value_name)?;
        let value = raw
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| SeriesError::Value {
                input: input.to_string(),
                line,
                column: value_name.clone(),
                found: raw.to_string(),
            })?;
        samples.push((at, value));
    }
    regularise(input, key, samples, options)
}

/// Puts `(seconds, value)` observations on a fixed step as described in the module doc.
pub fn regularise(
    input: &str,
    key: SeriesKey,
    mut samples: Vec<(f64, f64)>,
    options: &LoadOptions,
) -> Result<(Series, LoadReport), SeriesError> {
    let mut report = LoadReport {
        rows: samples.len(),
        duplicate_policy: options.duplicates,
        gap_policy: options.gaps,
        ..Default::default()
    };
    if samples.len() < 2 {
        return Err(SeriesError::TooShort {
            input: input.to_string(),
            expected: 2,
            found: samples.len(),
        });
    }
    report.unsorted = samples.windows(2).any(|w| w[1].0 < w[0].0);
    // A stable sort keeps file order among equal timestamps, which the `Last` policy relies on.
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));

    let mut merged: Vec<(f64, f64, usize)> = Vec::with_capacity(samples.len());
    for (at, value) in samples {
        match merged.last_mut() {
            Some(last) if last.0 == at => {
                report.duplicates_merged += 1;
                match options.duplicates {
                    DuplicatePolicy::Mean => {
                        last.1 += value;
                        last.2 += 1;
                    }
                    DuplicatePolicy::Last => {
                        last.1 = value;
                        last.2 = 1;
                    }
                }
            }
            _ => merged.push((at, value, 1)),
        }
    }
    let merged: Vec<(f64, f64)> = merged
        .into_iter()
        .map(|(at, sum, n)| (at, sum / n as f64))
        .collect();
    if merged.len() < 2 {
        return Err(SeriesError::TooShort {
            input: input.to_string(),
            expected: 2,
            found: merged.len(),
        });
    }

    let step = match options.step {
        Some(step) => step,
        None => {
            let mut spacing: Vec<f64> = merged.windows(2).map(|w| w[1].0 - w[0].0).collect();
            spacing.sort_by(f64::total_cmp);
            spacing[spacing.len() / 2].round() as i64
        }
    };
    if step <= 0 {
        return Err(SeriesError::Step {
            input: input.to_string(),
            found: step,
        });
    }
    report.step = step;

    let start = merged[0].0.floor() as i64;
    let last = merged[merged.len() - 1].0;
    let len = ((last - start as f64) / step as f64).round() as usize + 1;
    let mut sums = vec![0.0; len];
    let mut counts = vec![0usize; len];
    for &(at, value) in &merged {
        let offset = (at - start as f64) / step as f64;
        let slot = offset.round() as usize;
        if (offset - slot as f64).abs() > 1e-9 {
            report.snapped += 1;
        }
        if counts[slot] > 0 {
            report.binned_together += 1;
        }
        sums[slot] += value;
        counts[slot] += 1;
    }
    let mut values: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, &n)| if n == 0 { f64::NAN } else { s / n as f64 })
        .collect();
    let mut missing: Vec<bool> = counts.iter().map(|&n| n == 0).collect();
    match options.gaps {
        GapPolicy::MarkMissing => report.gaps_missing = missing.iter().filter(|&&m| m).count(),
        GapPolicy::Interpolate => {
            report.gaps_filled = interpolate_gaps(&mut values);
            missing.iter_mut().for_each(|m| *m = false);
        }
    }
    Ok((
        Series {
            key,
            start,
            step,
            values,
            missing,
        },
        report,
    ))
}

/// Fills `NaN` runs by linear interpolation between their neighbours; returns how many were filled.
/// The first and last points are always observed by construction of the grid.
fn interpolate_gaps(values: &mut [f64]) -> usize {
    let mut filled = 0;
    let mut i = 0;
    while i < values.len() {
        if values[i].is_nan() {
            let left = i.saturating_sub(1);
            let mut right = i;
            while right < values.len() && values[right].is_nan() {
                right += 1;
            }
            if i == 0 || right == values.len() {
                // Cannot happen for grids built by `regularise`; keep such points as they are.
                i = right;
                continue;
            }
            let (a, b) = (values[left], values[right]);
            let span = (right - left) as f64;
            for (k, v) in values.iter_mut().enumerate().take(right).skip(i) {
                *v = a + (b - a) * (k - left) as f64 / span;
                filled += 1;
            }
            i = right;
        } else {
            i += 1;
        }
    }
    filled
}

/// Loads an event log (one row per event, with a `TIMESTAMP` or `timestamp` column) as counts per `step` seconds.
pub fn load_event_counts(path: &Path, step: i64) -> Result<(Series, LoadReport), SeriesError> {
    let input = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SeriesError::Io {
        input: input.clone(),
        source,
    })?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("events");
    bin_events(
        &input,
        SeriesKey::new(format!("{name}_arrivals")),
        file,
        step,
    )
}

/// Bins event rows from `reader` into counts per `step` seconds; steps with no events count zero.
///
/// Bins are aligned to multiples of `step` since the epoch, so two logs binned alike line up.
pub fn bin_events(
    input: &str,
    key: SeriesKey,
    reader: impl Read,
    step: i64,
) -> Result<(Series, LoadReport), SeriesError> {
    if step <= 0 {
        return Err(SeriesError::Step {
            input: input.to_string(),
            found: step,
        });
    }
    let mut rows = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut records = rows.records();
    let header = match records.next() {
        Some(record) => record.map_err(|source| SeriesError::Csv {
            input: input.to_string(),
            line: 1,
            source,
        })?,
        None => {
            return Err(SeriesError::TooShort {
                input: input.to_string(),
                expected: 1,
                found: 0,
            })
        }
    };
    let time_col = header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case("timestamp"))
        .ok_or_else(|| SeriesError::Header {
            input: input.to_string(),
            expected: "a TIMESTAMP column".to_string(),
            found: header.iter().collect::<Vec<_>>().join(","),
        })?;
    let mut times = Vec::new();
    for (index, record) in records.enumerate() {
        let line = index as u64 + 2;
        let record = record.map_err(|source| SeriesError::Csv {
            input: input.to_string(),
            line,
            source,
        })?;
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let stamp = record
            .get(time_col)
            .ok_or_else(|| SeriesError::MissingField {
                input: input.to_string(),
                line,
                column: "TIMESTAMP".to_string(),
            })?;
        let at = parse_timestamp(stamp).ok_or_else(|| SeriesError::Timestamp {
            input: input.to_string(),
            line,
            found: stamp.to_string(),
        })?;
        times.push(at.floor() as i64);
    }
    let (Some(&first), Some(&last)) = (times.iter().min(), times.iter().max()) else {
        return Err(SeriesError::TooShort {
            input: input.to_string(),
            expected: 1,
            found: 0,
        });
    };
    let start = first.div_euclid(step) * step;
    let len = ((last - start) / step) as usize + 1;
    let mut values = vec![0.0; len];
    for &at in &times {
        values[((at - start) / step) as usize] += 1.0;
    }
    let report = LoadReport {
        rows: times.len(),
        unsorted: times.windows(2).any(|w| w[1] < w[0]),
        step,
        ..Default::default()
    };
    Ok((
        Series {
            key,
            start,
            step,
            missing: vec![false; len],
            values,
        },
        report,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, options: &LoadOptions) -> Result<(Series, LoadReport), SeriesError> {
        parse_csv("test.csv", SeriesKey::new("t"), text.as_bytes(), options)
    }

    fn mean_options() -> LoadOptions {
        LoadOptions::default()
    }

    #[test]
    fn parses_nab_and_azure_timestamps() {
        assert_eq!(parse_timestamp("1970-01-01 00:01:00"), Some(60.0));
        assert_eq!(
            parse_timestamp("2014-07-01T00:30:00Z"),
            Some(1_404_174_600.0)
        );
        let azure = parse_timestamp("2023-11-16 18:17:03.9799600").expect("azure stamp parses");
        assert!((azure - 1_700_158_623.979_96).abs() < 1e-6, "{azure}");
        assert_eq!(parse_timestamp("1700000000"), Some(1_700_000_000.0));
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn sorts_unsorted_rows() {
        let (s, r) = load("timestamp,value\n1970-01-01 00:02:00,3\n1970-01-01 00:00:00,1\n1970-01-01 00:01:00,2\n", &mean_options())
            .expect("loads");
        assert!(r.unsorted);
        assert_eq!(s.values, vec![1.0, 2.0, 3.0]);
        assert_eq!((s.start, s.step), (0, 60));
    }

    #[test]
    fn duplicates_take_the_mean_or_the_last() {
        let text = "timestamp,value\n0,1\n60,2\n60,4\n120,5\n";
        let (s, r) = load(text, &mean_options()).expect("loads");
        assert_eq!(s.values, vec![1.0, 3.0, 5.0]);
        assert_eq!(r.duplicates_merged, 1);
        let last = LoadOptions {
            duplicates: DuplicatePolicy::Last,
            ..Default::default()
        };
        let (s, _) = load(text, &last).expect("loads");
        assert_eq!(s.values, vec![1.0, 4.0, 5.0]);
    }

    #[test]
    fn gaps_are_interpolated_or_marked() {
        let text = "timestamp,value\n0,0\n60,1\n240,4\n300,5\n";
        let (s, r) = load(text, &mean_options()).expect("loads");
        assert_eq!(s.values, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(r.gaps_filled, 2);
        assert!(s.missing.iter().all(|m| !m));
        let mark = LoadOptions {
            gaps: GapPolicy::MarkMissing,
            ..Default::default()
        };
        let (s, r) = load(text, &mark).expect("loads");
        assert_eq!(r.gaps_missing, 2);
        assert_eq!(s.missing, vec![false, false, true, true, false, false]);
        assert!(s.values[2].is_nan() && s.values[3].is_nan());
    }

    #[test]
    fn irregular_sampling_is_snapped_to_the_step() {
        // Rows every ~10 minutes with jitter; 00:21 and 00:19 both snap to 00:20 and are averaged.
        let text = "timestamp,value\n\
            1970-01-01 00:00:00,1\n1970-01-01 00:10:30,2\n1970-01-01 00:19:00,3\n\
            1970-01-01 00:21:00,5\n1970-01-01 00:30:00,6\n";
        let options = LoadOptions {
            step: Some(600),
            ..Default::default()
        };
        let (s, r) = load(text, &options).expect("loads");
        assert_eq!(s.values, vec![1.0, 2.0, 4.0, 6.0]);
        assert_eq!(r.snapped, 3);
        assert_eq!(r.binned_together, 1);
    }

    #[test]
    fn events_are_binned_into_counts() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
            2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n\
            2023-11-16 18:17:15.5000000,10,1\n2023-11-16 18:17:41.0000000,10,1\n";
        let (s, r) =
            bin_events("azure.csv", SeriesKey::new("arrivals"), text.as_bytes(), 10).expect("bins");
        assert_eq!(r.rows, 4);
        assert_eq!(s.start % 10, 0);
        // Bins of 18:17:00, :10, :20, :30, :40.
        assert_eq!(s.values, vec![2.0, 1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn missing_header_names_line_one() {
        let err = load(
            "2014-07-01 00:00:00,1\n2014-07-01 00:30:00,2\n",
            &mean_options(),
        )
        .expect_err("no header");
        let text = err.to_string();
        assert!(
            text.contains("test.csv line 1") && text.contains("header"),
            "{text}"
        );
    }

    #[test]
    fn bad_timestamp_names_the_line() {
        let err = load("timestamp,value\n0,1\nnoon,2\n", &mean_options()).expect_err("bad stamp");
        assert!(
            matches!(err, SeriesError::Timestamp { line: 3, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("test.csv line 3: expected a timestamp"),
            "{err}"
        );
    }

    #[test]
    fn bad_value_names_the_line_and_column() {
        let err =
            load("timestamp,value\n0,1\n60,2\n120,lots\n", &mean_options()).expect_err("bad value");
        assert!(
            err.to_string()
                .contains("test.csv line 4: expected a number in column \"value\""),
            "{err}"
        );
    }

    #[test]
    fn short_row_names_the_missing_column() {
        let err = load("timestamp,value\n0,1\n60\n", &mean_options()).expect_err("short row");
        assert!(
            matches!(err, SeriesError::MissingField { line: 3, .. }),
            "{err}"
        );
    }
}
