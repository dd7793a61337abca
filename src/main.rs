//! The `trimtab` command line: parses arguments and calls into the library.

use clap::{Parser, Subcommand};

/// trimtab runs and tunes a Service Bus → LINSTOR / Cassandra pipeline, behind policy as code.
#[derive(Parser)]
#[command(name = "trimtab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forecasting: backtest the models on a series, or plot actual against forecast.
    Forecast(trimtab::forecast::cli::ForecastArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Forecast(args) => trimtab::forecast::cli::run(args)?,
    }
    Ok(())
}
