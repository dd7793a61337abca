//! `trimtab proposals | pause | resume`: approvals and the kill switch from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use super::proposals::{Proposal, ProposalStore};
use super::state::StateDir;
use super::ExecutorError;
use crate::audit::{AuditKind, AuditLog};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn open_audit(state: &StateDir) -> Result<AuditLog, ExecutorError> {
    let (log, torn) = AuditLog::open(&state.audit_log())?;
    if let Some(t) = torn {
        eprintln!(
            "warning: the audit log had a torn last line ({} bytes at offset {}); saved to {} and recorded",
            t.bytes, t.offset, t.saved_to.display()
        );
    }
    Ok(log)
}

/// Arguments of `trimtab proposals`.
#[derive(Debug, clap::Args)]
pub struct ProposalsArgs {
    /// trimtab's state directory (proposals, pause flag, audit log).
    #[arg(long, global = true, env = "TRIMTAB_STATE_DIR", default_value = super::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: ProposalsCommand,
}

/// What to do with proposals.
#[derive(Debug, clap::Subcommand)]
pub enum ProposalsCommand {
    /// List proposals (open ones unless --all).
    List {
        /// Include approved, rejected, expired, applied and failed ones.
        #[arg(long)]
        all: bool,
    },
    /// Show one proposal in full: the change, its reason, the gate's decision, its plan hash.
    Show {
        /// Proposal id.
        id: String,
    },
    /// Approve a proposal; the running agent applies exactly it on its next step, unless its inputs drifted.
    Approve {
        /// Proposal id.
        id: String,
        /// Who approves (recorded in the audit log).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Reject a proposal; it never runs.
    Reject {
        /// Proposal id.
        id: String,
        /// Who rejects (recorded in the audit log).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
}

/// Arguments of `trimtab pause` and `trimtab resume`.
#[derive(Debug, clap::Args)]
pub struct KillSwitchArgs {
    /// trimtab's state directory (proposals, pause flag, audit log).
    #[arg(long, global = true, env = "TRIMTAB_STATE_DIR", default_value = super::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Who does it (recorded in the audit log).
    #[arg(long, env = "USER", default_value = "operator")]
    pub by: String,
    /// Why (recorded with the pause flag and in the audit log).
    #[arg(long, default_value = "")]
    pub reason: String,
}

fn line(p: &Proposal) -> String {
    format!(
        "{}  {:<12}  {:<14}  {:<24}  {}",
        p.id,
        serde_json::to_value(&p.status)
            .ok()
            .and_then(|v| v["state"].as_str().map(str::to_string))
            .unwrap_or_default(),
        p.change.action.verb(),
        p.change.target,
        p.change.reason.summary
    )
}

/// Runs `trimtab proposals …`.
pub fn run_proposals(args: ProposalsArgs) -> Result<ExitCode, ExecutorError> {
    let state = StateDir::new(args.state_dir);
    let store = ProposalStore::new(state.clone());
    match args.command {
        ProposalsCommand::List { all } => {
            for p in store.list()?.iter().filter(|p| all || p.status.is_open()) {
                println!("{}", line(p));
            }
        }
        ProposalsCommand::Show { id } => {
            let p = store.get(&id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&p).map_err(ExecutorError::Encode)?
            );
        }
        ProposalsCommand::Approve { id, by } => {
            let mut audit = open_audit(&state)?;
            let p = store.approve(&id, &by, &mut audit, now())?;
            println!(
                "approved {} by {by}: {} (plan hash {})",
                p.id,
                p.change.action.verb(),
                p.plan_hash
            );
        }
        ProposalsCommand::Reject { id, by } => {
            let mut audit = open_audit(&state)?;
            let p = store.reject(&id, &by, &mut audit, now())?;
            println!("rejected {} by {by}", p.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `trimtab pause`: audited, then the flag is set; every apply is refused until `resume`.
pub fn run_pause(args: KillSwitchArgs) -> Result<ExitCode, ExecutorError> {
    let state = StateDir::new(args.state_dir);
    let mut audit = open_audit(&state)?;
    audit.append(
        AuditKind::Paused,
        &args.by,
        "",
        serde_json::json!({ "reason": args.reason }),
    )?;
    let flag = state.pause(&args.by, &args.reason, now())?;
    println!(
        "paused by {} at {}: applying stops until `trimtab resume`",
        flag.by, flag.at
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `trimtab resume`: audited, then the flag is cleared.
pub fn run_resume(args: KillSwitchArgs) -> Result<ExitCode, ExecutorError> {
    let state = StateDir::new(args.state_dir);
    let mut audit = open_audit(&state)?;
    audit.append(
        AuditKind::Resumed,
        &args.by,
        "",
        serde_json::json!({ "reason": args.reason }),
    )?;
    let was = state.resume()?;
    println!(
        "{}",
        if was {
            "resumed: applying allowed again"
        } else {
            "was not paused"
        }
    );
    Ok(ExitCode::SUCCESS)
}
