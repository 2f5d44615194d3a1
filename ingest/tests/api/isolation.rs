//! The tenant walls, walked over every route of the OpenAPI document (THE route list: a
//! route cannot be served without being in it), so a new route cannot be forgotten:
//!
//! - every route that takes an id, called with a second tenant's credentials of each role
//!   it takes and the first tenant's ids, answers exactly as it does for ids that do not
//!   exist (status and body, the id aside), and changes nothing of the first tenant;
//! - every route refuses (403) a valid token of each role it does not declare;
//! - docs/security.md lists every route with its roles.

use std::collections::BTreeSet;

use locus_ingest::config::Role;
use locus_testkit as kit;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, batch, spawn_in};

/// Tokens of each role, for one tenant (partners: one granted only by that tenant).
struct Credentials {
    tenant_admin: String,
    device: String,
    partner: String,
    platform_admin: String,
}

impl Credentials {
    fn of(&self, role: &str) -> &str {
        match role {
            "tenant_admin" => &self.tenant_admin,
            "device" => &self.device,
            "partner" => &self.partner,
            "platform_admin" => &self.platform_admin,
            other => panic!("a route declares the unknown role {other:?}"),
        }
    }
}

/// The ids a path parameter can take: acme's real ones, or ones that exist nowhere.
struct Ids {
    session: String,
    device: String,
    tenant: String,
    partner: String,
    geofence: String,
}

impl Ids {
    fn missing() -> Self {
        Ids {
            session: uuid::Uuid::new_v4().to_string(),
            device: kit::unique("nodevice-"),
            tenant: kit::unique("notenant-"),
            partner: kit::unique("nopartner-"),
            geofence: kit::unique("nofence-"),
        }
    }

    /// `path` with each `{param}` replaced by the id of its kind.
    fn fill(&self, path: &str) -> String {
        let mut out = path.to_owned();
        for (names, value) in [
            (&["{id}", "{session_id}"][..], &self.session),
            (&["{device_id}"][..], &self.device),
            (&["{tenant_id}"][..], &self.tenant),
            (&["{partner_id}"][..], &self.partner),
            (&["{geofence_id}"][..], &self.geofence),
        ] {
            for name in names {
                out = out.replace(name, value);
            }
        }
        assert!(
            !out.contains('{'),
            "{path}: a path parameter isolation.rs does not know; teach Ids about it"
        );
        out
    }

    /// `text` with every id of these replaced by its kind's name, to compare two answers.
    fn mask(&self, text: &str) -> String {
        text.replace(&self.session, "<session>")
            .replace(&self.device, "<device>")
            // Before the tenant: a fence id holds its tenant's (`acme-depot`).
            .replace(&self.geofence, "<geofence>")
            .replace(&self.tenant, "<tenant>")
            .replace(&self.partner, "<partner>")
    }
}

/// A body the operation takes when everything but the foreign id is right, so the id is
/// what decides the answer. Every operation with a request body must be listed.
fn body_for(method: &Method, path: &str, operation: &Value) -> Option<Value> {
    let body = match (method.as_str(), path) {
        ("POST", "/v1/sessions/{id}/locations") => batch("isolation-probe", 2),
        ("POST", "/v1/sessions") => json!({}),
        ("POST", "/v1/sessions/{id}/stop") => json!({}),
        ("POST", "/v1/tenants") => json!({"tenant_id": kit::unique("probe-")}),
        ("POST", "/v1/devices") => json!({"device_id": kit::unique("probe-")}),
        ("POST", "/v1/partners") => json!({"partner_id": kit::unique("probe-")}),
        ("POST", "/v1/auth/token") => json!({"credential": "lcd_not-a-credential"}),
        // The client apps' formats (docs/clients.md): the routes refuse other roles before
        // reading the body, and take no id.
        ("POST", "/v1/clients/transistor") => {
            json!({"location": {"coords": {"latitude": 1, "longitude": 2}, "timestamp": "2026-01-01T00:00:00Z"}})
        }
        ("POST", "/v1/clients/osmand") => json!({}),
        ("POST", "/v1/clients/owntracks") => {
            json!({"_type": "location", "lat": 1, "lon": 2, "tst": 1})
        }
        ("POST", "/v1/clients/overland") => json!({"locations": []}),
        ("PUT", "/v1/tenants/{tenant_id}/limits") => json!({"fixes_per_sec": 1000}),
        ("PUT", "/v1/geofences/{geofence_id}") => {
            json!({"name": "Probe", "circle": {"lat": 52.52, "lon": 13.405, "radius_m": 50.0}})
        }
        ("POST", "/v1/sink/rotate-secret") => json!({"rollover_secs": 60}),
        ("PUT", "/v1/sink") => {
            json!({"url": "https://sink.example/hook", "secret": "whsec_0123456789abcdef0123456789abcdef"})
        }
        _ => {
            assert!(
                operation.get("requestBody").is_none(),
                "{method} {path} takes a body: give isolation.rs a valid one in body_for"
            );
            return None;
        }
    };
    Some(body)
}

/// An answer with its body's top-level `created_at` and `updated_at` left out.
fn without_times((status, text): (u16, String)) -> (u16, String) {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(mut body)) => {
            body.remove("created_at");
            body.remove("updated_at");
            (status, Value::Object(body).to_string())
        }
        _ => (status, text),
    }
}

/// Every operation of the served document: (method, path template, roles, operation).
async fn operations(app: &TestApp) -> Vec<(Method, String, Vec<String>, Value)> {
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            let roles = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["bearer"].as_array())
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            out.push((method, path.clone(), roles, operation.clone()));
        }
    }
    assert!(out.len() >= 5, "the document lists too few routes: {out:?}");
    out
}

async fn call(
    app: &TestApp,
    token: Option<&str>,
    method: &Method,
    url: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut request = app.client.request(method.clone(), app.url(url));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(b) = body {
        request = request.json(b);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Every row of acme in every tenant table, read as the owner: what "nothing changed" is
/// checked against. `last_seen_at` moves on a session start by acme's own device only.
async fn acme_rows(scope: &Scope) -> Vec<String> {
    let pool = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let mut rows = Vec::new();
    for (table, column) in [
        ("tenants", "id"),
        ("devices", "tenant_id"),
        ("device_credentials", "tenant_id"),
        ("partner_grants", "tenant_id"),
        ("sinks", "tenant_id"),
        ("audit_log", "tenant_id"),
        ("sessions", "tenant_id"),
        ("session_event_outbox", "tenant_id"),
        ("tenant_limits", "tenant_id"),
        ("geofences", "tenant_id"),
        ("geofence_states", "tenant_id"),
    ] {
        // The audit relay marks rows published meanwhile: not a change of acme's data.
        let json: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) - 'published_at' FROM {table} t WHERE {column} = 'acme' ORDER BY 1::text"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.extend(json.into_iter().map(|v| format!("{table}: {v}")));
    }
    pool.close().await;
    rows.sort();
    rows
}

/// A platform admin's dev token.
fn platform_admin() -> String {
    kit::token(kit::JWT_SECRET, "-", "ops@platform", "platform_admin", 600)
}

/// Sets up `tenant` through the admin API: its device (with a session), its admin, a
/// partner it granted, and a sink; returns its credentials and its ids.
async fn onboard(app: &TestApp, scope: &Scope, tenant: &str) -> (Credentials, Ids) {
    let admin = kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    );
    let platform = platform_admin();
    let partner = format!("{tenant}-partner");
    let device = format!("{tenant}-phone");
    let post = |token: String, path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let r = post(
        platform.clone(),
        "/v1/tenants",
        json!({"tenant_id": tenant}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create tenant: {}",
        r.text().await.unwrap()
    );
    let r = post(admin.clone(), "/v1/devices", json!({"device_id": device}))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        201,
        "register device: {}",
        r.text().await.unwrap()
    );
    let registered: Value = r.json().await.unwrap();
    let credential = registered["credential"]
        .as_str()
        .expect("a credential")
        .to_owned();
    let r = post(admin.clone(), "/v1/partners", json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a tenant admin cannot create partners");
    let r = post(
        platform.clone(),
        "/v1/partners",
        json!({"partner_id": partner}),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        201,
        "create partner: {}",
        r.text().await.unwrap()
    );
    let r = app
        .client
        .put(app.url(&format!("/v1/grants/{partner}")))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "grant: {}",
        r.text().await.unwrap()
    );
    let r = app
        .client
        .put(app.url("/v1/sink"))
        .bearer_auth(&admin)
        .json(&json!({"url": format!("https://{tenant}.example/hook"), "secret": "whsec_0123456789abcdef0123456789abcdef"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "sink: {}", r.text().await.unwrap());
    let geofence = format!("{tenant}-depot");
    let r = app
        .client
        .put(app.url(&format!("/v1/geofences/{geofence}")))
        .bearer_auth(&admin)
        .json(&json!({"name": format!("{tenant} depot"), "circle": {"lat": 52.52, "lon": 13.405, "radius_m": 200.0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "geofence: {}", r.text().await.unwrap());
    // The device's own token, the real way: its credential exchanged.
    let r = app
        .client
        .post(app.url("/v1/auth/token"))
        .json(&json!({"credential": credential}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "token exchange: {}",
        r.text().await.unwrap()
    );
    let device_token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let session = app.session_id(&device_token).await;
    let r = app
        .post_fixes(&device_token, &session, &batch("first", 2))
        .await;
    assert_eq!(r.status(), 202);
    let _ = scope;
    (
        Credentials {
            tenant_admin: admin,
            device: device_token,
            partner: kit::token(kit::JWT_SECRET, "-", &partner, "partner", 600),
            platform_admin: platform,
        },
        Ids {
            session,
            device,
            tenant: tenant.to_owned(),
            partner,
            geofence,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_taking_an_id_answers_a_second_tenant_as_if_the_id_did_not_exist() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let (_acme, acme_ids) = onboard(&app, &scope, "acme").await;
    let (globex, _) = onboard(&app, &scope, "globex").await;
    let before = acme_rows(&scope).await;
    let mut walked = BTreeSet::new();
    for (method, path, roles, operation) in operations(&app).await {
        if !path.contains('{') {
            continue;
        }
        // Partners are platform objects, granted by any tenant that wants to: a path whose
        // only id is a partner's names nothing of acme's (what such a call must not do to
        // acme's grants is checked with the rows at the end).
        let names_acme = [
            "{id}",
            "{session_id}",
            "{device_id}",
            "{tenant_id}",
            "{geofence_id}",
        ]
        .iter()
        .any(|p| path.contains(p));
        for role in &roles {
            // Platform admins see every tenant by design.
            if role == "platform_admin" {
                continue;
            }
            let token = globex.of(role);
            let body = body_for(&method, &path, &operation);
            let missing_ids = Ids::missing();
            let foreign = call(
                &app,
                Some(token),
                &method,
                &acme_ids.fill(&path),
                body.as_ref(),
            )
            .await;
            let missing = call(
                &app,
                Some(token),
                &method,
                &missing_ids.fill(&path),
                body.as_ref(),
            )
            .await;
            let context = format!("{method} {path} as globex's {role}");
            // A PUT of a fence id makes the caller's own fence of that id, whoever else has
            // one: both answers are 201 and differ only by their times (acme's fence is
            // checked untouched with the rows at the end). Both fences are removed again,
            // so the walk's other calls on the path find none of globex's.
            if method == Method::PUT && path == "/v1/geofences/{geofence_id}" {
                for ids in [&acme_ids, &missing_ids] {
                    call(&app, Some(token), &Method::DELETE, &ids.fill(&path), None).await;
                }
                let (foreign, missing) = (without_times(foreign), without_times(missing));
                assert_eq!(foreign.0, 201, "{context}: {}", foreign.1);
                assert_eq!(
                    acme_ids.mask(&foreign.1),
                    missing_ids.mask(&missing.1),
                    "{context}: acme's fence id is told apart from one that does not exist"
                );
                walked.insert(format!("{method} {path} {role}"));
                continue;
            }
            assert!(foreign.0 < 500, "{context}: {}: {}", foreign.0, foreign.1);
            if !names_acme {
                continue;
            }
            assert!(
                (400..500).contains(&foreign.0),
                "{context}: acme's ids answered {}: {}",
                foreign.0,
                foreign.1
            );
            assert_eq!(
                (foreign.0, acme_ids.mask(&foreign.1)),
                (missing.0, missing_ids.mask(&missing.1)),
                "{context}: acme's ids are told apart from ids that do not exist"
            );
            for secret in [&acme_ids.session, "acme-phone"] {
                if !acme_ids.fill(&path).contains(secret) {
                    assert!(!foreign.1.contains(secret), "{context}: leaked {secret}");
                }
            }
            walked.insert(format!("{method} {path} {role}"));
        }
    }
    assert!(
        walked.iter().any(|w| w.contains("/v1/devices/{device_id}")),
        "the device routes were not walked: {walked:?}"
    );
    assert_eq!(
        acme_rows(&scope).await,
        before,
        "a second tenant changed acme's rows"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_the_roles_it_does_not_declare() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let (acme, ids) = onboard(&app, &scope, "acme").await;
    let mut checked = 0;
    for (method, path, roles, operation) in operations(&app).await {
        if roles.is_empty() {
            continue; // no token needed (token exchange, JWKS)
        }
        for role in ["platform_admin", "tenant_admin", "device", "partner"] {
            if roles.iter().any(|r| r == role) {
                continue;
            }
            let body = body_for(&method, &path, &operation);
            let (status, text) = call(
                &app,
                Some(acme.of(role)),
                &method,
                &ids.fill(&path),
                body.as_ref(),
            )
            .await;
            assert_eq!(status, 403, "{method} {path} let a {role} through: {text}");
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} refusals checked");
    app.stop().await;
}

#[test]
fn security_md_lists_every_route_with_its_roles() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/security.md"))
        .expect("docs/security.md");
    let table = doc
        .split("<!-- routes:begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- routes:end -->").next())
        .expect("docs/security.md has the routes table between its markers");
    let listed: BTreeSet<String> = table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            format!("{} {} {}", cells[1], cells[2], cells[3])
        })
        .collect();
    let served: BTreeSet<String> = locus_ingest::routes::route_roles()
        .into_iter()
        .map(|(method, path, roles)| {
            let roles = if roles.is_empty() {
                "none (no token)".to_owned()
            } else {
                roles.join(", ")
            };
            format!("{method} {path} {roles}")
        })
        .collect();
    let rows: Vec<String> = served
        .iter()
        .map(|s| {
            let mut parts = s.splitn(3, ' ');
            let (m, p, r) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            format!("| `{m}` | `{p}` | {r} |")
        })
        .collect();
    assert_eq!(
        listed,
        served,
        "docs/security.md's routes table is not the router's; it should read:\n{}",
        rows.join("\n")
    );
}
