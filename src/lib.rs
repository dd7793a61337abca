//! trimtab: an agent that runs and tunes a Service Bus → LINSTOR / Cassandra pipeline behind policy as code.
//!
//! # Layout
//!
//! * [`app`]: builds the running pipeline (real clients, adapters, knobs) from a [`config::Config`].
//! * [`agent`]: the control loop: sample, forecast, plan, gate, apply, audit; state snapshots for the API and chat-ops.
//! * [`message`]: the message schema (events and volume requests), versioned, in one place.
//! * [`servicebus`]: the Service Bus trait, the `azservicebus` client, the depth collector and lag accounting.
//! * [`cassandra`]: the batching, idempotent `scylla` writer, the schema and trimtab's own tables.
//! * [`linstor`]: the typed LINSTOR REST client, volume operations from messages, placement metrics.
//! * [`pipeline`]: receive, route, batch, write, settle; live knobs; graceful shutdown.
//! * [`metrics`]: collectors and the time-series store the forecaster and planner read.
//! * [`forecast`]: features, baselines, linfa models, the backtest and live accuracy. No IO.
//! * [`planner`]: pure functions from observed state and forecasts to a plan. No IO.
//! * [`policy`]: the Rego policy gate (regorus) and its decisions.
//! * [`windows`]: maintenance windows from policy data: pause or slow ingest, freeze placement on the affected path.
//! * [`drift`]: learns each message kind's shape and reports schema drift with examples.
//! * [`redrive`]: lists, shows and re-drives dead-lettered messages, rate-limited, gated and audited.
//! * [`executor`]: least-privilege apply, verify and rollback of gated changes.
//! * [`audit`]: the append-only, hash-chained audit log.
//! * [`chatops`]: read-only tools over trimtab's state, the LLM client and the templated answers.
//! * [`api`]: the HTTP API, `/metrics`, health and readiness.
//! * [`web`]: the operator's web page, embedded in the binary and served by [`api`].
//! * [`sim`]: the stand-ins (Service Bus over AMQP, a CQL v4 server, a fake LINSTOR controller) and fixtures.
//! * [`chart_font`]: the system font plotters draws chart text with.
//! * [`replay`]: trace loading and replay into the pipeline, and `trimtab replay`'s comparison of tuning strategies.
//! * [`demo`]: the embedded default: stand-ins, the pipeline and a replayed trace, ending with a summary.
//! * [`commands`]: the long-running commands (`demo`, `sim`, `run`) and their runtime.
//! * [`config`]: the TOML configuration: typed, validated without IO, then built.
//! * [`shutdown`]: the cancellation tree and grace period shared by every long-running task.

pub mod agent;
pub mod api;
pub mod app;
pub mod audit;
pub mod cassandra;
pub mod chart_font;
pub mod chatops;
pub mod commands;
pub mod config;
pub mod demo;
pub mod drift;
pub mod executor;
pub mod forecast;
pub mod linstor;
pub mod message;
pub mod metrics;
pub mod pipeline;
pub mod planner;
pub mod policy;
pub mod redrive;
pub mod replay;
pub mod servicebus;
pub mod shutdown;
// Alphabetical but for `sim`, which only exists with the default-on feature.
#[cfg(feature = "sim")]
pub mod sim;
pub mod web;
pub mod windows;
