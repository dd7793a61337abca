//! `trimtab dlq list | show | redrive`: the dead-letter queue from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::service::DlqService;
use super::{DeadLetterEntry, Filter, FilterError, RedriveError, RedriveRequest};
use crate::config::{Config, ConfigError};
use crate::executor::StateDir;
use crate::servicebus::azure::AzureServiceBus;
use crate::servicebus::{Entity, ServiceBusError};

/// Why `trimtab dlq` failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqCliError {
    /// The configuration file is unusable.
    #[error("configuration")]
    Config(#[from] ConfigError),
    /// No entity was named and the configuration lists none.
    #[error("no --entity given and pipeline.entities is empty: expected a queue or topic/Subscriptions/sub")]
    NoEntity,
    /// A `--filter` expression is unreadable.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// Service Bus could not be reached.
    #[error("service bus")]
    ServiceBus(#[from] ServiceBusError),
    /// Listing or re-driving failed.
    #[error("dead-letter queue")]
    Redrive(#[from] RedriveError),
    /// The async runtime could not start.
    #[error("tokio runtime")]
    Runtime(#[source] std::io::Error),
    /// Output could not be encoded.
    #[error("output could not be encoded")]
    Encode(#[from] serde_json::Error),
}

impl DlqCliError {
    /// Whether running the command again may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            DlqCliError::ServiceBus(e) => e.is_retriable(),
            DlqCliError::Redrive(e) => e.is_retriable(),
            DlqCliError::Runtime(_) => true,
            _ => false,
        }
    }
}

/// Arguments of `trimtab dlq`.
#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    /// The configuration file (Service Bus connection, policies and state directories).
    #[arg(long, global = true, default_value = "trimtab.toml")]
    pub config: PathBuf,
    /// The queue or `topic/Subscriptions/sub` whose dead letters to read; the first pipeline entity when absent.
    #[arg(long, global = true)]
    pub entity: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// What to do with the dead-letter queue.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages (peeked: nothing is locked or changed).
    List {
        /// `reason=R` (prefix), `kind=K` (`event`, `volume`, `volume.create`), `age>15m`, `age<2h`; repeatable.
        #[arg(long)]
        filter: Vec<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead-lettered message in full, by its sequence number.
    Show {
        /// Sequence number (from `list`).
        sequence_number: i64,
    },
    /// Send dead-lettered messages back to their entity, same message id, rate-limited, gated and audited.
    Redrive {
        /// Which messages, as for `list`; all when absent.
        #[arg(long)]
        filter: Vec<String>,
        /// Plan and ask the policy gate, then stop: nothing is moved and nothing is written.
        #[arg(long)]
        dry_run: bool,
        /// At most this many messages in this run.
        #[arg(long, default_value_t = 1_000)]
        max: usize,
        /// Messages sent per second at most.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Who re-drives (recorded in the audit log).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

fn entity_of(text: &str) -> Entity {
    match text.split_once("/Subscriptions/") {
        Some((topic, subscription)) => Entity::Subscription {
            topic: topic.to_string(),
            subscription: subscription.to_string(),
        },
        None => Entity::Queue(text.to_string()),
    }
}

fn table(entries: &[DeadLetterEntry]) -> String {
    let mut out = format!(
        "{:>8}  {:<20}  {:<28}  {:<14}  {:>7}  {:>3}  {}\n",
        "seq", "message id", "reason", "kind", "age s", "re", "body"
    );
    for e in entries {
        out.push_str(&format!(
            "{:>8}  {:<20}  {:<28}  {:<14}  {:>7}  {:>3}  {}\n",
            e.sequence_number,
            e.message_id.as_deref().unwrap_or("-"),
            e.reason,
            e.kind,
            e.age_s,
            e.redrive_count,
            e.preview
        ));
    }
    out
}

/// Runs `trimtab dlq`.
pub fn run(args: DlqArgs) -> Result<ExitCode, DlqCliError> {
    let config = Config::load(&args.config)?;
    let entity = match &args.entity {
        Some(e) => entity_of(e),
        None => config
            .pipeline
            .entities
            .first()
            .cloned()
            .ok_or(DlqCliError::NoEntity)?,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(DlqCliError::Runtime)?;
    runtime.block_on(async move {
        let bus = Arc::new(AzureServiceBus::connect(&config.servicebus).await?);
        let state = StateDir::new(config.agent.state_dir.clone());
        let service = DlqService::new(bus, config.agent.policies_dir.clone(), state.audit_log());
        match args.command {
            DlqCommand::List { filter, limit } => {
                let filter = Filter::parse(&filter)?;
                let entries = service.list(&entity, &filter, limit).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&entries)?);
                } else {
                    print!("{}", table(&entries));
                    println!("{} dead-lettered message(s) on {entity}", entries.len());
                }
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Show { sequence_number } => {
                let (entry, message) = service.show(&entity, sequence_number).await?;
                let body = String::from_utf8_lossy(&message.body).into_owned();
                let shown = serde_json::json!({
                    "entry": entry, "body": body, "properties": message.application_properties,
                });
                println!("{}", serde_json::to_string_pretty(&shown)?);
                Ok(ExitCode::SUCCESS)
            }
            DlqCommand::Redrive {
                filter,
                dry_run,
                max,
                rate,
                by,
            } => {
                let request = RedriveRequest {
                    filter: Filter::parse(&filter)?,
                    max_messages: max,
                    rate_per_second: rate,
                    dry_run,
                    actor: by,
                };
                let report = service.redrive(&entity, &request).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{}", table(&report.selected));
                    println!(
                        "gate: {:?} ({})",
                        report.decision.verdict,
                        report.decision.reasons.join("; ")
                    );
                    if report.dry_run {
                        println!(
                            "dry run: {} message(s) would be re-driven to {entity}; nothing moved",
                            report.selected.len()
                        );
                    } else {
                        println!(
                            "re-drove {} message(s) to {entity} in {:.1} s; {} missed",
                            report.redriven.len(),
                            report.elapsed_s,
                            report.missed.len()
                        );
                    }
                }
                let refused =
                    !report.dry_run && report.decision.verdict != crate::policy::Verdict::Allow;
                Ok(if refused || !report.missed.is_empty() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                })
            }
        }
    })
}
