//! Per-tenant quotas: a fixes budget shared by every ingest replica (Redis GCRA), limits
//! changed through the admin API and in force within the refresh, request rates on every
//! route, the tenant's own batch maximum and active-session cap, and the RateLimit headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, batch, spawn_in};

fn platform_admin() -> String {
    kit::token(kit::JWT_SECRET, "-", "ops@platform", "platform_admin", 600)
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

/// PUT /v1/tenants/{tenant}/limits as a platform admin: (status, body).
async fn put_limits(app: &TestApp, tenant: &str, limits: Value) -> (u16, Value) {
    let r = app
        .client
        .put(app.url(&format!("/v1/tenants/{tenant}/limits")))
        .bearer_auth(platform_admin())
        .json(&limits)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `devices` registered devices of `tenant`, each with a token and an active session.
async fn devices(app: &TestApp, tenant: &str, devices: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in 0..devices {
        let token = app.device_token(tenant, &format!("phone-{d}")).await;
        let session = app.session_id(&token).await;
        out.push((token, session));
    }
    out
}

/// What a flood saw: fixes accepted, and the answers by status.
#[derive(Debug, Default)]
struct Flood {
    accepted: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    elapsed: Duration,
}

/// Each device posts `fixes`-fix batches back to back for `duration`, alternating between
/// `apps`, and the accepted fixes are counted (from the 202 answers).
async fn flood(
    apps: &[Arc<TestApp>],
    devices: &[(String, String)],
    fixes: usize,
    duration: Duration,
) -> Flood {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (d, (token, session)) in devices.iter().enumerate() {
        let apps = apps.to_vec();
        let token = token.clone();
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Flood::default();
            let mut i = 0usize;
            while started.elapsed() < duration {
                let app = &apps[(d + i) % apps.len()];
                let r = app
                    .post_fixes(&token, &session, &batch(&kit::unique("f"), fixes))
                    .await;
                let status = r.status().as_u16();
                *seen.statuses.entry(status).or_default() += 1;
                if status == 202 {
                    let body: Value = r.json().await.unwrap();
                    seen.accepted += body["accepted"].as_u64().unwrap();
                } else {
                    assert!(
                        status == 429,
                        "only 202 or 429 under a flood: {status} {}",
                        r.text().await.unwrap()
                    );
                }
                i += 1;
            }
            seen
        }));
    }
    let mut total = Flood::default();
    for t in tasks {
        let seen = t.await.unwrap();
        total.accepted += seen.accepted;
        for (s, n) in seen.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_together_accept_no_more_than_the_tenants_fixes_quota() {
    const QUOTA: u32 = 300;
    const BURST: u32 = 300;
    let scope = Scope::new().await;
    let replica = |c: &mut locus_ingest::Config| {
        c.rates.tenant_fixes_per_sec = QUOTA;
        c.rates.tenant_burst = BURST;
        c.rates.device_fixes_per_sec = 100_000;
        c.rates.device_burst = 100_000;
    };
    let a = Arc::new(spawn_in(&scope, &[Role::Api], replica).await);
    let b = Arc::new(spawn_in(&scope, &[Role::Api], replica).await);
    let devices = devices(&a, "acme", 6).await;
    let seen = flood(
        &[a.clone(), b.clone()],
        &devices,
        10,
        Duration::from_secs(5),
    )
    .await;
    let secs = seen.elapsed.as_secs_f64();
    let allowed = f64::from(QUOTA) * secs + f64::from(BURST);
    let rate = seen.accepted as f64 / secs;
    println!(
        "two replicas, quota {QUOTA}/s burst {BURST}: accepted {} fixes in {secs:.2} s ({rate:.0}/s), at most {allowed:.0} allowed; answers {:?}",
        seen.accepted, seen.statuses
    );
    // The offer was well above the quota: it was refused often.
    assert!(
        seen.statuses.get(&429).copied().unwrap_or(0) > 20,
        "the flood did not reach the quota: {seen:?}"
    );
    // Tolerance: the quota over the elapsed time plus the burst, 10 % over.
    assert!(
        (seen.accepted as f64) <= allowed * 1.1,
        "the two replicas accepted {} fixes, over {allowed:.0} (+10 %) for one quota",
        seen.accepted
    );
    // And the budget is used, not starved: at least 90 % of the sustained quota.
    assert!(
        (seen.accepted as f64) >= f64::from(QUOTA) * secs * 0.9,
        "the two replicas accepted only {} fixes of {allowed:.0}",
        seen.accepted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_changed_through_the_admin_api_takes_effect_within_the_refresh_while_traffic_flows()
{
    let scope = Scope::new().await;
    let replica = |c: &mut locus_ingest::Config| {
        c.rates.device_fixes_per_sec = 100_000;
        c.rates.device_burst = 100_000;
    };
    // The traffic goes to one replica, the change to the other: only the refresh carries it.
    let app = Arc::new(spawn_in(&scope, &[Role::Api], replica).await);
    let admin_side = spawn_in(&scope, &[Role::Api], replica).await;
    let devices = devices(&app, "acme", 3).await;
    // Traffic flows at the default (50,000 fixes/s: nothing refused) while the quota is cut.
    let before = flood(
        std::slice::from_ref(&app),
        &devices,
        10,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(before.statuses.get(&429), None, "{before:?}");
    let load = tokio::spawn({
        let app = app.clone();
        let devices = devices.clone();
        async move { flood(&[app], &devices, 10, Duration::from_secs(7)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed_at = Instant::now();
    let (status, body) = put_limits(
        &admin_side,
        "acme",
        json!({"fixes_per_sec": 50, "fixes_burst": 50}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["fixes_per_sec"], 50, "{body}");
    assert_eq!(body["limits"]["device_fixes_per_sec"], 100_000, "{body}");
    let defaults = body["defaults"].as_array().expect("defaults listed");
    assert!(defaults.contains(&json!("device_fixes_per_sec")), "{body}");
    assert!(!defaults.contains(&json!("fixes_per_sec")), "{body}");
    // Within the refresh (2 s) plus a loaded machine's second, batches are refused.
    let (token, session) = &devices[0];
    let refused = kit::eventually(Duration::from_secs(3), || async {
        let r = app
            .post_fixes(token, session, &batch(&kit::unique("p"), 10))
            .await;
        (r.status() == 429).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the new quota was not in force 3 s after the change"
    );
    println!(
        "quota set through the other replica in force {:?} after the PUT (refresh 2 s)",
        changed_at.elapsed()
    );
    let during = load.await.unwrap();
    assert!(
        during.statuses.get(&429).copied().unwrap_or(0) > 0,
        "{during:?}"
    );
    // The next 3 s stay within the new quota (+10 %, plus its burst).
    let after = flood(
        std::slice::from_ref(&app),
        &devices,
        10,
        Duration::from_secs(3),
    )
    .await;
    let allowed = 50.0 * after.elapsed.as_secs_f64() + 50.0;
    assert!(
        after.accepted as f64 <= allowed * 1.1,
        "accepted {} fixes after the change, over {allowed:.0}",
        after.accepted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_tenant_refuses_does_not_charge_the_device_and_the_other_way_round() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.rates.tenant_fixes_per_sec = 20;
        c.rates.tenant_burst = 40;
        c.rates.device_fixes_per_sec = 1;
        c.rates.device_burst = 40;
    })
    .await;
    let devices = devices(&app, "acme", 2).await;
    let (a, a_session) = &devices[0];
    let (b, b_session) = &devices[1];
    let post = |token: &str, session: &str| {
        let (token, session) = (token.to_owned(), session.to_owned());
        let app = &app;
        async move {
            let r = app
                .post_fixes(&token, &session, &batch(&kit::unique("c"), 20))
                .await;
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(post(a, a_session).await.0, 202);
    assert_eq!(post(b, b_session).await.0, 202);
    // The tenant's 40 are spent: A is refused by the tenant, several times.
    for _ in 0..3 {
        let (status, body) = post(a, a_session).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("tenant"),
            "the answer names the tenant's limit: {body}"
        );
    }
    // 1.5 s later the tenant has 30 again; A's device budget (40, 20 spent) holds 20
    // more only if the tenant's refusals did not charge it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = post(a, a_session).await;
    assert_eq!(
        status, 202,
        "the tenant's refusals charged the device: {body}"
    );
    // Now A's device budget is spent (40 of 40, 1/s back): its refusals must not charge
    // the tenant.
    for _ in 0..5 {
        let (status, body) = post(a, a_session).await;
        assert_eq!(status, 429, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("device"),
            "the answer names the device's limit: {body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (status, body) = post(b, b_session).await;
    assert_eq!(
        status, 202,
        "the device's refusals charged the tenant: {body}"
    );
}

/// The items of a structured-field list header such as
/// `"device-fixes";r=10;t=1, "tenant-fixes";r=5;t=2`: (name, parameters).
fn items(value: &str) -> Vec<(String, std::collections::BTreeMap<String, i64>)> {
    value
        .split(',')
        .map(|item| {
            let mut parts = item.trim().split(';');
            let name = parts.next().unwrap().trim();
            assert!(
                name.starts_with('"') && name.ends_with('"') && name.len() > 2,
                "the policy name is a quoted string: {value:?}"
            );
            let params = parts
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or_else(|| panic!("{value:?}"));
                    (
                        k.to_owned(),
                        v.parse()
                            .unwrap_or_else(|_| panic!("{k} is an integer in {value:?}")),
                    )
                })
                .collect();
            (name.trim_matches('"').to_owned(), params)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_and_refused_batches_carry_parseable_ratelimit_headers() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.rates.device_fixes_per_sec = 10;
        c.rates.device_burst = 30;
    })
    .await;
    let devices = devices(&app, "acme", 1).await;
    let (token, session) = &devices[0];
    let r = app
        .post_fixes(token, session, &batch(&kit::unique("h"), 20))
        .await;
    assert_eq!(r.status(), 202);
    let policy = items(r.headers()["ratelimit-policy"].to_str().unwrap());
    let device = policy
        .iter()
        .find(|(n, _)| n == "device-fixes")
        .expect("a device-fixes policy");
    assert_eq!((device.1["q"], device.1["w"]), (10, 1), "{policy:?}");
    let remaining = items(r.headers()["ratelimit"].to_str().unwrap());
    let device = remaining
        .iter()
        .find(|(n, _)| n == "device-fixes")
        .expect("the device's remaining budget");
    assert!(
        (9..=11).contains(&device.1["r"]),
        "30 of burst less 20 leaves about 10: {remaining:?}"
    );
    assert!(device.1["t"] >= 1, "{remaining:?}");
    assert!(
        remaining.iter().any(|(n, _)| n == "tenant-fixes"),
        "{remaining:?}"
    );

    let r = app
        .post_fixes(token, session, &batch(&kit::unique("h"), 20))
        .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=2).contains(&retry),
        "10 fixes missing at 10/s: {retry}"
    );
    let remaining = items(r.headers()["ratelimit"].to_str().unwrap());
    let device = remaining.iter().find(|(n, _)| n == "device-fixes").unwrap();
    assert!(device.1["r"] < 20, "{remaining:?}");
    items(r.headers()["ratelimit-policy"].to_str().unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("10 fixes/s"),
        "the answer names the limit and its value: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_sessions_is_limited_to_the_devices_requests_per_second() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let token = app.device_token("acme", "phone-1").await;
    let (status, body) = put_limits(
        &app,
        "acme",
        json!({"device_requests_per_sec": 2, "device_requests_burst": 3}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Within the refresh, the fourth quick list is refused.
    let limited = kit::eventually(Duration::from_secs(4), || async {
        for _ in 0..4 {
            let r = app.get(&token, "/v1/sessions").await;
            if r.status() == 429 {
                return Some(r);
            }
        }
        None
    })
    .await
    .expect("GET /v1/sessions is never refused over 2 requests/s");
    assert!(limited.headers().contains_key("retry-after"));
    let policy = items(limited.headers()["ratelimit-policy"].to_str().unwrap());
    assert!(
        policy
            .iter()
            .any(|(n, p)| n == "device-requests" && p["q"] == 2),
        "{policy:?}"
    );
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    // Another device of the tenant still gets through: the limit is per device.
    let other = app.device_token("acme", "phone-2").await;
    assert_eq!(app.get(&other, "/v1/sessions").await.status(), 200);
    // A request without a valid token is the handler's 401, not a rate answer.
    let r = app.get("not-a-token", "/v1/sessions").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_starts_no_more_sessions_at_once_than_its_cap_and_posts_no_batch_over_its_maximum()
{
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let tokens = [
        app.device_token("acme", "phone-1").await,
        app.device_token("acme", "phone-2").await,
        app.device_token("acme", "phone-3").await,
    ];
    let (status, body) = put_limits(
        &app,
        "acme",
        json!({"max_active_sessions": 2, "max_fixes_per_batch": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The tenant admin reads its own limits; a platform admin's change is the only one.
    let r = app
        .get(&tenant_admin("acme"), "/v1/tenants/acme/limits")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["limits"]["max_active_sessions"],
        2
    );
    let r = app
        .client
        .put(app.url("/v1/tenants/acme/limits"))
        .bearer_auth(tenant_admin("acme"))
        .json(&json!({"max_active_sessions": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Past the refresh, the third session is refused with a code that says why.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let first = app.session_id(&tokens[0]).await;
    let second = app.session_id(&tokens[1]).await;
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&tokens[2])
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_active_sessions", "{body}");
    assert!(body["message"].as_str().unwrap().contains('2'), "{body}");
    // One stopped: the third starts.
    assert_eq!(app.stop_session(&tokens[0], &first).await.status(), 200);
    app.session_id(&tokens[2]).await;

    // The tenant's batch maximum (5, under the global 1000).
    let id = second;
    let r = app.post_fixes(&tokens[1], &id, &batch("six", 6)).await;
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_fixes", "{body}");
    assert!(body["message"].as_str().unwrap().contains('5'), "{body}");
    assert_eq!(
        app.post_fixes(&tokens[1], &id, &batch("five", 5))
            .await
            .status(),
        202
    );
    // The change was audited.
    let owner = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant_id = 'acme' AND target_kind = 'limits'",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert_eq!(actions, ["limits.set"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_a_503_with_retry_after_within_the_deadline_when_the_shared_budget_cannot_answer()
 {
    let mut redis = crate::helpers::StoppableRedis::start(false).await;
    let scope = Scope::new().await;
    let url = redis.url();
    let app = spawn_in(&scope, &[Role::Api], |c| c.redis.url = url).await;
    let devices = devices(&app, "acme", 1).await;
    let (token, session) = &devices[0];
    let r = app.post_fixes(token, session, &batch("before", 2)).await;
    assert_eq!(r.status(), 202);
    redis.stop("KILL");
    let started = Instant::now();
    let r = app.post_fixes(token, session, &batch("during", 2)).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "buffer_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("rate budget"),
        "the shared budget's call gave the answer: {body}"
    );
    assert!(took < Duration::from_millis(2000), "answered in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_answered_as_a_duplicate_and_a_refused_batch_charge_no_budget() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.rates.tenant_fixes_per_sec = 100_000;
        c.rates.tenant_burst = 100_000;
        // 1 fix a second: the burst holds the test's 20 fixes and nothing comes back.
        c.rates.device_fixes_per_sec = 1;
        c.rates.device_burst = 20;
    })
    .await;
    let devices = devices(&app, "acme", 1).await;
    let (token, session) = &devices[0];
    let first = batch("once", 10);
    let r = app.post_fixes(token, session, &first).await;
    assert_eq!(r.status(), 202);
    // Retries of the stored batch are answered from the dedupe state, uncharged.
    for _ in 0..5 {
        let r = app.post_fixes(token, session, &first).await;
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["duplicate"], true, "{body}");
    }
    // So are batches refused whole (422: no valid fix).
    let mut bad = batch("bad", 10);
    for fix in bad["fixes"].as_array_mut().unwrap() {
        fix["lat"] = json!(200.0);
    }
    for _ in 0..3 {
        let r = app.post_fixes(token, session, &bad).await;
        assert_eq!(r.status(), 422);
    }
    // The 10 fixes left of the burst are all there.
    let r = app.post_fixes(token, session, &batch("second", 10)).await;
    assert_eq!(
        r.status(),
        202,
        "duplicates or refusals were charged: {}",
        r.text().await.unwrap()
    );
    let r = app.post_fixes(token, session, &batch("third", 1)).await;
    assert_eq!(r.status(), 429, "the burst is spent");
}
