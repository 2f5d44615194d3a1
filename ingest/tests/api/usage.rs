//! Usage per tenant for billing: counted by each replica, added to PostgreSQL's
//! `usage_minutes` every flush interval and on the way out, read through `GET /v1/usage`.
//! The numbers are checked exactly: against the API's rows and totals and the table.

use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, batch, spawn_in};

/// An app of `scope` that flushes usage every `flush_secs`.
async fn app(scope: &Scope, flush_secs: u64) -> TestApp {
    spawn_in(scope, &[Role::Api], |c| c.usage.flush_secs = flush_secs).await
}

fn admin(tenant: &str) -> String {
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    )
}

fn platform_admin() -> String {
    kit::token(kit::JWT_SECRET, "-", "ops@platform", "platform_admin", 600)
}

/// `good` valid fixes followed by `bad` with a latitude out of range.
fn mixed(batch_id: &str, good: usize, bad: usize) -> Value {
    let mut body = batch(batch_id, good);
    let fixes = body["fixes"].as_array_mut().unwrap();
    for _ in 0..bad {
        fixes.push(json!({"lat": 91.0, "lon": 13.4, "recorded_at": chrono::Utc::now()}));
    }
    body
}

/// The bytes of `body` as reqwest sends it with `.json(...)`.
fn size(body: &Value) -> u64 {
    serde_json::to_vec(body).unwrap().len() as u64
}

/// `GET /v1/usage` of the last hour with `token` (and `extra` query), answered 200.
async fn usage(app: &TestApp, token: &str, extra: &str) -> Value {
    let from = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::minutes(2)).to_rfc3339();
    let r = app
        .client
        .get(app.url("/v1/usage"))
        .query(&[("from", from.as_str()), ("to", to.as_str())])
        .query(
            &extra
                .split('&')
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .collect::<Vec<_>>(),
        )
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "GET /v1/usage: {body}");
    body
}

/// The sums of `tenant`'s rows in `usage_minutes`, read as the owner:
/// (accepted, rejected by reason, rate limited, bytes, rows).
async fn table(scope: &Scope, tenant: &str) -> (i64, Value, i64, i64, i64) {
    let pool = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let rows: Vec<(i64, Value, i64, i64)> = sqlx::query_as(
        "SELECT fixes_accepted, fixes_rejected, fixes_rate_limited, bytes \
         FROM usage_minutes WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let mut rejected = serde_json::Map::new();
    for (_, r, _, _) in &rows {
        for (k, v) in r.as_object().unwrap() {
            let sum = rejected.get(k).and_then(Value::as_i64).unwrap_or(0) + v.as_i64().unwrap();
            rejected.insert(k.clone(), json!(sum));
        }
    }
    (
        rows.iter().map(|r| r.0).sum(),
        Value::Object(rejected),
        rows.iter().map(|r| r.2).sum(),
        rows.iter().map(|r| r.3).sum(),
        rows.len() as i64,
    )
}

/// Waits until `tenant`'s accepted fixes in the table reach `accepted`.
async fn flushed(scope: &Scope, tenant: &str, accepted: i64) {
    let reached = kit::eventually(Duration::from_secs(15), || async {
        (table(scope, tenant).await.0 >= accepted).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "{tenant}'s usage did not reach {accepted} accepted fixes in usage_minutes: {:?}",
        table(scope, tenant).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_and_rejected_fixes_are_rolled_up_per_minute_and_read_exactly_through_the_admin_api()
 {
    let scope = Scope::new().await;
    let app = app(&scope, 1).await;
    let token = app.device_token("acme", "acme-phone").await;
    let session = app.session_id(&token).await;
    let first = mixed("b1", 3, 2);
    let second = mixed("b2", 4, 1);
    for body in [&first, &second] {
        let r = app.post_fixes(&token, &session, body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    // A retry is not stored again: not accepted twice.
    assert_eq!(app.post_fixes(&token, &session, &first).await.status(), 202);
    // Every fix rejected: 422, counted by each fix's reason.
    let r = app.post_fixes(&token, &session, &mixed("b3", 0, 2)).await;
    assert_eq!(r.status(), 422);
    // A whole batch refused (the session is stopped): counted by the error code.
    assert_eq!(app.stop_session(&token, &session).await.status(), 200);
    let r = app.post_fixes(&token, &session, &batch("b4", 5)).await;
    assert_eq!(r.status(), 409);

    flushed(&scope, "acme", 7).await;
    // One more interval: a late count of the 409 would show up in it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let bytes = (size(&first) + size(&second)) as i64;
    let rejected = json!({"latitude_out_of_range": 5, "session_stopped": 5});
    let (accepted, by_reason, rate_limited, stored_bytes, rows) = table(&scope, "acme").await;
    assert_eq!(
        (accepted, &by_reason, rate_limited, stored_bytes),
        (7, &rejected, 0, bytes)
    );
    assert!(
        (1..=2).contains(&rows),
        "one row per minute (two if the test crossed a minute): {rows}"
    );

    let answer = usage(&app, &admin("acme"), "").await;
    assert_eq!(answer["tenant_id"], "acme");
    let totals = &answer["totals"];
    assert_eq!(totals["fixes_accepted"], 7, "{answer}");
    assert_eq!(totals["fixes_rejected"], rejected, "{answer}");
    assert_eq!(totals["fixes_rate_limited"], 0, "{answer}");
    assert_eq!(totals["bytes"], bytes, "{answer}");
    let minutes = answer["minutes"].as_array().unwrap();
    assert_eq!(minutes.len() as i64, rows, "{answer}");
    let sum: i64 = minutes
        .iter()
        .map(|m| m["fixes_accepted"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 7, "{answer}");
    for m in minutes {
        let minute = chrono::DateTime::parse_from_rfc3339(m["minute"].as_str().unwrap()).unwrap();
        assert_eq!(minute.timestamp() % 60, 0, "a minute's start: {m}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_of_two_replicas_add_up_in_the_same_rows() {
    let scope = Scope::new().await;
    let one = app(&scope, 1).await;
    let two = app(&scope, 1).await;
    let token = one.device_token("acme", "acme-phone").await;
    let session = one.session_id(&token).await;
    let mut bytes = 0;
    for (i, replica) in [&one, &two, &one, &two].into_iter().enumerate() {
        let body = mixed(&format!("b{i}"), 3, 1);
        bytes += size(&body) as i64;
        let r = replica.post_fixes(&token, &session, &body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    flushed(&scope, "acme", 12).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (accepted, rejected, _, stored_bytes, rows) = table(&scope, "acme").await;
    assert_eq!(
        (accepted, rejected, stored_bytes),
        (12, json!({"latitude_out_of_range": 4}), bytes)
    );
    assert!((1..=2).contains(&rows), "one row per minute: {rows}");
    let answer = usage(&two, &admin("acme"), "").await;
    assert_eq!(answer["totals"]["fixes_accepted"], 12, "{answer}");
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_not_yet_flushed_are_flushed_on_a_graceful_shutdown() {
    let scope = Scope::new().await;
    // An hour between flushes: only the one on the way out can write them.
    let app = app(&scope, 3600).await;
    let token = app.device_token("acme", "acme-phone").await;
    let session = app.session_id(&token).await;
    let body = mixed("b1", 6, 2);
    let r = app.post_fixes(&token, &session, &body).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(table(&scope, "acme").await.0, 0, "flushed before the stop");
    app.stop().await;
    let (accepted, rejected, _, bytes, _) = table(&scope, "acme").await;
    assert_eq!(
        (accepted, rejected, bytes),
        (6, json!({"latitude_out_of_range": 2}), size(&body) as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_admin_reads_none_of_a_tenants_usage() {
    let scope = Scope::new().await;
    let app = app(&scope, 1).await;
    let token = app.device_token("acme", "acme-phone").await;
    let session = app.session_id(&token).await;
    let r = app.post_fixes(&token, &session, &batch("b1", 4)).await;
    assert_eq!(r.status(), 202);
    kit::register_device(&scope.owner_url, "globex", "globex-phone").await;
    flushed(&scope, "acme", 4).await;

    for extra in ["", "tenant=acme"] {
        let answer = usage(&app, &admin("globex"), extra).await;
        assert_eq!(answer["tenant_id"], "globex", "{extra}: {answer}");
        assert_eq!(answer["minutes"], json!([]), "{extra}: {answer}");
        assert_eq!(answer["totals"]["fixes_accepted"], 0, "{extra}: {answer}");
        assert!(!answer.to_string().contains("acme"), "{extra}: {answer}");
    }
    // A platform admin names the tenant.
    let answer = usage(&app, &platform_admin(), "tenant=acme").await;
    assert_eq!(answer["totals"]["fixes_accepted"], 4, "{answer}");
    let r = app.get(&platform_admin(), "/v1/usage").await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_query", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("tenant"),
        "{body}"
    );
    // A device reads no usage.
    assert_eq!(app.get(&token, "/v1/usage").await.status(), 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_over_the_maximum_is_refused_naming_the_limit() {
    let scope = Scope::new().await;
    let app = app(&scope, 1).await;
    let from = (chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339();
    let r = app
        .client
        .get(app.url("/v1/usage"))
        .query(&[("from", from.as_str())])
        .bearer_auth(admin("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_query", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("31 days"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_postgres_refuses_keeps_its_counts_for_the_next_one() {
    use std::sync::Arc;

    use locus_ingest::usage::{Usage, UsageFlusher};
    use locus_session::SessionStore;
    use locus_wire::TenantId;

    let scope = Scope::new().await;
    let usage = Arc::new(Usage::new(10, 1000));
    let acme = TenantId::parse("acme").unwrap();
    usage.accepted(&acme, 5, 500);
    usage.rejected(&acme, "timestamp_too_old", 2);
    usage.rate_limited(&acme, 3);
    // Nothing listens on port 1: every flush to it fails.
    let away = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://locus_app@127.0.0.1:1/locus")
        .unwrap();
    let failing = UsageFlusher {
        usage: usage.clone(),
        store: SessionStore::new(away),
        every: Duration::from_secs(60),
    };
    failing.flush().await;
    failing.flush().await;
    assert_eq!(usage.pending_rows(), 1, "the refused counts are kept, once");
    usage.accepted(&acme, 1, 100);

    let pool = sqlx::PgPool::connect(&scope.database_url).await.unwrap();
    let working = UsageFlusher {
        usage: usage.clone(),
        store: SessionStore::new(pool),
        every: Duration::from_secs(60),
    };
    working.flush().await;
    assert_eq!(usage.pending_rows(), 0);
    let (accepted, rejected, rate_limited, bytes, _) = table(&scope, "acme").await;
    assert_eq!(
        (accepted, rejected, rate_limited, bytes),
        (6, json!({"timestamp_too_old": 2}), 3, 600)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usage_metrics_name_only_as_many_tenants_as_configured_and_the_rest_other() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| c.usage.metric_tenants = 1).await;
    // Tenant names of this test alone: the metrics registry is the whole test binary's.
    let (first, second) = (kit::unique("first-"), kit::unique("second-"));
    for (tenant, n) in [(&first, 3), (&second, 2)] {
        let token = app.device_token(tenant, "phone").await;
        let session = app.session_id(&token).await;
        let r = app.post_fixes(&token, &session, &mixed("b1", n, 1)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |name: &str, labels: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{{labels}}}")))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    let first_label = format!("tenant=\"{first}\"");
    assert_eq!(
        line("locus_usage_fixes_accepted_total", &first_label).as_deref(),
        Some("3"),
        "{metrics}"
    );
    assert_eq!(
        line(
            "locus_usage_fixes_rejected_total",
            &format!("reason=\"latitude_out_of_range\",{first_label}")
        )
        .as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&second),
        "a tenant past the bound has a label of its own: {metrics}"
    );
    assert!(
        line("locus_usage_fixes_accepted_total", "tenant=\"other\"").is_some(),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixes_refused_for_rate_are_counted_as_rate_limited_not_rejected() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.usage.flush_secs = 1;
        c.rates.device_fixes_per_sec = 1;
        c.rates.device_burst = 5;
    })
    .await;
    let token = app.device_token("acme", "acme-phone").await;
    let session = app.session_id(&token).await;
    let r = app.post_fixes(&token, &session, &batch("b1", 4)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let r = app.post_fixes(&token, &session, &batch("b2", 4)).await;
    assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
    flushed(&scope, "acme", 4).await;
    kit::eventually(Duration::from_secs(5), || async {
        (table(&scope, "acme").await.2 == 4).then_some(())
    })
    .await
    .expect("the refused batch's 4 fixes are counted as rate limited");
    let (accepted, rejected, rate_limited, _, _) = table(&scope, "acme").await;
    assert_eq!((accepted, rejected, rate_limited), (4, json!({}), 4));
    app.stop().await;
}
