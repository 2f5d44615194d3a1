//! Kafka clients of ingest: the idempotent producer's settings and the creation of the
//! topics at start. What goes into a record is in `forwarder::producer`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;

use crate::config::Config;

/// The producer: idempotent (no duplicates or reordering from its own retries), acks=all.
pub fn producer(config: &Config) -> Result<FutureProducer, KafkaError> {
    config
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", config.producer.linger_ms.to_string())
        .set("compression.type", &config.producer.compression)
        // No timeout: records stay in the producer's queue while the broker is away, and
        // their entry stays pending in Redis. A timeout would be worse than useless: a
        // record reported as timed out may still be written after its successors, and
        // producing it again then puts its session out of order on Kafka.
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "500000")
        .create()
}

/// How long the broker may take to create the topics, and to describe them.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One topic ingest creates: its name, partitions and replication factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name, prefix included.
    pub name: String,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// `cleanup.policy=compact`: the broker keeps the latest record of each key (the
    /// positions topic) instead of deleting by age.
    pub compact: bool,
}

impl TopicSpec {
    /// `min.insync.replicas` for the topic: a majority of its replicas once there are at
    /// least 3 (2 of 3: with `acks=all`, a record is on two brokers before it counts as
    /// written, and one broker may be down without stopping writes). Below 3 the broker's
    /// default (1) stays: 2 of 2 would stop every write while one broker restarts.
    pub fn min_insync_replicas(&self) -> Option<i32> {
        (self.replication_factor >= 3).then_some(self.replication_factor / 2 + 1)
    }
}

/// The topics of `config`: location and session-event topics with the configured
/// partitions, and a dead-letter topic with one (it takes few records, and one partition
/// keeps them in the order they failed for whoever replays them); the tenant-events topic
/// (the audit relay's, keyed by tenant, so one tenant's changes stay in order) with the
/// configured partitions too. All with the configured replication factor. The tracker's
/// topics: geofence events (keyed by device id) and positions (compacted, keyed by
/// `<tenant>/<device>`), with the configured partitions.
pub fn topic_specs(config: &Config) -> [TopicSpec; 6] {
    let spec = |name: &str, partitions: i32| TopicSpec {
        name: name.to_owned(),
        partitions,
        replication_factor: config.topics.replication_factor,
        compact: false,
    };
    let topics = config.topic_names();
    let partitions = config.topics.partitions;
    [
        spec(topics.locations(), partitions),
        spec(topics.session_events(), partitions),
        spec(topics.dead_letter(), 1),
        spec(topics.tenant_events(), partitions),
        spec(topics.geofence_events(), partitions),
        TopicSpec {
            compact: true,
            ..spec(topics.positions(), partitions)
        },
    ]
}

/// Creates the topics of `config` that do not exist yet. An existing topic is left as it
/// is, with a warning if it has fewer partitions or replicas than configured: adding
/// partitions moves sessions to other partitions, which breaks their order for whoever
/// reads across the change, so that is an operator's decision.
pub async fn ensure_topics(config: &Config) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.kafka.client_config().create()?;
    let specs = topic_specs(config);
    let min_insync: Vec<Option<String>> = specs
        .iter()
        .map(|spec| spec.min_insync_replicas().map(|n| n.to_string()))
        .collect();
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&min_insync)
        .map(|(spec, min_insync)| {
            let topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(spec.replication_factor),
            );
            let topic = if spec.compact {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            };
            match min_insync {
                Some(n) => topic.set("min.insync.replicas", n),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let mut existing = Vec::new();
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "Created Kafka topic."),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => existing.push(name),
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, error = %code, "Could not create Kafka topic.");
                });
            }
        }
    }
    if !existing.is_empty() {
        let wanted: Vec<TopicSpec> = specs
            .into_iter()
            .filter(|spec| existing.contains(&spec.name))
            .collect();
        // A metadata request blocks; the admin client is done with its async work. The
        // check only warns, so its failure does not stop the start either.
        let checked =
            tokio::task::spawn_blocking(move || warn_about_smaller_topics(&admin, &wanted)).await;
        if let Err(error) = checked {
            tracing::warn!(error = %error, "Could not check the existing Kafka topics.");
        }
    }
    Ok(())
}

/// Logs a warning for each topic of `wanted` that the broker describes with fewer
/// partitions or replicas than wanted. A failed metadata request is only logged: the
/// topics exist, which is all ingest needs to start.
fn warn_about_smaller_topics(admin: &AdminClient<DefaultClientContext>, wanted: &[TopicSpec]) {
    for spec in wanted {
        let metadata = match admin
            .inner()
            .fetch_metadata(Some(&spec.name), ADMIN_TIMEOUT)
        {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::warn!(topic = %spec.name, error = %error, "Could not describe an existing Kafka topic.");
                continue;
            }
        };
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == spec.name) else {
            continue;
        };
        let partitions = topic.partitions().len();
        let replicas = topic.partitions().iter().map(|p| p.replicas().len()).min();
        warn_if_fewer(&spec.name, "partitions", partitions, spec.partitions);
        warn_if_fewer(
            &spec.name,
            "replicas",
            replicas.unwrap_or(0),
            spec.replication_factor,
        );
    }
}

/// Logs that `topic` has fewer `what` (partitions, replicas) than configured.
fn warn_if_fewer(topic: &str, what: &str, found: usize, configured: i32) {
    if i32::try_from(found).unwrap_or(i32::MAX) < configured {
        tracing::warn!(
            topic,
            found,
            configured,
            "The Kafka topic exists with fewer {what} than configured; it is left as it is."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(replication_factor: i32) -> TopicSpec {
        TopicSpec {
            name: "t".to_owned(),
            partitions: 6,
            replication_factor,
            compact: false,
        }
    }

    #[test]
    fn min_insync_replicas_is_a_majority_from_three_replicas_on() {
        assert_eq!(spec(1).min_insync_replicas(), None);
        assert_eq!(spec(2).min_insync_replicas(), None);
        assert_eq!(spec(3).min_insync_replicas(), Some(2));
        assert_eq!(spec(4).min_insync_replicas(), Some(3));
        assert_eq!(spec(5).min_insync_replicas(), Some(3));
    }

    #[test]
    fn the_dead_letter_topic_has_one_partition_and_the_others_the_configured_count() {
        let config = crate::Config::from_args_only([
            "--jwt-secret",
            "s",
            "--kafka-topic-prefix",
            "p.",
            "--kafka-partitions",
            "12",
            "--kafka-replication-factor",
            "3",
        ])
        .expect("valid arguments");
        let specs = topic_specs(&config);
        let shape: Vec<(&str, i32, i32)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.partitions, s.replication_factor))
            .collect();
        assert_eq!(
            shape,
            [
                ("p.locations", 12, 3),
                ("p.session-events", 12, 3),
                ("p.dead-letter", 1, 3),
                ("p.tenant-events", 12, 3),
                ("p.geofence-events", 12, 3),
                ("p.positions", 12, 3)
            ]
        );
        let compacted: Vec<&str> = specs
            .iter()
            .filter(|s| s.compact)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(compacted, ["p.positions"]);
    }
}
