//! A retry is never stored twice, and a batch id means one set of fixes.

use std::collections::HashSet;
use std::time::Duration;

use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{batch, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_batch_is_answered_again_but_stored_once() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-2").await;
    let id = app.session_id(&token).await;
    let body = batch("same-batch", 10);
    let first: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    let second = app.post_fixes(&token, &id, &body).await;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["accepted"], first["accepted"]);

    // A marker batch after the duplicate: once it is on Kafka, so would the duplicate be.
    app.post_fixes(&token, &id, &batch("marker", 1)).await;
    let records = kit::read_topic(&scope.locations_topic(), 12, Duration::from_secs(15)).await;
    assert_eq!(records.len(), 11, "10 fixes once, plus the marker");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_id_reused_for_other_fixes_is_refused_with_409_and_not_stored() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-reuse").await;
    let id = app.session_id(&token).await;
    let first = batch("reused", 2);
    assert_eq!(app.post_fixes(&token, &id, &first).await.status(), 202);
    // Other fixes under the same id: a client bug, not a retry.
    let other = batch("reused", 3);
    let r = app.post_fixes(&token, &id, &other).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "batch_id_reused");
    assert!(
        body["message"].as_str().unwrap().contains("reused"),
        "{body}"
    );
    // The very same fixes again are still a retry.
    let again = app.post_fixes(&token, &id, &first).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);

    let records = app
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 3, "the first batch once, plus the marker");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_an_id_retried_after_a_lost_answer_is_stored_once() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-noid").await;
    let id = app.session_id(&token).await;
    let mut body = batch("unused", 4);
    body.as_object_mut().unwrap().remove("batch_id");
    let first: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    // The client never saw that answer and sends the batch again.
    let second: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["batch_id"], first["batch_id"]);

    let records = app
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 5, "4 fixes once, plus the marker");
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r.value["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    app.stop().await;
}

/// Batches one session posts in the dedupe-layout test (a 50-minute session at one batch
/// every 10 s).
const LONG_SESSION_BATCHES: usize = 300;

/// The most Redis may hold per remembered batch (`MEMORY USAGE` of the session's dedupe
/// state over its batches) while the state is a listpack (up to Redis'
/// `hash-max-listpack-entries`, 512 by default), and once it is a hash table. The old
/// layout, one key per batch with its whole answer, took about 320 bytes.
const MAX_DEDUPE_BYTES_PER_BATCH: (usize, usize) = (40, 80);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_dedupe_state_is_one_small_key_that_lives_for_the_window_and_answers_retries() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-window").await;
    let id = app.session_id(&token).await;

    // A batch with a rejected fix first: its retry must list the same rejection.
    let mut with_rejection = batch("0191c5a2-7b3e-7000-8000-rejected0000", 2);
    with_rejection["fixes"][1]["lat"] = serde_json::json!(200.0);
    let first = app.post_fixes(&token, &id, &with_rejection).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["rejected"].as_array().unwrap().len(), 1, "{first}");
    let mut bodies = Vec::new();
    for i in 1..LONG_SESSION_BATCHES {
        // Batch ids shaped like the UUIDs mobile clients send.
        let body = batch(&format!("0191c5a2-7b3e-7000-8000-{i:012}"), 1);
        let r = app.post_fixes(&token, &id, &body).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        bodies.push(body);
    }

    // Other sessions' traffic in between.
    for device in 0..20 {
        let token = scope
            .device_token("acme", &format!("phone-other-{device}"))
            .await;
        let other = app.session_id(&token).await;
        for i in 0..5 {
            let r = app
                .post_fixes(&token, &other, &batch(&format!("b{i}"), 2))
                .await;
            assert_eq!(r.status(), 202);
        }
    }

    // Retries of the first, an early and the last batch get their answers.
    let again: Value = app
        .post_fixes(&token, &id, &with_rejection)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["accepted"], first["accepted"]);
    // The same rejections (index and reason); the message is the reason's summary, since
    // the message of the first answer repeats the client's input and is not kept.
    let rejections = |answer: &Value| -> Vec<(Value, Value)> {
        answer["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].clone(), r["reason"].clone()))
            .collect()
    };
    assert_eq!(rejections(&again), rejections(&first));
    assert!(
        again["rejected"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lat")),
        "{again}"
    );
    assert_eq!(again["batch_id"], first["batch_id"]);
    for body in [&bodies[0], &bodies[bodies.len() - 1]] {
        let again: Value = app
            .post_fixes(&token, &id, body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(again["duplicate"], true, "{again}");
        assert_eq!(again["accepted"], 1);
        assert_eq!(again["rejected"], serde_json::json!([]));
    }

    // The session's dedupe state: one key, living for the window, small per batch.
    let mut conn = kit::require_redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*{id}*", scope.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    // The closed and open marks are the session events' own, not dedupe state.
    let keys: Vec<&String> = keys
        .iter()
        .filter(|k| !k.contains(":closed:") && !k.contains(":open:"))
        .collect();
    assert_eq!(keys.len(), 1, "one dedupe key for the session: {keys:?}");
    let ttl: i64 = redis::cmd("TTL")
        .arg(keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let window = scope.config(&[]).redis.dedupe_window_secs as i64;
    assert!(
        (window - 60..=window).contains(&ttl),
        "the key lives for the window ({window} s) from the last batch: {ttl}"
    );
    let bytes: usize = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(keys[0])
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let encoding: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let max = match encoding.as_str() {
        "listpack" => MAX_DEDUPE_BYTES_PER_BATCH.0,
        _ => MAX_DEDUPE_BYTES_PER_BATCH.1,
    };
    let per_batch = bytes / LONG_SESSION_BATCHES;
    assert!(
        per_batch <= max,
        "{bytes} bytes ({encoding}) for {LONG_SESSION_BATCHES} batches: {per_batch} per batch"
    );
    app.stop().await;
}

/// Prints what Redis holds per remembered batch over 10,000 one-fix batches (20 sessions
/// of 500), for docs/guarantees.md: `cargo test -p locus-ingest --test api
/// dedupe::measure -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run it by name"]
async fn measure_dedupe_bytes_per_batch() {
    let (app, scope) = spawn_app().await;
    let (sessions, per_session) = (20, 500);
    for device in 0..sessions {
        let token = scope
            .device_token("acme", &format!("phone-measure-{device}"))
            .await;
        let id = app.session_id(&token).await;
        for i in 0..per_session {
            let body = batch(&format!("0191c5a2-7b3e-7000-8000-{i:012}"), 1);
            assert_eq!(app.post_fixes(&token, &id, &body).await.status(), 202);
        }
    }
    let mut conn = kit::require_redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", scope.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let (mut count, mut bytes, mut name_bytes) = (0, 0, 0);
    for key in keys
        .iter()
        .filter(|k| !(k.ends_with(":fixes") || k.ends_with(":owner") || k.contains(":closed:")))
    {
        let used: usize = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        count += 1;
        bytes += used;
        name_bytes += key.len();
    }
    let batches = sessions * per_session;
    println!(
        "{batches} batches: {count} dedupe keys, {bytes} bytes ({} per batch); key names {name_bytes} bytes, of which the test prefix {} (the default prefix `locus` is {} shorter per key)",
        bytes / batches,
        count * scope.redis_prefix.len(),
        scope.redis_prefix.len() - "locus".len(),
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_remembered_in_the_layout_before_the_upgrade_is_still_a_duplicate() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "phone-legacy").await;
    let id = app.session_id(&token).await;
    // What the one-key-per-batch layout wrote (a value from before fingerprints existed,
    // which counts as the same batch whatever its fixes).
    let session = locus_wire::SessionId::parse(&id).unwrap();
    let shards = scope.config(&[]).redis.shards;
    let shard = locus_ingest::buffer::Keys::new(&scope.redis_prefix, shards).shard_of(session);
    let mut conn = kit::require_redis().await;
    let _: () = redis::cmd("SET")
        .arg(format!(
            "{}:{{s{shard}}}:batch:{id}:before-upgrade",
            scope.redis_prefix
        ))
        .arg(r#"{"batch_id":"before-upgrade","accepted":3,"rejected":[],"duplicate":false}"#)
        .arg("EX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .unwrap();
    let again: Value = app
        .post_fixes(&token, &id, &batch("before-upgrade", 3))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["accepted"], 3);
    let records = app
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 1, "only the marker");
    app.stop().await;
}
