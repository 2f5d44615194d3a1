//! The load of a fault: devices, each with its session, posting batches one after another;
//! fix `i` of batch `n` carries the device's sequence number `n * batch_size + i` (read back
//! from the record's `batch_id` `<device>:<n>` and `batch_index`), and a latitude derived
//! from it, so that a record with another body is seen. Every 202 is an acknowledgement;
//! a 429, a 503 or a transport error is retried with the same batch id until it is one, as
//! a device does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use locus_wire::api::BatchResponse;
use locus_wire::{DeviceId, SessionId, TenantId};
use secrecy::SecretString;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, DEVICE_TOKEN_TTL_SECS};
use crate::client::{self, Attempt, CallError, IngestClient, Post};
use crate::register::{self, Registration};

/// One simulated device.
#[derive(Debug, Clone)]
pub struct Device {
    /// Its tenant.
    pub tenant: String,
    /// Its device id (unique to the fault's run).
    pub device_id: String,
    /// Position in the load, for its longitude.
    pub index: usize,
    /// Its session.
    pub session: SessionId,
    /// `Bearer <token>`.
    pub authorization: String,
    /// `recorded_at` of its fix 0; fix `n` is `n` ms later, so a batch's body is the same
    /// every time it is built (a retry is the same request).
    pub t0: DateTime<Utc>,
}

/// How devices post.
#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    /// Fixes per batch.
    pub batch_size: u32,
    /// Pause between a device's batches.
    pub interval: Duration,
    /// Post every batch twice at once (fault 7).
    pub double_post: bool,
}

/// A batch that got a 202.
#[derive(Debug, Clone)]
pub struct AckedBatch {
    /// The device (index into the devices).
    pub device: usize,
    /// Its session.
    pub session: SessionId,
    /// Its batch number.
    pub seq: u64,
    /// Whether ingest said it had it already.
    pub duplicate: bool,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadTally {
    /// Batches acknowledged, in the order the 202s came.
    pub acked: Vec<AckedBatch>,
    /// Answers by status (every attempt).
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts without an answer.
    pub transport_errors: u64,
    /// Batches a device stopped retrying (the load's end bound passed).
    pub abandoned: u64,
}

/// The batch id of batch `seq` of `device`.
pub fn batch_id(device: &str, seq: u64) -> String {
    format!("{device}:{seq}")
}

/// The batch number in a batch id made by [`batch_id`].
pub fn seq_of(batch_id: &str) -> Option<u64> {
    batch_id.rsplit_once(':')?.1.parse().ok()
}

/// The latitude of a fix with sequence number `n` (the body check).
pub fn lat_of(n: u64) -> f64 {
    10.0 + (n % 100_000) as f64 * 1e-5
}

/// The body of batch `seq`; `other_body` shifts every fix (the same id, another body).
pub fn body(device: &Device, seq: u64, batch_size: u32, other_body: bool) -> Bytes {
    let fixes: Vec<_> = (0..batch_size)
        .map(|i| {
            let n = seq * u64::from(batch_size) + u64::from(i);
            let shift = if other_body { 1.0 } else { 0.0 };
            json!({
                "lat": lat_of(n) + shift,
                "lon": 20.0 + device.index as f64 * 1e-3,
                "recorded_at": device.t0 + TimeDelta::milliseconds(n as i64),
            })
        })
        .collect();
    let body = json!({ "batch_id": batch_id(&device.device_id, seq), "fixes": fixes });
    serde_json::to_vec(&body)
        .expect("a batch serialises")
        .into()
}

/// The id of device `d` of `tenant` in the fault `tag`.
fn device_id(tag: &str, tenant: &str, d: usize) -> String {
    format!("{tag}-{tenant}-d{d}")
}

/// Registers `devices_per_tenant` devices of each tenant ([`register`]), then starts one
/// session per device.
pub async fn start_devices(
    ingest: &IngestClient,
    secret: &SecretString,
    tag: &str,
    tenants: &[&str],
    devices_per_tenant: usize,
) -> anyhow::Result<(Vec<Device>, Registration)> {
    let mut ids = Vec::new();
    for tenant in tenants {
        for d in 0..devices_per_tenant {
            ids.push((
                TenantId::parse(*tenant).context("a fault's tenant id")?,
                DeviceId::parse(device_id(tag, tenant, d)).context("a fault's device id")?,
            ));
        }
    }
    let registration = register::register(ingest, secret, &ids).await?;
    let mut out = Vec::new();
    for tenant in tenants {
        for d in 0..devices_per_tenant {
            let device_id = device_id(tag, tenant, d);
            let token = auth::device_token(secret, tenant, &device_id, DEVICE_TOKEN_TTL_SECS)?;
            let authorization = client::bearer(&token);
            let session = ingest
                .start_session(&authorization, Some(7_200), |_| {})
                .await
                .with_context(|| format!("cannot start a session for {device_id}"))?;
            out.push(Device {
                tenant: (*tenant).to_owned(),
                device_id,
                index: out.len(),
                session,
                authorization,
                // An hour back: a long load stays well behind the server's clock.
                t0: Utc::now() - TimeDelta::hours(1),
            });
        }
    }
    Ok((out, registration))
}

/// The answer to one post, as the load counts it.
#[derive(Debug)]
pub enum Outcome {
    /// 202, with `duplicate`.
    Accepted(bool),
    /// 429 or 503: retry later.
    Retry,
    /// No answer: retry soon.
    Transport,
    /// Any other status.
    Refused(u16),
}

/// Posts `body` to `device`'s session once.
pub async fn post_once(
    ingest: &IngestClient,
    device: &Device,
    body: Bytes,
    tally: &Mutex<LoadTally>,
) -> Outcome {
    let path = client::locations_path(device.session);
    let post = Post::json(&path, &device.authorization, body);
    let result = ingest.post(&post, |_: Attempt| {}).await;
    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(answer) => {
            *t.statuses.entry(answer.status.as_u16()).or_default() += 1;
            if answer.status.as_u16() == 202 {
                let duplicate = serde_json::from_slice::<BatchResponse>(&answer.body)
                    .map(|b| b.duplicate)
                    .unwrap_or(false);
                Outcome::Accepted(duplicate)
            } else {
                Outcome::Refused(answer.status.as_u16())
            }
        }
        Err(CallError::Exhausted { status, .. }) => {
            *t.statuses.entry(status.as_u16()).or_default() += 1;
            Outcome::Retry
        }
        Err(CallError::Transport { .. }) => {
            t.transport_errors += 1;
            Outcome::Transport
        }
        Err(e) => {
            let code = e.status().map_or(0, |s| s.as_u16());
            *t.statuses.entry(code).or_default() += 1;
            Outcome::Refused(code)
        }
    }
}

/// A running load.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    tally: Arc<Mutex<LoadTally>>,
    in_flight: Arc<AtomicU64>,
}

impl Load {
    /// Starts every device posting. After [`Load::finish`] a device sends no new batch but
    /// retries its current one for up to `finish_bound`.
    pub fn start(
        ingest: Arc<IngestClient>,
        devices: &[Device],
        shape: LoadShape,
        finish_bound: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let tally = Arc::new(Mutex::new(LoadTally::default()));
        let in_flight = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for device in devices.iter().cloned() {
            tasks.spawn(device_loop(
                Arc::clone(&ingest),
                device,
                shape,
                stop.clone(),
                finish_bound,
                Arc::clone(&tally),
                Arc::clone(&in_flight),
            ));
        }
        Self {
            stop,
            tasks,
            tally,
            in_flight,
        }
    }

    /// Posts on the wire right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Batches acknowledged so far.
    pub fn acked(&self) -> usize {
        self.tally
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acked
            .len()
    }

    /// Stops new batches, waits for the devices' last batches, and returns the tally.
    pub async fn finish(mut self) -> LoadTally {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn device_loop(
    ingest: Arc<IngestClient>,
    device: Device,
    shape: LoadShape,
    stop: CancellationToken,
    finish_bound: Duration,
    tally: Arc<Mutex<LoadTally>>,
    in_flight: Arc<AtomicU64>,
) {
    let mut seq = 0;
    while !stop.is_cancelled() {
        let body = body(&device, seq, shape.batch_size, false);
        let mut give_up_at = None;
        let acked = loop {
            if give_up_at.is_none() && stop.is_cancelled() {
                give_up_at = Some(tokio::time::Instant::now() + finish_bound);
            }
            if give_up_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                break None;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let outcome = if shape.double_post {
                let (a, b) = tokio::join!(
                    post_once(&ingest, &device, body.clone(), &tally),
                    post_once(&ingest, &device, body.clone(), &tally)
                );
                match (a, b) {
                    (Outcome::Accepted(x), Outcome::Accepted(y)) => Outcome::Accepted(x && y),
                    (Outcome::Accepted(x), _) | (_, Outcome::Accepted(x)) => Outcome::Accepted(x),
                    (a, _) => a,
                }
            } else {
                post_once(&ingest, &device, body.clone(), &tally).await
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Outcome::Accepted(duplicate) => break Some(duplicate),
                Outcome::Retry => tokio::time::sleep(Duration::from_millis(500)).await,
                Outcome::Transport => tokio::time::sleep(Duration::from_millis(200)).await,
                Outcome::Refused(status) => {
                    tracing::warn!(device = device.device_id, seq, status, "Batch refused.");
                    break None;
                }
            }
        };
        {
            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
            match acked {
                Some(duplicate) => t.acked.push(AckedBatch {
                    device: device.index,
                    session: device.session,
                    seq,
                    duplicate,
                }),
                None => t.abandoned += 1,
            }
        }
        seq += 1;
        tokio::time::sleep(shape.interval).await;
    }
}
