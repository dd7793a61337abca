//! The `trimtab` command line: parses arguments and calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// trimtab runs and tunes a Service Bus → LINSTOR / Cassandra pipeline, behind policy as code.
#[derive(Parser)]
#[command(name = "trimtab", version, about)]
struct Cli {
    /// Log lines as human-readable text or as one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = trimtab::commands::LogFormat::Text)]
    log_format: trimtab::commands::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on this machine on a real arrival trace (stand-ins in-process), then summarise.
    Demo(trimtab::commands::DemoArgs),
    /// Start the three stand-ins (Service Bus, CQL, LINSTOR) and print their addresses for your own clients.
    Sim(trimtab::commands::SimArgs),
    /// Run the agent against the endpoints of a configuration file.
    Run(trimtab::commands::RunArgs),
    /// Forecasting: backtest the models on a series, or plot actual against forecast.
    Forecast(trimtab::forecast::cli::ForecastArgs),
    /// List, show, approve or reject proposed changes.
    Proposals(trimtab::executor::cli::ProposalsArgs),
    /// Stop all applying at once (the kill switch); proposals are still planned and recorded.
    Pause(trimtab::executor::cli::KillSwitchArgs),
    /// Allow applying again after `pause`.
    Resume(trimtab::executor::cli::KillSwitchArgs),
    /// Verify the audit log's hash chain or show its last records.
    Audit(trimtab::audit::cli::AuditArgs),
    /// Ask a question about the pipeline; answers cite the numbers they use.
    Ask(trimtab::chatops::cli::AskArgs),
    /// List, show or re-drive dead-lettered messages (re-drive is rate-limited, gated and audited).
    Dlq(trimtab::redrive::cli::DlqArgs),
    /// Replay a real trace under several tuning strategies on the same load and compare them (table + report).
    Replay(trimtab::replay::cli::ReplayArgs),
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    trimtab::commands::set_log_format(cli.log_format);
    let code = match cli.command {
        Command::Demo(args) => {
            trimtab::commands::demo(args)?;
            ExitCode::SUCCESS
        }
        Command::Sim(args) => {
            trimtab::commands::sim(args)?;
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            trimtab::commands::run(args)?;
            ExitCode::SUCCESS
        }
        Command::Forecast(args) => {
            trimtab::forecast::cli::run(args)?;
            ExitCode::SUCCESS
        }
        Command::Proposals(args) => trimtab::executor::cli::run_proposals(args)?,
        Command::Pause(args) => trimtab::executor::cli::run_pause(args)?,
        Command::Resume(args) => trimtab::executor::cli::run_resume(args)?,
        Command::Audit(args) => trimtab::audit::cli::run(args)?,
        Command::Ask(args) => {
            trimtab::chatops::cli::run(args)?;
            ExitCode::SUCCESS
        }
        Command::Dlq(args) => trimtab::redrive::cli::run(args)?,
        Command::Replay(args) => {
            trimtab::replay::cli::run(args)?;
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}
