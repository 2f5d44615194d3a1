//! `Locus-Durability`: what a 202 waits for. `buffered` (the default) answers once the
//! batch is in Redis; `kafka` once the forwarder has Kafka's confirmation of it, through
//! Redis, whichever process forwards the session's shard.

use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, TestApp, batch, buffered_entries, spawn_app, spawn_in};

/// Posts `body` to `session` with `Locus-Durability: level` (none when `None`).
async fn post(
    app: &TestApp,
    token: &str,
    session: &str,
    body: &Value,
    level: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/sessions/{session}/locations")))
        .bearer_auth(token)
        .json(body);
    if let Some(level) = level {
        request = request.header("Locus-Durability", level);
    }
    request.send().await.unwrap()
}

/// An API-only app of `scope` (no forwarder: nothing is ever confirmed) that waits at most
/// 300 ms for a confirmation, with `kafka` the default of tenant `strict`.
async fn api_without_forwarder(scope: &Scope) -> TestApp {
    spawn_in(scope, &[Role::Api], |c| {
        c.redis.durability_kafka_timeout_ms = 300;
        c.redis.durability_kafka_tenants = vec!["strict".into()];
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_durability_level_is_a_400_that_names_the_levels() {
    let (app, _scope) = spawn_app().await;
    let token = app.device_token("acme", "phone-level").await;
    let id = app.session_id(&token).await;
    let r = post(&app, &token, &id, &batch("b1", 1), Some("fsync")).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_durability");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("buffered") && message.contains("kafka"),
        "{message}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_durability_202_comes_after_the_forwarder_confirmed_the_batch() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-kafka").await;
    let id = app.session_id(&token).await;
    for i in 0..5 {
        let r = post(
            &app,
            &token,
            &id,
            &batch(&format!("k{i}"), 3),
            Some("kafka"),
        )
        .await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        assert_eq!(r.headers()["locus-durability"], "kafka");
        // Confirmed means acknowledged and deleted from the buffer, so at the moment of
        // the 202 no batch of this session is left in it.
        let left: Vec<Value> = buffered_entries(&scope, scope.config(&[]).redis.shards)
            .await
            .into_iter()
            .filter(|e| e["session_id"] == id.as_str())
            .collect();
        assert!(left.is_empty(), "still buffered after the 202: {left:?}");
    }
    // The default level still answers after the append alone.
    let r = post(&app, &token, &id, &batch("plain", 1), None).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["locus-durability"], "buffered");
    let records = kit::read_topic(&scope.locations_topic(), 16, Duration::from_secs(15)).await;
    assert_eq!(records.len(), 16);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_batch_is_a_503_that_says_it_is_stored_and_its_retry_waits_for_kafka_too() {
    let scope = Scope::new().await;
    let api = api_without_forwarder(&scope).await;
    let token = scope.device_token("acme", "phone-unconfirmed").await;
    let id = api.session_id(&token).await;
    let body = batch("wait-for-me", 4);

    let r = post(&api, &token, &id, &body, Some("kafka")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["error"], "kafka_unconfirmed");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.contains("stored") && message.contains("retry the same batch"),
        "{message}"
    );
    // A retry is not a way around the wait: still unconfirmed, and not stored again.
    let r = post(&api, &token, &id, &body, Some("kafka")).await;
    assert_eq!(r.status(), 503);
    let batches = buffered_entries(&scope, scope.config(&[]).redis.shards)
        .await
        .into_iter()
        .filter(|e| e["type"] == "fixes")
        .count();
    assert_eq!(batches, 1, "the batch is buffered once");

    // Once a forwarder (another process) runs, the same retry is confirmed.
    let forwarder = spawn_in(&scope, &[Role::Forwarder], |_| {}).await;
    let r = post(&api, &token, &id, &body, Some("kafka")).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["duplicate"], true);
    let records = api
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 5, "the batch once, plus the marker");
    forwarder.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_can_default_to_kafka_durability_and_a_request_can_still_choose() {
    let scope = Scope::new().await;
    let api = api_without_forwarder(&scope).await;
    let token = scope.device_token("strict", "phone-default").await;
    let id = api.session_id(&token).await;
    let r = post(&api, &token, &id, &batch("d1", 1), None).await;
    assert_eq!(r.status(), 503, "the tenant's default waits for Kafka");
    let r = post(&api, &token, &id, &batch("d2", 1), Some("buffered")).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["locus-durability"], "buffered");
    // Another tenant keeps the default level.
    let token = scope.device_token("acme", "phone-default").await;
    let id = api.session_id(&token).await;
    let r = post(&api, &token, &id, &batch("d3", 1), None).await;
    assert_eq!(r.status(), 202);
    api.stop().await;
}
