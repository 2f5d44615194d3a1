//! The consumer lag metric reads what the broker holds past the committed offsets.

use locus_wire::topics::Topics;

use crate::helpers::{
    Behaviour, Receiver, TestBridge, config, fresh_topics, produce_to, session_records,
};

#[tokio::test]
async fn the_lag_metric_counts_per_partition_the_records_a_failing_webhook_has_not_taken() {
    let prefix = fresh_topics(2).await;
    let topic = Topics::new(&prefix).locations().to_owned();
    let receiver = Receiver::spawn().await;
    // The webhook fails for as long as the test says; its tenant's delivery pauses.
    let config = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    let bridge = TestBridge::spawn(config).await;

    // Caught up first, so that the lag must run from committed offsets, not from the start.
    produce_to(&prefix, Some(0), &session_records("acme", 3)).await;
    produce_to(&prefix, Some(1), &session_records("acme", 4)).await;
    receiver.wait_for("acme", 7).await;
    bridge.wait_for_lag(&topic, &[(0, 0), (1, 0)]).await;

    receiver.set("acme", Behaviour::Always(503));
    produce_to(&prefix, Some(0), &session_records("acme", 5)).await;
    produce_to(&prefix, Some(1), &session_records("acme", 2)).await;
    bridge.wait_for_lag(&topic, &[(0, 5), (1, 2)]).await;
    assert_eq!(
        receiver.delivered("acme").len(),
        7,
        "the lagging records are undelivered"
    );

    receiver.set("acme", Behaviour::Accept);
    receiver.wait_for("acme", 14).await;
    // Delivered, stored, committed within the auto-commit interval, then measured.
    bridge.wait_for_lag(&topic, &[(0, 0), (1, 0)]).await;
    bridge.stop().await;
}
