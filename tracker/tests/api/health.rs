//! The tracker's probes and metrics.

use crate::helpers::{PATIENCE, TestTracker, World};

#[tokio::test]
async fn the_tracker_is_ready_with_postgres_and_the_location_topic_and_serves_its_metrics() {
    let world = World::new(1).await;
    let tracker = TestTracker::spawn(world.config()).await;
    // Ready once the broker describes the fresh topic with its partitions.
    let body = locus_testkit::eventually(PATIENCE, || async {
        let ready = reqwest::get(tracker.url("/readyz")).await.ok()?;
        if ready.status() != 200 {
            return None;
        }
        ready.json::<serde_json::Value>().await.ok()
    })
    .await
    .expect("the tracker did not become ready");
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
