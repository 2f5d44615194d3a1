//! The demo partner: a webhook receiver that checks signatures, counts and dedupes records
//! and measures end-to-end latency, so a demo can prove every accepted fix arrived.
//!
//! HTTP surface:
//! - `POST /webhook`: a signed [`WebhookDelivery`]; 200 when counted, 401 on a bad signature,
//!   400 when the signed body is not a delivery.
//! - `GET /stats`: [`ReceiverStats`] since start or the last reset.
//! - `POST /stats/sessions`: distinct records of the given sessions ([`SessionCountRequest`]),
//!   so a run counts its own records even if an earlier run's redeliveries trickle in.
//! - `POST /reset`: forget everything.
//! - `POST /hang`: a webhook that never answers: the request is held (and counted) until
//!   the client gives up or the receiver stops. `locus-bench demo --hang-tenants` points a
//!   tenant's sink here to measure how a hung partner affects the others.
//! - `GET /healthz`, `GET /readyz`: 200 while the server runs.
//!
//! [`client`] is how the demo and the benchmark read these counts.

pub mod client;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use hdrhistogram::Histogram;
use locus_wire::SessionId;
use locus_wire::api::ErrorBody;
use locus_wire::webhook::{self, SIGNATURE_HEADER, SignatureError, SigningKey, WebhookDelivery};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use client::ReceiverClient;

use crate::report::{LatencyMs, latency_histogram};

/// Largest delivery body accepted. Generous: the bridge batches records, and a demo
/// receiver that refused a large batch would look like a pipeline bug.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How the receiver checks signatures.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Shared secret of the webhook sink.
    pub secret: SecretString,
    /// Replay window for signature timestamps, in seconds.
    pub tolerance_secs: i64,
}

/// Counts of one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCounts {
    /// Records received, copies included.
    pub records: u64,
    /// Records received for the first time.
    pub distinct_records: u64,
}

/// Body of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReceiverStats {
    /// Deliveries counted (signature good, body a delivery).
    pub deliveries: u64,
    /// Records in those deliveries, copies included.
    pub records: u64,
    /// Records seen for the first time (by `record_id`).
    pub distinct_records: u64,
    /// Records seen before: at-least-once redeliveries.
    pub duplicates: u64,
    /// Requests refused because the signature was missing, malformed, stale or wrong.
    pub signature_failures: u64,
    /// Signed requests whose body was not a delivery.
    pub invalid_deliveries: u64,
    /// Records whose tenant differs from their delivery's tenant: a tenancy bug upstream.
    pub tenant_mismatches: u64,
    /// Counts per tenant (the record's tenant).
    pub per_tenant: BTreeMap<String, TenantCounts>,
    /// From ingest's `received_at` to arrival here, first copies only.
    pub e2e_ms: LatencyMs,
    /// Requests to `POST /hang` (held, never answered).
    #[serde(default)]
    pub hung_requests: u64,
}

/// Body of `POST /stats/sessions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionCountRequest {
    /// The sessions to count.
    pub session_ids: Vec<SessionId>,
}

/// Answer of `POST /stats/sessions`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCount {
    /// Distinct records received for those sessions.
    pub distinct_records: u64,
}

/// Answer of a counted delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAck {
    /// Records in the delivery.
    pub records: u64,
    /// Of those, records seen before.
    pub duplicates: u64,
}

/// What the receiver has seen since start or the last reset.
#[derive(Debug)]
struct Tally {
    stats: ReceiverStats,
    seen: HashSet<Uuid>,
    per_session: HashMap<SessionId, u64>,
    e2e_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            stats: ReceiverStats::default(),
            seen: HashSet::new(),
            per_session: HashMap::new(),
            e2e_us: latency_histogram(),
        }
    }
}

/// The receiver's shared state; cheap to clone, one per server.
#[derive(Debug, Clone)]
pub struct Receiver {
    config: Arc<ReceiverConfig>,
    // A std mutex: every critical section is short and never awaits.
    tally: Arc<Mutex<Tally>>,
    /// Cancelled when the server stops: releases the held `/hang` requests, which graceful
    /// shutdown would otherwise wait for forever.
    stopping: CancellationToken,
}

impl Receiver {
    /// A receiver with nothing counted.
    pub fn new(config: ReceiverConfig) -> Self {
        Self {
            config: Arc::new(config),
            tally: Arc::default(),
            stopping: CancellationToken::new(),
        }
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters as `GET /stats` shows them.
    pub fn stats(&self) -> ReceiverStats {
        let tally = self.tally();
        let mut stats = tally.stats.clone();
        stats.e2e_ms = LatencyMs::from_micros(&tally.e2e_us);
        stats
    }

    /// Distinct records received for `sessions`.
    pub fn count_sessions(&self, sessions: &[SessionId]) -> u64 {
        let tally = self.tally();
        sessions
            .iter()
            .filter_map(|s| tally.per_session.get(s))
            .sum()
    }

    /// Forgets everything counted.
    pub fn reset(&self) {
        *self.tally() = Tally::default();
    }

    /// Checks the signature of one request, then counts its delivery.
    fn receive(&self, headers: &HeaderMap, body: &[u8]) -> Result<DeliveryAck, ReceiverError> {
        if let Err(e) = self.verify(headers, body) {
            self.tally().stats.signature_failures += 1;
            return Err(e);
        }
        let delivery: WebhookDelivery = match serde_json::from_slice(body) {
            Ok(d) => d,
            Err(e) => {
                self.tally().stats.invalid_deliveries += 1;
                return Err(ReceiverError::InvalidDelivery(e));
            }
        };
        Ok(self.count(&delivery))
    }

    fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), ReceiverError> {
        if !headers.contains_key(SIGNATURE_HEADER) {
            return Err(ReceiverError::MissingSignature);
        }
        let key = SigningKey::from_stored(self.config.secret.expose_secret())
            .map_err(|_| ReceiverError::Signature(SignatureError::Mismatch))?;
        webhook::verify_request(
            &key,
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            body,
            Utc::now().timestamp(),
            self.config.tolerance_secs,
        )
        .map_err(ReceiverError::Signature)
    }

    fn count(&self, delivery: &WebhookDelivery) -> DeliveryAck {
        let now = Utc::now();
        let mut ack = DeliveryAck::default();
        let mut guard = self.tally();
        let tally = &mut *guard;
        tally.stats.deliveries += 1;
        for record in &delivery.records {
            ack.records += 1;
            let first = tally.seen.insert(record.record_id);
            let tenant = tally
                .stats
                .per_tenant
                .entry(record.tenant_id.to_string())
                .or_default();
            tenant.records += 1;
            if record.tenant_id != delivery.tenant_id {
                tally.stats.tenant_mismatches += 1;
            }
            if first {
                tenant.distinct_records += 1;
                *tally.per_session.entry(record.session_id).or_default() += 1;
                // Only first copies: a redelivery's latency measures the retry policy,
                // not the pipeline.
                let us = (now - record.received_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                tally
                    .e2e_us
                    .saturating_record(u64::try_from(us).unwrap_or(0));
            } else {
                ack.duplicates += 1;
            }
        }
        tally.stats.records += ack.records;
        tally.stats.distinct_records += ack.records - ack.duplicates;
        tally.stats.duplicates += ack.duplicates;
        ack
    }
}

/// Why the receiver refused a delivery.
#[derive(Debug, thiserror::Error)]
enum ReceiverError {
    #[error("the {SIGNATURE_HEADER} header is missing")]
    MissingSignature,
    #[error(transparent)]
    Signature(SignatureError),
    #[error("the body is not a webhook delivery: {0}")]
    InvalidDelivery(serde_json::Error),
}

impl IntoResponse for ReceiverError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::MissingSignature | Self::Signature(_) => {
                (StatusCode::UNAUTHORIZED, "invalid_signature")
            }
            Self::InvalidDelivery(_) => (StatusCode::BAD_REQUEST, "invalid_delivery"),
        };
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// Every route of the receiver.
pub fn router(receiver: Receiver) -> Router {
    Router::new()
        .route("/webhook", post(receive_webhook))
        .route("/stats", get(stats))
        .route("/stats/sessions", post(count_sessions))
        .route("/reset", post(reset))
        .route("/hang", post(hang))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(receiver)
}

#[tracing::instrument(skip_all)]
async fn receive_webhook(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DeliveryAck>, ReceiverError> {
    // The raw bytes, not a parsed body: the signature covers exactly what was sent.
    match receiver.receive(&headers, &body) {
        Ok(ack) => {
            tracing::debug!(
                records = ack.records,
                duplicates = ack.duplicates,
                "Delivery counted."
            );
            Ok(Json(ack))
        }
        Err(e) => {
            tracing::warn!(error = %e, "Delivery refused.");
            Err(e)
        }
    }
}

async fn stats(State(receiver): State<Receiver>) -> Json<ReceiverStats> {
    Json(receiver.stats())
}

async fn count_sessions(
    State(receiver): State<Receiver>,
    Json(req): Json<SessionCountRequest>,
) -> Json<SessionCount> {
    Json(SessionCount {
        distinct_records: receiver.count_sessions(&req.session_ids),
    })
}

/// Holds the request until the receiver stops (the client's timeout ends it first).
async fn hang(State(receiver): State<Receiver>) -> StatusCode {
    receiver.tally().stats.hung_requests += 1;
    receiver.stopping.cancelled().await;
    StatusCode::SERVICE_UNAVAILABLE
}

async fn reset(State(receiver): State<Receiver>) -> StatusCode {
    receiver.reset();
    tracing::info!("Counters reset.");
    StatusCode::NO_CONTENT
}

/// Serves the receiver on `listener` until `shutdown` completes, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    receiver: Receiver,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = receiver.stopping.clone();
    axum::serve(listener, router(receiver))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await
}
