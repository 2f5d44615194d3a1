//! What the forwarder cannot read waits, pending, for a forwarder that can (a newer one in
//! a rolling upgrade), and leaves the delivery path only after its attempts, through the
//! dead-letter topic, with the headers the bridge's dead letters carry.

use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, spawn_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_buffer_entry_goes_to_the_dead_letter_topic_with_the_bridges_headers() {
    let scope = Scope::new().await;
    // JSON, so the test reader can parse the value, but not a buffer entry.
    let raw = r#"{"type":"postcard","data":{}}"#;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut conn = kit::require_redis().await;
    let id: String = redis::cmd("XADD")
        .arg(keys.stream(0))
        .arg("*")
        .arg(locus_wire::buffer::ENTRY_FIELD)
        .arg(raw)
        .query_async(&mut conn)
        .await
        .unwrap();
    // One attempt: this test is about the dead letter's shape, not the wait before it.
    let app = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.undecodable_attempts = 1;
    })
    .await;

    let dead = kit::read_topic(scope.topics().dead_letter(), 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "the entry is dead-lettered");
    let record = &dead[0];
    assert_eq!(record.key, id);
    assert_eq!(record.value, serde_json::from_str::<Value>(raw).unwrap());
    // The same four headers the bridge puts on its dead letters, so one replay tool and
    // one alert read both.
    assert_eq!(record.headers["locus-dlq-reason"], "malformed");
    assert_eq!(record.headers["locus-dlq-sink"], "none");
    assert!(
        record.headers["locus-dlq-detail"].contains("postcard"),
        "{:?}",
        record.headers
    );
    assert_eq!(
        record.headers["locus-dlq-origin"],
        format!("{}/{id}", keys.stream(0))
    );
    // Acknowledged: nothing is left in the buffer.
    let left = kit::eventually(Duration::from_secs(10), || async {
        buffered_count(&scope).await.eq(&0).then_some(())
    })
    .await;
    assert!(left.is_some(), "the dead-lettered entry is acknowledged");
    app.stop().await;
}

async fn buffered_count(scope: &Scope) -> u64 {
    let mut conn = kit::require_redis().await;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    redis::cmd("XLEN")
        .arg(keys.stream(0))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_without_the_entry_field_is_dead_lettered_not_deleted_silently() {
    let scope = Scope::new().await;
    // A foreign writer's entry: fields, but not Locus's.
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut conn = kit::require_redis().await;
    let id: String = redis::cmd("XADD")
        .arg(keys.stream(1))
        .arg("*")
        .arg("fix")
        .arg("52.5,13.4")
        .query_async(&mut conn)
        .await
        .unwrap();
    // One attempt: this test is about the dead letter's shape, not the wait before it.
    let app = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.undecodable_attempts = 1;
    })
    .await;

    let dead = kit::read_topic(scope.topics().dead_letter(), 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "the entry is dead-lettered, not dropped");
    assert_eq!(dead[0].key, id);
    assert_eq!(dead[0].headers["locus-dlq-reason"], "malformed");
    assert_eq!(dead[0].value, serde_json::json!({"fix": "52.5,13.4"}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_entry_waits_pending_for_a_reader_while_later_entries_flow_then_is_dead_lettered_after_its_attempts()
 {
    let scope = Scope::new().await;
    // Written by a newer version, say: this forwarder cannot read it. One in every shard,
    // so that whatever shard the session lands on, its batch comes after one.
    let raw = r#"{"type":"fixes_v2","data":{}}"#;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut conn = kit::require_redis().await;
    let mut ids = Vec::new();
    for shard in 0..4 {
        let id: String = redis::cmd("XADD")
            .arg(keys.stream(shard))
            .arg("*")
            .arg(locus_wire::buffer::ENTRY_FIELD)
            .arg(raw)
            .query_async(&mut conn)
            .await
            .unwrap();
        ids.push(id);
    }
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| {
        c.forwarder.undecodable_attempts = 3;
    })
    .await;
    let token = scope.device_token("acme", "skew-1").await;
    let session = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &session, &crate::helpers::batch("after", 5))
            .await
            .status(),
        202
    );

    // Later entries are not held up behind it.
    let records = kit::read_topic(&scope.locations_topic(), 5, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 5, "the later batch is forwarded");
    // It is read again later, still pending, not acknowledged.
    let reread = kit::eventually(Duration::from_secs(30), || async {
        let count = deliveries(&scope, 0, &ids[0]).await;
        (count >= 2).then_some(count)
    })
    .await;
    assert!(
        reread.is_some(),
        "the undecodable entry stays pending and is read again (deliveries: {})",
        deliveries(&scope, 0, &ids[0]).await
    );

    // After its attempts it goes to the dead-letter topic, and out of the buffer.
    let dead = kit::read_topic(scope.topics().dead_letter(), 4, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 4, "one dead letter per shard");
    let mut keys_seen: Vec<String> = dead.iter().map(|r| r.key.clone()).collect();
    keys_seen.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(keys_seen, expected);
    for record in &dead {
        assert_eq!(record.headers["locus-dlq-reason"], "malformed");
        assert!(
            record.headers["locus-dlq-detail"].contains("3 attempts"),
            "{:?}",
            record.headers
        );
    }
    let left = kit::eventually(Duration::from_secs(10), || async {
        buffered_count(&scope).await.eq(&0).then_some(())
    })
    .await;
    assert!(left.is_some(), "the dead-lettered entry is acknowledged");
    app.stop().await;
}

/// XPENDING's delivery count of entry `id` of `shard` (0: not pending).
async fn deliveries(scope: &Scope, shard: u32, id: &str) -> usize {
    let mut conn = kit::require_redis().await;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(keys.stream(shard))
        .arg(locus_ingest::forwarder::GROUP)
        .arg(id)
        .arg(id)
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.ids.first().map_or(0, |p| p.times_delivered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_kafka_refuses_for_good_goes_to_the_shards_dead_letter_stream_after_its_attempts_and_the_shard_moves_on()
 {
    let scope = Scope::new().await;
    // A location topic that takes no record at all: every fix is too large for it.
    create_topic(&scope.locations_topic(), "max.message.bytes", "64").await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| {
        c.forwarder.rejected_attempts = 2;
    })
    .await;
    let token = scope.device_token("acme", "too-large-1").await;
    let session = app.session_id(&token).await;
    assert_eq!(
        app.post_fixes(&token, &session, &crate::helpers::batch("big", 3))
            .await
            .status(),
        202
    );
    assert_eq!(app.stop_session(&token, &session).await.status(), 200);

    // The stop event is behind the refused batch in the session's shard: it reaches Kafka
    // only once the forwarder has moved past the batch.
    let events = kit::read_topic_until(
        scope.topics().session_events(),
        Duration::from_secs(40),
        |r| r.iter().any(|r| r.value["kind"] == "stopped"),
    )
    .await;
    assert!(
        events.iter().any(|r| r.value["kind"] == "stopped"),
        "the shard moves past the refused entry"
    );
    // The entry is in its shard's dead-letter stream, with why, and out of the buffer. The
    // stop event can reach Kafka before that: one read queues the batch and the event
    // together, and the event's topic takes it while the batch's refuses. The event is
    // only acknowledged after the batch moved aside, so wait for the move.
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut conn = kit::require_redis().await;
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead.clear();
        for shard in 0..4 {
            let key = locus_ingest::forwarder::reader::dead_letter_key(&keys.stream(shard));
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .query_async(&mut conn)
                .await
                .unwrap();
            dead.extend(reply.ids);
        }
        if !dead.is_empty() && crate::helpers::buffered_entries(&scope, 4).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter");
    let reason: String = dead[0].get("reason").unwrap();
    let detail: String = dead[0].get("detail").unwrap();
    let entry: String = dead[0].get(locus_wire::buffer::ENTRY_FIELD).unwrap();
    assert_eq!(reason, "rejected");
    assert!(detail.contains("2 attempts"), "{detail}");
    assert!(
        entry.contains("\"big\""),
        "the entry as it was buffered: {entry}"
    );
    assert!(
        crate::helpers::buffered_entries(&scope, 4).await.is_empty(),
        "nothing is left in the buffer"
    );
    app.stop().await;
}

/// Creates `topic` (3 partitions) with one topic setting.
async fn create_topic(topic: &str, setting: &str, value: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        kit::kafka_config().create().unwrap();
    let new = NewTopic::new(topic, 3, TopicReplication::Fixed(1)).set(setting, value);
    let results = admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.unwrap_or_else(|(name, e)| panic!("create topic {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_a_forwarder_that_cannot_make_progress_and_recovers_when_it_does() {
    let scope = Scope::new().await;
    create_topic(&scope.locations_topic(), "max.message.bytes", "64").await;
    let api = spawn_in(&scope, &[Role::Api], |_| {}).await;
    // Never gives up on the entry within the test: it stays stuck.
    let forwarder = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.rejected_attempts = 1_000_000;
        c.forwarder.stall_secs = 1;
    })
    .await;
    let token = scope.device_token("acme", "stuck-1").await;
    let session = api.session_id(&token).await;
    assert_eq!(
        api.post_fixes(&token, &session, &crate::helpers::batch("stuck", 2))
            .await
            .status(),
        202
    );

    let readyz = || async {
        let r = forwarder
            .client
            .get(forwarder.url("/readyz"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let stalled = kit::eventually(Duration::from_secs(30), || async {
        let (status, body) = readyz().await;
        (status == 503 && body.contains("forwarder")).then_some(body)
    })
    .await;
    assert!(
        stalled.is_some(),
        "a forwarder stuck on an entry is not ready: {:?}",
        readyz().await
    );

    // Take the entry away (as an operator would move it): the shard moves again.
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut conn = kit::require_redis().await;
    for shard in 0..4 {
        let _: i64 = redis::cmd("XTRIM")
            .arg(keys.stream(shard))
            .arg("MAXLEN")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let ready = kit::eventually(Duration::from_secs(30), || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    assert!(
        ready.is_some(),
        "ready again once it makes progress: {:?}",
        readyz().await
    );
    forwarder.stop().await;
    api.stop().await;
}
