//! A row Kafka refuses for good (here: larger than the topic's `max.message.bytes`) while
//! the rows behind it in its partition are published must not be taken for published when
//! a relay restarts and reads the partition's last record.

use std::time::Duration;

use locus_tracker::relay::{self, Published, Relay, RelayTopics, SEQ_HEADER};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use sqlx::Connection;

use crate::helpers::{PATIENCE, TestTracker, World};

/// The topic's record limit in the test: the big row is over it, the small ones under.
const LIMIT: usize = 2000;

/// Sets the geofence-events topic's `max.message.bytes` (the topic has no other settings
/// of its own, so the whole-config AlterConfigs request loses nothing).
async fn limit_topic(world: &World, bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = locus_testkit::kafka_config()
        .create()
        .expect("create the admin client");
    let topic = world.topics.geofence_events();
    let results = admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("alter the topic");
    for r in results {
        r.unwrap_or_else(|(resource, e)| panic!("alter {resource:?}: {e}"));
    }
    // The broker applies the change through its metadata log: wait until it says so.
    let applied = locus_testkit::eventually(PATIENCE, || async {
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await
            .ok()?;
        let config = described.into_iter().next()?.ok()?;
        (config.get("max.message.bytes")?.value.as_deref() == Some(bytes)).then_some(())
    })
    .await;
    assert!(
        applied.is_some(),
        "the topic's max.message.bytes is not {bytes}"
    );
}

/// Inserts one geofence-events row for `key` with a payload of about `size` bytes.
async fn insert_row(world: &World, key: &str, size: usize) -> i64 {
    let payload = serde_json::json!({ "pad": "x".repeat(size) }).to_string();
    sqlx::query_scalar(
        "INSERT INTO geo_outbox (tenant_id, topic, key, payload) \
         VALUES ('acme', 'geofence_events', $1, $2::jsonb) RETURNING seq",
    )
    .bind(key)
    .bind(&payload)
    .fetch_one(&world.owner)
    .await
    .unwrap()
}

async fn outbox_seqs(world: &World) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM geo_outbox ORDER BY seq")
        .fetch_all(&world.owner)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_row_kafka_refused_is_not_deleted_as_published_when_a_relay_restarts() {
    let world = World::new(1).await;
    limit_topic(&world, &LIMIT.to_string()).await;
    let key = "acme/device-1";
    let small = insert_row(&world, key, 100).await;
    let big = insert_row(&world, key, LIMIT * 4).await;
    let after = insert_row(&world, key, 100).await;

    let kafka = locus_testkit::kafka_settings(&world.prefix);
    let topics = RelayTopics {
        positions: world.topics.positions().to_owned(),
        geofence_events: world.topics.geofence_events().to_owned(),
    };
    // The relay's producer settings, with one record per batch: a batch holding the big
    // row is refused whole, and in production the rows behind it often travel in a later
    // batch (another round, or past `linger.ms`).
    let producer = || -> FutureProducer {
        kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap()
    };
    let new_relay = || {
        Relay::new(
            sqlx::PgPool::connect_lazy(&world.url).unwrap(),
            producer(),
            &kafka,
            topics.clone(),
            Duration::from_millis(100),
            3,
        )
    };
    let mut conn = sqlx::PgConnection::connect(&world.url).await.unwrap();

    // The first relay: the small rows are published, the big one is refused.
    let first = new_relay();
    let partitions = relay::partition_counts(&producer(), &topics).await.unwrap();
    let mut published = Published::new();
    let round = first.round(&mut conn, &partitions, &mut published).await;
    assert!(round.is_err(), "the big row was not refused: {round:?}");
    assert_eq!(
        outbox_seqs(&world).await,
        vec![big],
        "only the big row stays"
    );

    // A fresh relay (a restart, or another replica taking the lock) reads the tails: the
    // partition's last record is `after`, above `big`.
    let mut published = relay::last_published(&kafka, &topics, &partitions)
        .await
        .unwrap();
    let partition = relay::partitioner::partition_of(key, 3);
    assert_eq!(published.get(&("geofence_events", partition)), Some(&after));
    let second = new_relay();
    let round = second.round(&mut conn, &partitions, &mut published).await;
    assert_eq!(
        outbox_seqs(&world).await,
        vec![big],
        "the refused row was deleted as already published (round: {round:?})"
    );
    assert!(
        round.is_err(),
        "the refused row was sent again and refused again"
    );

    // Once the topic takes it, the tracker's relay publishes it; nothing was lost.
    limit_topic(&world, "1048588").await;
    let tracker = TestTracker::spawn(world.config()).await;
    let drained = locus_testkit::eventually(PATIENCE, || async {
        (world.outbox_len().await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the refused row was not published");
    let metrics = reqwest::get(tracker.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    tracker.stop().await;
    let refused_line = metrics
        .lines()
        .find(|l| l.starts_with("locus_tracker_outbox_refused_total{topic=\"geofence_events\"}"));
    let refused: f64 = refused_line
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no refused count in:\n{metrics}"));
    assert!(refused >= 2.0, "{refused_line:?}");

    let records =
        locus_testkit::read_topic_to_end(world.topics.geofence_events(), 3, PATIENCE).await;
    let mut seqs: Vec<i64> = records
        .iter()
        .map(|r| r.headers[SEQ_HEADER].parse().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, vec![small, big, after], "every row on Kafka once");
}
