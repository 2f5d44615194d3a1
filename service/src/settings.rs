//! Settings that more than one service reads, declared once: each service flattens these
//! groups into its own configuration, so a variable means the same thing everywhere and its
//! default is written in one place.

use std::time::Duration;

use clap::Args;
use locus_wire::topics::Topics;
use rdkafka::ClientConfig;

use crate::kafka::KafkaSecurity;

/// Where Kafka is and which topics this deployment uses.
#[derive(Debug, Clone, Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers.
    #[arg(
        id = "kafka_brokers",
        long = "kafka-brokers",
        env = "LOCUS_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,

    /// Prefix of every topic name (`<prefix>locations`, `<prefix>session-events`,
    /// `<prefix>dead-letter`); several deployments can share a cluster.
    #[arg(
        id = "kafka_topic_prefix",
        long = "kafka-topic-prefix",
        env = "LOCUS_KAFKA_TOPIC_PREFIX",
        default_value = "locus."
    )]
    pub topic_prefix: String,

    /// How this process authenticates to the brokers (`LOCUS_KAFKA_SECURITY_PROTOCOL`,
    /// `LOCUS_KAFKA_SASL_*`, `LOCUS_KAFKA_SSL_*`); plaintext by default.
    #[command(flatten)]
    pub security: KafkaSecurity,
}

impl KafkaSettings {
    /// Settings for `brokers` and `topic_prefix`.
    pub fn new(brokers: &str, topic_prefix: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic_prefix: topic_prefix.to_owned(),
            security: KafkaSecurity::default(),
        }
    }

    /// These settings with `security` instead of plaintext.
    pub fn with_security(mut self, security: KafkaSecurity) -> Self {
        self.security = security;
        self
    }

    /// A client config with the bootstrap servers and the security settings: where every
    /// Locus Kafka client starts, so none connects without the credentials.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        self.security.apply(&mut c);
        c
    }

    /// The topic names under the prefix.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

/// How a service stops.
#[derive(Debug, Clone, Args)]
pub struct ShutdownSettings {
    /// How long shutdown waits for in-flight work (requests, the buffer drain, the
    /// in-flight batch) before giving up on it.
    #[arg(
        id = "shutdown_grace_secs",
        long = "shutdown-grace-secs",
        env = "LOCUS_SHUTDOWN_GRACE_SECS",
        default_value_t = 30
    )]
    pub grace_secs: u64,
}

impl ShutdownSettings {
    /// The grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}
