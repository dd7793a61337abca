//! The long-running commands (`demo`, `sim`, `run`): their arguments and the runtime they run on.

use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::demo::{self, DemoOptions, EVENTS_QUEUE, REPLIES_QUEUE};
use crate::replay::generate::ReplayOptions;
use crate::sim::cluster::{SimCluster, SimOptions};

/// `trimtab demo`: the whole pipeline on this machine, on a real arrival trace.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Time compression of the 57-minute trace: 60 replays it in about a minute.
    #[arg(long, default_value_t = 60.0)]
    pub speedup: f64,
    /// Replay only the first N requests.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Share of requests that become LINSTOR volume requests.
    #[arg(long, default_value_t = 0.01)]
    pub volume_share: f64,
    /// Share of requests sent with a malformed body (they must end in the dead-letter queue).
    #[arg(long, default_value_t = 0.002)]
    pub malformed_share: f64,
    /// Keep the stand-ins serving after the summary (until Ctrl-C), printing their addresses.
    #[arg(long)]
    pub serve: bool,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Address of the operator page and API while the demo runs (a free port if busy); empty turns it off.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: String,
}

/// `trimtab sim`: the three stand-ins in one process, for your own clients.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Queues to create on the Service Bus stand-in.
    #[arg(long = "queue", default_values_t = [EVENTS_QUEUE.to_string(), REPLIES_QUEUE.to_string()])]
    pub queues: Vec<String>,
    /// Keep the CQL server's data in this file, so it survives a restart.
    #[arg(long)]
    pub cql_data: Option<PathBuf>,
    /// CQL listen address.
    #[arg(long, default_value = "127.0.0.1:9042")]
    pub cql: std::net::SocketAddr,
    /// LINSTOR controller listen address.
    #[arg(long, default_value = "127.0.0.1:3370")]
    pub linstor: std::net::SocketAddr,
}

/// `trimtab run`: the agent against the endpoints of a configuration file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The TOML configuration (see `trimtab.example.toml`).
    #[arg(long, short)]
    pub config: PathBuf,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the structured fields as keys (for log shippers).
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Chooses the log format for the rest of the process; the first call wins.
pub fn set_log_format(format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `default`), in the format [`set_log_format`] chose.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match LOG_FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        tracing::info!("signal received; shutting down");
        on_signal.cancel();
    });
    token
}

/// Runs `trimtab demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    init_tracing("warn");
    if args.speedup.is_nan() || args.speedup <= 0.0 {
        anyhow::bail!(
            "--speedup {} is not positive: expected a factor such as 60",
            args.speedup
        );
    }
    for (name, share) in [
        ("--volume-share", args.volume_share),
        ("--malformed-share", args.malformed_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            anyhow::bail!("{name} {share} is outside 0..=1");
        }
    }
    runtime()?.block_on(async {
        let stop = cancel_on_signal();
        let options = DemoOptions {
            replay: ReplayOptions {
                speedup: args.speedup,
                limit: args.limit,
                volume_share: args.volume_share,
                malformed_share: args.malformed_share,
                ..ReplayOptions::default()
            },
            serve: args.serve,
            progress: !args.json,
            api_bind: (!args.api.is_empty()).then(|| args.api.clone()),
            ..DemoOptions::default()
        };
        let summary = demo::run(options, stop).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else if !args.serve {
            println!("{summary}");
        }
        Ok(())
    })
}

/// Runs `trimtab sim`.
pub fn sim(args: SimArgs) -> anyhow::Result<()> {
    init_tracing("info");
    runtime()?.block_on(async {
        let mut options = SimOptions::local(&[]);
        options.servicebus.queues = args.queues;
        options.cql.bind = args.cql;
        options.cql.persist_path = args.cql_data;
        options.linstor.bind = args.linstor;
        let sim = match SimCluster::start(SimOptions {
            fixed_servicebus_address: true,
            ..options.clone()
        })
        .await
        {
            Ok(sim) => sim,
            Err(error) => {
                tracing::warn!(%error, "127.0.0.1:5672 unavailable; using the first free loopback address");
                SimCluster::start(options).await?
            }
        };
        println!("trimtab sim: the stand-ins are serving (Ctrl-C stops them)");
        for (name, address) in sim.addresses() {
            println!("  {name:<40} {address}");
        }
        crate::shutdown::signal().await;
        sim.shutdown().await;
        Ok(())
    })
}

/// Runs `trimtab run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let config = Config::load(&args.config)?;
    runtime()?.block_on(async {
        let stop = cancel_on_signal();
        let app = crate::app::App::build(&config).await?;
        let parts = app.agent_parts(&config).await;
        if parts.is_none() {
            tracing::warn!("no [linstor] executor credential: the control loop does not run, nothing will be changed");
        }
        let mut surface = None;
        if !config.api.bind.is_empty() {
            let launch = crate::api::launch::Launch {
                bind: config.api.bind.clone(),
                tokens: crate::api::Tokens::from_env(&config.api),
                chatops: config.chatops.clone().unwrap_or_default(),
            };
            let started = crate::api::launch::start(&app, parts, launch, stop.clone()).await?;
            tracing::info!(url = %started.url(), "operator page and api serving");
            surface = Some(started);
        } else if let Some(parts) = parts {
            let agent = crate::agent::Agent::start(parts, stop.child_token())?;
            tracing::info!("[api] bind is empty: no http api");
            let stats = app.run(stop).await;
            tracing::info!(?stats, "pipeline stopped");
            agent.join().await;
            return Ok(());
        }
        tracing::info!(entities = ?app.entities, "pipeline running");
        let stats = app.run(stop).await;
        tracing::info!(?stats, "pipeline stopped");
        if let Some(surface) = surface {
            surface.join().await;
        }
        Ok(())
    })
}
