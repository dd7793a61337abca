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
    /// Ask a question about the pipeline; answers cite the numbers they use.
    Ask(trimtab::chatops::cli::AskArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Ask(args) => Ok(trimtab::chatops::cli::run(args)?),
    }
}
