//! A lane's memory is bounded: when a paused tenant's lane is full, the partition feeding
//! it is no longer read until the lane drains, and nothing is lost or reordered by it.

use std::time::Duration;

use crate::helpers::{
    Behaviour, PATIENCE, Receiver, TestBridge, config, fresh_topics, produce, session_records,
};

async fn partitions_paused(bridge: &TestBridge) -> i64 {
    let text = reqwest::get(bridge.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("locus_bridge_partitions_paused "))
        .map_or(0, |v| v.trim().parse::<f64>().expect("a number") as i64)
}

#[tokio::test]
async fn a_full_lane_pauses_its_partition_until_it_drains_and_loses_nothing() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    receiver.set("acme", Behaviour::Always(503));
    let mut config = config(&prefix)
        .with_sink("acme", &receiver.url("acme"), "s1")
        .with_sink("globex", &receiver.url("globex"), "s2");
    config.lane_capacity = 5;
    config.batch_max_records = 3;
    let bridge = TestBridge::spawn(config).await;

    let first = session_records("acme", 20);
    produce(&prefix, &first).await;
    locus_testkit::eventually(PATIENCE, || async {
        (partitions_paused(&bridge).await >= 1).then_some(())
    })
    .await
    .expect("the full lane pauses the partition");
    // Written while the partition is paused: read only once it is resumed.
    let second = session_records("acme", 20);
    produce(&prefix, &second).await;
    let other = session_records("globex", 5);
    produce(&prefix, &other).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    receiver.set("acme", Behaviour::Accept);
    receiver.wait_for("acme", first.len() + second.len()).await;
    receiver.wait_for("globex", other.len()).await;
    locus_testkit::eventually(PATIENCE, || async {
        (partitions_paused(&bridge).await == 0).then_some(())
    })
    .await
    .expect("the partition is resumed");
    bridge.stop().await;

    for (tenant, sent) in [("acme", [first, second].concat()), ("globex", other)] {
        let delivered: Vec<_> = receiver
            .delivered(tenant)
            .iter()
            .map(|r| r.record_id)
            .collect();
        let sent: Vec<_> = sent.iter().map(|r| r.record_id).collect();
        assert_eq!(delivered, sent, "{tenant}: every record, once, in order");
    }
}
