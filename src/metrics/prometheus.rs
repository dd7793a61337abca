//! The Prometheus text exposition (format 0.0.4) of everything trimtab measures, from one [`Scrape`] of snapshots.
//!
//! Names follow `trimtab_<name>_<unit>[_total]`: counters end in `_total`, durations are in seconds, sizes in
//! bytes (LINSTOR's KiB are converted), ratios are plain numbers. Every family carries `# HELP` and `# TYPE`, and
//! a family with no samples is left out rather than printed empty. Rendering is pure: the caller gathers the
//! snapshots (the API does, from the pipeline's handles and the agent's snapshot).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::cassandra::observe::WriterSnapshot;
use crate::linstor::placement::PlacementSnapshot;
use crate::pipeline::{Knobs, StatsSnapshot};
use crate::servicebus::depth::EntityDepth;
use crate::servicebus::lag::LagSnapshot;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The latest forecast of one series, flattened for export.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastGauge {
    /// Series name, such as `arrival_rate`.
    pub series: String,
    /// The series' labels (pool class, entity, ...).
    pub labels: BTreeMap<String, String>,
    /// Point forecast of the first step ahead.
    pub point: f64,
    /// Lower interval bound of the first step ahead.
    pub lower: f64,
    /// Upper interval bound of the first step ahead.
    pub upper: f64,
    /// Rolling mean absolute scaled error of this series' scored forecasts.
    pub rolling_mase: Option<f64>,
    /// Whether the planner may act on this series.
    pub trusted: bool,
}

/// Everything one scrape exports; absent parts are left out of the output.
#[derive(Debug, Clone, Default)]
pub struct Scrape<'a> {
    /// The pipeline's counters.
    pub pipeline: Option<&'a StatsSnapshot>,
    /// Lag per partition key.
    pub lag: Option<&'a LagSnapshot>,
    /// The Cassandra writer's recent window and totals.
    pub writer: Option<&'a WriterSnapshot>,
    /// The live knobs.
    pub knobs: Option<&'a Knobs>,
    /// Depth per Service Bus entity, as last sampled.
    pub depth: &'a [EntityDepth],
    /// The latest forecast per series.
    pub forecasts: &'a [ForecastGauge],
    /// LINSTOR placement and capacity, as last sampled.
    pub placement: Option<&'a PlacementSnapshot>,
    /// Proposals per state (`recommended`, `pending`, `approved`, ...).
    pub proposals: BTreeMap<String, u64>,
    /// The mode the latest control step ran in.
    pub mode: Option<&'a str>,
    /// The configured mode.
    pub configured_mode: Option<&'a str>,
    /// Whether the kill switch is on; `None` when no agent runs.
    pub paused: Option<bool>,
    /// Sample steps the agent has done.
    pub agent_samples: Option<u64>,
    /// Control steps the agent has done.
    pub agent_steps: Option<u64>,
}

/// A metric type of the text format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Builds the exposition text family by family.
struct Exposition {
    out: String,
}

/// One sample: its labels and value.
type Point = (Vec<(&'static str, String)>, f64);

impl Exposition {
    fn new() -> Self {
        Exposition { out: String::new() }
    }

    /// Writes a family; skipped when it has no samples.
    fn family(&mut self, name: &str, kind: Kind, help: &str, points: Vec<Point>) {
        if points.is_empty() {
            return;
        }
        debug_assert!(
            name.starts_with("trimtab_"),
            "{name} lacks the trimtab_ prefix"
        );
        debug_assert_eq!(
            kind == Kind::Counter,
            name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in points {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {}", number(value));
        }
    }

    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help, vec![(Vec::new(), value)]);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Help text escapes backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Numbers as Prometheus reads them, with its spellings of the special values.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Renders one scrape as the text format.
pub fn render(s: &Scrape<'_>) -> String {
    let mut e = Exposition::new();
    use Kind::{Counter, Gauge};
    if let Some(p) = s.pipeline {
        for (name, help, value) in [
            (
                "trimtab_messages_received_total",
                "Messages received from Service Bus (each delivery counts).",
                p.received,
            ),
            (
                "trimtab_messages_completed_total",
                "Messages completed after their effect was durable.",
                p.completed,
            ),
            (
                "trimtab_messages_abandoned_total",
                "Messages abandoned for redelivery after a retriable failure.",
                p.abandoned,
            ),
            (
                "trimtab_messages_dead_lettered_total",
                "Messages dead-lettered with a reason.",
                p.dead_lettered,
            ),
            (
                "trimtab_settlements_lock_lost_total",
                "Settlements refused because the message lock was lost.",
                p.lock_lost,
            ),
            (
                "trimtab_settle_errors_total",
                "Settlements that failed for another reason.",
                p.settle_errors,
            ),
            (
                "trimtab_rows_written_total",
                "Event rows confirmed durable in Cassandra.",
                p.events_written,
            ),
            (
                "trimtab_write_calls_total",
                "Write calls made to the event sink.",
                p.write_batches,
            ),
            (
                "trimtab_write_retries_total",
                "Rows written again after a retriable failure.",
                p.write_retries,
            ),
            (
                "trimtab_volume_ops_total",
                "LINSTOR volume operations that succeeded.",
                p.volume_ops_done,
            ),
        ] {
            e.single(name, Counter, help, value as f64);
        }
        e.single(
            "trimtab_messages_in_flight_messages",
            Gauge,
            "Messages received and not yet settled.",
            p.in_flight as f64,
        );
    }
    if !s.depth.is_empty() {
        let mut points = Vec::new();
        for d in s.depth {
            for (kind, v) in [
                ("active", d.counts.active),
                ("dead_letter", d.counts.dead_letter),
                ("scheduled", d.counts.scheduled),
                ("transfer", d.counts.transfer),
                ("transfer_dead_letter", d.counts.transfer_dead_letter),
            ] {
                points.push((
                    vec![("entity", d.entity.clone()), ("kind", kind.to_string())],
                    v as f64,
                ));
            }
        }
        e.family(
            "trimtab_queue_depth_messages",
            Gauge,
            "Messages in a Service Bus entity by kind, as last sampled.",
            points,
        );
    }
    if let Some(lag) = s.lag {
        let keyed = || {
            lag.keys
                .iter()
                .map(|(k, v)| (k.clone(), v))
                .collect::<Vec<_>>()
        };
        let per_key = |f: &dyn Fn(&crate::servicebus::lag::KeyLag) -> Option<f64>| {
            keyed()
                .into_iter()
                .filter_map(|(k, v)| f(v).map(|x| (vec![("partition", k)], x)))
                .collect::<Vec<Point>>()
        };
        e.family(
            "trimtab_lag_in_flight_messages",
            Gauge,
            "Messages of a partition key received and not yet settled.",
            per_key(&|v| Some(v.in_flight as f64)),
        );
        e.family(
            "trimtab_lag_oldest_age_seconds",
            Gauge,
            "Age of the oldest unsettled message of a partition key.",
            per_key(&|v| Some(v.oldest_age_ms as f64 / 1000.0)),
        );
        let mut quantiles = Vec::new();
        for (k, v) in keyed() {
            for (q, ms) in [("0.5", v.latency_p50_ms), ("0.99", v.latency_p99_ms)] {
                if let Some(ms) = ms {
                    quantiles.push((
                        vec![("partition", k.clone()), ("quantile", q.to_string())],
                        ms as f64 / 1000.0,
                    ));
                }
            }
        }
        e.family(
            "trimtab_lag_e2e_latency_seconds",
            Gauge,
            "Enqueue-to-settle latency of a partition key over the lag window, by quantile.",
            quantiles,
        );
        e.family(
            "trimtab_lag_settled_messages_total",
            Counter,
            "Messages of a partition key completed since start.",
            per_key(&|v| Some(v.completed as f64)),
        );
        e.single(
            "trimtab_lag_window_seconds",
            Gauge,
            "Length of the window the lag quantiles cover.",
            lag.window_ms as f64 / 1000.0,
        );
    }
    if let Some(w) = s.writer {
        e.family(
            "trimtab_write_latency_seconds",
            Gauge,
            "Cassandra batch write latency over the writer's recent window, by quantile.",
            vec![
                (vec![("quantile", "0.5".to_string())], w.p50_ms / 1000.0),
                (vec![("quantile", "0.99".to_string())], w.p99_ms / 1000.0),
            ],
        );
        let mut by_size = Vec::new();
        for c in &w.by_size {
            for (q, ms) in [("0.5", c.p50_ms), ("0.99", c.p99_ms)] {
                by_size.push((
                    vec![
                        ("max_rows", c.max_rows.to_string()),
                        ("quantile", q.to_string()),
                    ],
                    ms / 1000.0,
                ));
            }
        }
        e.family(
            "trimtab_write_latency_by_size_seconds",
            Gauge,
            "Cassandra batch write latency over the recent window per batch size class, by quantile.",
            by_size,
        );
        e.single(
            "trimtab_write_batches_total",
            Counter,
            "Cassandra batches written since start.",
            w.total_batches as f64,
        );
        e.single(
            "trimtab_write_rows_total",
            Counter,
            "Rows in Cassandra batches that succeeded, since start.",
            w.total_rows_ok as f64,
        );
        e.single(
            "trimtab_write_errors_total",
            Counter,
            "Cassandra batches that failed, since start.",
            w.total_errors as f64,
        );
        e.family(
            "trimtab_write_window_errors_batches",
            Gauge,
            "Failed Cassandra batches in the writer's recent window, by error class.",
            w.errors
                .iter()
                .map(|(class, n)| (vec![("class", class.clone())], *n as f64))
                .collect(),
        );
        e.single(
            "trimtab_write_in_flight_requests",
            Gauge,
            "Cassandra write requests in flight.",
            w.in_flight as f64,
        );
    }
    if let Some(k) = s.knobs {
        for (name, help, value) in [
            (
                "trimtab_knob_batch_rows",
                "Live knob: rows per Cassandra partition batch.",
                k.batch_rows,
            ),
            (
                "trimtab_knob_batch_bytes",
                "Live knob: byte cap per Cassandra batch.",
                k.batch_bytes,
            ),
            (
                "trimtab_knob_write_concurrency_requests",
                "Live knob: Cassandra write requests in flight.",
                k.write_concurrency,
            ),
            (
                "trimtab_knob_prefetch_messages",
                "Live knob: messages requested per Service Bus receive call.",
                k.prefetch,
            ),
            (
                "trimtab_knob_max_in_flight_messages",
                "Live knob: messages received and not yet settled, at most.",
                k.max_in_flight,
            ),
        ] {
            e.single(name, Gauge, help, value as f64);
        }
    }
    if !s.forecasts.is_empty() {
        let labels = |f: &ForecastGauge, bound: &str| {
            let mut l = vec![("series", f.series.clone()), ("bound", bound.to_string())];
            let extra = f
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            l.push(("labels", extra));
            l
        };
        let mut points = Vec::new();
        for f in s.forecasts {
            points.push((labels(f, "point"), f.point));
            points.push((labels(f, "lower"), f.lower));
            points.push((labels(f, "upper"), f.upper));
        }
        e.family(
            "trimtab_forecast_value",
            Gauge,
            "The latest forecast one step ahead, with its interval bounds, per series.",
            points,
        );
        let series_labels = |f: &ForecastGauge| {
            let extra = f
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            vec![("series", f.series.clone()), ("labels", extra)]
        };
        e.family(
            "trimtab_forecast_rolling_mase_ratio",
            Gauge,
            "Rolling mean absolute scaled error of a series' scored forecasts (below 1 beats seasonal naive).",
            s.forecasts
                .iter()
                .filter_map(|f| f.rolling_mase.map(|m| (series_labels(f), m)))
                .collect(),
        );
        e.family(
            "trimtab_forecast_trusted_bool",
            Gauge,
            "1 when the planner may act on a series' forecasts.",
            s.forecasts
                .iter()
                .map(|f| (series_labels(f), if f.trusted { 1.0 } else { 0.0 }))
                .collect(),
        );
    }
    if let Some(p) = s.placement {
        let pool = |f: &dyn Fn(&crate::linstor::placement::PoolPlacement) -> f64| {
            p.pools
                .iter()
                .map(|x| {
                    (
                        vec![("node", x.node.clone()), ("pool", x.pool.clone())],
                        f(x),
                    )
                })
                .collect::<Vec<Point>>()
        };
        e.family(
            "trimtab_linstor_pool_free_bytes",
            Gauge,
            "Free space of a LINSTOR storage pool on a node.",
            pool(&|x| x.free_kib as f64 * 1024.0),
        );
        e.family(
            "trimtab_linstor_pool_capacity_bytes",
            Gauge,
            "Total space of a LINSTOR storage pool on a node.",
            pool(&|x| x.total_kib as f64 * 1024.0),
        );
        e.family(
            "trimtab_linstor_pool_replicas",
            Gauge,
            "Diskful volumes placed in a LINSTOR storage pool on a node.",
            pool(&|x| x.replicas as f64),
        );
        let mut nodes = Vec::new();
        for n in &p.nodes {
            nodes.push((
                vec![("node", n.node.clone()), ("kind", "diskful".to_string())],
                n.diskful as f64,
            ));
            nodes.push((
                vec![("node", n.node.clone()), ("kind", "diskless".to_string())],
                n.diskless as f64,
            ));
        }
        e.family(
            "trimtab_linstor_node_replicas",
            Gauge,
            "Replicas on a LINSTOR node by kind.",
            nodes,
        );
        e.family(
            "trimtab_linstor_node_online_bool",
            Gauge,
            "1 when a LINSTOR node is connected to the controller.",
            p.nodes
                .iter()
                .map(|n| {
                    (
                        vec![("node", n.node.clone())],
                        if n.online { 1.0 } else { 0.0 },
                    )
                })
                .collect(),
        );
        e.single(
            "trimtab_linstor_under_replicated_resources",
            Gauge,
            "Resources with fewer diskful replicas than their place count.",
            p.under_replicated.len() as f64,
        );
        e.single(
            "trimtab_linstor_degraded_volumes",
            Gauge,
            "Diskful volumes whose disk state is not UpToDate.",
            p.degraded.len() as f64,
        );
    }
    e.family(
        "trimtab_stored_proposals",
        Gauge,
        "Proposals in the state directory by state (the decision taken on them).",
        s.proposals
            .iter()
            .map(|(state, n)| (vec![("state", state.clone())], *n as f64))
            .collect(),
    );
    let mut modes = Vec::new();
    for (which, mode) in [("effective", s.mode), ("configured", s.configured_mode)] {
        if let Some(mode) = mode {
            modes.push((
                vec![("which", which.to_string()), ("mode", mode.to_string())],
                1.0,
            ));
        }
    }
    e.family(
        "trimtab_mode_info",
        Gauge,
        "The agent's mode: 1 for the mode in force (effective) and the configured one.",
        modes,
    );
    if let Some(paused) = s.paused {
        e.single(
            "trimtab_paused_bool",
            Gauge,
            "1 when the kill switch is on and nothing is applied.",
            if paused { 1.0 } else { 0.0 },
        );
    }
    if let Some(n) = s.agent_samples {
        e.single(
            "trimtab_agent_samples_total",
            Counter,
            "Sample steps the control loop has done.",
            n as f64,
        );
    }
    if let Some(n) = s.agent_steps {
        e.single(
            "trimtab_agent_steps_total",
            Counter,
            "Control steps the control loop has done.",
            n as f64,
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line of `text` as (name, labels, value).
    fn samples(text: &str) -> Vec<(String, String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n.to_string(), l.trim_end_matches('}').to_string()),
                    None => (series.to_string(), String::new()),
                };
                (name, labels, value.to_string())
            })
            .collect()
    }

    #[test]
    fn an_empty_scrape_prints_no_empty_families() {
        assert_eq!(render(&Scrape::default()), "");
    }

    #[test]
    fn counters_gauges_labels_and_units_follow_the_naming_rules() {
        let stats = StatsSnapshot {
            received: 12,
            completed: 10,
            in_flight: 2,
            ..StatsSnapshot::default()
        };
        let knobs = Knobs::default();
        let mut proposals = BTreeMap::new();
        proposals.insert("pending".to_string(), 3);
        let forecasts = vec![ForecastGauge {
            series: "arrival_rate".into(),
            labels: BTreeMap::new(),
            point: 4.5,
            lower: 3.0,
            upper: 6.0,
            rolling_mase: Some(0.8),
            trusted: true,
        }];
        let text = render(&Scrape {
            pipeline: Some(&stats),
            knobs: Some(&knobs),
            forecasts: &forecasts,
            proposals,
            mode: Some("recommend"),
            paused: Some(true),
            ..Scrape::default()
        });
        let all = samples(&text);
        let find = |name: &str, labels: &str| {
            all.iter()
                .find(|(n, l, _)| n == name && l.contains(labels))
                .map(|(_, _, v)| v.clone())
                .unwrap_or_else(|| panic!("{name}{{{labels}}} missing from\n{text}"))
        };
        assert_eq!(find("trimtab_messages_received_total", ""), "12");
        assert_eq!(find("trimtab_messages_in_flight_messages", ""), "2");
        assert_eq!(
            find("trimtab_knob_batch_rows", ""),
            knobs.batch_rows.to_string()
        );
        assert_eq!(find("trimtab_forecast_value", "bound=\"upper\""), "6");
        assert_eq!(find("trimtab_forecast_rolling_mase_ratio", ""), "0.8");
        assert_eq!(find("trimtab_stored_proposals", "state=\"pending\""), "3");
        assert_eq!(find("trimtab_paused_bool", ""), "1");
        assert_eq!(find("trimtab_mode_info", "mode=\"recommend\""), "1");
        for (name, _, _) in &all {
            assert!(name.starts_with("trimtab_"), "{name}");
            let typed = format!("# TYPE {name} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&typed))
                .unwrap_or_else(|| panic!("{name} has no TYPE line"));
            assert_eq!(
                line.ends_with("counter"),
                name.ends_with("_total"),
                "{line}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut proposals = BTreeMap::new();
        proposals.insert("a\"b\\c\nd".to_string(), 1);
        let text = render(&Scrape {
            proposals,
            ..Scrape::default()
        });
        assert!(
            text.contains(r#"trimtab_stored_proposals{state="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn special_values_use_prometheus_spellings() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(0.25), "0.25");
    }
}
