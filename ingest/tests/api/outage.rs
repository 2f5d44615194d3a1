//! When Redis cannot take a batch, the device hears 503 with Retry-After: never a 202 for
//! data that was not stored.

use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, StoppableRedis, batch, spawn_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_503_with_retry_after_while_redis_is_down() {
    let mut redis = StoppableRedis::start(false).await;

    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| c.redis.url = redis.url()).await;
    let token = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &id, &batch("before", 2))
            .await
            .status(),
        202
    );

    redis.stop("KILL");
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        app.post_fixes(&token, &id, &batch("during", 2)),
    )
    .await
    .expect("the answer comes promptly even with Redis gone");
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "buffer_unavailable");

    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert!(
        body["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("unreachable")
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_buffer_bound_ingest_answers_503_buffer_full() {
    let scope = Scope::new().await;
    // No forwarder: nothing drains the buffer, as when Kafka is down.
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.redis.max_entries = 3;
        c.redis.shards = 1;
    })
    .await;
    let token = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&token).await;
    // The start event is entry 1; two batches fill the shard to its bound of 3.
    for b in 0..2 {
        assert_eq!(
            app.post_fixes(&token, &id, &batch(&format!("b{b}"), 2))
                .await
                .status(),
            202
        );
    }
    let r = app.post_fixes(&token, &id, &batch("over", 2)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "buffer_full");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_over_its_rate_gets_429_with_retry_after_and_nothing_is_stored() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.rates.device_fixes_per_sec = 1;
        c.rates.device_burst = 10;
    })
    .await;
    let token = scope.device_token("acme", "chatty").await;
    let id = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &id, &batch("first", 10))
            .await
            .status(),
        202
    );
    let r = app.post_fixes(&token, &id, &batch("second", 5)).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "retry after {wait} s");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "rate_limited");
    // Another device of the tenant has its own budget.
    let other = scope.device_token("acme", "quiet").await;
    let other_id = app.session_id(&other).await;
    assert_eq!(
        app.post_fixes(&other, &other_id, &batch("b", 10))
            .await
            .status(),
        202
    );
    let stored = crate::helpers::buffered_entries(&scope, 4).await;
    let batches: Vec<&str> = stored
        .iter()
        .filter(|e| e["type"] == "fixes")
        .map(|e| e["batch_id"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 2);
    assert!(!batches.contains(&"second"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_the_forwarder_recreates_its_group_and_forwards_again() {
    let mut redis = StoppableRedis::start(false).await;
    let scope = Scope::new().await;
    let url = redis.url();
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| c.redis.url = url).await;
    let token = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &id, &batch("before", 2))
            .await
            .status(),
        202
    );
    let topic = scope.locations_topic();
    let before = kit::read_topic(&topic, 2, Duration::from_secs(30)).await;
    assert_eq!(before.len(), 2, "the first batch reached Kafka");

    // Redis restarts without persistence: the streams, their consumer group and the leases
    // are gone. The next XADD creates the stream again, without the group.
    redis.stop("KILL");
    redis.up().await;
    let after_batch = batch("after", 3);
    let stored = kit::eventually(Duration::from_secs(20), || async {
        let status = app.post_fixes(&token, &id, &after_batch).await.status();
        (status == 202).then_some(())
    })
    .await;
    assert!(
        stored.is_some(),
        "ingest stores batches again once Redis is back"
    );

    let records = kit::read_topic_until(&topic, Duration::from_secs(30), |r| {
        r.iter().filter(|r| r.value["batch_id"] == "after").count() >= 3
    })
    .await;
    let after = records
        .iter()
        .filter(|r| r.value["batch_id"] == "after")
        .count();
    assert_eq!(after, 3, "a batch accepted after the restart reaches Kafka");
    app.stop().await;
}

/// Posts `batches` batches of 5 fixes to a fresh session on `app`; returns the batch ids.
async fn post_batches(app: &crate::helpers::TestApp, device: &str, batches: usize) -> Vec<String> {
    let token = app.device_token("acme", device).await;
    let id = app.session_id(&token).await;
    let mut ids = Vec::new();
    for b in 0..batches {
        let batch_id = format!("{device}-{b}");
        let r = app.post_fixes(&token, &id, &batch(&batch_id, 5)).await;
        assert_eq!(r.status(), 202);
        ids.push(batch_id);
    }
    ids
}

/// Restarts a persistent Redis with `signal` between the 202s and the forwarder's start,
/// then checks that every accepted fix reaches Kafka.
async fn a_redis_restart_loses_no_accepted_batch(signal: &str) {
    let mut redis = StoppableRedis::start(true).await;
    let scope = Scope::new().await;
    let url = redis.url();
    // The API alone: nothing is forwarded before the restart, so everything must survive it.
    let api = spawn_in(&scope, &[Role::Api], |c| c.redis.url = url.clone()).await;
    let accepted = post_batches(&api, &format!("durable-{signal}"), 20).await;
    if signal == "KILL" {
        // everysec: what was appended more than a second ago is on disk.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    redis.stop(signal);
    redis.up().await;

    let forwarder = spawn_in(&scope, &[Role::Forwarder], |c| c.redis.url = url).await;
    let records =
        kit::read_topic_to_end(&scope.locations_topic(), 100, Duration::from_secs(60)).await;
    let on_kafka: std::collections::HashSet<&str> = records
        .iter()
        .map(|r| r.value["batch_id"].as_str().unwrap())
        .collect();
    for id in &accepted {
        assert!(
            on_kafka.contains(id.as_str()),
            "batch {id} was lost in the restart"
        );
    }
    assert_eq!(records.len(), 100, "20 batches of 5 fixes");
    forwarder.stop().await;
    api.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_sigterm_restart_with_the_local_persistence_loses_no_accepted_batch() {
    a_redis_restart_loses_no_accepted_batch("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_sigkill_with_the_local_persistence_loses_nothing_older_than_a_second() {
    a_redis_restart_loses_no_accepted_batch("KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_moves_again_soon_after_a_redis_outage_of_several_seconds() {
    let mut redis = StoppableRedis::start(true).await;
    let scope = Scope::new().await;
    let url = redis.url();
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| c.redis.url = url).await;
    let token = scope.device_token("acme", "phone-outage").await;
    let id = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &id, &batch("before", 2))
            .await
            .status(),
        202
    );
    let topic = scope.locations_topic();
    assert_eq!(
        kit::read_topic(&topic, 2, Duration::from_secs(30))
            .await
            .len(),
        2
    );

    // Longer than the first steps of a reconnect backoff (1, 2, 4 s...): a client that
    // backs off towards a minute would leave the shard idle long after Redis is back.
    redis.stop("TERM");
    tokio::time::sleep(Duration::from_secs(8)).await;
    redis.up().await;
    let after_batch = batch("after", 3);
    kit::eventually(Duration::from_secs(20), || async {
        let status = app.post_fixes(&token, &id, &after_batch).await.status();
        (status == 202).then_some(())
    })
    .await
    .expect("ingest stores batches again once Redis is back");
    let stored_at = std::time::Instant::now();
    // A lease and a half is what a takeover may take; 20 s is far above it and far below
    // the minute of a backed-off reconnect.
    let records = kit::read_topic_until(&topic, Duration::from_secs(20), |r| {
        r.iter().filter(|r| r.value["batch_id"] == "after").count() >= 3
    })
    .await;
    let after = records
        .iter()
        .filter(|r| r.value["batch_id"] == "after")
        .count();
    assert_eq!(
        after,
        3,
        "the batch accepted after the outage reached Kafka ({:.1} s after its 202)",
        stored_at.elapsed().as_secs_f64()
    );
    app.stop().await;
}
