//! The tracker's topics as ingest creates them at start.

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

use crate::helpers::require_kafka;

#[tokio::test]
async fn ingest_creates_the_positions_topic_compacted_and_the_geofence_events_topic_not() {
    let brokers = require_kafka().await;
    let prefix = locus_testkit::unique("locus_tracker_topics_") + ".";
    let mut config = locus_ingest::Config::from_args_only([
        "--jwt-secret",
        "s",
        "--kafka-brokers",
        &brokers,
        "--kafka-topic-prefix",
        &prefix,
    ])
    .expect("valid arguments");
    config.kafka.security = locus_testkit::kafka_security();
    locus_ingest::kafka::ensure_topics(&config)
        .await
        .expect("ingest creates its topics");
    let topics = locus_wire::topics::Topics::new(&prefix);
    let admin: AdminClient<DefaultClientContext> =
        locus_testkit::kafka_config_for(&brokers).create().unwrap();
    let described = admin
        .describe_configs(
            &[
                ResourceSpecifier::Topic(topics.positions()),
                ResourceSpecifier::Topic(topics.geofence_events()),
            ],
            &AdminOptions::new(),
        )
        .await
        .expect("describe the topics");
    let policies: Vec<String> = described
        .into_iter()
        .map(|r| {
            let resource = r.expect("the topic exists");
            resource
                .get("cleanup.policy")
                .and_then(|e| e.value.clone())
                .expect("a cleanup policy")
        })
        .collect();
    assert_eq!(policies, ["compact", "delete"]);
}
