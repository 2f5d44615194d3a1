//! Offsets are committed only for delivered records, and a restart resumes after them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use locus_wire::record::LocationRecord;
use locus_wire::topics::Topics;

use crate::helpers::{
    Behaviour, PATIENCE, Receiver, TestBridge, config, fresh_topics, produce_to, session_records,
};

/// One session per partition, so that every partition has records before and after the
/// restart: an off-by-one in the stored offsets shows in each.
async fn produce_one_session_per_partition(prefix: &str, n: u32) -> Vec<LocationRecord> {
    let mut all = Vec::new();
    for partition in 0..2 {
        let records = session_records("acme", n);
        produce_to(prefix, Some(partition), &records).await;
        all.extend(records);
    }
    all
}

#[tokio::test]
async fn a_restarted_bridge_delivers_the_new_records_and_none_of_the_delivered_ones_again() {
    let prefix = fresh_topics(2).await;
    let receiver = Receiver::spawn().await;
    let first_config = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    let second_config = first_config.clone();

    let first = produce_one_session_per_partition(&prefix, 8).await;
    let bridge = TestBridge::spawn(first_config).await;
    receiver.wait_for("acme", first.len()).await;
    bridge.stop().await;

    let second = produce_one_session_per_partition(&prefix, 6).await;
    let bridge = TestBridge::spawn(second_config).await;
    receiver.wait_for("acme", first.len() + second.len()).await;
    // Give a wrongly rewound consumer time to deliver the first set again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    bridge.stop().await;

    let mut seen: HashMap<_, usize> = HashMap::new();
    for r in receiver.delivered("acme") {
        *seen.entry(r.record_id).or_default() += 1;
    }
    for r in first.iter().chain(&second) {
        assert_eq!(
            seen.remove(&r.record_id),
            Some(1),
            "record {} of session {} delivered once",
            r.batch_index,
            r.session_id
        );
    }
    assert!(seen.is_empty(), "nothing else was delivered: {seen:?}");
}

#[tokio::test]
async fn records_still_undelivered_when_the_grace_period_ends_are_delivered_after_the_restart() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    receiver.set("acme", Behaviour::Always(503));
    let mut config = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    config.shutdown.grace_secs = 1;

    let records = session_records("acme", 5);
    produce_to(&prefix, None, &records).await;
    let bridge = TestBridge::spawn(config.clone()).await;
    locus_testkit::eventually(PATIENCE, || {
        let tried = !receiver.requests_for("acme").is_empty();
        async move { tried.then_some(()) }
    })
    .await
    .expect("the bridge tries to deliver");
    // The webhook keeps failing, so the tenant's lane is paused: shutdown gives up after
    // the grace period, without storing the offsets of the undelivered records.
    let stopping = Instant::now();
    bridge.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );

    receiver.set("acme", Behaviour::Accept);
    let bridge = TestBridge::spawn(config).await;
    let delivered = receiver.wait_for("acme", records.len()).await;
    let ids: Vec<_> = delivered.iter().map(|r| r.record_id).collect();
    let sent: Vec<_> = records.iter().map(|r| r.record_id).collect();
    assert_eq!(ids, sent);
    bridge.stop().await;
    let dead = locus_testkit::read_topic(
        Topics::new(&prefix).dead_letter(),
        1,
        Duration::from_secs(3),
    )
    .await;
    assert!(dead.is_empty(), "nothing was dead-lettered: {dead:?}");
}
