//! `trimtab audit verify | tail`: check the hash chain and show its last records.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{tail, verify, AuditError};

/// The audit log file inside a state directory.
pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

/// Arguments of `trimtab audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// trimtab's state directory (proposals, pause flag, audit log).
    #[arg(
        long,
        global = true,
        env = "TRIMTAB_STATE_DIR",
        default_value = "./trimtab-state"
    )]
    pub state_dir: PathBuf,
    /// Read this audit file instead of `<state-dir>/audit.log`.
    #[arg(long, global = true)]
    pub file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// What to do with the audit log.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exits non-zero and names the first bad seq if it is broken.
    Verify,
    /// Show the last records, oldest first, one JSON object per line.
    Tail {
        /// How many records to show.
        #[arg(short = 'n', long = "lines", default_value_t = 20)]
        n: usize,
    },
}

/// Runs `trimtab audit …`, printing to stdout; a broken chain gives a failing exit code.
pub fn run(args: AuditArgs) -> Result<ExitCode, AuditError> {
    let path = args.file.unwrap_or_else(|| log_path(&args.state_dir));
    match args.command {
        AuditCommand::Verify => match verify(&path)? {
            Ok(report) => {
                println!(
                    "audit chain ok: {} records, head {}",
                    report.records, report.head_hash
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(failure) => {
                println!(
                    "audit chain broken: first bad seq {} (line {}): {}",
                    failure.seq, failure.line, failure.reason
                );
                Ok(ExitCode::FAILURE)
            }
        },
        AuditCommand::Tail { n } => {
            for record in tail(&path, n)? {
                println!(
                    "{}",
                    serde_json::to_string(&record).map_err(AuditError::Encode)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
