//! The tracker's probes and metrics.

use crate::helpers::{TestTracker, World};

#[tokio::test]
async fn the_tracker_is_ready_with_postgres_and_the_location_topic_and_serves_its_metrics() {
    let world = World::new(1).await;
    let tracker = TestTracker::spawn(world.config()).await;
    let ready = reqwest::get(tracker.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["kafka"], "ok");
    let metrics = reqwest::get(tracker.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("locus_tracker_records_consumed_total"),
        "{metrics}"
    );
    assert!(metrics.contains("locus_tracker_relay_active"), "{metrics}");
    tracker.stop().await;
}
