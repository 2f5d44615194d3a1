//! Records of a tenant without a sink are skipped, not delivered anywhere.

use std::time::Duration;

use crate::helpers::{Receiver, TestBridge, config, fresh_topics, produce, session_records};

#[tokio::test]
async fn records_of_a_tenant_without_a_sink_are_skipped_while_others_are_delivered() {
    let prefix = fresh_topics(2).await;
    let receiver = Receiver::spawn().await;
    let bridge =
        TestBridge::spawn(config(&prefix).with_sink("acme", &receiver.url("acme"), "s")).await;

    produce(&prefix, &session_records("nosink", 6)).await;
    let acme = session_records("acme", 6);
    produce(&prefix, &acme).await;

    assert_eq!(receiver.wait_for("acme", 6).await.len(), 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.requests().iter().all(|r| r
            .delivery()
            .records
            .iter()
            .all(|rec| rec.tenant_id.as_str() == "acme")),
        "no record of the tenant without a sink went anywhere"
    );
    let metrics = reqwest::get(bridge.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"locus_bridge_records_skipped_total{reason="no_sink"}"#),
        "{metrics}"
    );
    bridge.stop().await;
}
