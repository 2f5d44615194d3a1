//! The planned load of the demo: simulated devices start a session, post a fixed number of
//! batches of moving fixes and stop. [`run_load`] turns a [`LoadPlan`] into a
//! [`LoadReport`].
//!
//! Outcomes use the pipeline's vocabulary: fixes are accepted or rejected (with a reason);
//! 429 and 503 answers are retriable and the same batch, with the same batch id, is sent
//! again after the delay the server asked for ([`crate::client::retry`]), so a retry never
//! duplicates data.

mod tally;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use locus_wire::api::{BatchResponse, FixInput};
use locus_wire::{DeviceId, SessionId, TenantId};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde::Serialize;
use tokio::task::JoinSet;

pub use tally::LoadReport;

use crate::auth::{self, DEVICE_TOKEN_TTL_SECS};
use crate::client::{self, IngestClient, Post, Retry, SESSIONS_PATH};
use crate::register;
use crate::track::Track;

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

/// Body of `POST /v1/sessions/{id}/locations` as the bench sends it.
#[derive(Debug, Serialize)]
struct BatchBody<'a> {
    batch_id: &'a str,
    fixes: &'a [FixInput],
}

/// Runs the plan: registers the tenants and devices ([`register`]), starts a session per
/// device, posts every batch, stops the sessions.
///
/// Failures of single requests are counted in the report, not returned: a run under
/// overload is still a run with figures. An error means the plan itself could not run,
/// a failed registration included (every session would be refused).
pub async fn run_load(plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(plan.concurrency > 0, "concurrency must be at least 1");
    anyhow::ensure!(plan.batch_size > 0, "batch size must be at least 1");
    let devices = plan.devices()?;
    let http = client::http_client(plan.request_timeout, plan.concurrency)?;
    let ingest = Arc::new(
        IngestClient::new(http, plan.ingest_url.clone())
            .with_retry(Retry::up_to(plan.max_attempts))
            .with_max_in_flight(plan.concurrency),
    );
    let mut report = LoadReport::new();

    // Phase 0: the devices must be registered before ingest starts their sessions.
    let registered: Vec<_> = devices
        .iter()
        .map(|d| (d.tenant.clone(), d.device_id.clone()))
        .collect();
    report.registration = register::register(&ingest, &plan.jwt_secret, &registered)
        .await
        .context("cannot register the simulated devices")?;

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
                DEVICE_TOKEN_TTL_SECS,
            );
            let started = match token {
                Ok(token) => {
                    let authorization = client::bearer(&token);
                    ingest
                        .start_session(&authorization, max_duration_secs, |a| {
                            tally.session_attempt(a);
                        })
                        .await
                        .map(|id| (authorization, id))
                        .map_err(|e| format!("POST {SESSIONS_PATH}: {e}"))
                }
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
            Ok((authorization, session_id)) => {
                runs.push((SessionRun { device, session_id }, authorization));
            }
            Err(message) => {
                report.failed_sessions += 1;
                report.failed_batches += u64::from(plan.batches_per_device);
                report.error(message);
            }
        }
    }
    runs.sort_by_key(|(run, _)| run.device.index);

    // Phase 2: batches, every device at once, capped by the client's in-flight limit.
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (run, authorization) in &runs {
        let ingest = Arc::clone(&ingest);
        let run = run.clone();
        let authorization = authorization.clone();
        let shape = BatchShape {
            batches: plan.batches_per_device,
            size: plan.batch_size as usize,
            interval: plan.fix_interval,
            seed: plan.seed.wrapping_add(u64::from(run.device.index)),
        };
        tasks.spawn(async move { post_batches(&ingest, &run, &authorization, shape).await });
    }
    while let Some(joined) = tasks.join_next().await {
        report.absorb(joined.context("a device task panicked")?);
    }
    report.load_elapsed = started.elapsed();

    // Phase 3: stop the sessions, so the run leaves nothing active behind.
    let mut tasks = JoinSet::new();
    for (run, authorization) in runs.iter().cloned() {
        let ingest = Arc::clone(&ingest);
        tasks.spawn(async move {
            let mut tally = LoadReport::new();
            let stopped = ingest
                .stop_session(&authorization, run.session_id, |a| tally.session_attempt(a))
                .await;
            if let Err(e) = stopped {
                tally.failed_stops += 1;
                tally.error(format!("POST {}: {e}", client::stop_path(run.session_id)));
            }
            tally
        });
    }
    while let Some(joined) = tasks.join_next().await {
        report.absorb(joined.context("a stop task panicked")?);
    }
    report.sessions = runs.into_iter().map(|(run, _)| run).collect();
    Ok(report)
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
    ingest: &IngestClient,
    run: &SessionRun,
    authorization: &str,
    shape: BatchShape,
) -> LoadReport {
    let mut tally = LoadReport::new();
    let mut track = Track::random(shape.seed, shape.interval);
    let path = client::locations_path(run.session_id);
    for k in 0..shape.batches {
        let batch_id = format!("{}-{k}", run.device.device_id);
        let fixes = track.next_batch(shape.size, Utc::now());
        let body = serde_json::to_vec(&BatchBody {
            batch_id: &batch_id,
            fixes: &fixes,
        })
        .expect("fixes serialise");
        let post = Post::json(&path, authorization, body.into());
        let answer = match ingest.post(&post, |a| tally.batch_attempt(a)).await {
            Ok(answer) => answer,
            Err(e) => {
                tally.failed_batches += 1;
                tally.error(format!("POST {path} (batch {batch_id}): {e}"));
                continue;
            }
        };
        let parsed = match answer.status {
            StatusCode::ACCEPTED | StatusCode::UNPROCESSABLE_ENTITY => {
                serde_json::from_slice::<BatchResponse>(&answer.body).ok()
            }
            _ => None,
        };
        let Some(batch) = parsed else {
            tally.failed_batches += u64::from(shape.batches - k);
            tally.error(format!(
                "POST {path}: {} (device {} gives up)",
                client::refusal(answer.status, &answer.body),
                run.device.device_id
            ));
            break;
        };
        tally.batches_answered += 1;
        tally.fixes_sent += fixes.len() as u64;
        tally.accepted += u64::from(batch.accepted);
        tally.rejected += batch.rejected.len() as u64;
        tally.duplicate_batches += u64::from(batch.duplicate);
        for r in &batch.rejected {
            let reason = serde_json::to_value(r.reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", r.reason));
            *tally.reject_reasons.entry(reason).or_default() += 1;
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

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
