//! The load generator against a stub ingest served in-process: it checks tokens (and their
//! lifetime), keeps a registry of tenants and devices behind the admin routes, refuses a
//! session of an unregistered device as ingest does (403 `device_not_registered`),
//! validates fixes with the real wire rules and answers 429 with `Retry-After` on first
//! attempts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use locus_bench::client::{IngestClient, http_client};
use locus_bench::driver::plan::{LoadPlan, run_load};
use locus_bench::register::{self, Registration};
use locus_wire::api::{
    BatchResponse, Fix, FixLimits, LocationBatch, SessionStatus, SessionView, StopReason,
};
use locus_wire::{DeviceId, SessionId, TenantId};
use secrecy::SecretString;
use serde::Deserialize;

const SECRET: &str = "stub-secret";

/// Ingest's default `LOCUS_JWT_MAX_LIFETIME_SECS`.
const MAX_LIFETIME_SECS: i64 = 86_400;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    tenant: Option<String>,
    role: String,
    iat: i64,
    exp: i64,
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
    /// Tenants created through `POST /v1/tenants`.
    tenants: HashSet<String>,
    /// (tenant, device) registered through `POST /v1/devices`.
    devices: HashSet<(String, String)>,
    admin_in_flight: u64,
    admin_max_in_flight: u64,
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
    // Ingest refuses a token living longer than its maximum, whatever the role.
    (data.claims.exp - data.claims.iat <= MAX_LIFETIME_SECS).then_some(data.claims)
}

/// A device's claims: its tenant and id.
fn device(headers: &HeaderMap) -> Option<(String, String)> {
    let c = claims(headers)?;
    (c.role == "device").then_some((c.tenant?, c.sub))
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"error": code, "message": code})),
    )
        .into_response()
}

/// Counts an admin request in flight while it is held a moment (so concurrency shows).
async fn admin_call<T>(stub: &Shared, f: impl FnOnce(&mut Stub) -> T) -> T {
    {
        let mut s = stub.lock().unwrap();
        s.admin_in_flight += 1;
        s.admin_max_in_flight = s.admin_max_in_flight.max(s.admin_in_flight);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut s = stub.lock().unwrap();
    s.admin_in_flight -= 1;
    f(&mut s)
}

async fn create_tenant(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let Some(c) = claims(&headers) else {
        return unauthorized();
    };
    if c.role != "platform_admin" || c.tenant.is_some() {
        return error(StatusCode::FORBIDDEN, "forbidden");
    }
    let tenant = body["tenant_id"].as_str().unwrap().to_owned();
    admin_call(&stub, |s| {
        if s.tenants.insert(tenant.clone()) {
            (
                StatusCode::CREATED,
                Json(serde_json::json!({"tenant_id": tenant, "name": null})),
            )
                .into_response()
        } else {
            error(StatusCode::CONFLICT, "tenant_exists")
        }
    })
    .await
}

async fn create_device(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let Some(c) = claims(&headers) else {
        return unauthorized();
    };
    let (true, Some(tenant)) = (c.role == "tenant_admin", c.tenant) else {
        return error(StatusCode::FORBIDDEN, "forbidden");
    };
    let device = body["device_id"].as_str().unwrap().to_owned();
    admin_call(&stub, |s| {
        // The ids a test wants refused.
        if device.starts_with("refused-") {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_device");
        }
        if !s.tenants.contains(&tenant) {
            return error(StatusCode::NOT_FOUND, "tenant_not_found");
        }
        if s.devices.insert((tenant.clone(), device.clone())) {
            (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "tenant_id": tenant, "device_id": device, "credential": "lcd_x"
                })),
            )
                .into_response()
        } else {
            error(StatusCode::CONFLICT, "device_exists")
        }
    })
    .await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({"error": "unauthorized", "message": "bad token"})),
    )
        .into_response()
}

async fn start(State(stub): State<Shared>, headers: HeaderMap) -> Response {
    let Some((tenant, device)) = device(&headers) else {
        return unauthorized();
    };
    if !stub
        .lock()
        .unwrap()
        .devices
        .contains(&(tenant.clone(), device.clone()))
    {
        return error(StatusCode::FORBIDDEN, "device_not_registered");
    }
    let now = Utc::now();
    let view = SessionView {
        session_id: SessionId::new(),
        tenant_id: TenantId::parse(tenant).unwrap(),
        device_id: DeviceId::parse(device).unwrap(),
        status: SessionStatus::Active,
        stop_reason: None,
        started_at: now,
        expires_at: now + chrono::Duration::minutes(10),
        stopped_at: None,
        fix_count: 0,
        last_fix_at: None,
        last_position: None,
        stats: None,
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
    let Some((_, device_id)) = device(&headers) else {
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
    assert_eq!(s.sessions[&session].view.device_id.as_str(), device_id);
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
    if device(&headers).is_none() {
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
        .route("/v1/tenants", post(create_tenant))
        .route("/v1/devices", post(create_device))
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
    assert_eq!(report.registration.tenants_created, 2);
    assert_eq!(report.registration.devices_created, 6);
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
async fn with_a_wrong_jwt_secret_the_registration_fails_and_says_why_before_any_session() {
    let (url, stub) = spawn_stub().await;
    let plan = plan(&url, "wrong-secret");

    let err = run_load(&plan).await.unwrap_err();

    let text = format!("{err:#}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("unauthorized"), "{text}");
    assert!(text.contains("LOCUS_DEV_MODE=true"), "{text}");
    let s = stub.lock().unwrap();
    assert!(s.tenants.is_empty() && s.sessions.is_empty());
}

#[tokio::test]
async fn a_second_run_of_the_same_plan_finds_its_devices_registered_and_runs() {
    let (url, stub) = spawn_stub().await;
    let plan = plan(&url, SECRET);
    run_load(&plan).await.unwrap();

    let again = run_load(&plan).await.unwrap();

    assert_eq!(again.errors, Vec::<String>::new());
    assert_eq!(again.registration.devices_existing, 6);
    assert_eq!(again.registration.devices_created, 0);
    assert_eq!(again.registration.tenants_existing, 2);
    assert_eq!(again.accepted, plan.total_fixes());
    assert_eq!(stub.lock().unwrap().devices.len(), 6);
}

/// 512 devices of two tenants, as `(tenant, device)`.
fn many_devices() -> Vec<(TenantId, DeviceId)> {
    (0..512)
        .map(|n| {
            let tenant = if n % 2 == 0 { "acme" } else { "globex" };
            (
                TenantId::parse(tenant).unwrap(),
                DeviceId::parse(format!("reg-{n}")).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_512_devices_keeps_32_requests_in_flight_and_a_rerun_finds_them_there() {
    let (url, stub) = spawn_stub().await;
    let http = http_client(Duration::from_secs(10), 64).unwrap();
    // The caller's client sends once and caps nothing: registration brings its own.
    let ingest = IngestClient::new(http, url);
    let secret = SecretString::from(SECRET);
    let devices = many_devices();

    let first = register::register(&ingest, &secret, &devices)
        .await
        .unwrap();
    let again = register::register(&ingest, &secret, &devices)
        .await
        .unwrap();

    println!(
        "first: {}; again: {}; max in flight {}",
        first.summary(),
        again.summary(),
        stub.lock().unwrap().admin_max_in_flight
    );
    assert_eq!(
        (
            first.tenants_created,
            first.devices_created,
            first.devices_existing
        ),
        (2, 512, 0)
    );
    assert_eq!(
        again,
        Registration {
            secs: again.secs,
            tenants_existing: 2,
            devices_existing: 512,
            ..Registration::default()
        }
    );
    let s = stub.lock().unwrap();
    assert_eq!(s.devices.len(), 512);
    assert!(
        s.admin_max_in_flight <= register::IN_FLIGHT as u64 && s.admin_max_in_flight >= 16,
        "admin requests in flight at most: {}",
        s.admin_max_in_flight
    );
    // 512 requests of 5 ms each, 32 at a time, is ~80 ms; one after another ~2.6 s.
    assert!(first.secs < 2.0, "{}", first.summary());
}

#[tokio::test]
async fn a_refused_device_fails_the_registration_with_how_many_and_the_first_reason() {
    let (url, stub) = spawn_stub().await;
    let http = http_client(Duration::from_secs(10), 64).unwrap();
    let ingest = IngestClient::new(http, url);
    let secret = SecretString::from(SECRET);
    let tenant = TenantId::parse("acme").unwrap();
    let devices: Vec<_> = ["ok-1", "refused-1", "ok-2", "refused-2"]
        .into_iter()
        .map(|d| (tenant.clone(), DeviceId::parse(d).unwrap()))
        .collect();

    let err = register::register(&ingest, &secret, &devices)
        .await
        .unwrap_err();

    let text = format!("{err:#}");
    assert!(
        text.contains("2 of 4 devices could not be registered"),
        "{text}"
    );
    assert!(text.contains("422"), "{text}");
    assert!(text.contains("invalid_device"), "{text}");
    // The others were still tried: a rerun has less to do.
    assert_eq!(stub.lock().unwrap().devices.len(), 2);
}
