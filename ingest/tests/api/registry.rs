//! Onboarding through the real application: a platform admin creates a tenant, its admin
//! registers a device, the device exchanges its credential for a token and records, and a
//! revocation stops it. Also the walls around it: roles, tenants, ids, and what is never
//! shown twice.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, batch, spawn_app, spawn_in};

fn platform_admin() -> String {
    // Platform admins belong to no tenant; today's dev tokens carry a tenant claim anyway.
    kit::token(
        kit::JWT_SECRET,
        "platform",
        "ops@locus",
        "platform_admin",
        600,
    )
}

fn tenant_admin(tenant: &str) -> String {
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    )
}

async fn post(app: &TestApp, token: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.post(app.url(path));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, String) {
    let r = app.get(token, path).await;
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Creates `tenant` as a platform admin.
async fn create_tenant(app: &TestApp, tenant: &str) {
    let (status, body) = post(
        app,
        Some(&platform_admin()),
        "/v1/tenants",
        Some(json!({"tenant_id": tenant, "name": format!("{tenant} Inc.")})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

/// Registers `device` as `tenant`'s admin; returns its first credential.
async fn register(app: &TestApp, tenant: &str, device: &str) -> String {
    let (status, body) = post(
        app,
        Some(&tenant_admin(tenant)),
        "/v1/devices",
        Some(json!({"device_id": device, "name": "Van 1"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["credential"].as_str().unwrap().to_owned()
}

/// Exchanges `credential` at /v1/auth/token: (status, body).
async fn exchange(app: &TestApp, credential: &str) -> (u16, Value) {
    post(
        app,
        None,
        "/v1/auth/token",
        Some(json!({"credential": credential})),
    )
    .await
}

/// A device token for `credential`, which must be accepted.
async fn device_token(app: &TestApp, credential: &str) -> String {
    let (status, body) = exchange(app, credential).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn assert_invalid_credential(status: u16, body: &Value) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_credential", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("tenant admin"),
        "the message says whom to ask: {body}"
    );
}

/// (action, target_kind, target_id, actor) of `tenant`'s audit rows, read as the owner
/// (the service role sees no rows outside a tenant scope).
async fn audit(scope: &Scope, tenant: &str) -> Vec<(String, String, String, String)> {
    let owner = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT action, target_kind, target_id, actor FROM audit_log WHERE tenant_id = $1 \
         ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(&owner)
    .await
    .unwrap();
    owner.close().await;
    rows
}

#[tokio::test]
async fn a_new_tenants_device_gets_a_token_records_and_is_refused_at_once_when_revoked() {
    let (app, scope) = spawn_app().await;
    create_tenant(&app, "acme").await;
    let again = post(
        &app,
        Some(&platform_admin()),
        "/v1/tenants",
        Some(json!({"tenant_id": "acme"})),
    )
    .await;
    assert_eq!(
        (again.0, again.1["error"].as_str()),
        (409, Some("tenant_exists"))
    );
    let (status, tenant) = get(&app, &platform_admin(), "/v1/tenants/acme").await;
    assert_eq!(status, 200, "{tenant}");
    assert!(tenant.contains("acme Inc."), "{tenant}");

    let admin = tenant_admin("acme");
    let r = app
        .client
        .post(app.url("/v1/devices"))
        .bearer_auth(&admin)
        .json(&json!({"device_id": "van-1", "name": "Van 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["location"], "/v1/devices/van-1");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let registered: Value = r.json().await.unwrap();
    assert_eq!(registered["device_id"], "van-1");
    assert_eq!(registered["tenant_id"], "acme");
    let credential = registered["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("lcd_"), "{registered}");
    let dup = post(
        &app,
        Some(&admin),
        "/v1/devices",
        Some(json!({"device_id": "van-1"})),
    )
    .await;
    assert_eq!(
        (dup.0, dup.1["error"].as_str()),
        (409, Some("device_exists"))
    );

    // The credential buys a device token, signed with a key the JWKS publishes.
    let (status, answer) = exchange(&app, &credential).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["expires_in"], 900);
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    let jwks: Value = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"]),
        "the token's kid {} is not in {jwks}",
        header["kid"]
    );

    // The token records.
    let session = app.session_id(&token).await;
    let posted = app.post_fixes(&token, &session, &batch("b1", 3)).await;
    assert_eq!(posted.status(), 202);

    // The credential is never shown again.
    for path in ["/v1/devices/van-1", "/v1/devices"] {
        let (status, body) = get(&app, &admin, path).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("van-1"), "{body}");
        assert!(
            !body.contains(&credential),
            "{path} shows the credential: {body}"
        );
        assert!(
            !body.contains("\"credential"),
            "{path} names a credential: {body}"
        );
    }

    let (status, revoked) = post(&app, Some(&admin), "/v1/devices/van-1/revoke", None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, body) = exchange(&app, &credential).await;
    assert_invalid_credential(status, &body);
    // The same replica refuses the device's token at once, too.
    let after = app.post_fixes(&token, &session, &batch("b2", 1)).await;
    assert_eq!(after.status(), 401);

    let actions: Vec<(String, String)> = audit(&scope, "acme")
        .await
        .into_iter()
        .map(|(action, kind, _, actor)| (action, format!("{kind} by {actor}")))
        .collect();
    assert_eq!(
        actions,
        [
            ("tenant.created".into(), "tenant by ops@locus".into()),
            ("device.registered".into(), "device by admin@acme".into()),
            (
                "credential.issued".into(),
                "credential by admin@acme".into()
            ),
            ("device.revoked".into(), "device by admin@acme".into()),
        ]
    );
}

#[tokio::test]
async fn a_second_credential_works_beside_the_first_and_revoking_the_device_refuses_both() {
    let (app, scope) = spawn_app().await;
    create_tenant(&app, "acme").await;
    let first = register(&app, "acme", "van-1").await;
    let admin = tenant_admin("acme");
    let (status, issued) = post(&app, Some(&admin), "/v1/devices/van-1/credentials", None).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(issued["device_id"], "van-1");
    let second = issued["credential"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    device_token(&app, &first).await;
    device_token(&app, &second).await;

    let (status, _) = post(&app, Some(&admin), "/v1/devices/van-1/revoke", None).await;
    assert_eq!(status, 200);
    for credential in [&first, &second] {
        let (status, body) = exchange(&app, credential).await;
        assert_invalid_credential(status, &body);
    }
    // A revoked device takes no new credential.
    let (status, body) = post(&app, Some(&admin), "/v1/devices/van-1/credentials", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("device_revoked"))
    );
    // Revoking again changes nothing and records nothing.
    let (status, _) = post(&app, Some(&admin), "/v1/devices/van-1/revoke", None).await;
    assert_eq!(status, 200);
    let kinds: Vec<String> = audit(&scope, "acme")
        .await
        .into_iter()
        .map(|(action, ..)| action)
        .collect();
    assert_eq!(
        kinds,
        [
            "tenant.created",
            "device.registered",
            "credential.issued",
            "credential.issued",
            "device.revoked"
        ]
    );
}

#[tokio::test]
async fn another_tenants_admin_sees_no_byte_of_a_device_and_cannot_revoke_it() {
    let (app, _scope) = spawn_app().await;
    create_tenant(&app, "acme").await;
    create_tenant(&app, "globex").await;
    let credential = register(&app, "acme", "van-1").await;
    let intruder = tenant_admin("globex");
    for (method, path) in [
        ("GET", "/v1/devices/van-1"),
        ("POST", "/v1/devices/van-1/revoke"),
        ("POST", "/v1/devices/van-1/credentials"),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(&intruder)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body.contains("device_not_found"), "{body}");
        for secret in ["Van 1", "acme", &credential] {
            assert!(
                !body.contains(secret),
                "{method} {path} shows {secret}: {body}"
            );
        }
    }
    let (status, list) = get(&app, &intruder, "/v1/devices").await;
    assert_eq!(status, 200);
    assert!(!list.contains("van-1"), "{list}");
    // acme's device is untouched.
    device_token(&app, &credential).await;
}

#[tokio::test]
async fn each_role_is_kept_to_its_routes() {
    let (app, _scope) = spawn_app().await;
    create_tenant(&app, "acme").await;
    let credential = register(&app, "acme", "van-1").await;
    let device = device_token(&app, &credential).await;
    let admin = tenant_admin("acme");
    let platform = platform_admin();
    let cases: [(&str, &str, &str, &str); 9] = [
        ("device", &device, "POST", "/v1/devices"),
        ("device", &device, "GET", "/v1/devices"),
        ("device", &device, "GET", "/v1/devices/van-1"),
        ("device", &device, "POST", "/v1/devices/van-1/revoke"),
        ("device", &device, "POST", "/v1/devices/van-1/credentials"),
        ("device", &device, "POST", "/v1/tenants"),
        ("tenant_admin", &admin, "POST", "/v1/tenants"),
        ("tenant_admin", &admin, "GET", "/v1/tenants/acme"),
        ("platform_admin", &platform, "POST", "/v1/devices"),
    ];
    for (role, token, method, path) in cases {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(path))
            .bearer_auth(token)
            .json(&json!({"tenant_id": "evil", "device_id": "evil"}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 403, "{role} {method} {path}: {body}");
        assert_eq!(body["error"], "forbidden", "{body}");
    }
    let (status, _) = get(&app, &admin, "/v1/tenants").await;
    assert_eq!(status, 403);
    // Nothing was created by the refused calls.
    let (_, tenants) = get(&app, &platform, "/v1/tenants").await;
    assert!(!tenants.contains("evil"), "{tenants}");
}

#[tokio::test]
async fn bad_ids_bodies_and_cursors_are_400s_that_say_what_to_fix() {
    let (app, _scope) = spawn_app().await;
    let platform = platform_admin();
    let (status, body) = post(
        &app,
        Some(&platform),
        "/v1/tenants",
        Some(json!({"tenant_id": "acme corp"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_id")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("may only contain"),
        "{body}"
    );
    create_tenant(&app, "acme").await;
    let admin = tenant_admin("acme");
    for bad in [
        json!({"device_id": ""}),
        json!({"device_id": "x".repeat(129)}),
    ] {
        let (status, body) = post(&app, Some(&admin), "/v1/devices", Some(bad)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_id")),
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("1 to 128"),
            "{body}"
        );
    }
    let (status, body) = post(
        &app,
        Some(&admin),
        "/v1/devices",
        Some(json!({"device_id": "v", "colour": "red"})),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
    let (status, body) = get(&app, &admin, "/v1/devices/a%20b").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_id"), "{body}");
    let (status, body) = get(&app, &admin, "/v1/devices?cursor=zz").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_cursor"), "{body}");

    // Three devices, two pages.
    for d in ["c", "a", "b"] {
        register(&app, "acme", d).await;
    }
    let (_, first) = get(&app, &admin, "/v1/devices?limit=2").await;
    let first: Value = serde_json::from_str(&first).unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["a", "b"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = get(
        &app,
        &admin,
        &format!("/v1/devices?limit=2&cursor={cursor}"),
    )
    .await;
    let second: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(ids(&second), ["c"]);
    assert!(second.get("next_cursor").is_none(), "{second}");
}

#[tokio::test]
async fn a_malformed_or_unknown_credential_gets_the_same_401_as_a_revoked_one() {
    let (app, _scope) = spawn_app().await;
    let (unknown, _) = locus_identity::credential::generate();
    for credential in ["", "lcd_short", "Bearer xyz", unknown.as_str()] {
        let (status, body) = exchange(&app, credential).await;
        assert_invalid_credential(status, &body);
    }
    let (status, body) = post(&app, None, "/v1/auth/token", Some(json!({}))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body")),
        "{body}"
    );
}

// The other replica learns of the revocation only from its revocation refresher (auth.rs),
// which reloads revoked devices from PostgreSQL every LOCUS_REVOCATION_REFRESH_MS.
#[tokio::test]
async fn a_token_issued_before_the_revocation_stops_working_on_every_replica_within_the_refresh() {
    let scope = Scope::new().await;
    let refresh = Duration::from_millis(300);
    // Both replicas sign and verify with one key, as in production.
    let key = std::env::temp_dir().join(format!("{}.pem", kit::unique("locus-key-")));
    std::fs::write(&key, locus_identity::TokenSigner::generate().to_pkcs8_pem()).unwrap();
    let set = |c: &mut locus_ingest::Config| {
        c.jwt.revocation_refresh_ms = 300;
        c.jwt.signing_key_file = Some(key.clone());
    };
    let a = spawn_in(&scope, &[Role::Api, Role::Forwarder], set).await;
    let b = spawn_in(&scope, &[Role::Api], set).await;
    std::fs::remove_file(&key).unwrap();
    create_tenant(&a, "acme").await;
    let credential = register(&a, "acme", "van-1").await;
    let token = device_token(&a, &credential).await;
    let session = b.session_id(&token).await;
    assert_eq!(
        b.post_fixes(&token, &session, &batch("b1", 1))
            .await
            .status(),
        202
    );

    let (status, _) = post(
        &a,
        Some(&tenant_admin("acme")),
        "/v1/devices/van-1/revoke",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let revoked = Instant::now();
    let refused = kit::eventually(refresh * 10, || async {
        let status = b
            .post_fixes(&token, &session, &batch("late", 1))
            .await
            .status();
        (status == 401).then_some(())
    })
    .await;
    let took = revoked.elapsed();
    assert!(
        refused.is_some(),
        "replica b still takes the revoked device's token"
    );
    // One refresh plus the poll's query, a request's round trip and the 50 ms polling
    // here; the margin is for a loaded test machine.
    eprintln!("replica b refused the revoked device's token after {took:?}");
    assert!(
        took < refresh + Duration::from_secs(1),
        "replica b refused it only after {took:?}"
    );
}
