//! /healthz, /readyz and /metrics.

use crate::helpers::{
    Receiver, TestBridge, config, fresh_topics, produce, require_kafka, session_records,
};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let prefix = fresh_topics(1).await;
    let receiver = Receiver::spawn().await;
    let bridge =
        TestBridge::spawn(config(&prefix).with_sink("acme", &receiver.url("acme"), "s")).await;
    produce(&prefix, &session_records("acme", 2)).await;
    receiver.wait_for("acme", 2).await;

    let health = reqwest::get(bridge.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let ready = reqwest::get(bridge.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");

    let metrics = reqwest::get(bridge.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    let text = metrics.text().await.unwrap();
    for name in [
        "locus_bridge_records_consumed_total",
        "locus_bridge_records_delivered_total",
        "locus_bridge_delivery_attempts_total",
        "locus_bridge_delivery_duration_seconds",
        "locus_bridge_end_to_end_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    bridge.stop().await;
}

#[tokio::test]
async fn readiness_is_503_with_a_reason_while_the_topic_does_not_exist() {
    require_kafka().await;
    let prefix = locus_testkit::unique("locus_bridge_missing_") + ".";
    let mut config = config(&prefix);
    config.allow_no_sinks = true;
    let bridge = TestBridge::spawn(config).await;

    let health = reqwest::get(bridge.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on Kafka");
    let ready = reqwest::get(bridge.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"], "not_ready");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&format!("{prefix}locations")), "{message}");
    bridge.stop().await;
}
