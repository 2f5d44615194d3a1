//! The outbox relay against the real broker: a crash between publish and delete does not
//! publish a row twice.

use std::collections::HashMap;

use locus_tracker::relay::{self, OutboxRow, SEQ_HEADER, partitioner::partition_of};

use crate::helpers::{PATIENCE, TestTracker, World};

/// Writes `n` position rows for `n` devices straight into the outbox; returns them.
async fn outbox_rows(world: &World, n: usize) -> Vec<OutboxRow> {
    let mut rows = Vec::new();
    for i in 0..n {
        let key = format!("acme/device-{i}");
        let payload = serde_json::json!({ "device": i }).to_string();
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO geo_outbox (tenant_id, topic, key, payload) \
             VALUES ('acme', 'positions', $1, $2::jsonb) RETURNING seq",
        )
        .bind(&key)
        .bind(&payload)
        .fetch_one(&world.owner)
        .await
        .unwrap();
        rows.push(OutboxRow {
            seq,
            tenant_id: "acme".into(),
            topic: "positions".into(),
            key,
            payload,
        });
    }
    rows
}

#[tokio::test]
async fn rows_published_before_a_crash_and_not_deleted_are_not_published_again() {
    let world = World::new(1).await;
    let rows = outbox_rows(&world, 12).await;
    // A relay that published the first 7 rows, each to its partition with its seq, and
    // died before it deleted them.
    let producer = relay::producer(&locus_testkit::kafka_settings(&world.prefix)).unwrap();
    for row in &rows[..7] {
        let partition = partition_of(&row.key, 3);
        relay::send(&producer, world.topics.positions(), partition, row)
            .await
            .unwrap()
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .unwrap();
    }
    assert_eq!(world.outbox_len().await, 12);

    // The next relay reads each partition's last record, drops the 7, publishes the 5.
    let tracker = TestTracker::spawn(world.config()).await;
    let drained = locus_testkit::eventually(PATIENCE, || async {
        (world.outbox_len().await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the outbox was not drained");
    tracker.stop().await;

    let published = locus_testkit::read_topic_to_end(world.topics.positions(), 12, PATIENCE).await;
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for record in &published {
        let seq: i64 = record.headers[SEQ_HEADER].parse().unwrap();
        *seen.entry(seq).or_default() += 1;
        let row = rows
            .iter()
            .find(|r| r.seq == seq)
            .expect("a row of the outbox");
        assert_eq!(record.key, row.key);
        assert_eq!(
            record.partition,
            partition_of(&row.key, 3),
            "murmur2 partition"
        );
    }
    let want: HashMap<i64, usize> = rows.iter().map(|r| (r.seq, 1)).collect();
    assert_eq!(seen, want, "every row exactly once");
    // And in seq order within each partition.
    for partition in 0..3 {
        let seqs: Vec<i64> = published
            .iter()
            .filter(|r| r.partition == partition)
            .map(|r| r.headers[SEQ_HEADER].parse().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
}

#[tokio::test]
async fn the_last_published_seq_of_each_partition_is_read_from_the_broker() {
    let world = World::new(1).await;
    let rows = outbox_rows(&world, 6).await;
    let producer = relay::producer(&locus_testkit::kafka_settings(&world.prefix)).unwrap();
    let mut want = HashMap::new();
    for row in &rows {
        let partition = partition_of(&row.key, 3);
        relay::send(&producer, world.topics.positions(), partition, row)
            .await
            .unwrap()
            .await
            .unwrap()
            .map_err(|(e, _)| e)
            .unwrap();
        want.insert(("positions", partition), row.seq);
    }
    let topics = relay::RelayTopics {
        positions: world.topics.positions().to_owned(),
        geofence_events: world.topics.geofence_events().to_owned(),
    };
    let counts = relay::partition_counts(&producer, &topics).await.unwrap();
    assert_eq!(counts[&"positions"], 3);
    let last = relay::last_published(
        &locus_testkit::kafka_settings(&world.prefix),
        &topics,
        &counts,
    )
    .await
    .unwrap();
    assert_eq!(last, want);
}
