//! The read-only tools over a [`StateSource`] and the ledger that numbers every item they return for citation.
//!
//! The set of tools is closed: [`ToolCall`] has one variant per tool and none of them can change anything.
//! A name outside [`TOOL_NAMES`] is refused, whatever a model or a prompt file asks for.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::Duration;

use super::redact::Redactor;
use super::state::{
    AuditEntry, ForecastSummary, Insights, PartitionLag, PendingProposal, PlacementSummary,
    QueueHealth, SettingsSnapshot, StateError, StateSource, TimeSpan, Timed,
};

/// The names of every tool, in the order the prompts list them.
pub const TOOL_NAMES: [&str; 8] = [
    "queue_health",
    "partition_lag",
    "forecasts",
    "placement",
    "pending_proposals",
    "recent_audit",
    "current_settings",
    "pipeline_insights",
];

/// Longest audit look-back a tool call may ask for: one week, in minutes.
const MAX_AUDIT_MINUTES: u32 = 7 * 24 * 60;

/// One validated call of a read-only tool.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    /// Depth of every entity, or of one.
    QueueHealth {
        /// Only this entity when set.
        entity: Option<String>,
    },
    /// Lag per partition key and window.
    PartitionLag {
        /// Only this entity when set.
        entity: Option<String>,
        /// Only this partition key when set.
        key: Option<String>,
    },
    /// Latest forecasts with accuracy.
    Forecasts {
        /// Only series whose name contains this when set.
        series: Option<String>,
    },
    /// Placement and pool capacity.
    Placement,
    /// Proposals waiting for approval.
    PendingProposals,
    /// Audit records of the last `since_minutes`.
    RecentAudit {
        /// Look-back in minutes.
        since_minutes: u32,
    },
    /// Current settings and mode.
    CurrentSettings,
    /// Schema drift, where the time goes per stage, open maintenance windows.
    PipelineInsights,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityArgs {
    #[serde(default)]
    entity: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LagArgs {
    #[serde(default)]
    entity: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesArgs {
    #[serde(default)]
    series: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditArgs {
    #[serde(default = "default_since_minutes")]
    since_minutes: u32,
}

const fn default_since_minutes() -> u32 {
    60
}

/// Why a tool call was not run.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The name is not one of [`TOOL_NAMES`].
    #[error("no tool named {name:?}; the only tools are read-only: {}", TOOL_NAMES.join(", "))]
    Unknown {
        /// The requested name, capped.
        name: String,
    },
    /// The arguments are not the JSON object the tool expects.
    #[error("arguments for {tool} are not valid: {problem}")]
    BadArguments {
        /// The tool.
        tool: &'static str,
        /// What was wrong, with what was expected.
        problem: String,
    },
    /// Reading state failed.
    #[error("reading state for {tool} failed")]
    State {
        /// The tool.
        tool: &'static str,
        /// The cause.
        #[source]
        source: StateError,
    },
}

impl ToolError {
    /// Whether trying again later may succeed (only a state read can recover by itself).
    pub fn is_retriable(&self) -> bool {
        matches!(self, ToolError::State { .. })
    }
}

fn parse_args<T: for<'de> Deserialize<'de>>(
    tool: &'static str,
    arguments: &str,
) -> Result<T, ToolError> {
    let text = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    serde_json::from_str(text).map_err(|e| ToolError::BadArguments {
        tool,
        problem: format!("expected a JSON object matching the tool's parameters: {e}"),
    })
}

impl ToolCall {
    /// Validates a call by name and JSON arguments (an empty string counts as `{}`).
    pub fn parse(name: &str, arguments: &str) -> Result<Self, ToolError> {
        Ok(match name {
            "queue_health" => {
                let a: EntityArgs = parse_args("queue_health", arguments)?;
                ToolCall::QueueHealth { entity: a.entity }
            }
            "partition_lag" => {
                let a: LagArgs = parse_args("partition_lag", arguments)?;
                ToolCall::PartitionLag {
                    entity: a.entity,
                    key: a.key,
                }
            }
            "forecasts" => {
                let a: SeriesArgs = parse_args("forecasts", arguments)?;
                ToolCall::Forecasts { series: a.series }
            }
            "placement" => {
                parse_args::<NoArgs>("placement", arguments)?;
                ToolCall::Placement
            }
            "pending_proposals" => {
                parse_args::<NoArgs>("pending_proposals", arguments)?;
                ToolCall::PendingProposals
            }
            "recent_audit" => {
                let a: AuditArgs = parse_args("recent_audit", arguments)?;
                if a.since_minutes == 0 || a.since_minutes > MAX_AUDIT_MINUTES {
                    return Err(ToolError::BadArguments {
                        tool: "recent_audit",
                        problem: format!(
                            "since_minutes must be 1 to {MAX_AUDIT_MINUTES}, got {}",
                            a.since_minutes
                        ),
                    });
                }
                ToolCall::RecentAudit {
                    since_minutes: a.since_minutes,
                }
            }
            "current_settings" => {
                parse_args::<NoArgs>("current_settings", arguments)?;
                ToolCall::CurrentSettings
            }
            "pipeline_insights" => {
                parse_args::<NoArgs>("pipeline_insights", arguments)?;
                ToolCall::PipelineInsights
            }
            other => {
                return Err(ToolError::Unknown {
                    name: other.chars().take(64).collect(),
                })
            }
        })
    }

    /// The tool's name.
    pub fn name(&self) -> &'static str {
        match self {
            ToolCall::QueueHealth { .. } => "queue_health",
            ToolCall::PartitionLag { .. } => "partition_lag",
            ToolCall::Forecasts { .. } => "forecasts",
            ToolCall::Placement => "placement",
            ToolCall::PendingProposals => "pending_proposals",
            ToolCall::RecentAudit { .. } => "recent_audit",
            ToolCall::CurrentSettings => "current_settings",
            ToolCall::PipelineInsights => "pipeline_insights",
        }
    }

    /// The arguments as JSON, for the record.
    pub fn arguments(&self) -> Value {
        match self {
            ToolCall::QueueHealth { entity } => serde_json::json!({ "entity": entity }),
            ToolCall::PartitionLag { entity, key } => {
                serde_json::json!({ "entity": entity, "key": key })
            }
            ToolCall::Forecasts { series } => serde_json::json!({ "series": series }),
            ToolCall::RecentAudit { since_minutes } => {
                serde_json::json!({ "since_minutes": since_minutes })
            }
            ToolCall::Placement
            | ToolCall::PendingProposals
            | ToolCall::CurrentSettings
            | ToolCall::PipelineInsights => {
                serde_json::json!({})
            }
        }
    }
}

/// One item of a tool result, numbered for citation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceItem {
    /// Citation mark, such as `R3`; answers cite it as `[R3]`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The time or time range the item describes.
    pub span: TimeSpan,
    /// The item, with sensitive values masked and long strings capped.
    pub data: Value,
}

/// One tool call and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRecord {
    /// The tool call id the model gave, or `templated-N`.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// Its validated arguments.
    pub arguments: Value,
    /// The items, numbered.
    pub items: Vec<EvidenceItem>,
}

/// The citation marks of a `pipeline_insights` call, by section, in the order of the items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsightMarks {
    /// One per drift item.
    pub drift: Vec<String>,
    /// One per stage item.
    pub stages: Vec<String>,
    /// One per window item.
    pub windows: Vec<String>,
}

/// Runs tool calls and numbers every returned item, so answers can cite them and replies can carry them.
#[derive(Debug)]
pub struct Ledger {
    redactor: Redactor,
    records: Vec<ToolRecord>,
    next_ref: usize,
}

fn to_value<T: Serialize>(item: &T) -> Value {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no custom serializers.
    serde_json::to_value(item).unwrap_or(Value::Null)
}

impl Ledger {
    /// An empty ledger that sanitizes with `redactor`.
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            records: Vec::new(),
            next_ref: 1,
        }
    }

    /// Everything recorded so far.
    pub fn records(&self) -> &[ToolRecord] {
        &self.records
    }

    /// Consumes the ledger, returning its records.
    pub fn into_records(self) -> Vec<ToolRecord> {
        self.records
    }

    /// Finds an item by its citation mark.
    pub fn find(&self, reference: &str) -> Option<(&ToolRecord, &EvidenceItem)> {
        self.records.iter().find_map(|r| {
            r.items
                .iter()
                .find(|i| i.reference == reference)
                .map(|i| (r, i))
        })
    }

    /// Runs one call and records it; returns the citation marks of the items.
    pub async fn run(
        &mut self,
        call_id: &str,
        call: &ToolCall,
        state: &dyn StateSource,
    ) -> Result<Vec<String>, ToolError> {
        Ok(match call {
            ToolCall::QueueHealth { entity } => {
                self.queues(call_id, state, entity.clone()).await?.1
            }
            ToolCall::PartitionLag { entity, key } => {
                self.lag(call_id, state, entity.clone(), key.clone())
                    .await?
                    .1
            }
            ToolCall::Forecasts { series } => {
                self.forecasts(call_id, state, series.clone()).await?.1
            }
            ToolCall::Placement => {
                let (_, summary, pools) = self.placement(call_id, state).await?;
                std::iter::once(summary).chain(pools).collect()
            }
            ToolCall::PendingProposals => self.pending_proposals(call_id, state).await?.1,
            ToolCall::RecentAudit { since_minutes } => {
                self.recent_audit(call_id, state, *since_minutes).await?.2
            }
            ToolCall::CurrentSettings => vec![self.settings(call_id, state).await?.1],
            ToolCall::PipelineInsights => {
                let (_, marks) = self.insights(call_id, state).await?;
                marks
                    .drift
                    .into_iter()
                    .chain(marks.stages)
                    .chain(marks.windows)
                    .collect()
            }
        })
    }

    /// `queue_health`: depth of every entity, or of `entity`; one mark per item.
    pub async fn queues(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
        entity: Option<String>,
    ) -> Result<(Vec<QueueHealth>, Vec<String>), ToolError> {
        let mut q = state.queues().await.map_err(|source| ToolError::State {
            tool: "queue_health",
            source,
        })?;
        if let Some(e) = &entity {
            q.retain(|x| &x.entity == e);
        }
        let raw = q.iter().map(|x| (to_value(x), x.span())).collect();
        let refs = self.record(call_id, &ToolCall::QueueHealth { entity }, raw);
        Ok((q, refs))
    }

    /// `partition_lag`: lag windows, optionally of one entity and key; one mark per item.
    pub async fn lag(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
        entity: Option<String>,
        key: Option<String>,
    ) -> Result<(Vec<PartitionLag>, Vec<String>), ToolError> {
        let mut l = state.lag().await.map_err(|source| ToolError::State {
            tool: "partition_lag",
            source,
        })?;
        if let Some(e) = &entity {
            l.retain(|x| &x.entity == e);
        }
        if let Some(k) = &key {
            l.retain(|x| &x.key == k);
        }
        let raw = l.iter().map(|x| (to_value(x), x.span())).collect();
        let refs = self.record(call_id, &ToolCall::PartitionLag { entity, key }, raw);
        Ok((l, refs))
    }

    /// `forecasts`: latest forecasts, optionally those whose series contains `series`; one mark per item.
    pub async fn forecasts(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
        series: Option<String>,
    ) -> Result<(Vec<ForecastSummary>, Vec<String>), ToolError> {
        let mut f = state.forecasts().await.map_err(|source| ToolError::State {
            tool: "forecasts",
            source,
        })?;
        if let Some(s) = &series {
            f.retain(|x| x.series.contains(s.as_str()));
        }
        let raw = f.iter().map(|x| (to_value(x), x.span())).collect();
        let refs = self.record(call_id, &ToolCall::Forecasts { series }, raw);
        Ok((f, refs))
    }

    /// `placement`: the mark of the summary (replicas, degraded, under-replicated) and one per pool sample.
    pub async fn placement(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
    ) -> Result<(PlacementSummary, String, Vec<String>), ToolError> {
        let p = state.placement().await.map_err(|source| ToolError::State {
            tool: "placement",
            source,
        })?;
        let summary = serde_json::json!({
            "sampled_at": p.span().render(),
            "replicas_per_node": to_value(&p.replicas_per_node),
            "under_replicated": p.under_replicated,
            "degraded": p.degraded,
        });
        let mut raw = vec![(summary, p.span())];
        raw.extend(p.pools.iter().map(|x| (to_value(x), x.span())));
        let mut refs = self.record(call_id, &ToolCall::Placement, raw).into_iter();
        let summary = refs.next().unwrap_or_default();
        Ok((p, summary, refs.collect()))
    }

    /// `pending_proposals`: one mark per proposal.
    pub async fn pending_proposals(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
    ) -> Result<(Vec<PendingProposal>, Vec<String>), ToolError> {
        let p = state
            .pending_proposals()
            .await
            .map_err(|source| ToolError::State {
                tool: "pending_proposals",
                source,
            })?;
        let raw = p.iter().map(|x| (to_value(x), x.span())).collect();
        let refs = self.record(call_id, &ToolCall::PendingProposals, raw);
        Ok((p, refs))
    }

    /// `recent_audit`: records of the last `since_minutes` and the range read; one mark per record.
    pub async fn recent_audit(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
        since_minutes: u32,
    ) -> Result<(Vec<AuditEntry>, TimeSpan, Vec<String>), ToolError> {
        let now = state.now();
        let since = now - Duration::minutes(i64::from(since_minutes));
        let a = state
            .recent_audit(since)
            .await
            .map_err(|source| ToolError::State {
                tool: "recent_audit",
                source,
            })?;
        let raw = a.iter().map(|x| (to_value(x), x.span())).collect();
        let refs = self.record(call_id, &ToolCall::RecentAudit { since_minutes }, raw);
        Ok((
            a,
            TimeSpan {
                from: since,
                to: now,
            },
            refs,
        ))
    }

    /// `current_settings`: one mark for the whole snapshot.
    pub async fn settings(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
    ) -> Result<(SettingsSnapshot, String), ToolError> {
        let s = state.settings().await.map_err(|source| ToolError::State {
            tool: "current_settings",
            source,
        })?;
        let raw = vec![(to_value(&s), s.span())];
        let refs = self.record(call_id, &ToolCall::CurrentSettings, raw);
        Ok((s, refs.into_iter().next().unwrap_or_default()))
    }

    /// `pipeline_insights`: one mark per drift, per stage breakdown and per open window (none when the source
    /// does not carry them; `Insights::available` says which).
    pub async fn insights(
        &mut self,
        call_id: &str,
        state: &dyn StateSource,
    ) -> Result<(Insights, InsightMarks), ToolError> {
        let i = state.insights().await.map_err(|source| ToolError::State {
            tool: "pipeline_insights",
            source,
        })?;
        let mut raw: Vec<(Value, TimeSpan)> = Vec::new();
        raw.extend(i.drift.iter().map(|x| (to_value(x), x.span())));
        raw.extend(i.stages.iter().map(|x| (to_value(x), x.span())));
        raw.extend(i.windows.iter().map(|x| (to_value(x), x.span())));
        let mut refs = self
            .record(call_id, &ToolCall::PipelineInsights, raw)
            .into_iter();
        let marks = InsightMarks {
            drift: refs.by_ref().take(i.drift.len()).collect(),
            stages: refs.by_ref().take(i.stages.len()).collect(),
            windows: refs.collect(),
        };
        Ok((i, marks))
    }

    #[cfg(test)]
    pub(crate) fn push_for_test(&mut self, data: Value, span: TimeSpan) {
        self.record("test", &ToolCall::Placement, vec![(data, span)]);
    }

    fn record(
        &mut self,
        call_id: &str,
        call: &ToolCall,
        raw: Vec<(Value, TimeSpan)>,
    ) -> Vec<String> {
        let mut refs = Vec::with_capacity(raw.len());
        let mut items = Vec::with_capacity(raw.len());
        for (mut data, span) in raw {
            self.redactor.sanitize(&mut data);
            let reference = format!("R{}", self.next_ref);
            self.next_ref += 1;
            refs.push(reference.clone());
            items.push(EvidenceItem {
                reference,
                span,
                data,
            });
        }
        let mut arguments = call.arguments();
        self.redactor.sanitize(&mut arguments);
        self.records.push(ToolRecord {
            call_id: call_id.to_owned(),
            tool: call.name().to_owned(),
            arguments,
            items,
        });
        refs
    }
}

/// The JSON a model sees for one record: at most `max_items` items, each with its mark and time range.
pub fn model_view(record: &ToolRecord, max_items: usize) -> Value {
    let shown: Vec<Value> = record
        .items
        .iter()
        .take(max_items)
        .map(|i| {
            serde_json::json!({
                "ref": i.reference,
                "time": i.span.render(),
                "data": i.data,
            })
        })
        .collect();
    serde_json::json!({
        "tool": record.tool,
        "items": shown,
        "omitted_items": record.items.len().saturating_sub(max_items),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_known_tools_and_refuses_others() {
        assert_eq!(
            ToolCall::parse("queue_health", r#"{"entity":"orders"}"#).unwrap(),
            ToolCall::QueueHealth {
                entity: Some("orders".into())
            }
        );
        assert_eq!(
            ToolCall::parse("placement", "").unwrap(),
            ToolCall::Placement
        );
        assert_eq!(
            ToolCall::parse("recent_audit", "{}").unwrap(),
            ToolCall::RecentAudit { since_minutes: 60 }
        );
        for name in ["approve_proposals", "apply_plan", "set_knob", ""] {
            assert!(
                matches!(ToolCall::parse(name, "{}"), Err(ToolError::Unknown { .. })),
                "{name}"
            );
        }
    }

    #[test]
    fn parse_names_the_tool_on_bad_arguments() {
        let cases = [
            ("queue_health", "{\"entity\": 3}"),
            ("partition_lag", "{not json"),
            ("placement", "{\"approve\": true}"),
            ("recent_audit", "{\"since_minutes\": 0}"),
            ("recent_audit", "{\"since_minutes\": 99999999}"),
        ];
        for (tool, args) in cases {
            match ToolCall::parse(tool, args) {
                Err(e @ ToolError::BadArguments { .. }) => {
                    assert!(e.to_string().contains(tool), "{e}")
                }
                other => panic!("{tool} {args}: expected bad arguments, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_model_sees_at_most_max_items_and_how_many_were_left_out() {
        let mut ledger = Ledger::new(Redactor::new(vec![], vec![], 200));
        let t = TimeSpan::at(time::macros::datetime!(2026-11-22 03:00 UTC));
        let raw = (0..5).map(|i| (serde_json::json!({ "i": i }), t)).collect();
        ledger.record("c", &ToolCall::PendingProposals, raw);
        let view = model_view(&ledger.records()[0], 3);
        assert_eq!(view["items"].as_array().unwrap().len(), 3);
        assert_eq!(view["omitted_items"], 2);
        assert_eq!(view["items"][2]["ref"], "R3");
        assert_eq!(view["items"][0]["time"], "2026-11-22T03:00:00Z");
    }

    #[test]
    fn every_tool_name_parses() {
        for name in TOOL_NAMES {
            let call = ToolCall::parse(name, "{}").expect(name);
            assert_eq!(call.name(), name);
        }
    }
}
