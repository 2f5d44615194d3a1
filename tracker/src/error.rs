//! Errors of the tracker. A batch that fails is rolled back and tried again, so most of
//! these are retriable; only the start (configuration, connections, the listener) stops
//! the process.

use std::net::SocketAddr;

/// Why the tracker could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// PostgreSQL is unreachable or refused a statement.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// The service's database role is refused (see `locus_session::check_service_role`).
    #[error("{0}")]
    DatabaseRole(#[from] locus_session::BootstrapError),
    /// Kafka client creation failed, or the consumer could not subscribe.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka security settings are incomplete or inconsistent.
    #[error("{0}")]
    KafkaSecurity(#[from] locus_service::kafka::KafkaSecurityError),
    /// The HTTP listener could not bind or serve.
    #[error("listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A task of the tracker panicked or was cancelled.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why one batch could not be applied (it is rolled back and tried again).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// A fix was inserted by another transaction between the check and the insert (the
    /// same client fix in two sessions at once); the retry sees it.
    #[error(
        "{expected} new track points expected, {inserted} inserted: another transaction wrote some of them"
    )]
    Raced {
        /// Points the batch meant to insert.
        expected: usize,
        /// Points inserted.
        inserted: u64,
    },
}
