//! Typed configuration of the ingest service, from flags or `LOCUS_*` environment
//! variables. Every knob has a documented default; docs/configuration.md lists them all.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

/// Which parts of the ingest binary run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API (and the session expiry sweeper).
    Api,
    /// The Redis-to-Kafka forwarder.
    Forwarder,
}

/// Everything the ingest service reads at start.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Roles this process runs, comma-separated.
    #[arg(
        long,
        env = "LOCUS_INGEST_ROLES",
        value_delimiter = ',',
        default_value = "api,forwarder"
    )]
    pub roles: Vec<Role>,

    /// Address the HTTP API (and /healthz, /readyz, /metrics) listens on. Port 0 picks a free port.
    #[arg(long, env = "LOCUS_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL URL of the session metadata.
    #[arg(
        long,
        env = "LOCUS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/locus"
    )]
    pub database_url: String,

    /// Maximum PostgreSQL connections of this process.
    #[arg(long, env = "LOCUS_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Run the embedded migrations at start.
    #[arg(long, env = "LOCUS_DATABASE_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub database_migrate: bool,

    /// Redis URL of the buffer.
    #[arg(
        long,
        env = "LOCUS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Prefix of every Redis key Locus writes (several deployments can share a Redis).
    #[arg(long, env = "LOCUS_REDIS_PREFIX", default_value = "locus")]
    pub redis_prefix: String,

    /// Number of Redis streams the buffer is sharded over (by session). Changing it moves
    /// sessions between shards: drain the buffer first.
    #[arg(long, env = "LOCUS_REDIS_SHARDS", default_value_t = 4)]
    pub redis_shards: u32,

    /// Bound of the buffer, in entries (one entry = one accepted HTTP batch) per shard.
    /// Past it, ingest answers 503 with Retry-After.
    #[arg(long, env = "LOCUS_BUFFER_MAX_ENTRIES", default_value_t = 100_000)]
    pub buffer_max_entries: u64,

    /// How long a batch id is remembered: a retry within this window is not stored twice.
    #[arg(long, env = "LOCUS_DEDUPE_WINDOW_SECS", default_value_t = 86_400)]
    pub dedupe_window_secs: u64,

    /// Kafka bootstrap servers.
    #[arg(long, env = "LOCUS_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Prefix of every topic name (`<prefix>locations`, `<prefix>session-events`, `<prefix>dead-letter`).
    #[arg(long, env = "LOCUS_KAFKA_TOPIC_PREFIX", default_value = "locus.")]
    pub kafka_topic_prefix: String,

    /// Create the topics at start if they are missing (and warn about existing ones with
    /// fewer partitions or replicas than configured below).
    #[arg(long, env = "LOCUS_KAFKA_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub kafka_create_topics: bool,

    /// Partitions of the location and session-event topics created at start. The
    /// dead-letter topic always gets one.
    #[arg(long, env = "LOCUS_KAFKA_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_partitions: i32,

    /// Replication factor of the topics created at start (1 for one local broker;
    /// production uses 3). From 3 on, the topics also get `min.insync.replicas` set to a
    /// majority of it.
    #[arg(long, env = "LOCUS_KAFKA_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub kafka_replication_factor: i32,

    /// Producer linger: how long records wait to fill a batch.
    #[arg(long, env = "LOCUS_KAFKA_LINGER_MS", default_value_t = 5)]
    pub kafka_linger_ms: u64,

    /// Producer compression (none, gzip, snappy, lz4).
    #[arg(long, env = "LOCUS_KAFKA_COMPRESSION", default_value = "lz4")]
    pub kafka_compression: String,

    /// HS256 secret that device and admin tokens are signed with.
    #[arg(long, env = "LOCUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: SecretString,

    /// Required `iss` claim.
    #[arg(long, env = "LOCUS_JWT_ISSUER", default_value = "locus")]
    pub jwt_issuer: String,

    /// Required `aud` claim.
    #[arg(long, env = "LOCUS_JWT_AUDIENCE", default_value = "locus")]
    pub jwt_audience: String,

    /// Session duration when the device asks for none (the seed system's 10 minutes).
    #[arg(
        long,
        env = "LOCUS_SESSION_DEFAULT_DURATION_SECS",
        default_value_t = 600
    )]
    pub session_default_duration_secs: u64,

    /// Longest session a device may ask for.
    #[arg(
        long,
        env = "LOCUS_SESSION_MAX_DURATION_SECS",
        default_value_t = 86_400
    )]
    pub session_max_duration_secs: u64,

    /// How often the sweeper stops expired sessions.
    #[arg(long, env = "LOCUS_SESSION_SWEEP_INTERVAL_MS", default_value_t = 1000)]
    pub session_sweep_interval_ms: u64,

    /// Largest request body, in bytes, after gzip decompression.
    #[arg(long, env = "LOCUS_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most fixes in one batch.
    #[arg(long, env = "LOCUS_MAX_FIXES_PER_BATCH", default_value_t = 1000)]
    pub max_fixes_per_batch: usize,

    /// How far ahead of the server clock a fix may be.
    #[arg(long, env = "LOCUS_MAX_FUTURE_SKEW_SECS", default_value_t = 300)]
    pub max_future_skew_secs: u64,

    /// How old a fix may be.
    #[arg(long, env = "LOCUS_MAX_FIX_AGE_SECS", default_value_t = 7 * 86_400)]
    pub max_fix_age_secs: u64,

    /// Sustained fixes per second one device may post.
    #[arg(long, env = "LOCUS_RATE_DEVICE_FIXES_PER_SEC", default_value_t = 200)]
    pub rate_device_fixes_per_sec: u32,

    /// Fixes a device may post in a burst (at least the largest batch).
    #[arg(long, env = "LOCUS_RATE_DEVICE_BURST", default_value_t = 5000)]
    pub rate_device_burst: u32,

    /// Sustained fixes per second one tenant may post (all its devices together).
    #[arg(
        long,
        env = "LOCUS_RATE_TENANT_FIXES_PER_SEC",
        default_value_t = 50_000
    )]
    pub rate_tenant_fixes_per_sec: u32,

    /// Fixes a tenant may post in a burst.
    #[arg(long, env = "LOCUS_RATE_TENANT_BURST", default_value_t = 200_000)]
    pub rate_tenant_burst: u32,

    /// Name of this forwarder in the Redis consumer group and in its shard leases; unique
    /// per replica.
    #[arg(long, env = "LOCUS_FORWARDER_CONSUMER", default_value = "forwarder-1")]
    pub forwarder_consumer: String,

    /// Entries read from a shard at a time.
    #[arg(long, env = "LOCUS_FORWARDER_READ_COUNT", default_value_t = 200)]
    pub forwarder_read_count: usize,

    /// Lease on a shard: one forwarder at a time owns a shard (that keeps each session in
    /// order). The owner renews it every third of this; a crashed owner's shards are taken
    /// over once it lapses. A graceful stop releases its leases at once.
    #[arg(long, env = "LOCUS_FORWARDER_LEASE_MS", default_value_t = 10_000)]
    pub forwarder_lease_ms: u64,

    /// Most shards this forwarder owns at once (0: as many as it can get). With N replicas,
    /// set it to about shards / N so that they share the work.
    #[arg(long, env = "LOCUS_FORWARDER_MAX_SHARDS", default_value_t = 0)]
    pub forwarder_max_shards: u32,

    /// How long shutdown waits for in-flight work before giving up.
    #[arg(long, env = "LOCUS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The topic of location records.
    pub fn locations_topic(&self) -> String {
        format!("{}locations", self.kafka_topic_prefix)
    }

    /// The topic of session events.
    pub fn session_events_topic(&self) -> String {
        format!("{}session-events", self.kafka_topic_prefix)
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}dead-letter", self.kafka_topic_prefix)
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
