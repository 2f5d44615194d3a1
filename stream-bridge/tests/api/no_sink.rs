//! Records of a tenant without a sink are not dropped: they go to the dead-letter topic
//! with reason `no_sink`, where they can be replayed once the sink exists. A bridge with no
//! sinks at all does not start unless told to.

use std::time::Duration;

use locus_stream_bridge::Application;
use locus_testkit::read_topic;
use locus_wire::topics::Topics;

use crate::helpers::{Receiver, TestBridge, config, fresh_topics, produce, session_records};

#[tokio::test]
async fn records_of_a_tenant_without_a_sink_go_to_the_dead_letter_topic_while_others_are_delivered()
{
    let prefix = fresh_topics(2).await;
    let receiver = Receiver::spawn().await;
    let bridge =
        TestBridge::spawn(config(&prefix).with_sink("acme", &receiver.url("acme"), "s")).await;

    let nosink = session_records("nosink", 6);
    produce(&prefix, &nosink).await;
    let acme = session_records("acme", 6);
    produce(&prefix, &acme).await;

    assert_eq!(receiver.wait_for("acme", 6).await.len(), 6);
    let dead = read_topic(
        Topics::new(&prefix).dead_letter(),
        7,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        dead.len(),
        6,
        "every record of the tenant without a sink, once"
    );
    for (record, original) in dead.iter().zip(&nosink) {
        assert_eq!(record.headers["locus-dlq-reason"], "no_sink");
        assert_eq!(record.headers["locus-dlq-sink"], "none");
        assert!(record.headers["locus-dlq-detail"].contains("nosink"));
        assert_eq!(record.value["record_id"], original.record_id.to_string());
    }
    assert!(
        receiver.requests().iter().all(|r| r
            .delivery()
            .records
            .iter()
            .all(|rec| rec.tenant_id.as_str() == "acme")),
        "no record of the tenant without a sink went to another tenant's webhook"
    );
    let metrics = reqwest::get(bridge.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The registry is the process's, shared with the tests running beside this one (the
    // replay test dead-letters `no_sink` records too): at least these 6 are counted.
    let counted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"locus_bridge_records_dead_lettered_total{reason="no_sink"} "#)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no no_sink dead-letter count in {metrics}"));
    assert!(counted >= 6.0, "{metrics}");
    bridge.stop().await;
}

#[tokio::test]
async fn a_bridge_without_any_sink_refuses_to_start_unless_allowed() {
    let prefix = fresh_topics(1).await;
    let refused = Application::build(config(&prefix)).await;
    let message = refused.err().expect("no sinks: no start").to_string();
    assert!(message.contains("LOCUS_BRIDGE_ALLOW_NO_SINKS"), "{message}");

    let mut allowed = config(&prefix);
    allowed.allow_no_sinks = true;
    let bridge = TestBridge::spawn(allowed).await;
    bridge.stop().await;
}
