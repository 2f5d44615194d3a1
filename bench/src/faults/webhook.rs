//! The harness's partner webhook: records every record it accepts, in arrival order, and
//! answers as the fault says, per tenant: 200, 500, a hang, or 401.
//!
//! Each bridge replica is given its own URL (`/hook/<replica>/<tenant>`), so the harness
//! knows which replica has a delivery in flight before it kills one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;
use locus_wire::SessionId;
use locus_wire::webhook::{self, SigningKey, WebhookDelivery};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How the webhook answers a tenant's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200: the records count as delivered.
    Accept,
    /// 500: retriable.
    Fail,
    /// Never answers (the bridge's request timeout ends the attempt).
    Hang,
    /// 401: what a partner answers while its credentials are rotated.
    Unauthorized,
}

/// One record the webhook accepted (a 200 answer).
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Its id.
    pub record_id: Uuid,
    /// Its session.
    pub session_id: SessionId,
    /// Its batch id and index, which carry the device's sequence number.
    pub batch_id: String,
    /// Index in the batch.
    pub batch_index: u32,
    /// Latitude (the harness checks the body is the one acknowledged).
    pub lat: f64,
    /// Tenant.
    pub tenant: String,
    /// From ingest's `received_at` to arrival here, in ms.
    pub e2e_ms: f64,
}

#[derive(Debug, Default)]
struct Log {
    arrivals: Vec<Arrival>,
    answers: HashMap<u16, u64>,
    bad_signatures: u64,
    in_flight: HashMap<String, u64>,
    last_request: Option<Instant>,
}

#[derive(Debug)]
struct Shared {
    secret: SigningKey,
    delay: Duration,
    modes: Mutex<HashMap<String, Mode>>,
    log: Mutex<Log>,
}

/// A running webhook.
#[derive(Debug, Clone)]
pub struct Webhook {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Arc<JoinHandle<()>>,
}

impl Webhook {
    /// Serves on a free loopback port; every accepted delivery takes `delay` first, so a
    /// delivery is in flight long enough to be cut by a kill.
    pub async fn start(secret: &str, delay: Duration) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            secret: SigningKey::from_stored(secret)?,
            delay,
            modes: Mutex::default(),
            log: Mutex::default(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/hook/{replica}/{tenant}", post(receive))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "The fault webhook stopped.");
            }
        });
        Ok(Self {
            shared,
            addr,
            task: Arc::new(task),
        })
    }

    /// The URL bridge replica `replica` delivers `tenant`'s records to.
    pub fn url(&self, replica: &str, tenant: &str) -> String {
        format!("http://{}/hook/{replica}/{tenant}", self.addr)
    }

    /// Sets how `tenant`'s deliveries are answered from now on.
    pub fn set_mode(&self, tenant: &str, mode: Mode) {
        lock(&self.shared.modes).insert(tenant.to_owned(), mode);
    }

    /// Deliveries of `replica` being answered right now.
    pub fn in_flight(&self, replica: &str) -> u64 {
        lock(&self.shared.log)
            .in_flight
            .get(replica)
            .copied()
            .unwrap_or(0)
    }

    /// Every record accepted so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.shared.log).arrivals.clone()
    }

    /// Answers given so far, by status (0: the request hung until the client gave up).
    pub fn answers(&self) -> HashMap<u16, u64> {
        lock(&self.shared.log).answers.clone()
    }

    /// Requests whose signature did not verify.
    pub fn bad_signatures(&self) -> u64 {
        lock(&self.shared.log).bad_signatures
    }

    /// When the last request came in.
    pub fn last_request(&self) -> Option<Instant> {
        lock(&self.shared.log).last_request
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        // The last clone stops the server.
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a request in flight for its replica while alive.
struct InFlight<'a> {
    shared: &'a Shared,
    replica: String,
}

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, replica: String) -> Self {
        let mut log = lock(&shared.log);
        *log.in_flight.entry(replica.clone()).or_default() += 1;
        log.last_request = Some(Instant::now());
        drop(log);
        Self { shared, replica }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // Also runs when the bridge gives up on a hung request and the handler is dropped.
        let mut log = lock(&self.shared.log);
        if let Some(n) = log.in_flight.get_mut(&self.replica) {
            *n = n.saturating_sub(1);
        }
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path((replica, tenant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _in_flight = InFlight::enter(&shared, replica);
    let mode = lock(&shared.modes)
        .get(&tenant)
        .copied()
        .unwrap_or(Mode::Accept);
    let status = match mode {
        Mode::Accept => accept(&shared, &headers, &body).await,
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Unauthorized => StatusCode::UNAUTHORIZED,
        Mode::Hang => {
            // Until the bridge's request timeout drops the connection (and this future).
            *lock(&shared.log).answers.entry(0).or_default() += 1;
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
    };
    *lock(&shared.log)
        .answers
        .entry(status.as_u16())
        .or_default() += 1;
    status
}

async fn accept(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> StatusCode {
    let signed = webhook::verify_request(
        &shared.secret,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        body,
        Utc::now().timestamp(),
        300,
    )
    .is_ok();
    if !signed {
        lock(&shared.log).bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(delivery) = serde_json::from_slice::<WebhookDelivery>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    tokio::time::sleep(shared.delay).await;
    let now = Utc::now();
    let log = &mut *lock(&shared.log);
    for r in delivery.records {
        let e2e_ms = (now - r.received_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        log.arrivals.push(Arrival {
            record_id: r.record_id,
            session_id: r.session_id,
            batch_id: r.batch_id,
            batch_index: r.batch_index,
            lat: r.lat,
            tenant: r.tenant_id.to_string(),
            e2e_ms,
        });
    }
    StatusCode::OK
}
