//! Answers the common questions without a model: recognise the question, call the same tools, fill a template.
//!
//! Every number in a templated answer is cited as `[Rn]`, the mark of the tool result item it came from.

use std::collections::BTreeMap;

use time::Duration;

use super::state::{PartitionLag, PoolSample, StateSource, TimeSpan};
use super::tools::{Ledger, ToolError};

/// Oldest unsettled message older than this means a partition is behind. One minute: the pipeline settles
/// a healthy message within seconds, so a minute is far outside normal and still early enough to act.
const LAG_BEHIND_S: f64 = 60.0;
/// Lag counts as growing when the oldest age rose by at least this many seconds between windows; smaller
/// moves are noise from batch timing.
const LAG_GROWTH_S: f64 = 5.0;
/// A pool node with less than this share free is called nearly full.
const POOL_LOW_FREE: f64 = 0.10;

/// The questions trimtab answers without a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// "is the pipeline healthy?"
    Health,
    /// "why is lag growing on <entity/key>?"
    LagGrowth,
    /// "what did you change in the last hour and why?"
    RecentChanges {
        /// Look-back in minutes.
        minutes: u32,
    },
    /// "what is waiting for my approval?"
    PendingApprovals,
    /// "will <pool> fill up this week?"
    PoolFill {
        /// Horizon in days.
        days: u32,
    },
    /// "what are the current settings?"
    Settings,
    /// "is there schema drift?" / "are producers sending new fields?"
    SchemaDrift,
    /// "where does the time go?" / "which stage is slow?"
    StageBreakdown,
    /// Anything else.
    Unknown,
}

/// Recognises a question by its words. Deterministic; subjects (entity, key, pool) are found later against state.
pub fn classify(question: &str) -> Intent {
    let q = question.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| q.contains(w));
    if has(&[
        "drift",
        "schema",
        "new field",
        "message shape",
        "producers send",
    ]) {
        Intent::SchemaDrift
    } else if has(&[
        "where does the time go",
        "where the time goes",
        "stage",
        "breakdown",
        "time go",
    ]) {
        Intent::StageBreakdown
    } else if has(&["setting", "knob", "config", "what mode"]) {
        Intent::Settings
    } else if has(&["approv", "waiting for", "pending", "proposal"]) {
        Intent::PendingApprovals
    } else if has(&["change", "did you do", "audit", "what happened"]) {
        Intent::RecentChanges {
            minutes: lookback_minutes(&q),
        }
    } else if has(&["fill", "full", "run out", "capacity", "space", "disk"]) {
        let days = if has(&["today", "tomorrow"]) {
            1
        } else if has(&["month"]) {
            30
        } else {
            7
        };
        Intent::PoolFill { days }
    } else if has(&["lag", "behind", "backlog", "latency", "slow"]) {
        Intent::LagGrowth
    } else if has(&[
        "health", "status", "ok?", "okay", "working", "fine", "broken", "how is", "how's",
    ]) {
        Intent::Health
    } else {
        Intent::Unknown
    }
}

fn lookback_minutes(q: &str) -> u32 {
    let words: Vec<&str> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if let Ok(n) = pair[0].parse::<u32>() {
            let unit = pair[1];
            let minutes = if unit.starts_with("min") {
                Some(n)
            } else if unit.starts_with("hour") || unit == "h" {
                Some(n.saturating_mul(60))
            } else if unit.starts_with("day") {
                Some(n.saturating_mul(1440))
            } else {
                None
            };
            if let Some(m) = minutes {
                return m.clamp(1, 7 * 1440);
            }
        }
    }
    if q.contains("today") || q.contains("last day") || q.contains("24 h") {
        1440
    } else if q.contains("week") {
        7 * 1440
    } else {
        60
    }
}

impl Intent {
    /// The question as understood, in the operator's words.
    pub fn describe(&self, subject: Option<&str>) -> String {
        match self {
            Intent::Health => "is the pipeline healthy?".into(),
            Intent::LagGrowth => format!(
                "why is lag growing on {}?",
                subject.unwrap_or("any partition")
            ),
            Intent::RecentChanges { minutes } => {
                format!(
                    "what did you change in the last {} and why?",
                    render_minutes(*minutes)
                )
            }
            Intent::PendingApprovals => "what is waiting for my approval?".into(),
            Intent::PoolFill { days } => format!(
                "will {} fill up {}?",
                subject.unwrap_or("any pool"),
                match days {
                    1 => "today".to_owned(),
                    7 => "this week".to_owned(),
                    d => format!("within {d} days"),
                }
            ),
            Intent::Settings => "what are the current settings?".into(),
            Intent::SchemaDrift => "are producers sending something new (schema drift)?".into(),
            Intent::StageBreakdown => "where does the time go, stage by stage?".into(),
            Intent::Unknown => "(not understood)".into(),
        }
    }
}

fn render_minutes(m: u32) -> String {
    match m {
        60 => "hour".into(),
        1440 => "day".into(),
        m if m % 1440 == 0 => format!("{} days", m / 1440),
        m if m % 60 == 0 => format!("{} hours", m / 60),
        m => format!("{m} minutes"),
    }
}

/// What the templates produce.
#[derive(Debug, Clone, PartialEq)]
pub struct Templated {
    /// The answer, citing `[Rn]`.
    pub text: String,
    /// The question understood; `None` when not understood.
    pub understood: Option<String>,
}

/// What a templated answer can fail on: only reading state.
pub type TemplateError = ToolError;

struct Ctx<'a> {
    state: &'a dyn StateSource,
    ledger: &'a mut Ledger,
    calls: usize,
}

impl Ctx<'_> {
    fn next_id(&mut self) -> String {
        self.calls += 1;
        format!("templated-{}", self.calls)
    }
}

/// Answers `question` from the tools, recording every call in `ledger`.
pub async fn answer(
    question: &str,
    state: &dyn StateSource,
    ledger: &mut Ledger,
) -> Result<Templated, TemplateError> {
    let intent = classify(question);
    let mut ctx = Ctx {
        state,
        ledger,
        calls: 0,
    };
    let (text, subject) = match &intent {
        Intent::Health => (health(&mut ctx).await?, None),
        Intent::LagGrowth => lag_growth(&mut ctx, question).await?,
        Intent::RecentChanges { minutes } => (recent_changes(&mut ctx, *minutes).await?, None),
        Intent::PendingApprovals => (approvals(&mut ctx).await?, None),
        Intent::PoolFill { days } => pool_fill(&mut ctx, question, *days).await?,
        Intent::Settings => (settings(&mut ctx).await?, None),
        Intent::SchemaDrift => (schema_drift(&mut ctx).await?, None),
        Intent::StageBreakdown => (stage_breakdown(&mut ctx).await?, None),
        Intent::Unknown => {
            return Ok(Templated {
                text: capabilities(),
                understood: None,
            })
        }
    };
    Ok(Templated {
        text,
        understood: Some(intent.describe(subject.as_deref())),
    })
}

/// What trimtab can answer without a model.
pub fn capabilities() -> String {
    "I did not recognise that question. Without a language model I can answer:\n\
     - is the pipeline healthy?\n\
     - why is lag growing on <entity or partition key>?\n\
     - what did you change in the last hour (or N minutes/hours) and why?\n\
     - what is waiting for my approval?\n\
     - will <pool> fill up this week?\n\
     - what are the current settings?\n\
     - is there schema drift?\n\
     - where does the time go?\n"
        .to_owned()
}

const NO_INSIGHTS: &str = "This state source carries no drift or stage figures (a snapshot file, or a trimtab without the pipeline's insights).\n";

async fn schema_drift(ctx: &mut Ctx<'_>) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (insights, marks) = ctx.ledger.insights(&id, ctx.state).await?;
    if !insights.available {
        return Ok(NO_INSIGHTS.to_owned());
    }
    if insights.drift.is_empty() {
        return Ok("No schema drift: every message kind still has the fields, types and sizes it was learned with.\n".to_owned());
    }
    let mut text = format!(
        "Producers are sending something new: {} drift(s).\n",
        insights.drift.len()
    );
    for (d, r) in insights.drift.iter().zip(&marks.drift) {
        text.push_str(&format!("- {} [{r}]\n", short(&d.summary)));
    }
    text.push_str("Messages that no longer fit the Cassandra schema are dead-lettered with a reason naming the field; `trimtab dlq list --filter reason=SchemaMismatch` shows them.\n");
    Ok(text)
}

fn stage_sentence(item: &super::state::StageItem, mark: &str) -> String {
    let parts: Vec<String> = item
        .stages
        .iter()
        .map(|s| {
            format!(
                "{} {} ms ({:.0}%)",
                s.stage,
                num(s.mean_ms),
                s.share * 100.0
            )
        })
        .collect();
    format!(
        "{} messages: {} ms end to end = {} [{mark}]",
        item.path,
        num(item.end_to_end_mean_ms),
        parts.join(" + ")
    )
}

async fn stage_breakdown(ctx: &mut Ctx<'_>) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (insights, marks) = ctx.ledger.insights(&id, ctx.state).await?;
    if !insights.available {
        return Ok(NO_INSIGHTS.to_owned());
    }
    if insights.stages.is_empty() {
        return Ok("No message has been settled yet, so there is no stage breakdown.\n".to_owned());
    }
    let mut text = String::new();
    for (item, r) in insights.stages.iter().zip(&marks.stages) {
        text.push_str(&format!("- {}\n", stage_sentence(item, r)));
        if let Some(d) = &item.dominant {
            text.push_str(&format!("  Most of the time goes to {d}.\n"));
        }
    }
    Ok(text)
}

/// A pipeline-supplied name or reason, cut for reading; the full value stays in the cited tool result.
fn short(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// A number for people: integers without decimals, others with one.
fn num(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

fn gib(kib: f64) -> String {
    format!("{:.1} GiB", kib / (1024.0 * 1024.0))
}

/// The lag windows of one (entity, key), oldest first, each with its mark.
type LagGroup = ((String, String), Vec<(PartitionLag, String)>);

/// A pool sample with its mark.
type MarkedSample<'a> = (&'a PoolSample, &'a String);

/// Latest and previous window per (entity, key), in input order of first appearance.
fn lag_groups(lag: &[PartitionLag], refs: &[String]) -> Vec<LagGroup> {
    let mut groups: Vec<LagGroup> = Vec::new();
    for (item, r) in lag.iter().zip(refs) {
        let k = (item.entity.clone(), item.key.clone());
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push((item.clone(), r.clone())),
            None => groups.push((k, vec![(item.clone(), r.clone())])),
        }
    }
    for (_, v) in groups.iter_mut() {
        v.sort_by_key(|(l, _)| l.window.to);
    }
    groups
}

fn growth(windows: &[(PartitionLag, String)]) -> Option<f64> {
    let n = windows.len();
    (n >= 2).then(|| windows[n - 1].0.oldest_age_s - windows[n - 2].0.oldest_age_s)
}

async fn health(ctx: &mut Ctx<'_>) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (queues, qrefs) = ctx.ledger.queues(&id, ctx.state, None).await?;
    let id = ctx.next_id();
    let (lag, lrefs) = ctx.ledger.lag(&id, ctx.state, None, None).await?;
    let id = ctx.next_id();
    let (placement, summary_ref, pool_refs) = ctx.ledger.placement(&id, ctx.state).await?;
    let id = ctx.next_id();
    let (forecasts, frefs) = ctx.ledger.forecasts(&id, ctx.state, None).await?;

    let mut problems = Vec::new();
    let mut measured = Vec::new();
    for (q, r) in queues.iter().zip(&qrefs) {
        measured.push(format!(
            "{}: {} active, {} dead-lettered, {} scheduled [{r}]",
            short(&q.entity),
            q.active,
            q.dead_letter,
            q.scheduled
        ));
        if q.dead_letter > 0 {
            problems.push(format!(
                "{} has {} dead-lettered messages [{r}]",
                short(&q.entity),
                q.dead_letter
            ));
        }
    }
    for ((entity, key), windows) in lag_groups(&lag, &lrefs) {
        let (entity, key) = (short(&entity), short(&key));
        let Some((last, r)) = windows.last() else {
            continue;
        };
        measured.push(format!(
            "{entity}/{key}: oldest unsettled {} s, {} in flight, p99 {} ms over {} [{r}]",
            num(last.oldest_age_s),
            last.in_flight,
            num(last.e2e_p99_ms),
            last.window.render()
        ));
        if last.oldest_age_s > LAG_BEHIND_S {
            problems.push(format!(
                "{entity}/{key} is behind: its oldest unsettled message is {} s old (limit {} s) [{r}]",
                num(last.oldest_age_s),
                num(LAG_BEHIND_S)
            ));
        } else if let Some(g) = growth(&windows).filter(|g| *g >= LAG_GROWTH_S) {
            problems.push(format!(
                "{entity}/{key} lag is growing: +{} s since the previous window [{r}]",
                num(g)
            ));
        }
    }
    if !placement.under_replicated.is_empty() {
        problems.push(format!(
            "{} resource(s) are under-replicated: {} [{summary_ref}]",
            placement.under_replicated.len(),
            placement.under_replicated.join(", ")
        ));
    }
    if !placement.degraded.is_empty() {
        problems.push(format!(
            "{} resource(s) are degraded: {} [{summary_ref}]",
            placement.degraded.len(),
            placement.degraded.join(", ")
        ));
    }
    for (sample, r) in latest_pool_samples(&placement.pools, &pool_refs) {
        let share = if sample.total_kib == 0 {
            0.0
        } else {
            sample.free_kib as f64 / sample.total_kib as f64
        };
        if share < POOL_LOW_FREE {
            problems.push(format!(
                "{} on {} is nearly full: {} KiB free of {} KiB [{r}]",
                sample.pool, sample.node, sample.free_kib, sample.total_kib
            ));
        }
    }
    let untrusted: Vec<String> = forecasts
        .iter()
        .zip(&frefs)
        .filter(|(f, _)| !f.trusted)
        .map(|(f, r)| format!("{} [{r}]", f.series))
        .collect();

    let mut text = if problems.is_empty() {
        format!(
            "Yes, the pipeline looks healthy: no dead letters, no partition behind, no degraded or under-replicated \
             resources, no nearly full pool ({} entities, {} partition keys checked).\n",
            queues.len(),
            lag_groups(&lag, &lrefs).len()
        )
    } else {
        let mut t = format!("No, {} problem(s) need attention:\n", problems.len());
        for p in &problems {
            t.push_str(&format!("- {p}\n"));
        }
        t
    };
    text.push_str("\nMeasured:\n");
    for m in measured {
        text.push_str(&format!("- {m}\n"));
    }
    if !untrusted.is_empty() {
        text.push_str(&format!(
            "\nForecasts not trusted yet (too inaccurate to act on): {}\n",
            untrusted.join(", ")
        ));
    }
    Ok(text)
}

/// The longest known name that the question mentions.
fn mentioned<'a>(question: &str, names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let q = question.to_lowercase();
    names
        .into_iter()
        .filter(|n| !n.is_empty() && q.contains(&n.to_lowercase()))
        .max_by_key(|n| n.len())
        .map(str::to_owned)
}

async fn lag_growth(
    ctx: &mut Ctx<'_>,
    question: &str,
) -> Result<(String, Option<String>), ToolError> {
    let id = ctx.next_id();
    let (lag, lrefs) = ctx.ledger.lag(&id, ctx.state, None, None).await?;
    let groups = lag_groups(&lag, &lrefs);
    // A named partition key is more specific than its entity, so it wins when both are named.
    let subject = mentioned(question, groups.iter().map(|((_, k), _)| k.as_str()))
        .or_else(|| mentioned(question, groups.iter().map(|((e, _), _)| e.as_str())));
    let mut chosen: Vec<_> = groups
        .iter()
        .filter(|((e, k), _)| subject.as_ref().is_none_or(|s| s == e || s == k))
        .collect();
    chosen.sort_by(|a, b| {
        growth(&b.1)
            .unwrap_or(f64::MIN)
            .total_cmp(&growth(&a.1).unwrap_or(f64::MIN))
    });
    let mut text = String::new();
    if chosen.is_empty() {
        text.push_str("There are no lag measurements yet, so I cannot say why lag grows.\n");
        return Ok((text, subject));
    }
    if subject.is_none() {
        let known: Vec<String> = groups
            .iter()
            .map(|((e, k), _)| format!("{e}/{k}"))
            .collect();
        text.push_str(&format!(
            "You did not name an entity or partition key I know (known: {}); here is the fastest-growing one.\n\n",
            known.join(", ")
        ));
        chosen.truncate(1);
    } else {
        chosen.truncate(3);
    }

    let id = ctx.next_id();
    let (queues, qrefs) = ctx.ledger.queues(&id, ctx.state, None).await?;
    let id = ctx.next_id();
    let (settings, settings_ref) = ctx.ledger.settings(&id, ctx.state).await?;
    let id = ctx.next_id();
    let (audit, _, arefs) = ctx.ledger.recent_audit(&id, ctx.state, 60).await?;
    // The stage breakdown names where the time goes (event path first); absent when the source has none.
    let stage_view = match ctx.state.insights().await {
        Ok(i) if i.available && !i.stages.is_empty() => {
            let id = ctx.next_id();
            let (insights, marks) = ctx.ledger.insights(&id, ctx.state).await?;
            insights.stages.into_iter().zip(marks.stages).next()
        }
        _ => None,
    };
    let concurrency = settings.settings.iter().find_map(|s| {
        let n = s.name.to_lowercase();
        (n.ends_with("concurrency") || n.ends_with("max_in_flight"))
            .then(|| s.value.as_f64().map(|v| (s.name.clone(), v)))
            .flatten()
    });

    for ((entity, key), windows) in chosen {
        let (shown_entity, shown_key) = (short(entity), short(key));
        let (last, lr) = &windows[windows.len() - 1];
        match windows.len().checked_sub(2).map(|i| &windows[i]) {
            Some((prev, pr)) if last.oldest_age_s - prev.oldest_age_s >= LAG_GROWTH_S => {
                text.push_str(&format!(
                    "Lag on {shown_entity}/{shown_key} grew: the oldest unsettled message went from {} s [{pr}] to {} s [{lr}] \
                     between {} and {}.\n",
                    num(prev.oldest_age_s),
                    num(last.oldest_age_s),
                    prev.window.render(),
                    last.window.render()
                ));
            }
            Some((prev, pr)) => {
                text.push_str(&format!(
                    "Lag on {shown_entity}/{shown_key} is not growing: the oldest unsettled message was {} s [{pr}] and is {} s [{lr}].\n",
                    num(prev.oldest_age_s),
                    num(last.oldest_age_s)
                ));
            }
            None => {
                text.push_str(&format!(
                    "Only one lag window for {shown_entity}/{shown_key}, so no trend: oldest unsettled message {} s over {} [{lr}].\n",
                    num(last.oldest_age_s),
                    last.window.render()
                ));
            }
        }
        let growing = growth(windows).is_none_or(|g| g >= LAG_GROWTH_S);
        if !growing {
            text.push('\n');
            continue;
        }
        let mut causes = Vec::new();
        if let Some((prev, pr)) = windows.len().checked_sub(2).map(|i| &windows[i]) {
            if (last.settled as f64) < prev.settled as f64 * 0.9 {
                causes.push(format!(
                    "throughput fell: {} messages settled in the last window against {} before [{pr}, {lr}]",
                    last.settled, prev.settled
                ));
            }
            if last.e2e_p99_ms > prev.e2e_p99_ms * 1.2 {
                causes.push(format!(
                    "end-to-end p99 rose from {} ms to {} ms, so each message takes longer [{pr}, {lr}]",
                    num(prev.e2e_p99_ms),
                    num(last.e2e_p99_ms)
                ));
            }
        }
        if let Some((name, limit)) = &concurrency {
            if last.in_flight as f64 >= *limit {
                causes.push(format!(
                    "{} messages are in flight, at the limit {name} = {} [{lr}, {}]",
                    last.in_flight,
                    num(*limit),
                    settings_ref
                ));
            }
        }
        for (q, r) in queues
            .iter()
            .zip(&qrefs)
            .filter(|(q, _)| &q.entity == entity)
        {
            if q.active > 0 {
                causes.push(format!(
                    "{} messages are waiting in {} [{r}]",
                    q.active,
                    short(&q.entity)
                ));
            }
            if q.dead_letter > 0 {
                causes.push(format!(
                    "{} messages of {} were dead-lettered, which may mean retries before that [{r}]",
                    q.dead_letter, short(&q.entity)
                ));
            }
        }
        for (a, r) in audit.iter().zip(&arefs) {
            let relevant = a.target.contains(entity.as_str())
                || a.target.contains(key.as_str())
                || a.target.starts_with("knob:");
            if relevant {
                causes.push(format!(
                    "at {} {} did {} on {} ({} -> {}, {}) [{r}]",
                    TimeSpan::at(a.at).render(),
                    a.actor,
                    a.action,
                    a.target,
                    a.before.as_deref().unwrap_or("?"),
                    a.after.as_deref().unwrap_or("?"),
                    a.outcome
                ));
            }
        }
        if let Some((item, r)) = stage_view.as_ref() {
            if let Some(d) = &item.dominant {
                causes.push(format!(
                    "most of each message's time goes to the {d} stage: {}",
                    stage_sentence(item, r)
                ));
            }
        }
        if causes.is_empty() {
            text.push_str("No cause shows in the data: throughput, latency, concurrency and recent changes look unchanged.\n");
        } else {
            text.push_str("What the data shows:\n");
            for c in causes {
                text.push_str(&format!("- {c}\n"));
            }
        }
        text.push('\n');
    }
    Ok((text, subject))
}

async fn recent_changes(ctx: &mut Ctx<'_>, minutes: u32) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (audit, span, refs) = ctx.ledger.recent_audit(&id, ctx.state, minutes).await?;
    if audit.is_empty() {
        return Ok(format!(
            "I changed nothing in the last {}: the audit log has no records between {}.\n",
            render_minutes(minutes),
            span.render()
        ));
    }
    let mut text = format!(
        "{} audit record(s) in the last {} ({}):\n",
        audit.len(),
        render_minutes(minutes),
        span.render()
    );
    for (a, r) in audit.iter().zip(&refs) {
        let change = match (&a.before, &a.after) {
            (Some(b), Some(c)) => format!(" from {b} to {c}"),
            (None, Some(c)) => format!(" to {c}"),
            _ => String::new(),
        };
        text.push_str(&format!(
            "- {} {}: {} {}{change} ({}); why: {} [{r}]\n",
            TimeSpan::at(a.at).render(),
            a.actor,
            a.action,
            a.target,
            a.outcome,
            short(&a.reason)
        ));
    }
    Ok(text)
}

async fn approvals(ctx: &mut Ctx<'_>) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (pending, refs) = ctx.ledger.pending_proposals(&id, ctx.state).await?;
    if pending.is_empty() {
        return Ok("Nothing is waiting for your approval.\n".into());
    }
    let mut text = format!("{} proposal(s) wait for your approval:\n", pending.len());
    for (p, r) in pending.iter().zip(&refs) {
        let expiry = p
            .expires_at
            .map(|t| format!(", lapses {}", TimeSpan::at(t).render()))
            .unwrap_or_default();
        text.push_str(&format!(
            "- {}: {} from {} to {}, proposed {}{expiry}; why: {}; policy: {} [{r}]\n",
            p.id,
            p.target,
            p.current,
            p.proposed,
            TimeSpan::at(p.created_at).render(),
            short(&p.reason),
            p.policy
        ));
    }
    text.push_str(
        "Approve or reject them with `trimtab proposals approve|reject <id>`; chat-ops cannot.\n",
    );
    Ok(text)
}

/// The newest sample per (pool, node), with its mark.
fn latest_pool_samples<'a>(pools: &'a [PoolSample], refs: &'a [String]) -> Vec<MarkedSample<'a>> {
    let mut latest: BTreeMap<(&str, &str), MarkedSample<'a>> = BTreeMap::new();
    for (s, r) in pools.iter().zip(refs) {
        let k = (s.pool.as_str(), s.node.as_str());
        if latest
            .get(&k)
            .is_none_or(|(old, _)| old.sampled_at < s.sampled_at)
        {
            latest.insert(k, (s, r));
        }
    }
    latest.into_values().collect()
}

/// Least-squares slope of free KiB over time, in KiB per second, with the first and last sample.
fn free_trend<'a>(
    samples: &[MarkedSample<'a>],
) -> Option<(f64, MarkedSample<'a>, MarkedSample<'a>)> {
    let mut s: Vec<_> = samples.to_vec();
    s.sort_by_key(|(p, _)| p.sampled_at);
    let first = *s.first()?;
    let last = *s.last()?;
    if s.len() < 2 || first.0.sampled_at == last.0.sampled_at {
        return None;
    }
    let t0 = first.0.sampled_at;
    let xs: Vec<f64> = s
        .iter()
        .map(|(p, _)| (p.sampled_at - t0).as_seconds_f64())
        .collect();
    let ys: Vec<f64> = s.iter().map(|(p, _)| p.free_kib as f64).collect();
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| (sxy / sxx, first, last))
}

async fn pool_fill(
    ctx: &mut Ctx<'_>,
    question: &str,
    days: u32,
) -> Result<(String, Option<String>), ToolError> {
    let id = ctx.next_id();
    let (placement, _summary_ref, pool_refs) = ctx.ledger.placement(&id, ctx.state).await?;
    let id = ctx.next_id();
    let (forecasts, frefs) = ctx
        .ledger
        .forecasts(&id, ctx.state, Some("pool_free_kib:".into()))
        .await?;
    let now = ctx.state.now();
    let horizon_end = now + Duration::days(i64::from(days));
    let sample_refs = &pool_refs;
    let mut pool_names: Vec<&str> = placement.pools.iter().map(|p| p.pool.as_str()).collect();
    pool_names.sort_unstable();
    pool_names.dedup();
    let subject = mentioned(question, pool_names.iter().copied());
    let mut text = String::new();
    if pool_names.is_empty() {
        return Ok((
            "There are no storage pool samples, so I cannot say whether a pool fills up.\n".into(),
            subject,
        ));
    }
    if subject.is_none() {
        text.push_str(&format!(
            "You did not name a pool I know ({}); here are all of them.\n\n",
            pool_names.join(", ")
        ));
    }
    for pool in pool_names
        .iter()
        .filter(|p| subject.as_deref().is_none_or(|s| s == **p))
    {
        let samples: Vec<_> = placement
            .pools
            .iter()
            .zip(sample_refs)
            .filter(|(s, _)| s.pool == *pool)
            .collect();
        let latest: Vec<_> = latest_pool_samples(&placement.pools, sample_refs)
            .into_iter()
            .filter(|(s, _)| s.pool == *pool)
            .collect();
        let free: u64 = latest.iter().map(|(s, _)| s.free_kib).sum();
        let total: u64 = latest.iter().map(|(s, _)| s.total_kib).sum();
        let latest_marks: Vec<&str> = latest.iter().map(|(_, r)| r.as_str()).collect();
        text.push_str(&format!(
            "{pool}: {free} KiB ({}) free of {total} KiB ({}) on {} node(s) now [{}].\n",
            gib(free as f64),
            gib(total as f64),
            latest.len(),
            latest_marks.join(", ")
        ));
        let series = format!("pool_free_kib:{pool}");
        let forecast = forecasts
            .iter()
            .zip(&frefs)
            .find(|(f, _)| f.series == series);
        if let Some((f, fr)) = forecast.filter(|(f, _)| f.trusted) {
            let within: Vec<_> = f
                .points
                .iter()
                .filter(|p| p.at <= horizon_end && p.at >= now)
                .collect();
            let mase = f
                .rolling_mase
                .map(|m| format!(", rolling MASE {m:.2}"))
                .unwrap_or_default();
            match within.iter().min_by(|a, b| a.value.total_cmp(&b.value)) {
                None => text.push_str(&format!(
                    "The forecast [{fr}] has no points in the next {days} day(s).\n"
                )),
                Some(low) if low.value <= 0.0 => {
                    // Report the first point at or below zero: that is when it fills.
                    let full = within.iter().find(|p| p.value <= 0.0).unwrap_or(low);
                    text.push_str(&format!(
                        "Yes: the forecast made {}{mase} [{fr}] puts free space at {} KiB ({}) on {}, within {days} day(s).\n",
                        TimeSpan::at(f.made_at).render(),
                        num(full.value),
                        gib(full.value),
                        TimeSpan::at(full.at).render()
                    ))
                }
                Some(low) => {
                    let lowest_lower = within.iter().map(|p| p.lower).fold(f64::INFINITY, f64::min);
                    let verdict = if lowest_lower <= 0.0 {
                        "Possibly"
                    } else {
                        "No"
                    };
                    text.push_str(&format!(
                        "{verdict}: the forecast made {}{mase} [{fr}] has its lowest free space at {} KiB ({}) on {}; \
                         the {}% interval's lower bound reaches {} KiB.\n",
                        TimeSpan::at(f.made_at).render(),
                        num(low.value),
                        gib(low.value),
                        TimeSpan::at(low.at).render(),
                        num(f.interval_coverage * 100.0),
                        num(lowest_lower)
                    ));
                }
            }
            continue;
        }
        if let Some((f, fr)) = forecast {
            text.push_str(&format!(
                "The forecast for {pool} [{fr}] is not trusted (rolling MASE {}), so I use the trend of the samples.\n",
                f.rolling_mase.map_or("unknown".into(), |m| format!("{m:.2}"))
            ));
        }
        let mut nodes: Vec<&str> = samples.iter().map(|(s, _)| s.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut soonest: Option<(f64, String)> = None;
        let mut any_trend = false;
        for node in nodes {
            let mine: Vec<_> = samples
                .iter()
                .copied()
                .filter(|(s, _)| s.node == node)
                .collect();
            let Some((slope, (first, r1), (last, r2))) = free_trend(&mine) else {
                continue;
            };
            any_trend = true;
            let per_day = -slope * 86_400.0;
            if slope >= 0.0 {
                text.push_str(&format!(
                    "- {node}: free space is not shrinking ({} KiB [{r1}] then {} KiB [{r2}]).\n",
                    first.free_kib, last.free_kib
                ));
                continue;
            }
            let days_left = last.free_kib as f64 / per_day;
            text.push_str(&format!(
                "- {node}: free went from {} KiB [{r1}] to {} KiB [{r2}], losing {} KiB ({}) a day; at that rate it is \
                 full in {:.1} days.\n",
                first.free_kib,
                last.free_kib,
                num(per_day.round()),
                gib(per_day),
                days_left
            ));
            if soonest.as_ref().is_none_or(|(d, _)| days_left < *d) {
                soonest = Some((days_left, node.to_owned()));
            }
        }
        let horizon = TimeSpan {
            from: now,
            to: horizon_end,
        }
        .render();
        match soonest {
            _ if !any_trend => text.push_str(&format!(
                "Not enough history to tell: each node of {pool} has only one sample.\n"
            )),
            Some((d, node)) if d <= f64::from(days) => text.push_str(&format!(
                "Yes: at the current trend {pool} fills on {node} within {days} day(s) ({horizon}), in about {d:.1} days.\n"
            )),
            Some((d, node)) => text.push_str(&format!(
                "No: at the current trend {pool} lasts beyond {days} day(s) ({horizon}); the first node to fill is {node}, in about {d:.1} days.\n"
            )),
            None => text.push_str(&format!("No: free space on {pool} is not shrinking.\n")),
        }
        text.push('\n');
    }
    Ok((text, subject))
}

async fn settings(ctx: &mut Ctx<'_>) -> Result<String, ToolError> {
    let id = ctx.next_id();
    let (snapshot, settings_ref) = ctx.ledger.settings(&id, ctx.state).await?;
    let r = &settings_ref;
    // Values come from the ledger's copy, which is masked.
    let masked = ctx
        .ledger
        .find(r)
        .map(|(_, item)| item.data["settings"].clone())
        .unwrap_or_default();
    let mut text = format!(
        "Mode: {} (as of {}) [{r}]\nSettings:\n",
        snapshot.mode,
        TimeSpan::at(snapshot.as_of).render()
    );
    for (i, s) in snapshot.settings.iter().enumerate() {
        let value = &masked[i]["value"];
        let shown = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        let changed = s
            .changed_at
            .map(|t| format!(" (changed {})", TimeSpan::at(t).render()))
            .unwrap_or_default();
        text.push_str(&format!("- {} = {shown}{changed} [{r}]\n", s.name));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_common_questions() {
        let cases = [
            ("is the pipeline healthy?", Intent::Health),
            ("Why is lag growing on orders?", Intent::LagGrowth),
            (
                "what did you change in the last hour and why?",
                Intent::RecentChanges { minutes: 60 },
            ),
            (
                "what changed in the last 3 hours",
                Intent::RecentChanges { minutes: 180 },
            ),
            ("What is waiting for my approval?", Intent::PendingApprovals),
            (
                "will pool-ssd fill up this week?",
                Intent::PoolFill { days: 7 },
            ),
            ("what are the current settings?", Intent::Settings),
            ("is there schema drift?", Intent::SchemaDrift),
            ("are producers sending a new field?", Intent::SchemaDrift),
            ("where does the time go?", Intent::StageBreakdown),
            ("write me a poem", Intent::Unknown),
        ];
        for (q, expected) in cases {
            assert_eq!(classify(q), expected, "{q}");
        }
    }
}
