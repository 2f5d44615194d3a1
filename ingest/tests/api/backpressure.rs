//! Honest backpressure: a buffer at its bound (Kafka down), a Redis slower than the
//! request-path deadline. Each answers 503 with Retry-After and a reason, and the 503s turn
//! back into 2xx by themselves when the cause goes, with nothing accepted lost or doubled.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use locus_ingest::config::Role;
use locus_testkit as kit;
use locus_testkit::broker::{KafkaNode, Stop};
use locus_testkit::proxy::FreezableProxy;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

use crate::helpers::{Scope, batch, spawn_in};

/// The bound of the test's one shard, in entries.
const BOUND: u64 = 4;

/// The high watermark of every partition of `topic` on the broker at `bootstrap`.
fn watermarks_on(bootstrap: &str, topic: &str) -> HashMap<i32, i64> {
    let consumer: BaseConsumer =
        kit::consumer_config_for(bootstrap, &kit::unique("locus-test-marks-"))
            .create()
            .expect("create Kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            (p.id(), high)
        })
        .collect()
}

/// Every record of `topic` on `bootstrap`, read to the end each partition has now.
async fn read_to_end_on(bootstrap: &str, topic: &str) -> Vec<kit::KafkaRecord> {
    let ends = {
        let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || watermarks_on(&bootstrap, &topic))
            .await
            .unwrap()
    };
    kit::read_topic_on(bootstrap, topic, Duration::from_secs(30), |records| {
        ends.iter().all(|(&partition, &end)| {
            end == 0
                || records
                    .iter()
                    .any(|r| r.partition == partition && r.offset + 1 >= end)
        })
    })
    .await
}

async fn assert_buffer_full(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), 503, "{what}");
    let retry_after: u64 = r
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: a 503 carries Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "buffer_full", "{what}: {body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{BOUND} entries")) && message.contains("retry"),
        "{what}: the message names the bound and says to retry: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_kafka_stopped_the_bound_answers_503_buffer_full_to_batches_starts_and_stops_then_202s_return_and_every_accepted_fix_is_on_kafka_once()
 {
    let mut node = tokio::task::spawn_blocking(KafkaNode::start).await.unwrap();
    let bootstrap = node.bootstrap();
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| {
        c.kafka = kit::kafka_settings_for(&bootstrap, &c.kafka.topic_prefix);
        c.redis.shards = 1;
        c.redis.max_entries = BOUND;
    })
    .await;
    let topic = scope.locations_topic();
    let token = scope.device_token("acme", "phone-1").await;
    let session = app.session_id(&token).await;
    let mut accepted: Vec<String> = Vec::new();
    let r = app.post_fixes(&token, &session, &batch("up", 3)).await;
    assert_eq!(r.status(), 202);
    accepted.push("up".into());
    let seen = kit::read_topic_on(&bootstrap, &topic, Duration::from_secs(30), |r| {
        r.iter().any(|r| r.value["batch_id"] == "up")
    })
    .await;
    assert!(
        !seen.is_empty(),
        "the first batch reaches Kafka while it is up"
    );

    {
        let node = &mut node;
        tokio::task::block_in_place(|| node.stop(Stop::Term));
    }
    // Batches fill the shard up to its bound; the next one is refused.
    let mut refused = None;
    for i in 0..(BOUND as usize + 5) {
        let id = format!("down-{i}");
        let body = batch(&id, 3);
        let r = app.post_fixes(&token, &session, &body).await;
        match r.status().as_u16() {
            202 => accepted.push(id),
            _ => {
                assert_buffer_full(r, "a batch past the bound").await;
                refused = Some((id, body));
                break;
            }
        }
    }
    let (refused, refused_body) = refused.expect("the bound trips while Kafka is down");
    assert!(
        accepted.len() as u64 <= BOUND + 1,
        "at most the bound is accepted while Kafka is down: {accepted:?}"
    );
    let other = scope.device_token("acme", "phone-2").await;
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&other)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_buffer_full(r, "a session start while the buffer is full").await;
    let r = app.stop_session(&token, &session).await;
    assert_buffer_full(r, "a session stop while the buffer is full").await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("locus_admission_refused_total{reason=\"buffer_full\"} 1"),
        "the refused batch is counted by reason"
    );
    assert!(
        metrics.contains("locus_session_changes_refused_total{reason=\"buffer_full\"} 2"),
        "the refused start and stop are counted by reason"
    );

    {
        let node = &mut node;
        tokio::task::block_in_place(|| node.restart());
    }
    let restarted = Instant::now();
    // The device retries the refused batch after Retry-After; it gets in by itself once the
    // backlog drained.
    let back = kit::eventually(Duration::from_secs(90), || async {
        let r = app.post_fixes(&token, &session, &refused_body).await;
        if r.status() == 202 {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        None
    })
    .await;
    assert!(back.is_some(), "the 503s turn back into 202s");
    println!(
        "202 again {:.1} s after Kafka restarted",
        restarted.elapsed().as_secs_f64()
    );
    accepted.push(refused);
    // The batch just taken may have filled the shard to its bound again while the forwarder
    // is still draining: the stop and the start, like the batch, get in once there is room
    // (a device retries after Retry-After).
    let stopped = kit::eventually(Duration::from_secs(30), || async {
        let r = app.stop_session(&token, &session).await;
        match r.status().as_u16() {
            200 => Some(()),
            _ => {
                assert_buffer_full(r, "a stop refused while the backlog drains").await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        }
    })
    .await;
    assert!(
        stopped.is_some(),
        "the stop goes through once there is room"
    );
    let started = kit::eventually(Duration::from_secs(30), || async {
        let r = app
            .client
            .post(app.url("/v1/sessions"))
            .bearer_auth(&other)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => Some(()),
            _ => {
                assert_buffer_full(r, "a start refused while the backlog drains").await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        }
    })
    .await;
    assert!(started.is_some(), "a start goes through once there is room");

    let want: HashSet<(String, u64)> = accepted
        .iter()
        .flat_map(|b| (0..3u64).map(move |i| (b.clone(), i)))
        .collect();
    kit::read_topic_on(&bootstrap, &topic, Duration::from_secs(60), |records| {
        let have: HashSet<_> = records
            .iter()
            .map(|r| {
                (
                    r.value["batch_id"].as_str().unwrap().to_owned(),
                    r.value["batch_index"].as_u64().unwrap(),
                )
            })
            .collect();
        want.is_subset(&have)
    })
    .await;
    let records = read_to_end_on(&bootstrap, &topic).await;
    let mut copies: HashMap<(String, u64), usize> = HashMap::new();
    for r in &records {
        *copies
            .entry((
                r.value["batch_id"].as_str().unwrap().to_owned(),
                r.value["batch_index"].as_u64().unwrap(),
            ))
            .or_default() += 1;
    }
    let have: HashSet<_> = copies.keys().cloned().collect();
    assert_eq!(have, want, "exactly the accepted fixes are on Kafka");
    let doubled: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "each fix once: {doubled:?}");
    app.stop().await;
}

fn redis_address() -> String {
    let url = kit::redis_url();
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    rest.split('/').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_gets_a_503_with_retry_after_within_the_deadline() {
    const DEADLINE_MS: u64 = 300;
    let proxy = FreezableProxy::start(&redis_address()).await;
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.redis.url = format!("redis://127.0.0.1:{}", proxy.port());
        c.redis.deadline_ms = DEADLINE_MS;
        // The buffer's own calls are under test here; the shared rate budget's deadline
        // has its test in quotas.rs.
        c.rates.shared = false;
    })
    .await;
    let token = scope.device_token("acme", "phone-1").await;
    let session = app.session_id(&token).await;
    let r = app.post_fixes(&token, &session, &batch("before", 2)).await;
    assert_eq!(r.status(), 202);

    proxy.freeze_all();
    let sent = Instant::now();
    // A retry sends the very same fixes (`batch` stamps them from now).
    let frozen = batch("frozen", 2);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        app.post_fixes(&token, &session, &frozen),
    )
    .await
    .expect("an answer, not a hang, while Redis does not answer");
    let took = sent.elapsed();
    println!(
        "503 after {} ms (deadline {DEADLINE_MS} ms)",
        took.as_millis()
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "buffer_unavailable", "{body}");
    // Margin: the dedupe read and the append may each take the deadline, plus a loaded
    // 2-core machine.
    assert!(
        took < Duration::from_millis(2 * DEADLINE_MS + 700),
        "answered within the deadline and a margin: {took:?}"
    );

    proxy.thaw_all();
    let back = kit::eventually(Duration::from_secs(10), || async {
        let r = app.post_fixes(&token, &session, &frozen).await;
        if r.status() == 202 {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        None
    })
    .await;
    assert!(back.is_some(), "the same batch is taken once Redis answers");
    app.stop().await;
}

/// `url` with its `host:port` replaced by 127.0.0.1:`port` (a proxy in front of it), and
/// the `host:port` it had.
fn through_proxy(url: &str) -> (String, String) {
    let (head, rest) = url.rsplit_once('@').expect("a postgres URL with a user");
    let (address, tail) = rest.split_once('/').expect("a database name");
    (
        format!("{head}@127.0.0.1:{{port}}/{tail}"),
        address.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_unreachable_past_the_revocation_bound_device_tokens_get_503_not_a_pass() {
    const STALENESS_MS: u64 = 1500;
    let scope = Scope::new().await;
    let (template, address) = through_proxy(&scope.database_url);
    let proxy = FreezableProxy::start(&address).await;
    let url = template.replace("{port}", &proxy.port().to_string());
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.database.url = url;
        c.jwt.revocation_refresh_ms = 200;
        c.jwt.revocation_max_staleness_ms = STALENESS_MS;
    })
    .await;
    let token = scope.device_token("acme", "phone-1").await;
    let session = app.session_id(&token).await;
    let r = app.post_fixes(&token, &session, &batch("before", 2)).await;
    assert_eq!(r.status(), 202);

    // PostgreSQL unreachable: the open connections pass nothing, new ones are refused.
    proxy.freeze_all();
    drop(proxy);
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(STALENESS_MS + 500)).await;
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        app.post_fixes(&token, &session, &batch("after", 2)),
    )
    .await
    .expect("an answer, not a hang, while PostgreSQL is away");
    println!(
        "{} at {} ms after PostgreSQL went away (bound {STALENESS_MS} ms)",
        r.status(),
        cut.elapsed().as_millis()
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("LOCUS_REVOCATION_MAX_STALENESS_MS"),
        "a device token is refused because the revocation list is too old: {body}"
    );
    drop(app);
}

/// An app whose PostgreSQL is behind a proxy, with the revocation list trusted long enough
/// (60 s) that the caches, not the revocation bound, give the answers under test.
async fn behind_proxy(
    scope: &Scope,
    change: impl FnOnce(&mut locus_ingest::config::Config),
) -> (crate::helpers::TestApp, FreezableProxy) {
    let (template, address) = through_proxy(&scope.database_url);
    let proxy = FreezableProxy::start(&address).await;
    let url = template.replace("{port}", &proxy.port().to_string());
    let app = spawn_in(scope, &[Role::Api], |c| {
        c.database.url = url;
        c.jwt.revocation_refresh_ms = 200;
        c.jwt.revocation_max_staleness_ms = 60_000;
        c.cache.database_deadline_ms = 300;
        change(c);
    })
    .await;
    (app, proxy)
}

async fn assert_database_unavailable(r: reqwest::Response, names: &str) {
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(names),
        "the message names {names}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_unreachable_a_known_session_takes_batches_for_the_cache_bound_then_gets_503_and_a_stopped_one_never_202()
 {
    const CACHE_SECS: u64 = 3;
    let scope = Scope::new().await;
    let (app, proxy) = behind_proxy(&scope, |c| c.cache.session_secs = CACHE_SECS).await;
    let token = scope.device_token("acme", "phone-1").await;
    let other = scope.device_token("acme", "phone-2").await;
    let session = app.session_id(&token).await;
    let stopped = app.session_id(&other).await;
    let r = app.post_fixes(&token, &session, &batch("before", 2)).await;
    assert_eq!(r.status(), 202);
    let r = app.post_fixes(&other, &stopped, &batch("before", 2)).await;
    assert_eq!(r.status(), 202);
    let r = app.stop_session(&other, &stopped).await;
    assert_eq!(r.status(), 200);

    proxy.freeze_all();
    drop(proxy);
    let cut = Instant::now();
    let mut n = 0;
    // Well inside the bound (it counts from the last read, before the cut).
    while cut.elapsed() < Duration::from_millis(CACHE_SECS * 1000 / 2) {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            app.post_fixes(&token, &session, &batch(&format!("during-{n}"), 2)),
        )
        .await
        .expect("an answer, not a hang, while PostgreSQL is away");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(
            status,
            202,
            "{} ms after the cut: {text}",
            cut.elapsed().as_millis()
        );
        n += 1;
    }
    println!("{n} batches taken from the cache in the first half of the bound");
    // The session stopped through this replica answers 409, never 202.
    let r = app.post_fixes(&other, &stopped, &batch("during", 2)).await;
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // Another device of the tenant does not get the cached session either.
    let r = app
        .post_fixes(&other, &session, &batch("stranger", 2))
        .await;
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
    // Nor a device of another tenant with the same device id: the cache holds no entry
    // under its tenant, so only PostgreSQL could answer, and it cannot.
    let foreign = scope.device_token("beta", "phone-1").await;
    let r = app
        .post_fixes(&foreign, &session, &batch("foreign", 2))
        .await;
    assert_database_unavailable(r, "LOCUS_SESSION_CACHE_SECS").await;

    tokio::time::sleep(
        Duration::from_millis(CACHE_SECS * 1000 + 300).saturating_sub(cut.elapsed()),
    )
    .await;
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        app.post_fixes(&token, &session, &batch("past", 2)),
    )
    .await
    .expect("an answer, not a hang");
    println!(
        "{} at {} ms after the cut (bound {CACHE_SECS} s)",
        r.status(),
        cut.elapsed().as_millis()
    );
    assert_database_unavailable(r, "LOCUS_SESSION_CACHE_SECS").await;
    let r = app.post_fixes(&other, &stopped, &batch("past", 2)).await;
    assert_ne!(r.status(), 202);
    drop(app);
}

fn admin_token(tenant: &str, role: &str) -> String {
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        role,
        600,
    )
}

/// Registers `device` of `tenant` through the API; returns its credential.
async fn credential(app: &crate::helpers::TestApp, tenant: &str, device: &str) -> String {
    let r = app
        .client
        .post(app.url("/v1/devices"))
        .bearer_auth(admin_token(tenant, "tenant_admin"))
        .json(&serde_json::json!({"device_id": device, "name": device}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    body["credential"].as_str().unwrap().to_owned()
}

async fn exchange(app: &crate::helpers::TestApp, credential: &str) -> reqwest::Response {
    tokio::time::timeout(
        Duration::from_secs(10),
        app.client
            .post(app.url("/v1/auth/token"))
            .json(&serde_json::json!({"credential": credential}))
            .send(),
    )
    .await
    .expect("an answer, not a hang")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_unreachable_a_credential_exchanged_before_is_exchanged_again_for_the_bound_an_unknown_or_revoked_one_never()
 {
    const CACHE_SECS: u64 = 3;
    let scope = Scope::new().await;
    let (app, proxy) = behind_proxy(&scope, |c| c.cache.credential_secs = CACHE_SECS).await;
    let r = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(admin_token("platform", "platform_admin"))
        .json(&serde_json::json!({"tenant_id": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let known = credential(&app, "acme", "van-1").await;
    let revoked = credential(&app, "acme", "van-2").await;
    let never = credential(&app, "acme", "van-3").await;
    for c in [&known, &revoked] {
        let r = exchange(&app, c).await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .client
        .post(app.url("/v1/devices/van-2/revoke"))
        .bearer_auth(admin_token("acme", "tenant_admin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    proxy.freeze_all();
    drop(proxy);
    let cut = Instant::now();
    let r = exchange(&app, &known).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The token it gets is a working one.
    let token = body["access_token"].as_str().unwrap();
    let r = app
        .client
        .get(app.url("/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 401);
    // A revoked device is never exchanged from the cache.
    let r = exchange(&app, &revoked).await;
    assert_ne!(r.status(), 200);
    // A credential this replica never exchanged: 503 (PostgreSQL cannot tell), not 401.
    let r = exchange(&app, &never).await;
    assert_database_unavailable(r, "retry").await;

    tokio::time::sleep(
        Duration::from_millis(CACHE_SECS * 1000 + 300).saturating_sub(cut.elapsed()),
    )
    .await;
    let r = exchange(&app, &known).await;
    println!(
        "{} at {} ms after the cut (bound {CACHE_SECS} s)",
        r.status(),
        cut.elapsed().as_millis()
    );
    assert_database_unavailable(r, "LOCUS_CREDENTIAL_CACHE_SECS").await;
    drop(app);
}
