//! Kafka plumbing of the forwarder: the idempotent producer, topic creation and the
//! mapping of buffer entries to records.

use std::time::Duration;

use locus_wire::record::{
    CONTENT_TYPE_JSON, HEADER_CONTENT_TYPE, HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION,
    HEADER_SESSION, HEADER_TENANT, SCHEMA_VERSION,
};
use locus_wire::{SessionId, TenantId};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;

use crate::config::Config;

/// The producer: idempotent (no duplicates or reordering from its own retries), acks=all.
pub fn producer(config: &Config) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.kafka_linger_ms.to_string())
        .set("compression.type", &config.kafka_compression)
        // Records stay in the producer's queue while the broker is away; the entry stays
        // pending in Redis meanwhile, so a long timeout loses nothing.
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "500000")
        .create()
}

/// Creates the topics of `config` that do not exist yet.
pub async fn ensure_topics(config: &Config) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka_brokers)
        .create()?;
    let names = [
        (config.locations_topic(), config.kafka_partitions),
        (config.session_events_topic(), config.kafka_partitions),
        (config.dead_letter_topic(), 1),
    ];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "Created Kafka topic."),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, error = %code, "Could not create Kafka topic.");
                });
            }
        }
    }
    Ok(())
}

/// Headers of a record of `kind` for `session` of `tenant`.
pub fn headers(kind: &str, tenant: &TenantId, session: SessionId) -> OwnedHeaders {
    let session = session.to_string();
    let version = SCHEMA_VERSION.to_string();
    OwnedHeaders::new_with_capacity(5)
        .insert(Header {
            key: HEADER_TENANT,
            value: Some(tenant.as_str()),
        })
        .insert(Header {
            key: HEADER_SESSION,
            value: Some(session.as_str()),
        })
        .insert(Header {
            key: HEADER_SCHEMA_VERSION,
            value: Some(version.as_str()),
        })
        .insert(Header {
            key: HEADER_RECORD_TYPE,
            value: Some(kind),
        })
        .insert(Header {
            key: HEADER_CONTENT_TYPE,
            value: Some(CONTENT_TYPE_JSON),
        })
}
