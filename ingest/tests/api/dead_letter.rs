//! What the forwarder cannot read leaves the delivery path only through the dead-letter
//! topic, with the headers the bridge's dead letters carry.

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
    let app = spawn_in(&scope, &[Role::Forwarder], |_| {}).await;

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
    let app = spawn_in(&scope, &[Role::Forwarder], |_| {}).await;

    let dead = kit::read_topic(scope.topics().dead_letter(), 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "the entry is dead-lettered, not dropped");
    assert_eq!(dead[0].key, id);
    assert_eq!(dead[0].headers["locus-dlq-reason"], "malformed");
    assert_eq!(dead[0].value, serde_json::json!({"fix": "52.5,13.4"}));
    app.stop().await;
}
