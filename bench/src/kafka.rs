//! The bench's Kafka clients: a reader with a fresh group (to count a run's records and
//! to time the consume ceiling), a producer with the forwarder's settings (the produce
//! ceiling), and the admin calls of the ceiling's scratch topic.

use std::time::Duration;

use locus_service::settings::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

/// Reader settings: librdkafka's defaults but for these. Nothing is committed: every
/// reader uses a fresh `group` and reads from the start.
pub fn reader_config(kafka: &KafkaSettings, group: &str) -> ClientConfig {
    let mut c = kafka.client_config();
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // A subscribed topic that does not exist yet is looked up again at this interval
        // (default five minutes), so a first run on an empty broker still finds it.
        .set("topic.metadata.refresh.interval.ms", "2000");
    c
}

/// The producer ingest's forwarder uses (see ingest's Kafka settings): idempotent,
/// acks=all, lz4, linger 5 ms.
pub fn producer(kafka: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "500000")
        .create()
}

/// Creates a scratch topic with `partitions` partitions.
pub async fn create_topic(
    kafka: &KafkaSettings,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &options).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Deletes a scratch topic; a broker that cannot is only logged.
pub async fn delete_topic(kafka: &KafkaSettings, topic: &str) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = kafka.client_config().create();
    let Ok(admin) = admin else { return };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = admin.delete_topics(&[topic], &options).await {
        tracing::warn!(topic, error = %e, "Could not delete the scratch topic.");
    }
}
