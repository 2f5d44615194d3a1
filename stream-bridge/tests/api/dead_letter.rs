//! Records a webhook refuses, and values that are not records, go to the dead-letter topic.

use std::collections::HashSet;
use std::time::Duration;

use locus_testkit::read_topic;
use locus_wire::topics::Topics;

use crate::helpers::{
    Behaviour, Receiver, TestBridge, config, fresh_topics, produce, produce_raw, session_records,
};

#[tokio::test]
async fn records_a_webhook_rejects_go_to_the_dead_letter_topic_and_the_bridge_moves_on() {
    let prefix = fresh_topics(2).await;
    let receiver = Receiver::spawn().await;
    receiver.set("refuser", Behaviour::Always(400));
    let bridge = TestBridge::spawn(
        config(&prefix)
            .with_sink("refuser", &receiver.url("refuser"), "s1")
            .with_sink("acme", &receiver.url("acme"), "s2"),
    )
    .await;

    let refused = session_records("refuser", 5);
    produce(&prefix, &refused).await;
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        refused.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), refused.len());
    let sent: HashSet<_> = refused.iter().map(|r| r.record_id.to_string()).collect();
    let parked: HashSet<_> = dead
        .iter()
        .map(|r| r.value["record_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(parked, sent, "the same values");
    for r in &dead {
        assert_eq!(r.key, refused[0].session_id.to_string());
        assert_eq!(r.headers["locus-dlq-reason"], "rejected");
        assert_eq!(r.headers["locus-dlq-sink"], "webhook");
        assert!(r.headers["locus-dlq-detail"].contains("400"));
        assert!(r.headers["locus-dlq-origin"].starts_with(&format!("{prefix}locations/")));
        // The original headers travel along.
        assert_eq!(r.headers["locus-tenant-id"], "refuser");
        assert_eq!(r.headers["locus-record-type"], "location");
    }
    // A permanent error is not retried: one attempt per delivery.
    let attempts = receiver.requests_for("refuser");
    let ids: HashSet<_> = attempts
        .iter()
        .map(|r| r.header("locus-delivery-id"))
        .collect();
    assert_eq!(ids.len(), attempts.len(), "no delivery was sent twice");

    // The partition moved past the refused records.
    let later = session_records("acme", 4);
    produce(&prefix, &later).await;
    assert_eq!(receiver.wait_for("acme", 4).await.len(), 4);
    bridge.stop().await;
}

#[tokio::test]
async fn a_value_that_is_not_a_location_record_goes_to_the_dead_letter_topic() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    let bridge =
        TestBridge::spawn(config(&prefix).with_sink("acme", &receiver.url("acme"), "s")).await;

    produce_raw(&prefix, "some-session", br#"{"not": "a record"}"#).await;
    let after = session_records("acme", 3);
    produce(&prefix, &after).await;

    assert_eq!(
        receiver.wait_for("acme", 3).await.len(),
        3,
        "the bridge moves on"
    );
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].key, "some-session");
    assert_eq!(dead[0].value, serde_json::json!({"not": "a record"}));
    assert_eq!(dead[0].headers["locus-dlq-reason"], "malformed");
    assert_eq!(dead[0].headers["locus-dlq-sink"], "none");
    bridge.stop().await;
}

#[tokio::test]
async fn records_whose_attempts_are_exhausted_go_to_the_dead_letter_topic() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    receiver.set("acme", Behaviour::Always(503));
    let mut config = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    config.max_attempts = 3;
    let bridge = TestBridge::spawn(config).await;

    let records = session_records("acme", 4);
    produce(&prefix, &records).await;
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        records.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(dead.len(), records.len());
    for r in &dead {
        assert_eq!(r.headers["locus-dlq-reason"], "exhausted");
        assert!(
            r.headers["locus-dlq-detail"].contains("503"),
            "{:?}",
            r.headers
        );
    }
    let attempts = receiver.requests_for("acme");
    assert_eq!(attempts.len() % 3, 0, "three attempts per delivery");
    bridge.stop().await;
}
