//! Partners, grants, the tenant's sink, the audit log and its relay, and the filtered,
//! paged session listing, through the real HTTP API.

use std::collections::HashSet;
use std::time::Duration;

use locus_ingest::audit_relay::AuditRelay;
use locus_ingest::config::Role;
use locus_session::SessionStore;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, batch, spawn_app, spawn_in};

const PARTNER: &str = "fleet-co";

fn platform_admin() -> String {
    // Platform admins and partners belong to no tenant: the claim is ignored for them.
    kit::token(
        kit::JWT_SECRET,
        "none",
        "root@locus.example",
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

fn partner(id: &str) -> String {
    kit::token(kit::JWT_SECRET, "none", id, "partner", 600)
}

impl TestApp {
    async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        };
        (status, value)
    }

    async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, token, path, None).await
    }

    /// `PUT /v1/sink` with `body`, as `token`.
    async fn put_sink(&self, token: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, token, "/v1/sink", Some(body))
            .await
    }

    async fn create_partner(&self, id: &str) {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                &platform_admin(),
                "/v1/partners",
                Some(json!({ "partner_id": id, "name": "Fleet Co" })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["partner_id"], id);
    }

    async fn grant(&self, tenant: &str, partner: &str) -> u16 {
        let path = format!("/v1/grants/{partner}");
        self.send(reqwest::Method::PUT, &tenant_admin(tenant), &path, None)
            .await
            .0
    }
}

#[tokio::test]
async fn a_partner_reads_the_sessions_of_a_granting_tenant_and_nothing_of_another() {
    let (app, _scope) = spawn_app().await;
    let acme_device = app.device_token("acme", "a1").await;
    let globex_device = app.device_token("globex", "g1").await;
    let acme_session = app.session_id(&acme_device).await;
    let globex_session = app.session_id(&globex_device).await;

    // Only a platform admin creates partners.
    let (status, _) = app
        .send(
            reqwest::Method::POST,
            &tenant_admin("acme"),
            "/v1/partners",
            Some(json!({ "partner_id": PARTNER })),
        )
        .await;
    assert_eq!(status, 403);
    app.create_partner(PARTNER).await;
    let (_, listed) = app.get_json(&platform_admin(), "/v1/partners").await;
    assert_eq!(listed["partners"][0]["partner_id"], PARTNER);

    assert_eq!(app.grant("acme", PARTNER).await, 201);
    assert_eq!(app.grant("acme", PARTNER).await, 200, "granting twice");
    assert_eq!(app.grant("acme", "nobody").await, 404, "unknown partner");
    let (_, grants) = app.get_json(&tenant_admin("acme"), "/v1/grants").await;
    assert_eq!(grants["grants"][0]["partner_id"], PARTNER);

    let p = partner(PARTNER);
    let (status, page) = app.get_json(&p, "/v1/sessions?tenant=acme").await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [acme_session.as_str()]);
    let (status, one) = app
        .get_json(&p, &format!("/v1/sessions/{acme_session}"))
        .await;
    assert_eq!((status, one["tenant_id"].as_str()), (200, Some("acme")));

    // Not granted and not existing answer alike, body for body.
    let not_granted = app.get_json(&p, "/v1/sessions?tenant=globex").await;
    let unknown = app.get_json(&p, "/v1/sessions?tenant=no-such-tenant").await;
    assert_eq!(not_granted.0, 404);
    assert_eq!(not_granted.1["error"], "tenant_not_found");
    assert_eq!(not_granted, unknown);
    let other = app
        .get_json(&p, &format!("/v1/sessions/{globex_session}"))
        .await;
    let nowhere = app
        .get_json(&p, &format!("/v1/sessions/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(other.0, 404);
    assert_eq!(other.1["error"], "session_not_found");
    assert_eq!(other, nowhere);
    let (status, body) = app.get_json(&p, "/v1/sessions").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );

    // Read-only: no start, stop or fixes.
    let start = app
        .send(reqwest::Method::POST, &p, "/v1/sessions", Some(json!({})))
        .await;
    assert_eq!(start.0, 403, "{}", start.1);
    let stop = app
        .send(
            reqwest::Method::POST,
            &p,
            &format!("/v1/sessions/{acme_session}/stop"),
            None,
        )
        .await;
    assert_eq!(stop.0, 403, "{}", stop.1);
    let fixes = app.post_fixes(&p, &acme_session, &batch("p", 1)).await;
    assert_eq!(fixes.status(), 403);
    // Nor the tenant's admin routes.
    assert_eq!(app.get_json(&p, "/v1/sink").await.0, 403);
    assert_eq!(app.get_json(&p, "/v1/audit").await.0, 403);

    // Withdrawn: from the very next request on, acme reads like globex.
    let (status, _) = app
        .send(
            reqwest::Method::DELETE,
            &tenant_admin("acme"),
            &format!("/v1/grants/{PARTNER}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get_json(&p, "/v1/sessions?tenant=acme").await, unknown);
    assert_eq!(
        app.get_json(&p, &format!("/v1/sessions/{acme_session}"))
            .await,
        nowhere
    );
    let (status, body) = app
        .send(
            reqwest::Method::DELETE,
            &tenant_admin("acme"),
            &format!("/v1/grants/{PARTNER}"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("grant_not_found"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_sink_on_a_special_address_or_plain_http_is_refused_unless_the_operator_allows_it() {
    let scope = Scope::new().await;
    let strict = spawn_in(&scope, &[Role::Api], |_| {}).await;
    strict.device_token("acme", "a1").await; // registers the tenant
    let admin = tenant_admin("acme");
    let secret = "whsec_7d0c9b8e4f1a2b3c4d5e6f708192a3b4c5d6e7f8";
    for (url, named, switch) in [
        ("https://10.0.0.1/hook", "10.0.0.1", "PRIVATE"),
        (
            "https://169.254.169.254/latest/meta-data",
            "169.254.169.254",
            "PRIVATE",
        ),
        ("https://[::ffff:127.0.0.1]/hook", "127.0.0.1", "PRIVATE"),
        // NAT64 of the metadata address.
        ("https://[64:ff9b::a9fe:a9fe]/hook", "64:ff9b::", "PRIVATE"),
        ("https://100.64.0.1/hook", "100.64.0.1", "PRIVATE"),
        // A name is judged by the addresses it resolves to.
        ("https://localhost:8443/hook", "127.0.0.1", "PRIVATE"),
        ("http://127.0.0.1:9/hook", "https://", "HTTP"),
    ] {
        let (status, body) = strict
            .put_sink(&admin, json!({ "url": url, "secret": secret }))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_sink")),
            "{url}: {body}"
        );
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(named) && message.contains(&format!("LOCUS_SINK_ALLOW_{switch}")),
            "{url}: the answer should name {named:?} and the switch: {message}"
        );
    }
    assert_eq!(strict.get_json(&admin, "/v1/sink").await.0, 404);
    strict.stop().await;

    let open = spawn_in(&scope, &[Role::Api], |c| {
        c.sink_targets = locus_service::net::SinkTargetSettings::permissive()
    })
    .await;
    let (status, body) = open
        .put_sink(
            &admin,
            json!({ "url": "http://127.0.0.1:9/hook", "secret": secret }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    open.stop().await;
}

#[tokio::test]
async fn a_sink_secret_is_never_returned_nor_written_to_the_audit_log() {
    let scope = Scope::new().await;
    // The switches the local demo sets: plain http to this machine is taken.
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| {
        c.sink_targets = locus_service::net::SinkTargetSettings::permissive()
    })
    .await;
    app.device_token("acme", "a1").await; // registers the tenant
    let admin = tenant_admin("acme");
    let secret = "whsec_7d0c9b8e4f1a2b3c4d5e6f708192a3b4c5d6e7f8";
    let (status, body) = app.get_json(&admin, "/v1/sink").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("sink_not_found"))
    );

    for (url, why) in [
        ("ftp://hooks.example.com/x", "neither https nor http"),
        ("hooks.example.com/x", "not absolute"),
        (
            "https://user:pw@hooks.example.com/",
            "credentials in the URL",
        ),
    ] {
        let (status, body) = app
            .put_sink(&admin, json!({ "url": url, "secret": secret }))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_sink")),
            "{why}"
        );
    }
    let (status, body) = app
        .put_sink(
            &admin,
            json!({ "url": "https://hooks.example.com/x", "secret": "short" }),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_sink"))
    );

    let (status, put) = app
        .put_sink(
            &admin,
            json!({ "url": "https://hooks.example.com/locus", "secret": secret }),
        )
        .await;
    assert_eq!(status, 201, "{put}");
    let (status, replaced) = app
        .put_sink(
            &admin,
            json!({ "url": "http://127.0.0.1:9/hook", "secret": secret }),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    let (status, got) = app.get_json(&admin, "/v1/sink").await;
    assert_eq!(status, 200);
    assert_eq!(got["url"], "http://127.0.0.1:9/hook");
    let (_, audit) = app.get_json(&admin, "/v1/audit").await;
    for answer in [&put, &replaced, &got, &audit] {
        assert!(
            !answer.to_string().contains(secret),
            "an answer holds the secret: {answer}"
        );
        assert!(answer.get("secret").is_none());
    }
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["sink.set", "sink.set"], "{audit}");
    assert_eq!(
        audit["entries"][0]["after"]["url"],
        "http://127.0.0.1:9/hook"
    );
    assert_eq!(audit["entries"][0]["actor"], "admin@acme");

    // The row itself, as the owner sees it: the bridge's secret is in `sinks` only.
    let owner = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let logged: Vec<String> =
        sqlx::query_scalar("SELECT concat(before::text, after::text) FROM audit_log")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(logged.len(), 2);
    assert!(logged.iter().all(|row| !row.contains(secret)), "{logged:?}");

    let (status, _) = app
        .send(reqwest::Method::DELETE, &admin, "/v1/sink", None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(app.get_json(&admin, "/v1/sink").await.0, 404);
    // Another tenant's admin never sees acme's rows.
    let (_, globex_audit) = app.get_json(&tenant_admin("globex"), "/v1/audit").await;
    assert_eq!(globex_audit["entries"], json!([]));
    // The platform sees every row.
    let (_, all) = app.get_json(&platform_admin(), "/v1/audit").await;
    assert_eq!(all["entries"].as_array().unwrap().len(), 3);
    app.stop().await;
}

/// Every page of `path` (which has its own query), following `next_cursor`.
async fn walk(app: &TestApp, token: &str, path: &str) -> (Vec<usize>, Vec<String>) {
    let mut sizes = Vec::new();
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = app.get_json(token, &url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let sessions = page["sessions"].as_array().unwrap();
        sizes.push(sessions.len());
        ids.extend(
            sessions
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 20, "the cursor does not end");
    }
    (sizes, ids)
}

#[tokio::test]
async fn cursor_pages_walk_every_session_once_and_the_filters_apply() {
    let (app, _scope) = spawn_app().await;
    let mut started = Vec::new();
    let mut tokens = Vec::new();
    for n in 1..=7 {
        let token = app.device_token("acme", &format!("d{n}")).await;
        let id = app.session_id(&token).await;
        if n % 2 == 1 {
            assert_eq!(app.stop_session(&token, &id).await.status(), 200);
        }
        started.push(id);
        tokens.push(token);
    }
    let admin = tenant_admin("acme");
    let (sizes, ids) = walk(&app, &admin, "/v1/sessions?limit=3").await;
    assert_eq!(sizes, [3, 3, 1]);
    let mut newest_first = started.clone();
    newest_first.reverse();
    assert_eq!(ids, newest_first);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 7);

    let (_, stopped) = walk(&app, &admin, "/v1/sessions?limit=2&status=stopped").await;
    assert_eq!(stopped.len(), 4, "d1, d3, d5 and d7 were stopped");
    let (_, active) = walk(&app, &admin, "/v1/sessions?limit=2&status=active").await;
    assert_eq!(active.len(), 3);
    let (_, d2) = walk(&app, &admin, "/v1/sessions?limit=5&device_id=d2").await;
    assert_eq!(d2, [started[1].clone()]);

    let (_, all) = app.get_json(&admin, "/v1/sessions?limit=500").await;
    let pivot = all["sessions"][2]["started_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let pivot = pivot.replace('+', "%2B");
    let (_, after) = walk(
        &app,
        &admin,
        &format!("/v1/sessions?limit=2&started_after={pivot}"),
    )
    .await;
    assert_eq!(after, newest_first[..3]);
    let (_, before) = walk(
        &app,
        &admin,
        &format!("/v1/sessions?limit=2&started_before={pivot}"),
    )
    .await;
    assert_eq!(before, newest_first[3..]);

    // A device sees only its own, whatever it asks for.
    let (_, own) = walk(&app, &tokens[0], "/v1/sessions?limit=10").await;
    assert_eq!(own, [started[0].clone()]);
    let (_, others) = walk(&app, &tokens[0], "/v1/sessions?limit=10&device_id=d2").await;
    assert!(others.is_empty());

    for bad in ["nonsense", "12.not-a-uuid", ""] {
        let (status, body) = app
            .get_json(&admin, &format!("/v1/sessions?cursor={bad}x"))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_cursor")),
            "{bad}"
        );
    }
    let (status, body) = app.get_json(&admin, "/v1/sessions?status=paused").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, body) = app.get_json(&admin, "/v1/sessions?tenant=globex").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("tenant_not_found"))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_audit_relay_puts_each_change_on_the_tenant_events_topic_once() {
    let (app, scope) = spawn_app().await;
    app.device_token("acme", "a1").await;
    app.create_partner(PARTNER).await;
    assert_eq!(app.grant("acme", PARTNER).await, 201);

    // The relay as the service runs it, on this test's database and topics.
    let config = scope.config(&[Role::Api]);
    let store = SessionStore::new(sqlx::PgPool::connect(&scope.database_url).await.unwrap());
    let producer = locus_ingest::kafka::producer(&config).unwrap();
    let topic = scope.topics().tenant_events().to_owned();
    let relay = AuditRelay::new(store.clone(), producer, &topic, Duration::from_millis(50));
    relay.drain().await.expect("the relay publishes");
    // Eventually, not at once: if the app runs its own relay, it may hold a claim still.
    let drained = kit::eventually(Duration::from_secs(10), || {
        let store = store.clone();
        async move { (store.audit_backlog().await.unwrap() == 0).then_some(()) }
    })
    .await;
    assert!(drained.is_some(), "every row is marked published");

    let records = kit::read_topic_to_end(&topic, 2, Duration::from_secs(20)).await;
    assert_eq!(records.len(), 2, "{records:?}");
    let by_action = |action: &str| {
        records
            .iter()
            .find(|r| r.value["action"] == action)
            .unwrap_or_else(|| panic!("no {action} on {topic}: {records:?}"))
    };
    let created = by_action("partner.created");
    assert_eq!(created.key, "platform");
    assert_eq!(created.headers["locus-tenant-id"], "platform");
    let granted = by_action("grant.created");
    assert_eq!(granted.key, "acme");
    assert_eq!(granted.headers["locus-tenant-id"], "acme");
    assert_eq!(granted.value["tenant_id"], "acme");
    assert_eq!(granted.value["target_id"], PARTNER);
    assert_eq!(
        granted.headers["locus-event-id"],
        granted.value["event_id"].as_str().unwrap()
    );

    // Nothing is left to publish: a second drain adds no record.
    relay.drain().await.unwrap();
    let again = kit::read_topic_to_end(&topic, 2, Duration::from_secs(10)).await;
    assert_eq!(again.len(), 2);
    app.stop().await;
}
