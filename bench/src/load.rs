//! The load generator: simulated devices start a session, post batches of moving fixes and
//! stop, honouring `Retry-After`. [`run_load`] turns a [`LoadPlan`] into a [`LoadReport`].
//!
//! Outcomes use the pipeline's vocabulary: fixes are accepted or rejected (with a reason);
//! 429 and 503 answers are retriable and the same batch, with the same batch id, is sent
//! again after the delay the server asked for, so a retry never duplicates data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use hdrhistogram::Histogram;
use locus_wire::api::{BatchResponse, ErrorBody, FixInput, SessionView, StartSessionRequest};
use locus_wire::{DeviceId, SessionId, TenantId};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use secrecy::SecretString;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::auth;
use crate::report::latency_histogram;
use crate::track::Track;

/// Error messages kept in a report; the counters hold the totals.
const MAX_ERRORS_KEPT: usize = 20;

/// Longest `Retry-After` honoured; a larger value is capped so one answer cannot stall a run.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Validity of the device tokens: longer than any run.
const TOKEN_TTL_SECS: i64 = 24 * 3600;

/// What to run against ingest.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Base URL of ingest, e.g. `http://127.0.0.1:8080`.
    pub ingest_url: String,
    /// HS256 secret ingest verifies device tokens with.
    pub jwt_secret: SecretString,
    /// Tenants of the simulated devices.
    pub tenants: Vec<TenantId>,
    /// Simulated devices per tenant; each records one session.
    pub devices_per_tenant: u32,
    /// Batches each device posts, in order.
    pub batches_per_device: u32,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Requests in flight at once. A device posts its batches one after another (it is one
    /// phone), so more than one request per device never happens.
    pub concurrency: usize,
    /// Unique id of the run: device ids are `bench-<run_id>-<n>`, so sessions never collide
    /// with an earlier run's (a device with an active session gets 409).
    pub run_id: String,
    /// Seed of the simulated tracks.
    pub seed: u64,
    /// Time between two fixes of a track.
    pub fix_interval: chrono::Duration,
    /// Attempts per request, the first included, before a request counts as failed.
    pub max_attempts: u32,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// `max_duration_secs` of each session; the server default when `None`.
    pub session_max_duration_secs: Option<u64>,
}

impl LoadPlan {
    /// A plan with the demo's shape (4 devices per tenant, 10 batches of 50 fixes each,
    /// 8 requests in flight) and a fresh run id.
    pub fn new(
        ingest_url: impl Into<String>,
        jwt_secret: SecretString,
        tenants: Vec<TenantId>,
    ) -> Self {
        let run = uuid::Uuid::new_v4().simple().to_string();
        Self {
            ingest_url: ingest_url.into().trim_end_matches('/').to_owned(),
            jwt_secret,
            tenants,
            devices_per_tenant: 4,
            batches_per_device: 10,
            batch_size: 50,
            concurrency: 8,
            run_id: run[..12].to_owned(),
            seed: rand::random(),
            fix_interval: chrono::Duration::seconds(1),
            max_attempts: 20,
            request_timeout: Duration::from_secs(30),
            session_max_duration_secs: None,
        }
    }

    /// Prefix shared by every device id of this run, and by no other run's.
    pub fn device_prefix(&self) -> String {
        format!("bench-{}-", self.run_id)
    }

    /// The simulated devices, tenant by tenant.
    pub fn devices(&self) -> anyhow::Result<Vec<SimDevice>> {
        let mut out = Vec::new();
        for tenant in &self.tenants {
            for _ in 0..self.devices_per_tenant {
                let index = u32::try_from(out.len()).context("too many devices")?;
                let device_id = DeviceId::parse(format!("{}{index}", self.device_prefix()))
                    .context("the run id makes an invalid device id")?;
                out.push(SimDevice {
                    index,
                    tenant: tenant.clone(),
                    device_id,
                });
            }
        }
        Ok(out)
    }

    /// Devices in the plan.
    pub fn total_devices(&self) -> u64 {
        self.tenants.len() as u64 * u64::from(self.devices_per_tenant)
    }

    /// Batches in the plan.
    pub fn total_batches(&self) -> u64 {
        self.total_devices() * u64::from(self.batches_per_device)
    }

    /// Fixes in the plan.
    pub fn total_fixes(&self) -> u64 {
        self.total_batches() * u64::from(self.batch_size)
    }
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Position in the plan, from 0.
    pub index: u32,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its id (the token's subject).
    pub device_id: DeviceId,
}

/// A session the run started.
#[derive(Debug, Clone)]
pub struct SessionRun {
    /// The device that recorded it.
    pub device: SimDevice,
    /// The session id ingest gave it.
    pub session_id: SessionId,
}

/// What a run did and how ingest answered.
#[derive(Debug)]
pub struct LoadReport {
    /// Sessions started (and stopped at the end, see `failed_stops`).
    pub sessions: Vec<SessionRun>,
    /// Batches that got a 202 or 422 answer.
    pub batches_answered: u64,
    /// Fixes in the answered batches.
    pub fixes_sent: u64,
    /// Fixes ingest accepted.
    pub accepted: u64,
    /// Fixes ingest rejected.
    pub rejected: u64,
    /// Rejected fixes by reason code.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Batches ingest answered as already stored (a retry of an earlier attempt).
    pub duplicate_batches: u64,
    /// Requests sent again after 429, 503 or a transport error.
    pub retries: u64,
    /// Planned batches without a usable answer: refused, out of attempts, or never sent
    /// because their device had no session or gave up.
    pub failed_batches: u64,
    /// Devices whose session could not be started.
    pub failed_sessions: u64,
    /// Sessions that could not be stopped.
    pub failed_stops: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// Latency of every answered batch POST attempt, in microseconds.
    pub batch_latency_us: Histogram<u64>,
    /// Latency of the session start and stop calls, in microseconds.
    pub session_latency_us: Histogram<u64>,
    /// Wall time of the batch phase (first batch sent to last batch answered).
    pub load_elapsed: Duration,
}

impl LoadReport {
    fn new() -> Self {
        Self {
            sessions: Vec::new(),
            batches_answered: 0,
            fixes_sent: 0,
            accepted: 0,
            rejected: 0,
            reject_reasons: BTreeMap::new(),
            duplicate_batches: 0,
            retries: 0,
            failed_batches: 0,
            failed_sessions: 0,
            failed_stops: 0,
            errors: Vec::new(),
            batch_latency_us: latency_histogram(),
            session_latency_us: latency_histogram(),
            load_elapsed: Duration::ZERO,
        }
    }

    /// Ids of the sessions the run started.
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|s| s.session_id).collect()
    }

    /// Accepted fixes per second over the batch phase.
    pub fn throughput(&self) -> f64 {
        let secs = self.load_elapsed.as_secs_f64();
        if secs > 0.0 {
            self.accepted as f64 / secs
        } else {
            0.0
        }
    }

    fn error(&mut self, message: String) {
        tracing::warn!(error = %message, "Load request failed.");
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(message);
        }
    }

    /// Adds a device's tally to the run's.
    fn absorb(&mut self, other: LoadReport) {
        self.batches_answered += other.batches_answered;
        self.fixes_sent += other.fixes_sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (reason, n) in other.reject_reasons {
            *self.reject_reasons.entry(reason).or_default() += n;
        }
        self.duplicate_batches += other.duplicate_batches;
        self.retries += other.retries;
        self.failed_batches += other.failed_batches;
        self.failed_sessions += other.failed_sessions;
        self.failed_stops += other.failed_stops;
        for e in other.errors {
            if self.errors.len() < MAX_ERRORS_KEPT {
                self.errors.push(e);
            }
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.batch_latency_us.add(&other.batch_latency_us);
        let _ = self.session_latency_us.add(&other.session_latency_us);
    }
}

/// Body of `POST /v1/sessions/{id}/locations` as the bench sends it.
#[derive(Debug, Serialize)]
struct BatchBody<'a> {
    batch_id: &'a str,
    fixes: &'a [FixInput],
}

/// A request that did not get a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Still 429/503 after the last attempt.
    #[error("still {status} after {attempts} attempts")]
    Exhausted {
        /// The last status.
        status: StatusCode,
        /// Attempts made.
        attempts: u32,
    },
    /// The request could not be sent or its answer read.
    #[error("no answer after {attempts} attempts: {source}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
}

/// An HTTP answer: status and body.
type Answer = (StatusCode, Bytes);

/// The ingest API as the bench calls it: one client, a cap on requests in flight, retries.
#[derive(Debug)]
struct Ingest {
    client: reqwest::Client,
    base: String,
    permits: Semaphore,
    max_attempts: u32,
}

impl Ingest {
    /// POSTs `body` to `path`, retrying 429/503 after their `Retry-After` and transport
    /// errors after a short backoff. The concurrency permit is held only while a request is
    /// in flight, so a device waiting out a `Retry-After` does not block the others.
    async fn post(
        &self,
        path: &str,
        token: &str,
        body: Bytes,
        latency_us: &mut Histogram<u64>,
        retries: &mut u64,
    ) -> Result<Answer, CallError> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = self
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let started = Instant::now();
            let result = self.send_once(&url, token, body.clone()).await;
            drop(permit);
            let delay = match result {
                Ok((status, retry_after, bytes)) => {
                    latency_us.saturating_record(micros(started.elapsed()));
                    if !is_retriable(status) {
                        return Ok((status, bytes));
                    }
                    if attempt >= self.max_attempts {
                        return Err(CallError::Exhausted {
                            status,
                            attempts: attempt,
                        });
                    }
                    retry_after
                        .unwrap_or(Duration::from_secs(1))
                        .min(MAX_RETRY_AFTER)
                }
                Err(source) => {
                    if attempt >= self.max_attempts {
                        return Err(CallError::Transport {
                            attempts: attempt,
                            source,
                        });
                    }
                    // The batch may have been stored before the connection broke; sending
                    // it again is safe because ingest recognises the batch id.
                    backoff(attempt)
                }
            };
            *retries += 1;
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        url: &str,
        token: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), reqwest::Error> {
        let response = self
            .client
            .post(url)
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Ok((status, retry_after, response.bytes().await?))
    }
}

fn is_retriable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// `Retry-After` in seconds (fractions tolerated). The HTTP-date form is not used by
/// ingest and falls back to the default delay.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// 100 ms, doubling per attempt, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `"POST /path: 409 session_already_active: ..."` from an unexpected answer.
fn describe(path: &str, status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("POST {path}: {status}: {}: {}", e.error, e.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            format!("POST {path}: {status}: {text}")
        }
    }
}

/// Runs the plan: starts a session per device, posts every batch, stops the sessions.
///
/// Failures of single requests are counted in the report, not returned: a run under
/// overload is still a run with figures. An error means the plan itself could not run.
pub async fn run_load(plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(plan.concurrency > 0, "concurrency must be at least 1");
    anyhow::ensure!(plan.batch_size > 0, "batch size must be at least 1");
    let devices = plan.devices()?;
    let client = reqwest::Client::builder()
        .timeout(plan.request_timeout)
        .pool_max_idle_per_host(plan.concurrency)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")?;
    let ingest = Arc::new(Ingest {
        client,
        base: plan.ingest_url.clone(),
        permits: Semaphore::new(plan.concurrency),
        max_attempts: plan.max_attempts.max(1),
    });
    let mut report = LoadReport::new();

    // Phase 1: sessions. Kept out of the batch phase so throughput measures batches only.
    let mut tasks = JoinSet::new();
    for device in devices {
        let ingest = Arc::clone(&ingest);
        let secret = plan.jwt_secret.clone();
        let max_duration_secs = plan.session_max_duration_secs;
        tasks.spawn(async move {
            let mut tally = LoadReport::new();
            let token = auth::device_token(
                &secret,
                device.tenant.as_str(),
                device.device_id.as_str(),
                TOKEN_TTL_SECS,
            );
            let started = match token {
                Ok(token) => start_session(&ingest, &token, max_duration_secs, &mut tally)
                    .await
                    .map(|id| (token, id)),
                Err(e) => Err(format!("cannot sign a token for {}: {e}", device.device_id)),
            };
            (device, started, tally)
        });
    }
    let mut runs = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (device, started, tally) = joined.context("a session task panicked")?;
        report.absorb(tally);
        match started {
            Ok((token, session_id)) => runs.push((SessionRun { device, session_id }, token)),
            Err(message) => {
                report.failed_sessions += 1;
                report.failed_batches += u64::from(plan.batches_per_device);
                report.error(message);
            }
        }
    }
    runs.sort_by_key(|(run, _)| run.device.index);

    // Phase 2: batches, every device at once, capped by the semaphore.
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (run, token) in &runs {
        let ingest = Arc::clone(&ingest);
        let run = run.clone();
        let token = token.clone();
        let shape = BatchShape {
            batches: plan.batches_per_device,
            size: plan.batch_size as usize,
            interval: plan.fix_interval,
            seed: plan.seed.wrapping_add(u64::from(run.device.index)),
        };
        tasks.spawn(async move { post_batches(&ingest, &run, &token, shape).await });
    }
    while let Some(joined) = tasks.join_next().await {
        report.absorb(joined.context("a device task panicked")?);
    }
    report.load_elapsed = started.elapsed();

    // Phase 3: stop the sessions, so the run leaves nothing active behind.
    let mut tasks = JoinSet::new();
    for (run, token) in runs.iter().cloned() {
        let ingest = Arc::clone(&ingest);
        tasks.spawn(async move {
            let mut tally = LoadReport::new();
            stop_session(&ingest, &token, run.session_id, &mut tally).await;
            tally
        });
    }
    while let Some(joined) = tasks.join_next().await {
        report.absorb(joined.context("a stop task panicked")?);
    }
    report.sessions = runs.into_iter().map(|(run, _)| run).collect();
    Ok(report)
}

async fn start_session(
    ingest: &Ingest,
    token: &str,
    max_duration_secs: Option<u64>,
    tally: &mut LoadReport,
) -> Result<SessionId, String> {
    let path = "/v1/sessions";
    // `{}` unless a duration is asked for: the server default applies then.
    let body = match max_duration_secs {
        None => b"{}".to_vec(),
        Some(_) => serde_json::to_vec(&StartSessionRequest { max_duration_secs })
            .expect("a start request serialises"),
    };
    let (status, bytes) = ingest
        .post(
            path,
            token,
            body.into(),
            &mut tally.session_latency_us,
            &mut tally.retries,
        )
        .await
        .map_err(|e| format!("POST {path}: {e}"))?;
    if status != StatusCode::CREATED {
        return Err(describe(path, status, &bytes));
    }
    let view: SessionView = serde_json::from_slice(&bytes)
        .map_err(|e| format!("POST {path}: the 201 body is not a session: {e}"))?;
    Ok(view.session_id)
}

async fn stop_session(ingest: &Ingest, token: &str, session: SessionId, tally: &mut LoadReport) {
    let path = format!("/v1/sessions/{session}/stop");
    let result = ingest
        .post(
            &path,
            token,
            Bytes::from_static(b"{}"),
            &mut tally.session_latency_us,
            &mut tally.retries,
        )
        .await;
    let message = match result {
        Ok((StatusCode::OK, _)) => return,
        Ok((status, bytes)) => describe(&path, status, &bytes),
        Err(e) => format!("POST {path}: {e}"),
    };
    tally.failed_stops += 1;
    tally.error(message);
}

/// How one device's batches look.
#[derive(Debug, Clone, Copy)]
struct BatchShape {
    batches: u32,
    size: usize,
    interval: chrono::Duration,
    seed: u64,
}

/// Posts one device's batches in order. A refusal other than 422 (401, 404, 409...) would
/// repeat for every later batch, so the device gives up and its remaining batches count
/// as failed.
async fn post_batches(
    ingest: &Ingest,
    run: &SessionRun,
    token: &str,
    shape: BatchShape,
) -> LoadReport {
    let mut tally = LoadReport::new();
    let mut track = Track::random(shape.seed, shape.interval);
    let path = format!("/v1/sessions/{}/locations", run.session_id);
    for k in 0..shape.batches {
        let batch_id = format!("{}-{k}", run.device.device_id);
        let fixes = track.next_batch(shape.size, Utc::now());
        let body = serde_json::to_vec(&BatchBody {
            batch_id: &batch_id,
            fixes: &fixes,
        })
        .expect("fixes serialise");
        let result = ingest
            .post(
                &path,
                token,
                body.into(),
                &mut tally.batch_latency_us,
                &mut tally.retries,
            )
            .await;
        let (status, bytes) = match result {
            Ok(answer) => answer,
            Err(e) => {
                tally.failed_batches += 1;
                tally.error(format!("POST {path} (batch {batch_id}): {e}"));
                continue;
            }
        };
        let parsed = match status {
            StatusCode::ACCEPTED | StatusCode::UNPROCESSABLE_ENTITY => {
                serde_json::from_slice::<BatchResponse>(&bytes).ok()
            }
            _ => None,
        };
        let Some(answer) = parsed else {
            tally.failed_batches += u64::from(shape.batches - k);
            tally.error(format!(
                "{} (device {} gives up)",
                describe(&path, status, &bytes),
                run.device.device_id
            ));
            break;
        };
        tally.batches_answered += 1;
        tally.fixes_sent += fixes.len() as u64;
        tally.accepted += u64::from(answer.accepted);
        tally.rejected += answer.rejected.len() as u64;
        tally.duplicate_batches += u64::from(answer.duplicate);
        for r in &answer.rejected {
            let reason = serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", r.reason));
            *tally.reject_reasons.entry(reason).or_default() += 1;
        }
    }
    tally
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("{url} is unreachable: {e}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{last} (waited {} s)", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert!(backoff(2) > backoff(1));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn device_ids_are_unique_per_run_and_valid() {
        let tenants = vec![
            TenantId::parse("acme").unwrap(),
            TenantId::parse("globex").unwrap(),
        ];
        let a = LoadPlan::new("http://x/", SecretString::from("s"), tenants.clone());
        let b = LoadPlan::new("http://x", SecretString::from("s"), tenants);
        assert_eq!(a.ingest_url, "http://x");
        let da = a.devices().unwrap();
        let db = b.devices().unwrap();
        assert_eq!(da.len(), 8);
        assert_eq!(a.total_fixes(), 4000);
        assert_eq!(a.total_batches(), 80);
        assert_eq!(da[4].tenant.as_str(), "globex");
        assert!(
            da.iter()
                .all(|d| d.device_id.as_str().starts_with(&a.device_prefix()))
        );
        assert!(
            da.iter()
                .all(|d| !d.device_id.as_str().starts_with(&b.device_prefix()))
        );
        assert!(da.iter().zip(&db).all(|(x, y)| x.device_id != y.device_id));
    }
}
