//! Dead letters can be replayed: `no_sink` records, republished once their tenant's sink
//! exists, reach it in order, and a second replay does not send them again.

use std::time::Duration;

use locus_stream_bridge::replay::{ReplayFilter, replay_dead_letters};
use locus_testkit::read_topic;
use locus_wire::topics::Topics;

use crate::helpers::{Receiver, TestBridge, config, fresh_topics, produce, session_records};

#[tokio::test]
async fn no_sink_records_replayed_after_the_sink_exists_are_delivered_in_order_once() {
    let prefix = fresh_topics(2).await;
    let receiver = Receiver::spawn().await;
    let without = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    let with = without
        .clone()
        .with_sink("late", &receiver.url("late"), "s2");

    let bridge = TestBridge::spawn(without.clone()).await;
    let late = session_records("late", 8);
    produce(&prefix, &late).await;
    // Another tenant's records after them, delivered as usual.
    produce(&prefix, &session_records("acme", 2)).await;
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        late.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), late.len(), "the records wait as no_sink");
    bridge.stop().await;

    // The sink exists now; the bridge resumes after the dead-lettered records.
    let bridge = TestBridge::spawn(with).await;
    let filter = ReplayFilter {
        reason: Some("no_sink".to_owned()),
        tenant: Some("late".to_owned()),
    };
    let report = replay_dead_letters(&without, &filter)
        .await
        .expect("the replay runs");
    assert_eq!((report.read, report.replayed), (late.len(), late.len()));

    let delivered = receiver.wait_for("late", late.len()).await;
    let ids: Vec<_> = delivered.iter().map(|r| r.record_id).collect();
    let sent: Vec<_> = late.iter().map(|r| r.record_id).collect();
    assert_eq!(ids, sent, "every replayed record, in order");

    let again = replay_dead_letters(&without, &filter)
        .await
        .expect("the second replay runs");
    assert_eq!(again.replayed, 0, "nothing is replayed twice");
    tokio::time::sleep(Duration::from_secs(1)).await;
    bridge.stop().await;
    assert_eq!(receiver.delivered("late").len(), late.len(), "no copy");
}
