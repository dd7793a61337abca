//! Plumbing for the surface tests: the stand-ins, the pipeline and the agent started the way `trimtab demo` starts
//! them (through `api::launch`), traffic, a forced placement proposal, and a small W3C WebDriver client over
//! reqwest that drives Debian's chromium through chromedriver.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use trimtab::api::launch::{self, Launch, Surface};
use trimtab::api::Tokens;
use trimtab::app::App;
use trimtab::linstor::LinstorWriter;
use trimtab::policy::Mode;
use trimtab::servicebus::{Entity, MessageSender, OutgoingMessage};
use trimtab::sim::cluster::{SimCluster, SimOptions};

pub const QUEUE: &str = "orders";

/// Evaluates `$body` (a block yielding `Result<T, String>`, awaits allowed) every 250 ms until it is `Ok`,
/// failing with `$message` and the last `Err` after `$within`.
#[macro_export]
macro_rules! until {
    ($within:expr, $message:expr, $body:expr) => {{
        let within: std::time::Duration = $within;
        let mut last = String::new();
        let waited = tokio::time::timeout(within, async {
            loop {
                let attempt: Result<_, String> = $body;
                match attempt {
                    Ok(v) => break v,
                    Err(why) => last = why,
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        })
        .await;
        match waited {
            Ok(v) => v,
            Err(_) => panic!("{} (waited {:?}); last: {}", $message, within, last),
        }
    }};
}
pub const WRITE_TOKEN: &str = "test-write-token";

/// Everything running for one test.
pub struct Stand {
    pub sim: SimCluster,
    pub surface: Option<Surface>,
    pub url: String,
    pub stop: CancellationToken,
    pub writer: LinstorWriter,
    pub sender: Arc<dyn MessageSender>,
    pub pipeline: Option<tokio::task::JoinHandle<trimtab::pipeline::StatsSnapshot>>,
    pub traffic: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Stand {
    /// Starts the stand-ins, the pipeline, the agent (tuned as the demo tunes it) and the surface, with
    /// `tokens`; `read_token` is what [`Stand::get`] sends.
    pub async fn start(mode: Mode, tokens: Tokens) -> Stand {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let sim = SimCluster::start(SimOptions::local(&[QUEUE]))
            .await
            .expect("stand-ins start");
        let config = sim.config(vec![Entity::Queue(QUEUE.into())]);
        let app = tokio::time::timeout(Duration::from_secs(30), App::build(&config))
            .await
            .expect("app build timed out")
            .expect("app builds against the stand-ins");
        let writer = LinstorWriter::new(&config.linstor.validate().unwrap()).unwrap();
        let sender: Arc<dyn MessageSender> = Arc::new(
            app.servicebus
                .sender(&Entity::Queue(QUEUE.into()))
                .await
                .expect("sender"),
        );
        let dir = tempfile::tempdir().unwrap();
        let mut parts = app
            .agent_parts(&config)
            .await
            .expect("the stand-ins' config carries the executor credential");
        launch::demo_parts(&mut parts, dir.path(), mode).expect("demo parts");
        let stop = CancellationToken::new();
        let surface = launch::start(
            &app,
            Some(parts),
            Launch {
                bind: "127.0.0.1:0".into(),
                tokens,
                chatops: Default::default(),
            },
            stop.clone(),
        )
        .await
        .expect("surface starts");
        let url = format!("http://{}", surface.addr);
        let pipeline = tokio::spawn(app.run(stop.child_token()));
        Stand {
            sim,
            surface: Some(surface),
            url,
            stop,
            writer,
            sender,
            pipeline: Some(pipeline),
            traffic: None,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Traffic with a period of four seconds plus noise, until the stand stops: what depth, lag and the
    /// forecasts are drawn from.
    pub fn start_traffic(&mut self) {
        let sender = self.sender.clone();
        let stop = self.stop.clone();
        self.traffic = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let phase = (time::OffsetDateTime::now_utc().unix_timestamp() % 4) as usize;
                let n = [2usize, 6, 14, 6][phase] + ((i * 7919) % 5) as usize;
                let messages: Vec<OutgoingMessage> = (0..n)
                    .map(|j| OutgoingMessage {
                        message_id: Some(format!("web-{i}-{j}")),
                        body: serde_json::to_vec(&json!({
                            "version": 1, "kind": "event", "stream": format!("s{}", j % 3),
                            "ts": "2026-11-22T04:00:00Z", "payload": {"i": i}
                        }))
                        .unwrap()
                        .into(),
                        partition_key: Some(format!("s{}", j % 3)),
                        ..OutgoingMessage::default()
                    })
                    .collect();
                let _ = sender.send_batch(messages).await;
                i += 1;
            }
        }));
    }

    /// A volume on n1 and n3 in pool-ssd, then pool-ssd on n1 reported full: the planner proposes a move.
    pub async fn force_placement_proposal(&self) {
        let name = "vol-web";
        self.writer
            .create_resource_definition(name, None)
            .await
            .expect("create rd");
        self.writer
            .create_volume_definition(name, 0, 2 * 1024 * 1024)
            .await
            .expect("create vd");
        for node in ["n1", "n3"] {
            self.writer
                .create_diskful(name, node, "pool-ssd")
                .await
                .expect("create replica");
        }
        assert!(self.sim.linstor.faults().pool_full("n1", "pool-ssd", true));
    }

    /// `GET path` with `token` as bearer; the status and the JSON body.
    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(Duration::from_secs(20), req.send())
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// `GET path` without a token.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, None).await
    }

    /// `POST path` with a JSON body and `token` as bearer.
    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.url)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(Duration::from_secs(20), req.send())
            .await
            .unwrap_or_else(|_| panic!("POST {path} timed out"))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The state directory's proposals as the API lists them.
    pub async fn proposals(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/proposals").await;
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.traffic.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        if let Some(surface) = self.surface.take() {
            tokio::time::timeout(Duration::from_secs(30), surface.join())
                .await
                .expect("the surface and its agent stop within 30 s");
        }
        if let Some(p) = self.pipeline.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), p)
                .await
                .expect("pipeline stops within 30 s");
        }
        self.sim.shutdown().await;
    }
}

/// Installs chromium and chromedriver with `scripts/install-browser` when they are missing.
pub async fn ensure_browser() {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-browser");
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::task::spawn_blocking(move || Command::new("bash").arg(script).output()),
    )
    .await
    .expect("installing chromium took over 10 minutes")
    .expect("install task")
    .expect("run scripts/install-browser");
    assert!(
        out.status.success(),
        "scripts/install-browser failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running chromedriver, killed on drop.
pub struct Driver {
    child: Child,
    pub base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    /// Starts chromedriver on a free port and waits until it reports ready.
    pub async fn start() -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(r) = driver
                    .http
                    .get(format!("{}/status", driver.base))
                    .send()
                    .await
                {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["value"]["ready"] == true {
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("chromedriver never reported ready within 30 s");
        driver
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One WebDriver command; `Err` carries the status and the driver's error.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = tokio::time::timeout(Duration::from_secs(60), req.send())
            .await
            .unwrap_or_else(|_| panic!("webdriver {method} {path} timed out"))
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err(format!("webdriver {method} {path}: {status} {v}"))
        }
    }

    /// A new headless chromium session with a fresh profile in `profile`.
    pub async fn session(&self, profile: &Path) -> Session<'_> {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1300,1800",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let v = self
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
                    }}
                })),
            )
            .await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {v}"))
            .to_string();
        Session { driver: self, id }
    }
}

/// One browser session.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl Session<'_> {
    pub async fn goto(&self, url: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/url", self.id),
                Some(json!({ "url": url })),
            )
            .await;
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn run(&self, script: &str) -> Value {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/execute/sync", self.id),
                Some(json!({ "script": script, "args": [] })),
            )
            .await
    }

    /// The element `css` selects; fails the test if none does.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/element", self.id),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element for {css}: {v}"))
            .to_string()
    }

    pub async fn clear(&self, element: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/element/{element}/clear", self.id),
                Some(json!({})),
            )
            .await;
    }

    pub async fn type_into(&self, element: &str, text: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/element/{element}/value", self.id),
                Some(json!({ "text": text })),
            )
            .await;
    }

    /// Clicks `element`; `Err` when it went stale (the page redrew it) or cannot be clicked.
    pub async fn try_click(&self, element: &str) -> Result<(), String> {
        self.driver
            .try_call(
                reqwest::Method::POST,
                &format!("/session/{}/element/{element}/click", self.id),
                Some(json!({})),
            )
            .await
            .map(|_| ())
    }

    pub async fn click(&self, element: &str) {
        self.driver
            .call(
                reqwest::Method::POST,
                &format!("/session/{}/element/{element}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    pub async fn quit(self) {
        self.driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.id),
                None,
            )
            .await;
    }
}
