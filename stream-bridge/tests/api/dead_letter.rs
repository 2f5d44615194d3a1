//! Values that are not records go to the dead-letter topic; records a webhook refuses do
//! not: they wait for the webhook, which is tried again until it takes them.

use std::collections::HashSet;
use std::time::Duration;

use locus_testkit::{read_topic, read_topic_to_end};
use locus_wire::topics::Topics;

use crate::helpers::{
    Behaviour, PATIENCE, Receiver, TestBridge, config, fresh_topics, produce, produce_raw,
    session_records,
};

#[tokio::test]
async fn records_a_webhook_refuses_wait_for_it_in_order_and_never_go_to_the_dead_letter_topic() {
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
    // More attempts than the old limit of 8, after which the records used to be parked.
    locus_testkit::eventually(PATIENCE, || {
        let n = receiver.requests_for("refuser").len();
        async move { (n >= 12).then_some(()) }
    })
    .await
    .expect("the refusing webhook is tried again and again");
    // The other tenant is not held back meanwhile.
    let later = session_records("acme", 4);
    produce(&prefix, &later).await;
    assert_eq!(receiver.wait_for("acme", 4).await.len(), 4);

    // Every attempt so far is the same delivery: the batch is neither skipped nor split.
    let attempts = receiver.requests_for("refuser");
    let ids: HashSet<_> = attempts.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one delivery, retried");

    receiver.set("refuser", Behaviour::Accept);
    receiver.wait_for("refuser", refused.len()).await;
    bridge.stop().await;
    let ids: Vec<_> = receiver
        .delivered("refuser")
        .iter()
        .map(|r| r.record_id)
        .collect();
    let sent: Vec<_> = refused.iter().map(|r| r.record_id).collect();
    assert_eq!(ids, sent, "every record, once, in order");
    let dead = read_topic_to_end(
        Topics::new(&prefix).dead_letter(),
        0,
        Duration::from_secs(5),
    )
    .await;
    assert!(dead.is_empty(), "nothing was dead-lettered: {dead:?}");
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
