//! The fault harness (`locus-bench faults`): a load with per-device sequence numbers, a
//! fault, a full drain, then a comparison of what got a 202 against what reached Kafka and
//! the webhook (docs/guarantees.md, "Fault harness").
//!
//! A run starts its own Redis, PostgreSQL and Apache Kafka node ([`services`]) so that the
//! faults never touch the services other work on this machine shares, and each fault gets a
//! fresh Redis prefix, topic prefix and bridge group, so nothing of an earlier fault counts.
//! Each fault starts its own Locus processes ([`procs`]) and partner webhook ([`webhook`]),
//! drives [`load`], injects the fault ([`scenarios`]) only once work is in flight (and says
//! so), drains, and judges ([`verdict`]).

pub mod load;
pub mod observe;
pub mod procs;
pub mod scenarios;
pub mod services;
pub mod verdict;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use locus_testkit::broker::{KafkaNode, Stop};
use locus_wire::topics::Topics;
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use crate::client::IngestClient;
use load::{Device, Load, LoadShape, LoadTally};
use observe::BufferState;
use procs::{App, AppSpec, free_port};
use services::{PrivatePostgres, PrivateRedis};
use verdict::{Leg, Promised, Seen};
use webhook::Webhook;

/// Shards of the harness's buffer (ingest's default).
pub const SHARDS: u32 = 4;

/// Secret of the harness's webhook sinks.
const SINK_SECRET: &str = "locus-faults-sink-secret";

/// The settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Short faults (seconds instead of the durations), for development.
    pub quick: bool,
    /// Devices per tenant.
    pub devices: usize,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Pause between a device's batches.
    pub interval: Duration,
    /// Longest drain after the load.
    pub drain: Duration,
    /// `LOCUS_FORWARDER_LEASE_MS` of the harness's forwarders.
    pub lease_ms: u64,
    /// Where `locus-ingest` and `locus-stream-bridge` are.
    pub bin_dir: PathBuf,
    /// Where the run keeps its services' data and the processes' logs.
    pub work_dir: PathBuf,
}

/// The services of a run, shared by its faults.
#[derive(Debug)]
pub struct Harness {
    /// The run's settings.
    pub opts: Options,
    /// The run's directory.
    pub dir: PathBuf,
    /// For readiness probes and the load.
    pub http: reqwest::Client,
    /// The run's Redis.
    pub redis: tokio::sync::Mutex<PrivateRedis>,
    /// The run's PostgreSQL.
    pub pg: tokio::sync::Mutex<PrivatePostgres>,
    kafka: Arc<Mutex<Option<KafkaNode>>>,
    /// Bootstrap servers of the run's broker.
    pub brokers: String,
    /// URL of the run's Redis (the same across its restarts).
    pub redis_url: String,
    /// URL of the run's PostgreSQL as the service role `locus_app` (what ingest and the
    /// bridges connect with).
    pub pg_url: String,
    /// URL of the run's PostgreSQL as its owner (`locus-ingest migrate`).
    pub pg_owner_url: String,
    /// Token secret of the harness's ingest: a published one, so ingest runs in
    /// development mode.
    pub jwt_secret: SecretString,
    jwt_secret_text: String,
    /// The ES256 key every ingest replica of the run signs device tokens with (one file,
    /// written by `locus-ingest keygen`: dev mode's generated key would differ per replica).
    pub signing_key_file: PathBuf,
}

impl Harness {
    /// Starts the run's Redis, PostgreSQL and Kafka node under a fresh directory.
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let dir = opts.work_dir.join(format!(
            "run-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S")
        ));
        std::fs::create_dir_all(&dir)?;
        println!("[faults] run directory {}", dir.display());
        let redis = PrivateRedis::start(&dir.join("redis")).await?;
        let pg = PrivatePostgres::start(&dir.join("pg")).await?;
        println!(
            "[faults] redis {} and postgresql {} started",
            redis.url(),
            pg.url()
        );
        let ingest = opts.bin_dir.join("locus-ingest");
        migrate(&ingest, &pg.url()).await?;
        let signing_key_file = dir.join("token-signing-key.pem");
        keygen(&ingest, &signing_key_file).await?;
        println!(
            "[faults] database migrated as the owner (services connect as locus_app); \
             signing key {}",
            signing_key_file.display()
        );
        let node = tokio::task::spawn_blocking(KafkaNode::start)
            .await
            .context("the harness's Kafka node did not start (./locus deps installs Kafka)")?;
        let brokers = node.bootstrap();
        println!("[faults] kafka {brokers} started (pid {:?})", node.pid());
        let secret = "locus-faults-jwt-secret".to_owned();
        Ok(Self {
            opts,
            dir,
            redis_url: redis.url(),
            pg_url: pg.app_url(),
            pg_owner_url: pg.url(),
            signing_key_file,
            http: crate::client::http_client(Duration::from_secs(30), 64)?,
            redis: tokio::sync::Mutex::new(redis),
            pg: tokio::sync::Mutex::new(pg),
            kafka: Arc::new(Mutex::new(Some(node))),
            brokers,
            jwt_secret: SecretString::from(secret.clone()),
            jwt_secret_text: secret,
        })
    }

    /// Stops the broker (`how`); returns its pid.
    pub async fn stop_kafka(&self, how: Stop) -> anyhow::Result<Option<u32>> {
        let kafka = Arc::clone(&self.kafka);
        Ok(tokio::task::spawn_blocking(move || {
            let mut node = kafka.lock().unwrap_or_else(|e| e.into_inner());
            let node = node
                .as_mut()
                .expect("the node lives as long as the harness");
            let pid = node.pid();
            node.stop(how);
            pid
        })
        .await?)
    }

    /// Starts the broker again on its ports and log directory.
    pub async fn start_kafka(&self) -> anyhow::Result<()> {
        let kafka = Arc::clone(&self.kafka);
        tokio::task::spawn_blocking(move || {
            let mut node = kafka.lock().unwrap_or_else(|e| e.into_inner());
            node.as_mut()
                .expect("the node lives as long as the harness")
                .restart();
        })
        .await
        .context("the broker did not come back")
    }

    /// Stops the broker (its log directory is deleted).
    pub async fn shutdown(&self) {
        let kafka = Arc::clone(&self.kafka);
        let _ = tokio::task::spawn_blocking(move || {
            drop(kafka.lock().unwrap_or_else(|e| e.into_inner()).take());
        })
        .await;
    }

    /// A fault's duration: `full` normally, `quick` with `--quick`.
    pub fn secs(&self, full: u64, quick: u64) -> Duration {
        Duration::from_secs(if self.opts.quick { quick } else { full })
    }
}

/// `locus-ingest migrate` against `owner_url`: the service roles and the schema, before any
/// ingest starts (ingest itself connects as `locus_app`, which may not create tables).
async fn migrate(ingest: &Path, owner_url: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(ingest)
        .arg("migrate")
        .env_clear()
        .env("LOCUS_DATABASE_OWNER_URL", owner_url)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} migrate", ingest.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "{} migrate failed: {}{}",
        ingest.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `locus-ingest keygen` into `path` (readable by the owner only).
async fn keygen(ingest: &Path, path: &Path) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(ingest)
        .arg("keygen")
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} keygen", ingest.display()))?;
    anyhow::ensure!(
        out.status.success() && !out.stdout.is_empty(),
        "{} keygen failed: {}",
        ingest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?,
        &out.stdout,
    )?;
    Ok(())
}

/// The figures of one fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// Its name (`forwarder-kill`, ...).
    pub name: String,
    /// Fixes that got a 202.
    pub acknowledged: u64,
    /// Batches that got a 202.
    pub acknowledged_batches: u64,
    /// Batches a device gave up on (never acknowledged).
    pub abandoned_batches: u64,
    /// Answers the load got, by status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Attempts without an answer.
    pub transport_errors: u64,
    /// The Kafka leg.
    pub kafka: Leg,
    /// The webhook leg.
    pub webhook: Leg,
    /// Records on the dead-letter topic.
    pub dead_letters: u64,
    /// From the load's end until the buffer was empty, the bridge's lag 0 and the webhook
    /// quiet; `None` when the bound passed first.
    pub drain_secs: Option<f64>,
    /// What the fault did and what was in flight when it hit.
    pub notes: Vec<String>,
    /// Checks of this fault beyond the common ones, with their outcome.
    pub checks: Vec<(String, bool)>,
    /// lost = 0, out of order = 0, delivered after dedupe = acknowledged, drained, checks.
    pub pass: bool,
}

impl FaultReport {
    /// The report of a fault that could not run to its end.
    pub fn broken(name: &str, why: &str) -> Self {
        Self {
            name: name.to_owned(),
            acknowledged: 0,
            acknowledged_batches: 0,
            abandoned_batches: 0,
            statuses: std::collections::BTreeMap::new(),
            transport_errors: 0,
            kafka: Leg::default(),
            webhook: Leg::default(),
            dead_letters: 0,
            drain_secs: None,
            notes: vec![format!("could not run: {why}")],
            checks: Vec::new(),
            pass: false,
        }
    }
}

/// One fault's processes, load and observers.
pub struct Stage<'h> {
    /// The run.
    pub h: &'h Harness,
    /// The fault's name.
    pub name: String,
    tag: String,
    redis_prefix: String,
    topic_prefix: String,
    topics: Topics,
    /// The bridge group.
    pub group: String,
    /// The webhook of this fault.
    pub webhook: Webhook,
    /// Ingest processes.
    pub ingest: Vec<App>,
    /// Bridge processes.
    pub bridges: Vec<App>,
    /// Ingest's API.
    pub client: Arc<IngestClient>,
    redis: Option<redis::aio::MultiplexedConnection>,
    notes: Vec<String>,
    /// Checks of this fault, with their outcome.
    pub checks: Vec<(String, bool)>,
    /// The tenants whose sinks the bridges get.
    pub tenants: Vec<&'static str>,
}

impl<'h> Stage<'h> {
    /// A fresh prefix, topics and group; a webhook answering after `webhook_delay`.
    pub async fn new(h: &'h Harness, name: &str, webhook_delay: Duration) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let tag = format!("f{}", &id[..8]);
        let webhook = Webhook::start(SINK_SECRET, webhook_delay).await?;
        println!("\n[faults] === {name} ({tag}) ===");
        Ok(Self {
            h,
            name: name.to_owned(),
            redis_prefix: format!("locus-{tag}"),
            topic_prefix: format!("locus_fault_{id}."),
            topics: Topics::new(&format!("locus_fault_{id}.")),
            group: format!("locus-bridge-{tag}"),
            tag,
            webhook,
            ingest: Vec::new(),
            bridges: Vec::new(),
            client: Arc::new(IngestClient::new(h.http.clone(), "http://127.0.0.1:1")),
            redis: None,
            notes: Vec::new(),
            checks: Vec::new(),
            tenants: vec!["acme"],
        })
    }

    /// Prints a line and keeps it for the report.
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("[faults] {}: {line}", self.name);
        self.notes.push(line);
    }

    /// Records a check of this fault.
    pub fn check(&mut self, what: impl Into<String>, ok: bool) {
        let what = what.into();
        println!(
            "[faults] {}: check {what}: {}",
            self.name,
            if ok { "ok" } else { "FAILED" }
        );
        self.checks.push((what, ok));
    }

    /// The environment of an ingest process with `roles`, forwarder name `consumer`.
    pub fn ingest_env(&self, roles: &str, consumer: &str, port: u16) -> Vec<(String, String)> {
        let h = self.h;
        [
            ("LOCUS_INGEST_ROLES", roles.to_owned()),
            ("LOCUS_INGEST_LISTEN", format!("127.0.0.1:{port}")),
            ("LOCUS_DATABASE_URL", h.pg_url.clone()),
            ("LOCUS_DATABASE_OWNER_URL", h.pg_owner_url.clone()),
            ("LOCUS_REDIS_URL", h.redis_url.clone()),
            ("LOCUS_REDIS_PREFIX", self.redis_prefix.clone()),
            ("LOCUS_REDIS_SHARDS", SHARDS.to_string()),
            ("LOCUS_KAFKA_BROKERS", h.brokers.clone()),
            ("LOCUS_KAFKA_TOPIC_PREFIX", self.topic_prefix.clone()),
            ("LOCUS_JWT_SECRET", h.jwt_secret_text.clone()),
            // The secret is a published one: refused outside development mode.
            ("LOCUS_DEV_MODE", "true".to_owned()),
            (
                "LOCUS_TOKEN_SIGNING_KEY_FILE",
                h.signing_key_file.display().to_string(),
            ),
            ("LOCUS_FORWARDER_CONSUMER", consumer.to_owned()),
            ("LOCUS_FORWARDER_LEASE_MS", h.opts.lease_ms.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts an ingest process; the first one with the API role serves the load.
    pub async fn start_ingest(
        &mut self,
        name: &str,
        roles: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut env = self.ingest_env(roles, name, port);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let spec = AppSpec {
            name: format!("{}-{name}", self.tag),
            exe: self.h.opts.bin_dir.join("locus-ingest"),
            env,
            listen_port: port,
        };
        let app = App::start(spec, &self.h.dir, &self.h.http).await?;
        if roles.contains("api")
            && self.ingest.iter().all(|a| {
                !a.env("LOCUS_INGEST_ROLES")
                    .is_some_and(|r| r.contains("api"))
            })
        {
            self.client = Arc::new(IngestClient::new(
                self.h.http.clone(),
                format!("http://127.0.0.1:{port}"),
            ));
        }
        println!(
            "[faults] {}: {name} up (pid {:?}, roles {roles})",
            self.name,
            app.pid()
        );
        self.ingest.push(app);
        Ok(())
    }

    /// The environment of bridge replica `replica`.
    pub fn bridge_env(&self, replica: &str, port: u16) -> Vec<(String, String)> {
        let sinks: serde_json::Map<String, serde_json::Value> = self
            .tenants
            .iter()
            .map(|t| {
                (
                    (*t).to_owned(),
                    serde_json::json!({ "url": self.webhook.url(replica, t), "secret": SINK_SECRET }),
                )
            })
            .collect();
        [
            ("LOCUS_BRIDGE_LISTEN", format!("127.0.0.1:{port}")),
            // The bridge reads the sinks table too; the run's tenants have no row there, so
            // the static sinks below are the ones used.
            ("LOCUS_DATABASE_URL", self.h.pg_url.clone()),
            ("LOCUS_KAFKA_BROKERS", self.h.brokers.clone()),
            ("LOCUS_KAFKA_TOPIC_PREFIX", self.topic_prefix.clone()),
            ("LOCUS_BRIDGE_GROUP", self.group.clone()),
            (
                "LOCUS_BRIDGE_SINKS",
                serde_json::Value::Object(sinks).to_string(),
            ),
            ("LOCUS_BRIDGE_ALLOW_PRIVATE_SINKS", "true".to_owned()),
            // The receivers are plain http on loopback.
            ("LOCUS_SINK_ALLOW_HTTP", "true".to_owned()),
            ("LOCUS_SINK_ALLOW_PRIVATE", "true".to_owned()),
            // A crashed replica's partitions move after this, not librdkafka's 45 s.
            ("LOCUS_KAFKA_SESSION_TIMEOUT_MS", "6000".to_owned()),
            ("LOCUS_KAFKA_HEARTBEAT_INTERVAL_MS", "1000".to_owned()),
            ("LOCUS_BRIDGE_REQUEST_TIMEOUT_MS", "2000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Starts bridge replica `replica`.
    pub async fn start_bridge(
        &mut self,
        replica: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut env = self.bridge_env(replica, port);
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let spec = AppSpec {
            name: format!("{}-{replica}", self.tag),
            exe: self.h.opts.bin_dir.join("locus-stream-bridge"),
            env,
            listen_port: port,
        };
        let app = App::start(spec, &self.h.dir, &self.h.http).await?;
        println!(
            "[faults] {}: bridge {replica} up (pid {:?})",
            self.name,
            app.pid()
        );
        self.bridges.push(app);
        Ok(())
    }

    /// The bridge process of `replica`.
    pub fn bridge(&mut self, replica: &str) -> &mut App {
        let name = format!("{}-{replica}", self.tag);
        self.bridges
            .iter_mut()
            .find(|b| b.name() == name)
            .expect("a replica the fault started")
    }

    /// The ingest process started as `name`.
    pub fn ingest_app(&mut self, name: &str) -> &mut App {
        let name = format!("{}-{name}", self.tag);
        self.ingest
            .iter_mut()
            .find(|b| b.name() == name)
            .expect("an ingest process the fault started")
    }

    /// The full process name of `name` (as it appears in logs and consumer names).
    pub fn proc_name(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Registers `per_tenant` devices of every tenant and starts their sessions.
    pub async fn devices(&mut self, per_tenant: usize) -> anyhow::Result<Vec<Device>> {
        let (devices, registration) = load::start_devices(
            &self.client,
            &self.h.jwt_secret,
            &self.tag,
            &self.tenants,
            per_tenant,
        )
        .await?;
        self.note(format!("registered {}", registration.summary()));
        Ok(devices)
    }

    /// The load's shape from the options.
    pub fn shape(&self) -> LoadShape {
        LoadShape {
            batch_size: self.h.opts.batch_size,
            interval: self.h.opts.interval,
            double_post: false,
        }
    }

    /// Starts the load.
    pub fn load(&self, devices: &[Device], shape: LoadShape) -> Load {
        Load::start(
            Arc::clone(&self.client),
            devices,
            shape,
            Duration::from_secs(180),
        )
    }

    /// The buffer's state now; `None` while Redis does not answer.
    pub async fn buffer(&mut self) -> Option<BufferState> {
        // The second try is on a fresh connection: the first fails once after a restart.
        for _ in 0..2 {
            if self.redis.is_none() {
                let client = redis::Client::open(self.h.redis_url.as_str()).ok()?;
                self.redis = client.get_multiplexed_async_connection().await.ok();
            }
            let conn = self.redis.as_mut()?;
            match observe::buffer_state(conn, &self.redis_prefix, SHARDS).await {
                Ok(s) => return Some(s),
                Err(_) => self.redis = None,
            }
        }
        None
    }

    /// Waits up to `timeout` until `consumer` (one of `consumers` if `None`) has entries
    /// pending; returns the buffer state then, and who had them.
    pub async fn wait_pending(
        &mut self,
        consumers: &[String],
        timeout: Duration,
    ) -> (BufferState, Option<String>) {
        let deadline = Instant::now() + timeout;
        let mut last = BufferState::default();
        while Instant::now() < deadline {
            if let Some(state) = self.buffer().await {
                if let Some(c) = consumers
                    .iter()
                    .find(|c| state.pending.get(*c).copied().unwrap_or(0) > 0)
                {
                    return (state.clone(), Some(c.clone()));
                }
                last = state;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (last, None)
    }

    /// Waits until the buffer is empty, the bridge group's lag is 0 (it has read all the
    /// forwarder wrote) and the webhook has been quiet for 3 s; the time from the call until
    /// the first moment all held, or `None` past the bound.
    pub async fn drain(&mut self) -> Option<f64> {
        let started = Instant::now();
        let quiet = Duration::from_secs(3);
        let mut settled_at: Option<Instant> = None;
        let mut last_print = Instant::now();
        while started.elapsed() < self.h.opts.drain {
            let buffer = self.buffer().await;
            let lag =
                observe::group_lag(&self.h.brokers, &self.group, self.topics.locations()).await;
            let webhook_quiet = self
                .webhook
                .last_request()
                .is_none_or(|t| t.elapsed() >= quiet);
            let empty = buffer.as_ref().is_some_and(|b| b.entries == 0) && lag == Some(0);
            if empty {
                let at = *settled_at.get_or_insert_with(Instant::now);
                if webhook_quiet {
                    return Some(at.duration_since(started).as_secs_f64());
                }
            } else {
                settled_at = None;
            }
            if last_print.elapsed() >= Duration::from_secs(10) {
                last_print = Instant::now();
                println!(
                    "[faults] {}: draining: buffer {:?}, bridge lag {lag:?}, webhook {}",
                    self.name,
                    buffer.map(|b| b.entries),
                    self.webhook.arrivals().len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }

    /// Stops the processes and compares what was acknowledged with what arrived.
    pub async fn finish(
        mut self,
        devices: &[Device],
        tally: LoadTally,
        drain_secs: Option<f64>,
    ) -> FaultReport {
        for app in self.bridges.iter_mut().chain(self.ingest.iter_mut()) {
            let _ = app.stop().await;
        }
        let promised = Promised::new(devices, &tally.acked, self.h.opts.batch_size);
        let topics = observe::read_topics(
            &self.h.brokers,
            self.topics.locations(),
            self.topics.dead_letter(),
        )
        .await;
        let topics = match topics {
            Ok(t) => t,
            Err(e) => {
                self.check(
                    format!("the topics could be read to their end ({e:#})"),
                    false,
                );
                observe::TopicContents::default()
            }
        };
        let (kafka_seen, dead_letters, unparsed) =
            (topics.locations, topics.dead_letters, topics.unparsed);
        let kafka = verdict::leg(
            &promised,
            kafka_seen.iter().map(|k| Seen {
                record_id: k.record_id,
                session: k.session_id,
                batch_id: &k.batch_id,
                index: k.batch_index,
                lat: k.lat,
            }),
        );
        let arrivals = self.webhook.arrivals();
        let webhook = verdict::leg(
            &promised,
            arrivals.iter().map(|a| Seen {
                record_id: a.record_id,
                session: a.session_id,
                batch_id: &a.batch_id,
                index: a.batch_index,
                lat: a.lat,
            }),
        );
        if unparsed > 0 {
            self.check(
                format!("{unparsed} unreadable records on the location topic"),
                false,
            );
        }
        let bad = self.webhook.bad_signatures();
        if bad > 0 {
            self.check(
                format!("{bad} webhook requests with a bad signature"),
                false,
            );
        }
        let common = kafka.lost == 0
            && webhook.lost == 0
            && kafka.out_of_order == 0
            && webhook.out_of_order == 0
            && kafka.wrong_body == 0
            && webhook.wrong_body == 0
            && !promised.is_empty()
            && drain_secs.is_some();
        let pass = common && self.checks.iter().all(|(_, ok)| *ok);
        FaultReport {
            name: self.name.clone(),
            acknowledged: promised.len(),
            acknowledged_batches: tally.acked.len() as u64,
            abandoned_batches: tally.abandoned,
            statuses: tally.statuses,
            transport_errors: tally.transport_errors,
            kafka,
            webhook,
            dead_letters,
            drain_secs,
            notes: self.notes,
            checks: self.checks,
            pass,
        }
    }
}

/// Where a relative `--work-dir` is taken from: the checkout (`.locus/faults`).
pub fn default_work_dir() -> PathBuf {
    Path::new(".locus").join("faults")
}
