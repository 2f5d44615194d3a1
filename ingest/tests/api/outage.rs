//! When Redis cannot take a batch, the device hears 503 with Retry-After: never a 202 for
//! data that was not stored.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, batch, spawn_in};

/// A throwaway Redis server of our own, so the test can take it down.
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// A fresh, empty server on `port` (a restart without persistence).
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (./locus services installs it)");
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Waits until the server answers.
    async fn wait_up(&self) {
        let url = self.url();
        kit::eventually(Duration::from_secs(5), || {
            let url = url.clone();
            async move {
                let client = redis::Client::open(url).ok()?;
                client
                    .get_multiplexed_async_connection()
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await
        .expect("private redis-server starts");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_503_with_retry_after_while_redis_is_down() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    kit::eventually(Duration::from_secs(5), || {
        let url = url.clone();
        async move {
            let client = redis::Client::open(url).ok()?;
            client
                .get_multiplexed_async_connection()
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await
    .expect("private redis-server starts");

    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| c.redis.url = redis.url()).await;
    let token = kit::device_token("acme", "phone-1");
    let id = app.start_session(&token).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.post_fixes(&token, &id, &batch("before", 2))
            .await
            .status(),
        202
    );

    redis.child.kill().unwrap();
    redis.child.wait().unwrap();
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
    let token = kit::device_token("acme", "phone-1");
    let id = app.start_session(&token).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let token = kit::device_token("acme", "chatty");
    let id = app.start_session(&token).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let other = kit::device_token("acme", "quiet");
    let other_id = app.start_session(&other).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    let redis = PrivateRedis::start();
    redis.wait_up().await;
    let port = redis.port;
    let scope = Scope::new().await;
    let url = redis.url();
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| c.redis.url = url).await;
    let token = kit::device_token("acme", "phone-1");
    let id = app.start_session(&token).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
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
    drop(redis);
    let _redis = PrivateRedis::start_on(port);
    _redis.wait_up().await;
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
