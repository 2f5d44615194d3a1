//! `locus-bench run` and `locus-bench sweep`: the benchmark.
//!
//! The load is prepared before the clock starts: every simulated device has one batch body
//! (`{"fixes":[...]}`, gzipped when asked) encoded once, and each request carries a fresh
//! `Idempotency-Key`, so the client spends its CPU on HTTP, not on JSON. Two modes:
//! - closed loop: `concurrency` workers, each posting its devices' batches back to back;
//! - open loop: requests start at a fixed rate whatever the answers do, and latency runs
//!   from the *intended* start, so a stalled server is not hidden by a stalled client
//!   (coordinated omission).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use hdrhistogram::Histogram;
use locus_wire::api::{Fix, FixLimits, SessionView};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::record::LocationRecord;
use locus_wire::{DeviceId, SessionId, TenantId};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ceiling::{self, Ceiling, ScratchRecord};
use crate::kafka_count::{KafkaCountConfig, KafkaCounter};
use crate::procstat::{self, ProcUsage};
use crate::receiver::{delivered_for, receiver_stats};
use crate::report::{LatencyMs, latency_histogram};
use crate::track::Track;

/// Most open-loop requests in flight; past it a request is counted as dropped (the server
/// is far behind, and the run would only measure the client's memory).
const MAX_OPEN_IN_FLIGHT: usize = 4096;

/// Settings of `locus-bench run` (and the load part of `sweep`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Base URL of ingest.
    #[arg(
        long,
        env = "LOCUS_INGEST_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub ingest_url: String,
    /// HS256 secret ingest verifies device tokens with.
    #[arg(
        long,
        env = "LOCUS_JWT_SECRET",
        default_value = "locus-local-dev-secret-change-me",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub jwt_secret: String,
    /// Redis URL (for the XADD ceiling).
    #[arg(
        long,
        env = "LOCUS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "LOCUS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,
    /// Prefix of the topic names; the location topic is `<prefix>locations`.
    #[arg(long, env = "LOCUS_KAFKA_TOPIC_PREFIX", default_value = "locus.")]
    pub topic_prefix: String,
    /// Partitions of the scratch topic (ingest's default is 6).
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Base URL of the demo webhook receiver; `none` skips the webhook leg.
    #[arg(
        long,
        env = "LOCUS_RECEIVER_URL",
        default_value = "http://127.0.0.1:9300"
    )]
    pub receiver_url: String,
    /// Tenants of the simulated devices, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "acme,globex")]
    pub tenants: Vec<String>,
    /// Simulated devices (sessions) in all.
    #[arg(long, default_value_t = 64)]
    pub devices: u32,
    /// Fixes per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: u32,
    /// Open loop: fixes per second per device (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub fixes_per_sec_per_device: f64,
    /// Closed loop: requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Gzip the bodies (`Content-Encoding: gzip`).
    #[arg(long)]
    pub gzip: bool,
    /// Seconds of load per leg.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds to wait for Kafka and the webhook to catch up after the load.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// Longest no-op HTTP ceiling leg in seconds (a soak runs the Locus leg for long and
    /// needs the ceiling only briefly).
    #[arg(long, default_value_t = 10)]
    pub ceiling_secs: u64,
    /// Skip the Locus leg (ceilings only).
    #[arg(long)]
    pub no_ingest: bool,
    /// Skip the Kafka ceilings and the Kafka leg.
    #[arg(long)]
    pub no_kafka: bool,
    /// Short run for the test suite: 2 s legs, no Kafka, no ingest.
    #[arg(long)]
    pub smoke: bool,
    /// Where the reports go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

impl RunArgs {
    /// Defaults of the command line, pointing at the local stack.
    pub fn defaults() -> Self {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: RunArgs,
        }
        P::parse_from(["x"]).a
    }

    fn mode(&self) -> Mode {
        if self.fixes_per_sec_per_device > 0.0 {
            Mode::Open {
                requests_per_sec: self.fixes_per_sec_per_device * f64::from(self.devices)
                    / f64::from(self.batch_size.max(1)),
            }
        } else {
            Mode::Closed {
                concurrency: self.concurrency.max(1),
            }
        }
    }

    fn apply_smoke(&mut self) {
        if self.smoke {
            self.duration_secs = 2;
            self.no_ingest = true;
            self.no_kafka = true;
            self.devices = self.devices.min(16);
            self.concurrency = self.concurrency.min(8);
        }
    }
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Mode {
    /// `concurrency` requests always in flight.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// Requests start at a fixed rate.
    Open {
        /// Offered requests per second.
        requests_per_sec: f64,
    },
}

/// One device's request: where, as whom, and the prepared body.
#[derive(Debug, Clone)]
pub struct Target {
    /// Path of the batch POST.
    pub path: String,
    /// `Bearer <token>`.
    pub auth: String,
    /// Body, gzipped or not.
    pub body: Bytes,
    /// Fixes in the body.
    pub fixes: u64,
    /// Device index, for idempotency keys.
    pub device: u32,
}

/// What a load leg measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadFigures {
    /// Requests answered 202.
    pub ok_requests: u64,
    /// Fixes in 202 answers (all the bench's fixes are valid).
    pub accepted_fixes: u64,
    /// Requests answered otherwise, by status (`transport` for no answer).
    pub errors: BTreeMap<String, u64>,
    /// Open loop: requests not sent because too many were in flight.
    pub dropped: u64,
    /// Accepted fixes per second.
    pub fixes_per_sec: f64,
    /// Offered fixes per second (open loop) or 0.
    pub offered_fixes_per_sec: f64,
    /// Latency of the answered requests (from the intended start in open loop).
    pub http_ms: LatencyMs,
    /// Seconds of load.
    pub secs: f64,
}

impl LoadFigures {
    /// Requests that failed, dropped ones included.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.dropped
    }
}

struct Tally {
    ok: AtomicU64,
    fixes: AtomicU64,
    dropped: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
    latency: std::sync::Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            fixes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: std::sync::Mutex::default(),
            latency: std::sync::Mutex::new(latency_histogram()),
        }
    }

    fn record(&self, result: Result<StatusCode, reqwest::Error>, fixes: u64, latency: Duration) {
        match result {
            Ok(StatusCode::ACCEPTED) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.fixes.fetch_add(fixes, Ordering::Relaxed);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(us);
            }
            other => {
                let key = match other {
                    Ok(s) => s.as_u16().to_string(),
                    Err(_) => "transport".to_owned(),
                };
                *self
                    .errors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(key)
                    .or_default() += 1;
            }
        }
    }
}

/// The HTTP client of the load: one pool, no timeouts shorter than a stall worth seeing.
pub fn http_client(max_idle: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    target: &Target,
    key: String,
    gzip: bool,
) -> Result<StatusCode, reqwest::Error> {
    let mut req = client
        .post(format!("{base}{}", target.path))
        .header(AUTHORIZATION, &target.auth)
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(target.body.clone());
    if gzip {
        req = req.header(CONTENT_ENCODING, "gzip");
    }
    let response = req.send().await?;
    let status = response.status();
    // Read the answer: a client that does not is not what devices do.
    response.bytes().await?;
    Ok(status)
}

/// Drives `targets` at `base` in `mode` for `duration`. `accepted` (if given) counts
/// accepted fixes as they come, for backlog sampling.
pub async fn drive(
    client: &reqwest::Client,
    base: &str,
    targets: Arc<Vec<Target>>,
    mode: Mode,
    gzip: bool,
    duration: Duration,
    run_id: &str,
) -> LoadFigures {
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let deadline = started + duration;
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut offered = 0.0;
    match mode {
        Mode::Closed { concurrency } => {
            for w in 0..concurrency {
                let (client, base, targets, tally, seq) = (
                    client.clone(),
                    base.to_owned(),
                    Arc::clone(&targets),
                    Arc::clone(&tally),
                    Arc::clone(&seq),
                );
                let run_id = run_id.to_owned();
                tasks.spawn(async move {
                    // Worker w owns devices w, w+concurrency, ...: a device never has two
                    // requests in flight.
                    let mine: Vec<&Target> = targets.iter().skip(w).step_by(concurrency).collect();
                    if mine.is_empty() {
                        return;
                    }
                    let mut i = 0;
                    while Instant::now() < deadline {
                        let t = mine[i % mine.len()];
                        let key = format!("{run_id}-{}", seq.fetch_add(1, Ordering::Relaxed));
                        let sent = Instant::now();
                        let r = send(&client, &base, t, key, gzip).await;
                        tally.record(r, t.fixes, sent.elapsed());
                        i += 1;
                    }
                });
            }
        }
        Mode::Open { requests_per_sec } => {
            let fixes_per_req =
                targets.iter().map(|t| t.fixes).sum::<u64>() as f64 / targets.len().max(1) as f64;
            offered = requests_per_sec * fixes_per_req;
            let interval = Duration::from_secs_f64(1.0 / requests_per_sec.max(0.001));
            let permits = Arc::new(Semaphore::new(MAX_OPEN_IN_FLIGHT));
            let start = tokio::time::Instant::now();
            for k in 0u64.. {
                let intended = start + interval.mul_f64(k as f64);
                if intended.into_std() >= deadline {
                    break;
                }
                tokio::time::sleep_until(intended).await;
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tally.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (client, base, targets, tally) = (
                    client.clone(),
                    base.to_owned(),
                    Arc::clone(&targets),
                    Arc::clone(&tally),
                );
                let key = format!("{run_id}-{k}");
                tasks.spawn(async move {
                    let t = &targets[(k % targets.len() as u64) as usize];
                    let r = send(&client, &base, t, key, gzip).await;
                    // From the intended start: a late send is the server's delay too.
                    tally.record(r, t.fixes, intended.elapsed());
                    drop(permit);
                });
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    let fixes = tally.fixes.load(Ordering::Relaxed);
    let latency = tally.latency.lock().unwrap_or_else(|e| e.into_inner());
    LoadFigures {
        ok_requests: tally.ok.load(Ordering::Relaxed),
        accepted_fixes: fixes,
        errors: tally
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        dropped: tally.dropped.load(Ordering::Relaxed),
        fixes_per_sec: fixes as f64 / secs.max(1e-9),
        offered_fixes_per_sec: offered,
        http_ms: LatencyMs::from_micros(&latency),
        secs,
    }
}

/// The simulated devices of a run and their prepared data.
#[derive(Debug)]
pub struct Workload {
    /// Run id: device ids are `perf-<run_id>-<n>`.
    pub run_id: String,
    /// Per device: tenant, device id, the fixes of its batch.
    pub devices: Vec<(TenantId, DeviceId, Vec<locus_wire::api::FixInput>)>,
    /// The batch body per device (`{"fixes":[...]}`), gzipped when asked.
    pub bodies: Vec<Bytes>,
    /// Fixes per batch.
    pub batch_size: u32,
}

impl Workload {
    /// Devices spread round-robin over the tenants, one batch of `batch_size` fixes each.
    pub fn new(args: &RunArgs) -> anyhow::Result<Self> {
        let tenants = args
            .tenants
            .iter()
            .map(|t| TenantId::parse(t.trim()).with_context(|| format!("bad tenant id {t:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!tenants.is_empty(), "give at least one tenant");
        anyhow::ensure!(
            args.devices > 0 && args.batch_size > 0,
            "devices and batch size must be > 0"
        );
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let now = Utc::now();
        let mut devices = Vec::new();
        let mut bodies = Vec::new();
        for n in 0..args.devices {
            let tenant = tenants[n as usize % tenants.len()].clone();
            let device = DeviceId::parse(format!("perf-{run_id}-{n}"))?;
            let fixes = Track::random(u64::from(n), chrono::Duration::seconds(1))
                .next_batch(args.batch_size as usize, now);
            let json = serde_json::to_vec(&serde_json::json!({ "fixes": fixes }))?;
            let body = if args.gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&json)?;
                enc.finish()?
            } else {
                json
            };
            bodies.push(Bytes::from(body));
            devices.push((tenant, device, fixes));
        }
        Ok(Self {
            run_id,
            devices,
            bodies,
            batch_size: args.batch_size,
        })
    }

    /// Targets for a server that ignores paths and tokens (the no-op ceiling).
    pub fn noop_targets(&self) -> Vec<Target> {
        self.bodies
            .iter()
            .enumerate()
            .map(|(i, body)| Target {
                path: "/v1/sessions/x/locations".into(),
                auth: "Bearer x".into(),
                body: body.clone(),
                fixes: u64::from(self.batch_size),
                device: i as u32,
            })
            .collect()
    }

    /// The Redis entries ingest would write for one batch of each device (session ids
    /// made up, same shape and size).
    pub fn buffer_entries(&self) -> anyhow::Result<Vec<(Bytes, u64)>> {
        let now = Utc::now();
        self.batches(now)?
            .into_iter()
            .map(|b| {
                let n = b.fixes.len() as u64;
                Ok((Bytes::from(serde_json::to_vec(&BufferEntry::Fixes(b))?), n))
            })
            .collect()
    }

    fn batches(&self, now: chrono::DateTime<Utc>) -> anyhow::Result<Vec<BufferedBatch>> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, (tenant, device, fixes))| {
                let limits = FixLimits::default();
                let fixes = fixes
                    .iter()
                    .enumerate()
                    .map(|(k, f)| Fix::validate(k as u32, *f, now, &limits))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|r| anyhow::anyhow!("a generated fix is invalid: {}", r.message))?;
                Ok(BufferedBatch {
                    tenant_id: tenant.clone(),
                    session_id: SessionId(uuid::Uuid::now_v7()),
                    device_id: device.clone(),
                    batch_id: format!("{}-{i}", self.run_id),
                    received_at: now,
                    fixes,
                })
            })
            .collect()
    }

    /// `total` Kafka records as the forwarder would produce them, cycling over the batches.
    pub fn records(&self, total: u64) -> anyhow::Result<Vec<ScratchRecord>> {
        let batches = self.batches(Utc::now())?;
        let mut out = Vec::with_capacity(total as usize);
        'outer: for round in 0.. {
            for b in &batches {
                for fix in &b.fixes {
                    if out.len() as u64 >= total {
                        break 'outer;
                    }
                    let mut record = LocationRecord::from_fix(b, fix);
                    record.batch_id = format!("{}-{round}", b.batch_id);
                    out.push(ScratchRecord {
                        key: b.session_id.to_string(),
                        tenant: b.tenant_id.to_string(),
                        value: Bytes::from(serde_json::to_vec(&record)?),
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Starts one session per device on ingest; returns the targets.
pub async fn start_sessions(
    client: &reqwest::Client,
    args: &RunArgs,
    work: &Workload,
) -> anyhow::Result<Vec<(Target, SessionId)>> {
    let secret = SecretString::from(args.jwt_secret.clone());
    // Sessions must outlive the run (the server default is 10 minutes, a soak's length):
    // the load, the drain and a margin, within the server's 24 h maximum.
    let lifetime = (args.duration_secs + args.drain_secs + 600).min(86_400);
    let session_body = serde_json::json!({ "max_duration_secs": lifetime }).to_string();
    let mut out = Vec::new();
    for (i, (tenant, device, _)) in work.devices.iter().enumerate() {
        let token = crate::auth::device_token(&secret, tenant.as_str(), device.as_str(), 86_400)?;
        let auth = format!("Bearer {token}");
        let r = client
            .post(format!("{}/v1/sessions", args.ingest_url))
            .header(AUTHORIZATION, &auth)
            .header(CONTENT_TYPE, "application/json")
            .body(session_body.clone())
            .send()
            .await
            .context("cannot start a session")?;
        let status = r.status();
        anyhow::ensure!(
            status == StatusCode::CREATED,
            "starting a session: {status}: {}",
            r.text().await.unwrap_or_default()
        );
        let view: SessionView = r.json().await?;
        out.push((
            Target {
                path: format!("/v1/sessions/{}/locations", view.session_id),
                auth,
                body: work.bodies[i].clone(),
                fixes: u64::from(work.batch_size),
                device: i as u32,
            },
            view.session_id,
        ));
    }
    Ok(out)
}

/// Stops the sessions; failures are only logged.
pub async fn stop_sessions(client: &reqwest::Client, base: &str, sessions: &[(Target, SessionId)]) {
    for (t, id) in sessions {
        let r = client
            .post(format!("{base}/v1/sessions/{id}/stop"))
            .header(AUTHORIZATION, &t.auth)
            .header(CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "Could not stop a bench session.");
        }
    }
}

/// The Locus leg: the load through ingest, followed to Kafka and the webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineFigures {
    /// The HTTP side.
    pub http: LoadFigures,
    /// Distinct records of the run read from Kafka.
    pub on_kafka: u64,
    /// 202 -> record read from Kafka (consumer clock).
    pub e2e_kafka_ms: LatencyMs,
    /// Records of the run the webhook receiver got (`None`: no webhook leg).
    pub delivered: Option<u64>,
    /// 202 -> webhook (the receiver's histogram, reset at the start of the leg).
    pub e2e_webhook_ms: Option<LatencyMs>,
    /// Fixes per second from the first request to the last record on Kafka.
    pub kafka_fixes_per_sec: f64,
    /// Fixes per second from the first request to the last webhook delivery.
    pub webhook_fixes_per_sec: Option<f64>,
    /// Backlog (accepted, not yet on Kafka) sampled every second: (second, fixes).
    pub backlog: Vec<(f64, u64)>,
    /// CPU and peak RSS per process, over the load and the drain.
    pub processes: BTreeMap<String, ProcUsage>,
    /// Problems seen (missing records, errors).
    pub problems: Vec<String>,
}

/// Everything a `run` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// When it ran (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Load shape.
    pub mode: Mode,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Devices (sessions).
    pub devices: u32,
    /// Tenants.
    pub tenants: Vec<String>,
    /// Gzip bodies.
    pub gzip: bool,
    /// Seconds per leg.
    pub duration_secs: u64,
    /// Same HTTP load against the no-op handler.
    pub noop_http: LoadFigures,
    /// Redis XADD of the same entries.
    pub redis_xadd: Ceiling,
    /// rdkafka produce of the same records.
    pub kafka_produce: Ceiling,
    /// Reading them back.
    pub kafka_consume: Ceiling,
    /// The Locus leg, if run.
    pub pipeline: Option<PipelineFigures>,
    /// Stage / ceiling ratios.
    pub fractions: BTreeMap<String, f64>,
}

/// The machine a report was made on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// MemTotal, GiB.
    pub mem_gib: f64,
    /// 1-minute load average when the run started.
    pub load_avg_1m: f64,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            mem_gib: mem_kib / 1024.0 / 1024.0,
            load_avg_1m,
        }
    }
}

async fn ingest_ready(client: &reqwest::Client, base: &str) -> bool {
    matches!(client.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
}

/// Runs the Locus leg. Kafka and the webhook are followed until every accepted fix
/// arrived or `drain_secs` passed.
pub async fn run_pipeline(
    client: &reqwest::Client,
    args: &RunArgs,
    work: &Workload,
) -> anyhow::Result<PipelineFigures> {
    let sessions = start_sessions(client, args, work).await?;
    let session_ids: Vec<SessionId> = sessions.iter().map(|(_, id)| *id).collect();
    let webhook = args.receiver_url != "none"
        && client
            .post(format!("{}/reset", args.receiver_url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
    let counter = if args.no_kafka {
        None
    } else {
        let c = KafkaCounter::start(KafkaCountConfig {
            brokers: args.kafka_brokers.clone(),
            topic: format!("{}locations", args.topic_prefix),
            device_prefix: format!("perf-{}-", work.run_id),
        })?;
        // Let the consumer join its group before the load, so its join is not the lag.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(c)
    };
    let targets = Arc::new(sessions.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>());
    let before = procstat::snapshot();
    let started = Instant::now();

    // Backlog sampler: accepted so far is not known mid-run in closed loop without a shared
    // counter, so the sampler records what is on Kafka; the report derives the backlog.
    let stop_sampler = CancellationToken::new();
    let counter = counter.map(Arc::new);
    let sampler = counter.as_ref().map(|c| {
        let c = Arc::clone(c);
        let stop = stop_sampler.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => samples.push((started.elapsed().as_secs_f64(), c.distinct())),
                }
            }
            samples
        })
    });

    let http = drive(
        client,
        &args.ingest_url,
        targets,
        args.mode(),
        args.gzip,
        Duration::from_secs(args.duration_secs),
        &work.run_id,
    )
    .await;
    let load_end = started.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(args.drain_secs);
    let mut on_kafka = 0;
    let mut kafka_done_at = None;
    let mut delivered = None;
    let mut webhook_done_at = None;
    loop {
        if let Some(c) = &counter {
            on_kafka = c.distinct();
            if on_kafka >= http.accepted_fixes && kafka_done_at.is_none() {
                kafka_done_at = Some(started.elapsed().as_secs_f64());
            }
        }
        if webhook {
            let n = delivered_for(client, &args.receiver_url, &session_ids)
                .await
                .unwrap_or(0);
            delivered = Some(n);
            if n >= http.accepted_fixes && webhook_done_at.is_none() {
                webhook_done_at = Some(started.elapsed().as_secs_f64());
            }
        }
        let kafka_ok = counter.is_none() || kafka_done_at.is_some();
        let hook_ok = !webhook || webhook_done_at.is_some();
        if (kafka_ok && hook_ok) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = procstat::snapshot();
    stop_sampler.cancel();
    let samples = match sampler {
        Some(s) => s.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let e2e_kafka_ms = counter.as_ref().map(|c| c.e2e()).unwrap_or_default();
    if let Some(c) = counter
        && let Ok(c) = Arc::try_unwrap(c)
    {
        c.stop().await;
    }
    let e2e_webhook_ms = if webhook {
        receiver_stats(client, &args.receiver_url)
            .await
            .ok()
            .map(|s| s.e2e_ms)
    } else {
        None
    };
    stop_sessions(client, &args.ingest_url, &sessions).await;

    // Backlog: accepted fixes are assumed to arrive evenly over the load.
    let rate = http.fixes_per_sec;
    let backlog = samples
        .iter()
        .map(|(t, on)| {
            let accepted = (rate * t.min(load_end)) as u64;
            (*t, accepted.saturating_sub(*on))
        })
        .collect();
    let mut problems = Vec::new();
    if http.error_count() > 0 {
        problems.push(format!(
            "HTTP errors: {:?}, dropped {}",
            http.errors, http.dropped
        ));
    }
    if !args.no_kafka && on_kafka < http.accepted_fixes {
        problems.push(format!(
            "only {on_kafka} of {} accepted fixes on Kafka after {} s of drain",
            http.accepted_fixes, args.drain_secs
        ));
    }
    if let Some(d) = delivered
        && d < http.accepted_fixes
    {
        problems.push(format!(
            "only {d} of {} accepted fixes delivered to the webhook",
            http.accepted_fixes
        ));
    }
    let per = |done: Option<f64>| done.map(|t| http.accepted_fixes as f64 / t.max(load_end));
    Ok(PipelineFigures {
        processes: procstat::usage(&before, &after, http.accepted_fixes),
        kafka_fixes_per_sec: per(kafka_done_at).unwrap_or(0.0),
        webhook_fixes_per_sec: per(webhook_done_at),
        http,
        on_kafka,
        e2e_kafka_ms,
        delivered,
        e2e_webhook_ms,
        backlog,
        problems,
    })
}

/// `locus-bench run`: ceilings and the Locus leg on the same data; writes the reports.
pub async fn run(args: &RunArgs, command: String) -> anyhow::Result<BenchReport> {
    let mut args = args.clone();
    args.apply_smoke();
    let machine = Machine::detect();
    let work = Workload::new(&args)?;
    let mode = args.mode();
    let duration = Duration::from_secs(args.duration_secs);
    let client = http_client(args.concurrency.max(64))?;

    tracing::info!(
        ?mode,
        "Ceiling: the same HTTP load against a no-op handler."
    );
    let stop = CancellationToken::new();
    let noop_url = ceiling::start_noop_server(stop.clone()).await?;
    let noop_http = drive(
        &client,
        &noop_url,
        Arc::new(work.noop_targets()),
        mode,
        args.gzip,
        duration.min(Duration::from_secs(args.ceiling_secs.max(1))),
        &work.run_id,
    )
    .await;
    stop.cancel();

    let pipeline = if args.no_ingest {
        None
    } else if !ingest_ready(&client, &args.ingest_url).await {
        anyhow::bail!(
            "ingest at {} is not ready (start the stack with `./locus up`, or pass --no-ingest)",
            args.ingest_url
        );
    } else {
        tracing::info!("The Locus leg: the same load through ingest, Kafka and the webhook.");
        Some(run_pipeline(&client, &args, &work).await?)
    };

    tracing::info!("Ceiling: Redis XADD of the same entries.");
    let in_flight = match mode {
        Mode::Closed { concurrency } => concurrency,
        Mode::Open { .. } => args.concurrency,
    };
    let redis_xadd = ceiling::redis_xadd(
        &args.redis_url,
        &format!("locus-bench:{{scratch}}:{}", work.run_id),
        Arc::new(work.buffer_entries()?),
        in_flight,
        duration.min(Duration::from_secs(5)),
    )
    .await
    .unwrap_or_else(|e| Ceiling::skipped(format!("{e:#}")));

    let (kafka_produce, kafka_consume) = if args.no_kafka {
        (
            Ceiling::skipped("--no-kafka"),
            Ceiling::skipped("--no-kafka"),
        )
    } else {
        kafka_ceilings(&args, &work, pipeline.as_ref()).await
    };

    let fractions = fractions(
        &noop_http,
        &redis_xadd,
        &kafka_produce,
        &kafka_consume,
        pipeline.as_ref(),
    );
    let report = BenchReport {
        date: Utc::now().to_rfc3339(),
        machine,
        command,
        mode,
        batch_size: args.batch_size,
        devices: args.devices,
        tenants: args.tenants.clone(),
        gzip: args.gzip,
        duration_secs: args.duration_secs,
        noop_http,
        redis_xadd,
        kafka_produce,
        kafka_consume,
        pipeline,
        fractions,
    };
    crate::perf_report::write_run(&args.out, &report)?;
    Ok(report)
}

async fn kafka_ceilings(
    args: &RunArgs,
    work: &Workload,
    pipeline: Option<&PipelineFigures>,
) -> (Ceiling, Ceiling) {
    // As many records as the pipeline carried, within bounds that keep the leg short.
    let total = pipeline
        .map_or(100_000, |p| p.http.accepted_fixes)
        .clamp(20_000, 300_000);
    let topic = format!("{}bench-scratch-{}", args.topic_prefix, work.run_id);
    tracing::info!(records = total, %topic, "Ceiling: rdkafka produce, then consume.");
    let result = async {
        let records = work.records(total)?;
        ceiling::create_topic(&args.kafka_brokers, &topic, args.partitions).await?;
        let produce = ceiling::kafka_produce(&args.kafka_brokers, &topic, &records).await?;
        let consume = ceiling::kafka_consume(
            &args.kafka_brokers,
            &topic,
            produce.fixes,
            Duration::from_secs(60),
        )
        .await?;
        anyhow::Ok((produce, consume))
    }
    .await;
    ceiling::delete_topic(&args.kafka_brokers, &topic).await;
    match result {
        Ok(r) => r,
        Err(e) => {
            let why = format!("{e:#}");
            (Ceiling::skipped(why.clone()), Ceiling::skipped(why))
        }
    }
}

fn fractions(
    noop: &LoadFigures,
    redis: &Ceiling,
    produce: &Ceiling,
    consume: &Ceiling,
    pipeline: Option<&PipelineFigures>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(p) = pipeline else { return out };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    out.insert(
        "ingest_http_vs_noop_http".into(),
        ratio(p.http.fixes_per_sec, noop.fixes_per_sec),
    );
    out.insert(
        "ingest_vs_redis_xadd".into(),
        ratio(p.http.fixes_per_sec, redis.fixes_per_sec),
    );
    if p.kafka_fixes_per_sec > 0.0 {
        out.insert(
            "forwarder_vs_kafka_produce".into(),
            ratio(p.kafka_fixes_per_sec, produce.fixes_per_sec),
        );
    }
    if let Some(w) = p.webhook_fixes_per_sec {
        out.insert(
            "bridge_vs_kafka_consume".into(),
            ratio(w, consume.fixes_per_sec),
        );
    }
    let slowest = [
        noop.fixes_per_sec,
        redis.fixes_per_sec,
        produce.fixes_per_sec,
        consume.fixes_per_sec,
    ]
    .into_iter()
    .filter(|v| *v > 0.0)
    .fold(f64::INFINITY, f64::min);
    let end = p.webhook_fixes_per_sec.unwrap_or(p.kafka_fixes_per_sec);
    if slowest.is_finite() && end > 0.0 {
        out.insert("pipeline_vs_slowest_ceiling".into(), ratio(end, slowest));
    }
    if produce.fixes_per_sec > 0.0 && p.kafka_fixes_per_sec > 0.0 {
        out.insert(
            "pipeline_to_kafka_vs_kafka_produce".into(),
            ratio(p.kafka_fixes_per_sec, produce.fixes_per_sec),
        );
    }
    out
}

/// Settings of `locus-bench sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Load shape and endpoints (the fixes/s per device flag is ignored: rates are swept).
    #[command(flatten)]
    pub run: RunArgs,
    /// First offered rate, fixes per second.
    #[arg(long, default_value_t = 5000.0)]
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Most steps.
    #[arg(long, default_value_t = 12)]
    pub max_steps: u32,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    /// Stop once p99 passes this many milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub max_p99_ms: f64,
    /// Sweep the no-op ceiling instead of ingest.
    #[arg(long)]
    pub noop: bool,
}

/// One step of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepStep {
    /// Offered fixes per second.
    pub offered: f64,
    /// What the step measured.
    pub figures: LoadFigures,
}

/// A sweep's steps and its knee.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// When (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Target: `ingest` or `noop`.
    pub target: String,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Steps, in order.
    pub steps: Vec<SweepStep>,
    /// Index of the knee: the last step that kept up (>= 95 % of offered, no errors) with
    /// p99 under 3x the first step's.
    pub knee: Option<usize>,
}

/// `locus-bench sweep`: open loop at rising rates until p99 or errors blow up.
pub async fn sweep(args: &SweepArgs, command: String) -> anyhow::Result<SweepReport> {
    let mut run_args = args.run.clone();
    run_args.fixes_per_sec_per_device = 0.0;
    let work = Workload::new(&run_args)?;
    let client = http_client(256)?;
    let stop = CancellationToken::new();
    let (base, targets, sessions) = if args.noop {
        let url = ceiling::start_noop_server(stop.clone()).await?;
        (url, work.noop_targets(), Vec::new())
    } else {
        anyhow::ensure!(
            ingest_ready(&client, &run_args.ingest_url).await,
            "ingest at {} is not ready",
            run_args.ingest_url
        );
        let sessions = start_sessions(&client, &run_args, &work).await?;
        let targets = sessions.iter().map(|(t, _)| t.clone()).collect();
        (run_args.ingest_url.clone(), targets, sessions)
    };
    let targets = Arc::new(targets);
    let mut steps: Vec<SweepStep> = Vec::new();
    let mut rate = args.start_rate;
    for _ in 0..args.max_steps {
        let rps = rate / f64::from(run_args.batch_size);
        let figures = drive(
            &client,
            &base,
            Arc::clone(&targets),
            Mode::Open {
                requests_per_sec: rps,
            },
            run_args.gzip,
            Duration::from_secs(args.step_secs),
            &format!("{}-{}", work.run_id, steps.len()),
        )
        .await;
        tracing::info!(
            offered = rate,
            achieved = figures.fixes_per_sec,
            p99_ms = figures.http_ms.p99,
            errors = figures.error_count(),
            "Sweep step done."
        );
        let blown = figures.http_ms.p99 > args.max_p99_ms
            || figures.error_count() * 100 > figures.ok_requests.max(1)
            || figures.fixes_per_sec < 0.8 * rate;
        steps.push(SweepStep {
            offered: rate,
            figures,
        });
        if blown {
            break;
        }
        rate *= args.factor;
        // Let queues drain between steps.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    stop_sessions(&client, &run_args.ingest_url, &sessions).await;
    let base_p99 = steps.first().map_or(0.0, |s| s.figures.http_ms.p99);
    let knee = steps.iter().rposition(|s| {
        s.figures.error_count() == 0
            && s.figures.fixes_per_sec >= 0.95 * s.offered
            && s.figures.http_ms.p99 <= (3.0 * base_p99).max(10.0)
    });
    let report = SweepReport {
        date: Utc::now().to_rfc3339(),
        machine: Machine::detect(),
        command,
        target: if args.noop {
            "noop".into()
        } else {
            "ingest".into()
        },
        batch_size: run_args.batch_size,
        steps,
        knee,
    };
    crate::perf_report::write_sweep(&run_args.out, &report)?;
    Ok(report)
}
