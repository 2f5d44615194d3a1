//! Fixes that got a 202 reach Kafka, fix for fix, in order, exactly as promised.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, batch, session_order, spawn_app, spawn_in};

#[tokio::test]
async fn ingest_creates_its_topics_as_configured_and_starts_over_existing_smaller_ones() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Forwarder], |_| {}).await;
    let dead_letter = scope.topics().dead_letter().to_owned();
    assert_eq!(
        kit::topic_replicas(&scope.locations_topic()).await,
        Some(vec![1; 3]),
        "--kafka-partitions 3, replication factor 1"
    );
    assert_eq!(
        kit::topic_replicas(&scope.events_topic()).await,
        Some(vec![1; 3])
    );
    assert_eq!(kit::topic_replicas(&dead_letter).await, Some(vec![1]));
    app.stop().await;

    // More partitions configured than the topics have: ingest warns and starts, and
    // leaves the topics as they are (adding partitions would move sessions).
    let config = scope
        .config(&[Role::Forwarder])
        .with(|c| c.topics.partitions = 6);
    let app = locus_ingest::Application::build(config)
        .await
        .expect("ingest starts over existing topics with fewer partitions");
    drop(app);
    assert_eq!(
        kit::topic_replicas(&scope.locations_topic()).await,
        Some(vec![1; 3])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_posted_batch_appears_on_kafka_fix_for_fix_in_order_with_its_headers() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-1").await;
    let session = app.start_session(&token).await;
    let id = session["session_id"].as_str().unwrap().to_owned();

    for b in 0..3 {
        let r = app
            .post_fixes(&token, &id, &batch(&format!("b{b}"), 40))
            .await;
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["accepted"], 40);
        assert_eq!(body["rejected"], serde_json::json!([]));
    }
    let stop = app.stop_session(&token, &id).await;
    assert_eq!(stop.status(), 200);

    let records =
        kit::read_topic_to_end(&scope.locations_topic(), 120, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 120, "every accepted fix is on Kafka");
    let order: Vec<(String, u64)> = records
        .iter()
        .map(|r| {
            (
                r.value["batch_id"].as_str().unwrap().to_owned(),
                r.value["batch_index"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (0..3)
        .flat_map(|b| (0..40).map(move |i| (format!("b{b}"), i)))
        .collect();
    assert_eq!(order, expected, "one session's fixes keep their order");
    let partitions: HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert_eq!(partitions.len(), 1, "one session maps to one partition");
    for r in &records {
        assert_eq!(r.key, id);
        assert_eq!(r.headers["locus-tenant-id"], "acme");
        assert_eq!(r.headers["locus-session-id"], id);
        assert_eq!(r.headers["locus-schema-version"], "1");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.value["schema_version"], 1);
        assert_eq!(r.value["device_id"], "phone-1");
    }
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r.value["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 120, "record ids are unique");

    let events = kit::read_topic(&scope.events_topic(), 2, Duration::from_secs(20)).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.value["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["started", "stopped"]);
    assert_eq!(events[1].value["reason"], "requested");

    // Counts reach PostgreSQL in batches, shortly after Kafka confirmed them.
    let count = kit::eventually(Duration::from_secs(10), || async {
        let s: Value = app
            .get(&token, &format!("/v1/sessions/{id}"))
            .await
            .json()
            .await
            .unwrap();
        (s["fix_count"] == 120).then_some(s)
    })
    .await
    .expect("fix_count reaches 120");
    assert_eq!(count["status"], "stopped");
    assert!(count["last_position"]["lat"].as_f64().unwrap() > 52.52);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_forwards_every_accepted_fix_before_exit() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    let token = scope.device_token("acme", "phone-3").await;
    let id = app.session_id(&token).await;
    for b in 0..20 {
        assert_eq!(
            app.post_fixes(&token, &id, &batch(&format!("g{b}"), 25))
                .await
                .status(),
            202
        );
    }
    app.stop().await;
    let left = crate::helpers::buffered_entries(&scope, 4).await;
    assert!(
        left.is_empty(),
        "the buffer is drained on shutdown: {} entries left",
        left.len()
    );
    let records =
        kit::read_topic_to_end(&scope.locations_topic(), 500, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 500);
}

fn spawn_forwarder(scope: &Scope, consumer: &str) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_locus-ingest"));
    // Its flags alone configure it, as `Config::for_tests` reads no environment: the
    // runner's `scripts/env.sh` names files (a signing key) that only `./locus up` writes.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOCUS_") {
            command.env_remove(name);
        }
    }
    command
        .arg("serve")
        .args(scope.args("forwarder"))
        .args(["--forwarder-consumer", consumer])
        .args(["--redis-url", &kit::redis_url()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn locus-ingest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fix_that_got_a_202_is_on_kafka_after_the_forwarder_is_killed_and_restarted() {
    let scope = Scope::new().await;
    // The API runs in the test; the forwarder is the real binary in its own process, so
    // it can be SIGKILLed mid-flight.
    let api = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let mut forwarder = spawn_forwarder(&scope, "forwarder-killed");

    let devices = 4;
    let batches = 30;
    let mut load = Vec::new();
    for d in 0..devices {
        let token = scope.device_token("acme", &format!("kill-{d}")).await;
        let id = api.session_id(&token).await;
        let client = api.client.clone();
        let url = api.url(&format!("/v1/sessions/{id}/locations"));
        load.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for b in 0..batches {
                let batch_id = format!("d{d}-b{b}");
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(&batch_id, 20))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 202 {
                    accepted.push((id.clone(), batch_id));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        }));
    }

    // Kill only while a forward is in flight: entries read by the forwarder and not yet
    // acknowledged. Those are what a crash puts at risk.
    let in_flight = kit::eventually(Duration::from_secs(30), || async {
        let pending = pending_of(&scope, "forwarder-killed").await;
        (pending > 0).then_some(pending)
    })
    .await
    .expect("the forwarder had entries in flight during the load");
    forwarder.kill().expect("SIGKILL the forwarder");
    forwarder.wait().unwrap();
    // Another name, as a replacement replica would have: the entries left pending with
    // the dead consumer must be claimed across consumers (XAUTOCLAIM), not just re-read.
    let mut forwarder = spawn_forwarder(&scope, "forwarder-replacement");

    let mut expected = HashSet::new();
    for task in load {
        for (session, batch_id) in task.await.unwrap() {
            for i in 0..20 {
                let sid = locus_wire::SessionId::parse(&session).unwrap();
                expected.insert(locus_wire::record::record_id(sid, &batch_id, i).to_string());
            }
        }
    }
    assert_eq!(
        expected.len(),
        devices * batches * 20,
        "every batch got its 202"
    );

    let mut seen: HashSet<String> = HashSet::new();
    let records = kit::read_topic_until(
        &scope.locations_topic(),
        Duration::from_secs(60),
        |records| {
            if let Some(r) = records.last() {
                seen.insert(r.value["record_id"].as_str().unwrap().to_owned());
            }
            seen.len() >= expected.len()
        },
    )
    .await;
    let missing = expected.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} accepted fixes never reached Kafka");
    // Copies are allowed (at-least-once), disorder is not: after dropping copies by
    // record id, each session's records are in the order they were posted.
    let mut first_seen = HashSet::new();
    let mut order: std::collections::HashMap<String, Vec<(u64, u64)>> = Default::default();
    for r in &records {
        if !first_seen.insert(r.value["record_id"].as_str().unwrap().to_owned()) {
            continue;
        }
        let batch_id = r.value["batch_id"].as_str().unwrap();
        let seq: u64 = batch_id.rsplit_once("-b").unwrap().1.parse().unwrap();
        order
            .entry(r.key.clone())
            .or_default()
            .push((seq, r.value["batch_index"].as_u64().unwrap()));
    }
    for (session, seen_order) in &order {
        let mut sorted = seen_order.clone();
        sorted.sort();
        assert_eq!(
            seen_order, &sorted,
            "session {session} is in order on Kafka"
        );
    }
    // The replacement took over what the killed forwarder had in flight.
    assert_eq!(
        pending_of(&scope, "forwarder-killed").await,
        0,
        "the {in_flight} entries in flight at the kill were claimed by the replacement"
    );
    forwarder.kill().unwrap();
    forwarder.wait().unwrap();
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_forwarders_share_the_shards_and_keep_every_session_in_order() {
    let scope = Scope::new().await;
    let api = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let one = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.consumer = "one".into();
        c.forwarder.max_shards = 2;
    })
    .await;
    let two = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.consumer = "two".into();
        c.forwarder.max_shards = 2;
    })
    .await;

    let mut sessions = Vec::new();
    for d in 0..6 {
        let token = scope.device_token("acme", &format!("pair-{d}")).await;
        let id = api.session_id(&token).await;
        sessions.push((token, id));
    }
    for b in 0..8 {
        for (token, id) in &sessions {
            assert_eq!(
                api.post_fixes(token, id, &batch(&format!("b{b}"), 10))
                    .await
                    .status(),
                202
            );
        }
    }
    let total = sessions.len() * 8 * 10;
    let records =
        kit::read_topic_to_end(&scope.locations_topic(), total, Duration::from_secs(40)).await;
    assert_eq!(records.len(), total);
    for (_, id) in &sessions {
        let order = session_order(&records, id, false);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "session {id} is in order");
    }
    // Read every lease at one moment; on a loaded machine a renewal can come late and a
    // lease lapse for an instant before its owner takes it back, so look again for a while
    // before judging the split.
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let read_owners = || async {
        let mut conn = kit::require_redis().await;
        let mut owners = Vec::new();
        for shard in 0..4 {
            let owner: Option<String> = redis::cmd("GET")
                .arg(keys.lease(shard))
                .query_async(&mut conn)
                .await
                .unwrap();
            owners.push(owner?.split('/').next().unwrap().to_owned());
        }
        owners.sort();
        Some(owners)
    };
    let owners = kit::eventually(Duration::from_secs(10), || async {
        read_owners().await.filter(|o| o.len() == 4)
    })
    .await
    .expect("every shard has an owner");
    assert_eq!(
        owners,
        ["one", "one", "two", "two"],
        "each forwarder owns its share"
    );
    one.stop().await;
    two.stop().await;
    api.stop().await;
}

/// Entries read but not acknowledged by `consumer`, over every shard of `scope`.
async fn pending_of(scope: &Scope, consumer: &str) -> u64 {
    let mut conn = kit::require_redis().await;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut total = 0;
    for shard in 0..4 {
        // XPENDING's summary form: [count, first id, last id, [[consumer, count], ...]].
        let summary: redis::Value = redis::cmd("XPENDING")
            .arg(keys.stream(shard))
            .arg(locus_ingest::forwarder::GROUP)
            .query_async(&mut conn)
            .await
            .unwrap_or(redis::Value::Nil);
        let redis::Value::Array(parts) = summary else {
            continue;
        };
        let Some(redis::Value::Array(consumers)) = parts.get(3) else {
            continue;
        };
        for entry in consumers {
            let Ok((name, count)) = redis::from_redis_value::<(String, String)>(entry) else {
                continue;
            };
            if name == consumer {
                total += count.parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}
