//! `spawn_app`: the real application with its own database, Redis prefix and topics.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use locus_ingest::config::Role;
use locus_ingest::{Application, Config};
use locus_testkit as kit;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,

    pub client: reqwest::Client,
    /// The scope the app runs in: for registering the devices a test signs in as.
    pub scope: Scope,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Settings shared by every app of one test (so an API-only app and a forwarder-only app
/// can work on the same data).
#[derive(Clone)]
pub struct Scope {
    /// URL of the service role (`locus_app`), as the apps connect.
    pub database_url: String,
    /// URL of the database owner: for set-up (registering devices) and for checks that
    /// must see every tenant's rows, which row-level security hides from the service role.
    pub owner_url: String,
    pub redis_prefix: String,
    pub topic_prefix: String,
}

impl Scope {
    pub async fn new() -> Self {
        kit::require_redis().await;
        let database = kit::test_database().await;
        Self {
            database_url: database.url,
            owner_url: database.owner_url,
            redis_prefix: kit::unique("locus-test-"),
            topic_prefix: format!("{}.", kit::unique("t")),
        }
    }

    /// Registers `device` of `tenant` (as a tenant admin would) and returns a device token
    /// for it: sessions start only for registered devices.
    pub async fn device_token(&self, tenant: &str, device: &str) -> String {
        kit::register_device(&self.owner_url, tenant, device).await;
        kit::device_token(tenant, device)
    }

    /// The configuration of an app of this scope running `roles`.
    pub fn config(&self, roles: &[Role]) -> Config {
        Config::for_tests(kit::JWT_SECRET).with(|c| {
            c.roles = roles.to_vec();
            c.database.url = self.database_url.clone();
            c.redis.url = kit::redis_url();
            c.redis.prefix = self.redis_prefix.clone();
            c.kafka = kit::kafka_settings(&self.topic_prefix);
            c.topics.partitions = 3;
            c.forwarder.lease_ms = 1500;
            c.sessions.sweep_interval_ms = 200;
            c.shutdown.grace_secs = 5;
        })
    }

    /// The same settings as command-line flags, for the real binary in its own process.
    pub fn args(&self, roles: &str) -> Vec<String> {
        [
            "--listen",
            "127.0.0.1:0",
            "--roles",
            roles,
            "--database-url",
            &self.database_url,
            "--redis-prefix",
            &self.redis_prefix,
            "--kafka-topic-prefix",
            &self.topic_prefix,
            "--kafka-brokers",
            &kit::kafka_brokers(),
            "--kafka-partitions",
            "3",
            "--jwt-secret",
            kit::JWT_SECRET,
            // The test secret is a published one: accepted in development mode only, as
            // `Config::for_tests` runs.
            "--dev-mode",
            "true",
            "--forwarder-lease-ms",
            "1500",
            "--session-sweep-interval-ms",
            "200",
            "--shutdown-grace-secs",
            "5",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(kit::kafka_security_args())
        .collect()
    }

    pub fn topics(&self) -> locus_wire::topics::Topics {
        locus_wire::topics::Topics::new(&self.topic_prefix)
    }

    pub fn locations_topic(&self) -> String {
        self.topics().locations().to_owned()
    }

    pub fn events_topic(&self) -> String {
        self.topics().session_events().to_owned()
    }
}

pub async fn spawn_app() -> (TestApp, Scope) {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    (app, scope)
}

/// Starts the real application of `scope` running `roles`, with `change` applied to its
/// configuration.
pub async fn spawn_in(scope: &Scope, roles: &[Role], change: impl FnOnce(&mut Config)) -> TestApp {
    let config = scope.config(roles).with(change);
    let app = Application::build(config).await.expect(
        "the application starts (are PostgreSQL, Redis and the broker up? `./locus services`)",
    );
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    TestApp {
        address,

        client: reqwest::Client::new(),
        scope: scope.clone(),
        shutdown,
        task: Some(task),
    }
}

impl TestApp {
    /// [`Scope::device_token`] of this app's scope.
    pub async fn device_token(&self, tenant: &str, device: &str) -> String {
        self.scope.device_token(tenant, device).await
    }

    /// Graceful stop: like SIGTERM.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("shutdown finishes")
                .expect("app task")
                .expect("the HTTP server ran without failing");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn start_session(&self, token: &str) -> Value {
        let r = self
            .client
            .post(self.url("/v1/sessions"))
            .bearer_auth(token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            201,
            "start session: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }

    /// Starts a session as the device of `token` and returns its id.
    pub async fn session_id(&self, token: &str) -> String {
        self.start_session(token).await["session_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Posts a one-fix batch `marker` to `session`, then reads `topic` until the marker is
    /// on it: once it is, any copy of an earlier batch would be too.
    pub async fn records_through_marker(
        &self,
        token: &str,
        session: &str,
        topic: &str,
    ) -> Vec<kit::KafkaRecord> {
        self.post_fixes(token, session, &batch("marker", 1)).await;
        kit::read_topic_until(topic, Duration::from_secs(15), |r| {
            r.iter().any(|r| r.value["batch_id"] == "marker")
        })
        .await
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn stop_session(&self, token: &str, session: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/sessions/{session}/stop")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_fixes(&self, token: &str, session: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/sessions/{session}/locations")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A batch of `n` valid fixes walking north-east, stamped a few seconds apart up to now.
pub fn batch(batch_id: &str, n: usize) -> Value {
    let now = chrono::Utc::now();
    let fixes: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "lat": 52.52 + i as f64 * 0.0001,
                "lon": 13.40 + i as f64 * 0.0001,
                "recorded_at": (now - chrono::Duration::seconds((n - i) as i64)).to_rfc3339(),
                "accuracy": 5.0,
                "speed": 1.4,
                "heading": 45.0,
                "battery": 80.0
            })
        })
        .collect();
    json!({ "batch_id": batch_id, "fixes": fixes })
}

/// All entries of every shard stream of `scope`, decoded.
pub async fn buffered_entries(scope: &Scope, shards: u32) -> Vec<Value> {
    kit::require_redis().await;
    buffered_entries_on(&kit::redis_url(), scope, shards).await
}

/// [`buffered_entries`] on the Redis at `url` (a test's own server).
pub async fn buffered_entries_on(url: &str, scope: &Scope, shards: u32) -> Vec<Value> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, shards);
    let mut out = Vec::new();
    for shard in 0..shards {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(keys.stream(shard))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        for id in reply.ids {
            let raw: String = id.get(locus_wire::buffer::ENTRY_FIELD).unwrap();
            // Flattened to the entry's data plus its type, for shorter assertions.
            let entry: Value = serde_json::from_str(&raw).unwrap();
            let mut flat = entry["data"].clone();
            flat["type"] = entry["type"].clone();
            out.push(flat);
        }
    }
    out
}

/// A Redis server of the test's own on a fixed port, so it can be stopped and started
/// again: empty, or with its data when `persistent` (AOF with fsync every second and
/// noeviction, the flags of `./locus services`).
pub struct StoppableRedis {
    pub port: u16,
    dir: Option<std::path::PathBuf>,
    child: Option<std::process::Child>,
}

impl StoppableRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start(persistent: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = persistent.then(|| {
            let dir = std::env::temp_dir().join(kit::unique("locus-test-redis-"));
            std::fs::create_dir_all(&dir).unwrap();
            dir
        });
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.up().await;
        redis
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn up(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]);
        match &self.dir {
            Some(dir) => command.args(persistent_args(dir)),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (./locus services installs it)");
        self.child = Some(child);
        let url = self.url();
        kit::eventually(Duration::from_secs(5), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                client
                    .get_multiplexed_async_connection()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await
        .expect("the test's redis-server starts");
    }

    /// Stops the server with `signal` (`TERM`: a persistent server writes its AOF first;
    /// `KILL`) and waits for it to exit.
    pub fn stop(&mut self, signal: &str) {
        let mut child = self.child.take().expect("the server is up");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
        child.wait().unwrap();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn persistent_args(dir: &Path) -> Vec<String> {
    [
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--maxmemory-policy",
        "noeviction",
        "--dir",
        dir.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

impl Drop for StoppableRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A load that outlasts a fault: `rounds` rounds, 50 ms apart, of one `fixes`-fix batch
/// (`b00`, `b01`, ...) to every session, each answered `202`. `posted` counts the rounds
/// done, so a test can inject its fault while the load still runs.
pub struct PacedLoad {
    /// Rounds fully posted so far.
    pub posted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The posting task.
    pub task: tokio::task::JoinHandle<()>,
}

impl PacedLoad {
    /// Starts posting to `sessions` (`(token, session id)`) through `app`.
    pub fn start(
        app: &std::sync::Arc<TestApp>,
        sessions: &[(String, String)],
        rounds: usize,
        fixes: usize,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let posted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let task = tokio::spawn({
            let app = std::sync::Arc::clone(app);
            let sessions = sessions.to_vec();
            let posted = std::sync::Arc::clone(&posted);
            async move {
                for b in 0..rounds {
                    for (token, id) in &sessions {
                        let r = app
                            .post_fixes(token, id, &batch(&format!("b{b:02}"), fixes))
                            .await;
                        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
                    }
                    posted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Self { posted, task }
    }

    /// Rounds fully posted so far.
    pub fn rounds_posted(&self) -> usize {
        self.posted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What one session of this load holds once every batch arrived once, in order.
    pub fn expected(rounds: usize, fixes: usize) -> Vec<(String, u64)> {
        (0..rounds)
            .flat_map(|b| (0..fixes as u64).map(move |i| (format!("b{b:02}"), i)))
            .collect()
    }
}

/// `(batch_id, batch_index)` of `session`'s records in the order read; with `drop_copies`,
/// each `record_id` only the first time, as a consumer that drops copies sees them.
pub fn session_order(
    records: &[kit::KafkaRecord],
    session: &str,
    drop_copies: bool,
) -> Vec<(String, u64)> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter(|r| r.key == session)
        .filter(|r| !drop_copies || seen.insert(r.value["record_id"].as_str().unwrap().to_owned()))
        .map(|r| {
            (
                r.value["batch_id"].as_str().unwrap().to_owned(),
                r.value["batch_index"].as_u64().unwrap(),
            )
        })
        .collect()
}
