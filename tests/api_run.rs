//! `trimtab run --config FILE` serves the surface as configured: the page, `/metrics` and readiness over the
//! stand-ins, and the write token read from the environment variable the `[api]` section names.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use trimtab::sim::cluster::{SimCluster, SimOptions, SIM_LINSTOR_TOKEN};

const TOKEN_ENV: &str = "TRIMTAB_TEST_API_TOKEN";
const TOKEN: &str = "run-test-token";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_page_metrics_readiness_and_takes_its_token_from_the_environment() {
    let sim = SimCluster::start(SimOptions::local(&["events"]))
        .await
        .expect("stand-ins start");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        r#"
[servicebus]
connection_string = "{cs}"
tls = false
management_base_url = "{mgmt}"

[cassandra]
contact_points = ["{cql}"]

[linstor]
controllers = ["{linstor}"]
reader = {{ token = "{token}" }}
executor = {{ token = "{token}" }}

[pipeline]
entities = ["events"]

[agent]
state_dir = "{state}"
models_dir = "{state}/models"
policies_dir = "{policies}"
sample_interval_ms = 1000

[api]
bind = "127.0.0.1:{port}"
write_token_env = "{TOKEN_ENV}"
"#,
        cs = sim.servicebus.connection_string(),
        mgmt = sim.servicebus.management_base_url(),
        cql = sim.cql.addr(),
        linstor = sim.linstor.base_url(),
        token = SIM_LINSTOR_TOKEN,
        state = dir.path().join("state").display(),
        policies = concat!(env!("CARGO_MANIFEST_DIR"), "/policies"),
    );
    let config = dir.path().join("trimtab.toml");
    std::fs::write(&config, text).unwrap();
    let _child = Killed(
        Command::new(env!("CARGO_BIN_EXE_trimtab"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env(TOKEN_ENV, TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start trimtab run"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(r) = http.get(format!("{url}/readyz")).send().await {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if status == 200 {
                    return body;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("trimtab run never answered /readyz with 200 within 60 s");
    assert_eq!(ready["checks"]["servicebus"], "ok", "{ready}");

    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/assets/app.js"), "{page}");

    // The agent samples the queue; /metrics shows the stand-in's depth of it.
    let metrics = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.contains(r#"trimtab_queue_depth_messages{entity="events",kind="active"} 0"#) {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
    .await
    .expect("/metrics never showed the sampled depth of events within 30 s");
    assert!(metrics.contains("\ntrimtab_knob_batch_rows "), "{metrics}");

    // The token comes from the variable the config names.
    let refused = http
        .post(format!("{url}/v1/pause"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let paused = http
        .post(format!("{url}/v1/pause"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"by": "dora", "reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status().as_u16(), 200);
    // The flag is the one `trimtab pause` writes: the executor's state directory says paused.
    let flag = trimtab::executor::StateDir::new(dir.path().join("state"))
        .paused()
        .expect("read the pause flag")
        .expect("paused");
    assert_eq!(flag.by, "dora");

    drop(_child);
    sim.shutdown().await;
}
