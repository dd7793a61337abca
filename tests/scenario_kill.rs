//! Killing the agent between audit and apply, over the wire: the agent runs in a child process against the
//! stand-ins of this one, is killed with SIGKILL once the start of a knob change is on disk and before the knob
//! is set, and is started again. The chain verifies (`trimtab audit verify`), the start record is there, and the
//! restarted agent audits what became of the change before it plans anything new.

mod agent_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use agent_support::*;
use tokio_util::sync::CancellationToken;
use trimtab::agent::actuators::LinstorPlacement;
use trimtab::agent::Agent;
use trimtab::app::App;
use trimtab::audit::{tail, AuditKind, AuditRecord};
use trimtab::cassandra::CassandraConfig;
use trimtab::config::{AgentConfig, ApiConfig, Config};
use trimtab::executor::ExecutorConfig;
use trimtab::linstor::config::LinstorConfig;
use trimtab::linstor::{LinstorReader, LinstorWriter};
use trimtab::pipeline::{Knobs, PipelineConfig};
use trimtab::servicebus::azure::ServiceBusConfig;
use trimtab::servicebus::renewal::RenewalConfig;
use trimtab::servicebus::sas::SecretString;
use trimtab::servicebus::{Entity, MessageSender};
use trimtab::sim::cluster::{SimCluster, SimOptions, SIM_LINSTOR_TOKEN};

const TEST: &str =
    "killing_the_agent_between_audit_and_apply_loses_no_record_and_restart_reconciles";
/// Set in the child's environment: the state directory; its presence makes the test play the child.
const CHILD_STATE: &str = "TRIMTAB_KILL_CHILD_STATE";
const CHILD_SB: &str = "TRIMTAB_KILL_CHILD_SERVICEBUS";
const CHILD_SB_HTTP: &str = "TRIMTAB_KILL_CHILD_SERVICEBUS_HTTP";
const CHILD_CQL: &str = "TRIMTAB_KILL_CHILD_CQL";
const CHILD_LINSTOR: &str = "TRIMTAB_KILL_CHILD_LINSTOR";

/// The stand-ins' addresses, as the child gets them.
struct Endpoints {
    servicebus: String,
    management: String,
    cql: String,
    linstor: String,
}

impl Endpoints {
    fn config(&self) -> Config {
        let mut servicebus =
            ServiceBusConfig::from_connection_string(SecretString::new(self.servicebus.clone()));
        servicebus.tls = false;
        servicebus.management_base_url = Some(self.management.clone());
        let mut pipeline = PipelineConfig::for_entities(vec![Entity::Queue(QUEUE.into())]);
        // Prefetch at half a round of batches (32 rows × 8): the planner raises it fourfold, which policy allows.
        pipeline.knobs = Knobs {
            batch_rows: 32,
            batch_bytes: 5120,
            write_concurrency: 8,
            prefetch: 128,
            max_in_flight: 2048,
        };
        Config {
            servicebus,
            lock_renewal: RenewalConfig::default(),
            cassandra: CassandraConfig {
                contact_points: vec![self.cql.clone()],
                ..CassandraConfig::default()
            },
            linstor: LinstorConfig::for_controller(
                &self.linstor,
                Some(SIM_LINSTOR_TOKEN),
                Some(SIM_LINSTOR_TOKEN),
            ),
            pipeline,
            agent: AgentConfig::default(),
            chatops: None,
            api: ApiConfig::default(),
        }
    }
}

/// The child: the real pipeline and agent against the parent's stand-ins, until SIGTERM (or SIGKILL).
async fn child(state: PathBuf) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,trimtab::sim=warn,scylla=warn",
        ))
        .with_test_writer()
        .try_init();
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set for the child"));
    let endpoints = Endpoints {
        servicebus: env(CHILD_SB),
        management: env(CHILD_SB_HTTP),
        cql: env(CHILD_CQL),
        linstor: env(CHILD_LINSTOR),
    };
    let config = endpoints.config();
    let app = tokio::time::timeout(Duration::from_secs(60), App::build(&config))
        .await
        .expect("the child's app build timed out")
        .expect("the child's app builds against the stand-ins");
    let validated = config.linstor.validate().unwrap();
    let opts = Options {
        // A ten-second baseline window before a knob is set: the parent kills the child inside it.
        executor: ExecutorConfig {
            verify_window_s: 10,
            ..Options::default().executor
        },
        ..Options::default()
    };
    let parts = agent_parts(
        &app,
        &opts,
        &state,
        state.parent().unwrap().join("policies"),
        LinstorPlacement::new(LinstorWriter::new(&validated).unwrap()),
        LinstorReader::new(&validated).unwrap(),
    );
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        trimtab::shutdown::signal().await;
        on_signal.cancel();
    });
    let pipeline = tokio::spawn(app.run(token.child_token()));
    let agent = Agent::start(parts, token.child_token()).expect("the child's agent starts");
    token.cancelled().await;
    tokio::time::timeout(Duration::from_secs(30), agent.join())
        .await
        .expect("the child's agent stops within 30 s");
    let _ = tokio::time::timeout(Duration::from_secs(30), pipeline).await;
}

fn spawn_child(state: &Path, sim: &SimCluster) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_STATE, state)
        .env(CHILD_SB, sim.servicebus.connection_string())
        .env(CHILD_SB_HTTP, sim.servicebus.management_base_url())
        .env(CHILD_CQL, sim.cql.addr().to_string())
        .env(CHILD_LINSTOR, sim.linstor.base_url())
        .spawn()
        .expect("spawn the child")
}

/// Waits until the audit log holds a record `pred` picks, while the child keeps running.
async fn until_record(
    log: &Path,
    child: &mut Child,
    within: Duration,
    what: &str,
    pred: impl Fn(&[AuditRecord]) -> Option<AuditRecord>,
) -> AuditRecord {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(r) = tail(log, usize::MAX).ok().and_then(|rs| pred(&rs)) {
            return r;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited ({status}) before {what}");
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let records = tail(log, usize::MAX).unwrap_or_default();
            let lines: Vec<String> = records
                .iter()
                .map(|r| format!("{:?} {} {}", r.kind, r.subject, r.detail))
                .collect();
            panic!(
                "waiting for {what} timed out; audit log:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn audit_verify(state: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trimtab"))
        .args(["audit", "verify", "--state-dir"])
        .arg(state)
        .output()
        .expect("run trimtab audit verify");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "trimtab audit verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_agent_between_audit_and_apply_loses_no_record_and_restart_reconciles() {
    if let Ok(state) = std::env::var(CHILD_STATE) {
        return child(PathBuf::from(state)).await;
    }
    let sim = SimCluster::start(SimOptions::local(&[QUEUE]))
        .await
        .expect("stand-ins start");
    let dir = tempfile::tempdir().unwrap();
    policies_copy(dir.path());
    let state = dir.path().join("state");
    let log = state.join("audit.log");

    let app = tokio::time::timeout(
        Duration::from_secs(30),
        App::build(&sim.config(vec![Entity::Queue(QUEUE.into())])),
    )
    .await
    .expect("app build timed out")
    .expect("the parent's client builds");
    let sender: Arc<dyn MessageSender> = Arc::new(
        app.servicebus
            .sender(&Entity::Queue(QUEUE.into()))
            .await
            .expect("sender"),
    );
    let stop = CancellationToken::new();
    let traffic = periodic_traffic(sender, "orders-k", stop.clone());

    let mut first = spawn_child(&state, &sim);
    let start = until_record(
        &log,
        &mut first,
        Duration::from_secs(180),
        "the start of a knob change",
        |rs| {
            rs.iter()
                .rfind(|r| {
                    r.kind == AuditKind::ApplyStart
                        && r.detail["change"]["action"]["verb"] == "set_knobs"
                })
                .cloned()
        },
    )
    .await;
    first.kill().expect("SIGKILL the child");
    let status = first.wait().unwrap();
    assert!(
        !status.success(),
        "the child must have been killed: {status}"
    );

    // The kill landed after the start was durable and before the outcome: the knobs were not set yet.
    let after_kill = tail(&log, usize::MAX).unwrap();
    assert!(
        after_kill.iter().any(|r| r == &start),
        "the start record survived the kill"
    );
    assert!(
        !after_kill
            .iter()
            .any(|r| r.kind == AuditKind::ApplyOutcome && r.subject == start.subject),
        "the child was killed too late: the change already had an outcome"
    );
    let report = audit_verify(&state);
    assert!(report.starts_with("audit chain ok"), "{report}");

    let mut second = spawn_child(&state, &sim);
    let reconciled = until_record(
        &log,
        &mut second,
        Duration::from_secs(90),
        "the restarted agent's outcome for the interrupted change",
        |rs| {
            rs.iter()
                .find(|r| r.kind == AuditKind::ApplyOutcome && r.subject == start.subject)
                .cloned()
        },
    )
    .await;
    let pid = second.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(status) = second.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if stopped.is_err() {
        let _ = second.kill();
        panic!("the restarted child did not stop within 60 s of SIGTERM");
    }
    stop.cancel();
    traffic.await.ok();

    assert_eq!(
        reconciled.detail["outcome"], "interrupted",
        "{}",
        reconciled.detail
    );
    let found = reconciled.detail["found"].as_str().unwrap_or_default();
    assert!(
        found.contains("old setting: not applied"),
        "the restart must say the knobs were never set: {found}"
    );
    assert!(reconciled.seq > start.seq);
    let report = audit_verify(&state);
    assert!(report.starts_with("audit chain ok"), "{report}");
    let records = tail(&log, usize::MAX).unwrap();
    assert!(records.contains(&start) && records.contains(&reconciled));
    // Nothing new was planned or applied between the restart and the reconciliation.
    let between: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.seq > start.seq && r.seq < reconciled.seq)
        .collect();
    assert!(
        !between.iter().any(|r| r.kind == AuditKind::ApplyStart),
        "an apply started before the interrupted one was reconciled: {between:?}"
    );
    sim.shutdown().await;
}
