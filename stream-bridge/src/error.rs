//! Errors of the stream bridge library.
//!
//! Policy: these are the errors that stop the bridge from starting or running (bad
//! configuration, a Kafka client that cannot be created, a port that cannot be bound).
//! What happens to a single delivery is not an error but an outcome (delivered, retriable,
//! rejected; see [`crate::webhook::retry::Outcome`]), handled where it happens. No message
//! here quotes a secret.

use std::path::PathBuf;

use locus_wire::IdError;

/// A sink in the configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The tenant id of a sink is not a valid tenant id.
    #[error("sink tenant {tenant:?} is not a valid tenant id: {source}")]
    InvalidTenant {
        /// The tenant as written.
        tenant: String,
        /// Why it is invalid.
        source: IdError,
    },
    /// The URL of a sink does not parse or is not http(s).
    #[error("sink URL of tenant {tenant:?} is invalid: {message}")]
    InvalidUrl {
        /// The tenant.
        tenant: String,
        /// Why it is invalid.
        message: String,
    },
    /// The URL of a sink is a literal special address (loopback, private, link-local,
    /// metadata, ...: [`locus_service::net::special_address`]).
    #[error(
        "sink URL of tenant {tenant:?} points at the host {host}, a special address; \
         set LOCUS_SINK_ALLOW_PRIVATE=true (or LOCUS_BRIDGE_ALLOW_PRIVATE_SINKS=true) to allow it"
    )]
    PrivateAddress {
        /// The tenant.
        tenant: String,
        /// The refused host.
        host: String,
    },
    /// The secret of a sink is neither `whsec_<base64>` nor an old-format secret.
    #[error("sink secret of tenant {tenant:?} is invalid: {message}")]
    InvalidSecret {
        /// The tenant.
        tenant: String,
        /// Why it is invalid (never the secret).
        message: String,
    },
}

/// Why one read of the sink table from PostgreSQL failed. At start this stops the bridge
/// ([`BridgeError::SinkDatabase`]); later the bridge keeps its last table and tries again.
#[derive(Debug, thiserror::Error)]
pub enum SinkRefreshError {
    /// PostgreSQL refused or could not be reached.
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    /// PostgreSQL did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection's role is privileged (a superuser, BYPASSRLS, the owner).
    #[error("{0}")]
    Role(String),
}

/// Why the bridge cannot start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A sink in the configuration is unusable.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The sinks file cannot be read.
    #[error("cannot read the sinks file {path}: {source}")]
    SinksFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The sinks file is not a sink table.
    #[error("the sinks file {path} is invalid: {message}")]
    SinksFileFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong, without quoting the file.
        message: String,
    },
    /// No sink is configured, and that was not allowed.
    #[error(
        "no webhook sink is configured, so every record would go to the dead-letter topic; add one (a row of the PostgreSQL `sinks` table through the admin API, LOCUS_BRIDGE_SINKS or LOCUS_BRIDGE_SINKS_FILE), or set LOCUS_BRIDGE_ALLOW_NO_SINKS=true to start anyway (sinks added to PostgreSQL later are picked up without a restart)"
    )]
    NoSinks,
    /// The sink table could not be read from PostgreSQL at start.
    #[error(
        "cannot read the webhook sinks from PostgreSQL at {database}: {source}; check LOCUS_DATABASE_URL (the service role locus_app, on a database `locus-ingest migrate` set up), or set LOCUS_BRIDGE_SINKS_FROM_DATABASE=false to use only LOCUS_BRIDGE_SINKS / LOCUS_BRIDGE_SINKS_FILE"
    )]
    SinkDatabase {
        /// The database URL, without its password.
        database: String,
        /// What failed.
        source: SinkRefreshError,
    },
    /// A Kafka client cannot be created or subscribed.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The Kafka security settings are incomplete or inconsistent.
    #[error("{0}")]
    KafkaSecurity(#[from] locus_service::kafka::KafkaSecurityError),
    /// The HTTP client cannot be created.
    #[error("cannot create the webhook HTTP client: {0}")]
    HttpClient(reqwest::Error),
    /// The listener cannot be bound, or serving failed.
    #[error("HTTP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A dead-letter replay did not reach the end of the topic in time.
    #[error("the replay did not reach the end of {topic} within 60 s; nothing was committed")]
    ReplayIncomplete {
        /// The dead-letter topic.
        topic: String,
    },
    /// A task of the bridge panicked.
    #[error("a task of the bridge failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
