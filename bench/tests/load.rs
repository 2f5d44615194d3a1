//! The load generator against a stub ingest served in-process: it checks tokens, validates
//! fixes with the real wire rules and answers 429 with `Retry-After` on first attempts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use locus_bench::driver::plan::{LoadPlan, run_load};
use locus_wire::api::{
    BatchResponse, Fix, FixLimits, LocationBatch, SessionStatus, SessionView, StopReason,
};
use locus_wire::{DeviceId, SessionId, TenantId};
use secrecy::SecretString;
use serde::Deserialize;

const SECRET: &str = "stub-secret";

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
    role: String,
}

#[derive(Debug)]
struct StubSession {
    view: SessionView,
    last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct Stub {
    sessions: HashMap<SessionId, StubSession>,
    /// Batch ids that got a 429 on their first attempt.
    throttled: HashSet<String>,
    /// Batch ids stored.
    stored: HashSet<String>,
    stored_twice: u64,
    fixes: u64,
    out_of_order: u64,
    in_flight: u64,
    max_in_flight: u64,
}

type Shared = Arc<Mutex<Stub>>;

fn claims(headers: &HeaderMap) -> Option<Claims> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let mut v = Validation::new(Algorithm::HS256);
    v.set_issuer(&["locus"]);
    v.set_audience(&["locus"]);
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(SECRET.as_bytes()), &v)
            .ok()?;
    (data.claims.role == "device").then_some(data.claims)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "unauthorized", "message": "bad token"})),
    )
        .into_response()
}

async fn start(State(stub): State<Shared>, headers: HeaderMap) -> Response {
    let Some(c) = claims(&headers) else {
        return unauthorized();
    };
    let now = Utc::now();
    let view = SessionView {
        session_id: SessionId::new(),
        tenant_id: TenantId::parse(c.tenant).unwrap(),
        device_id: DeviceId::parse(c.sub).unwrap(),
        status: SessionStatus::Active,
        stop_reason: None,
        started_at: now,
        expires_at: now + chrono::Duration::minutes(10),
        stopped_at: None,
        fix_count: 0,
        last_fix_at: None,
        last_position: None,
    };
    stub.lock().unwrap().sessions.insert(
        view.session_id,
        StubSession {
            view: view.clone(),
            last_at: None,
        },
    );
    (StatusCode::CREATED, Json(view)).into_response()
}

async fn locations(
    State(stub): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(c) = claims(&headers) else {
        return unauthorized();
    };
    {
        let mut s = stub.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
    }
    // Hold the request a moment so concurrent requests overlap and the cap is visible.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let batch: LocationBatch = serde_json::from_slice(&body).unwrap();
    let batch_id = batch.batch_id.clone().unwrap();
    let mut s = stub.lock().unwrap();
    s.in_flight -= 1;
    if s.throttled.insert(batch_id.clone()) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            "slow down",
        )
            .into_response();
    }
    let session = SessionId::parse(&id).unwrap();
    let now = Utc::now();
    let mut accepted = 0;
    let mut rejected = Vec::new();
    let mut last_at = s.sessions[&session].last_at;
    assert_eq!(s.sessions[&session].view.device_id.as_str(), c.sub);
    for (i, raw) in batch.fixes.iter().enumerate() {
        match Fix::parse(i as u32, raw, now, &FixLimits::default()) {
            Ok(fix) => {
                if last_at.is_some_and(|l| fix.recorded_at <= l) {
                    s.out_of_order += 1;
                }
                last_at = Some(fix.recorded_at);
                accepted += 1;
            }
            Err(r) => rejected.push(r),
        }
    }
    s.sessions.get_mut(&session).unwrap().last_at = last_at;
    if !s.stored.insert(batch_id.clone()) {
        s.stored_twice += 1;
    }
    s.fixes += u64::from(accepted);
    let answer = BatchResponse {
        batch_id,
        accepted,
        rejected,
        duplicate: false,
    };
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn stop(State(stub): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if claims(&headers).is_none() {
        return unauthorized();
    }
    let mut s = stub.lock().unwrap();
    let session = s.sessions.get_mut(&SessionId::parse(&id).unwrap()).unwrap();
    session.view.status = SessionStatus::Stopped;
    session.view.stop_reason = Some(StopReason::Requested);
    (StatusCode::OK, Json(session.view.clone())).into_response()
}

async fn spawn_stub() -> (String, Shared) {
    let stub = Shared::default();
    let app = Router::new()
        .route("/v1/sessions", post(start))
        .route("/v1/sessions/{id}/locations", post(locations))
        .route("/v1/sessions/{id}/stop", post(stop))
        .route("/readyz", get(|| async { StatusCode::OK }))
        .with_state(Arc::clone(&stub));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, stub)
}

fn plan(url: &str, secret: &str) -> LoadPlan {
    let tenants = vec![
        TenantId::parse("acme").unwrap(),
        TenantId::parse("globex").unwrap(),
    ];
    let mut plan = LoadPlan::new(url, SecretString::from(secret), tenants);
    plan.devices_per_tenant = 3;
    plan.batches_per_device = 4;
    plan.batch_size = 25;
    plan.concurrency = 3;
    plan
}

#[tokio::test]
async fn a_load_run_posts_every_fix_once_and_honours_retry_after() {
    let (url, stub) = spawn_stub().await;
    let plan = plan(&url, SECRET);

    let report = run_load(&plan).await.unwrap();

    assert_eq!(report.errors, Vec::<String>::new());
    assert_eq!(report.sessions.len(), 6);
    assert_eq!(report.accepted, plan.total_fixes());
    assert_eq!(report.accepted, 6 * 4 * 25);
    assert_eq!(report.rejected, 0);
    assert_eq!(report.failed_batches, 0);
    assert_eq!(report.failed_stops, 0);
    assert_eq!(report.batches_answered, 24);
    assert_eq!(
        report.retries, 24,
        "every batch was throttled once and retried once"
    );
    assert_eq!(report.batch_latency_us.len(), 48, "every attempt is timed");
    let s = stub.lock().unwrap();
    assert_eq!(s.fixes, plan.total_fixes());
    assert_eq!(s.stored.len(), 24);
    assert_eq!(s.stored_twice, 0);
    assert_eq!(
        s.out_of_order, 0,
        "each device's fixes arrive in time order"
    );
    assert!(
        s.max_in_flight <= 3,
        "at most `concurrency` requests in flight: {}",
        s.max_in_flight
    );
    assert!(
        s.sessions
            .values()
            .all(|x| x.view.status == SessionStatus::Stopped)
    );
    let devices: HashSet<_> = s
        .sessions
        .values()
        .map(|x| x.view.device_id.clone())
        .collect();
    assert_eq!(devices.len(), 6);
    assert!(
        devices
            .iter()
            .all(|d| d.as_str().starts_with(&plan.device_prefix()))
    );
}

#[tokio::test]
async fn with_a_wrong_jwt_secret_every_session_fails_and_the_report_says_why() {
    let (url, stub) = spawn_stub().await;
    let plan = plan(&url, "wrong-secret");

    let report = run_load(&plan).await.unwrap();

    assert_eq!(report.accepted, 0);
    assert_eq!(report.failed_sessions, 6);
    assert_eq!(report.failed_batches, plan.total_batches());
    assert!(report.errors[0].contains("401"), "{:?}", report.errors);
    assert!(
        report.errors[0].contains("unauthorized"),
        "{:?}",
        report.errors
    );
    assert!(stub.lock().unwrap().sessions.is_empty());
}
