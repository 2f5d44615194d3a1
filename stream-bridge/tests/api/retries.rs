//! A failing webhook gets the same delivery again until it takes it.

use std::collections::HashSet;

use crate::helpers::{
    Behaviour, Receiver, TestBridge, config, fresh_topics, produce, session_records,
};

#[tokio::test]
async fn a_webhook_that_fails_three_times_still_gets_every_record_under_one_delivery_id() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    receiver.set(
        "acme",
        Behaviour::FailFirst {
            remaining: 3,
            status: 503,
        },
    );
    let records = session_records("acme", 10);
    produce(&prefix, &records).await;
    let bridge =
        TestBridge::spawn(config(&prefix).with_sink("acme", &receiver.url("acme"), "s")).await;

    let delivered = receiver.wait_for("acme", 10).await;
    let ids: Vec<_> = delivered.iter().map(|r| r.record_id).collect();
    let sent: Vec<_> = records.iter().map(|r| r.record_id).collect();
    assert_eq!(ids, sent, "every record, once, in order");

    let requests = receiver.requests_for("acme");
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..4], &[503, 503, 503, 200]);
    // Deliveries of one tenant run one after another, so the first one took all three
    // failures: four attempts of one delivery, the same id and the same body.
    let first_four: HashSet<_> = requests[..4]
        .iter()
        .map(|r| (r.header("webhook-id").to_owned(), r.body.clone()))
        .collect();
    assert_eq!(
        first_four.len(),
        1,
        "retries reuse the delivery id and body"
    );
    assert_eq!(
        requests[0].delivery().delivery_id.to_string(),
        requests[3].header("webhook-id")
    );
    bridge.stop().await;
}
