//! Typed configuration of the tracker, from flags or `LOCUS_*` environment variables. The
//! settings it shares with the other roles (Kafka, PostgreSQL, shutdown) keep their names
//! there; its own start with `LOCUS_TRACKER_`. Every knob has a documented default.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use locus_service::settings::{KafkaSettings, ShutdownSettings};
use locus_wire::topics::Topics;
use secrecy::SecretString;

/// Everything the tracker reads at start.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "locus-tracker",
    about = "Reads Locus location records from Kafka and keeps tracks, session statistics, \
             last positions and geofence state in PostgreSQL."
)]
pub struct Config {
    /// Address /healthz, /readyz and /metrics listen on. Port 0 picks a free port.
    #[arg(long, env = "LOCUS_TRACKER_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,

    /// Kafka brokers and topic names (shared with ingest): the tracker reads
    /// `<prefix>locations` and writes `<prefix>positions` and `<prefix>geofence-events`.
    #[command(flatten)]
    pub kafka: KafkaSettings,

    /// Consumer group of the tracker. Replicas sharing it split the partitions; the
    /// offsets that count are the ones in PostgreSQL (`tracker_offsets`), the group's are
    /// a copy.
    #[arg(long, env = "LOCUS_TRACKER_GROUP", default_value = "locus-tracker")]
    pub group: String,

    /// Consumer `session.timeout.ms` (librdkafka's default; the same variable as the
    /// bridge's).
    #[arg(long, env = "LOCUS_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub session_timeout_ms: u64,

    /// Consumer `heartbeat.interval.ms` (librdkafka's default).
    #[arg(
        long,
        env = "LOCUS_KAFKA_HEARTBEAT_INTERVAL_MS",
        default_value_t = 3_000
    )]
    pub heartbeat_interval_ms: u64,

    /// Consumer `fetch.wait.max.ms` (librdkafka's default).
    #[arg(long, env = "LOCUS_KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 500)]
    pub fetch_wait_max_ms: u64,

    /// PostgreSQL URL (the same variable as ingest's), as the service role `locus_app`;
    /// the tracker's transactions run in the system scope (`SET LOCAL ROLE locus_system`).
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "LOCUS_DATABASE_URL",
        default_value = "postgres://locus_app@127.0.0.1:5432/locus",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// Connections of the tracker's pool: one for the batch transaction, one held by the
    /// relay while it is the active one, the rest for readiness probes and fence reloads.
    #[arg(
        long,
        env = "LOCUS_TRACKER_DATABASE_MAX_CONNECTIONS",
        default_value_t = 4
    )]
    pub database_max_connections: u32,

    /// Most records applied in one PostgreSQL transaction.
    #[arg(long, env = "LOCUS_TRACKER_BATCH_MAX_RECORDS", default_value_t = 1_000)]
    pub batch_max_records: usize,

    /// How long a batch waits for more records after its first one.
    #[arg(long, env = "LOCUS_TRACKER_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,

    /// Speed between two consecutive fixes beyond which the step is flagged as a jump
    /// (not counted toward the distance). The same variable as the read side's.
    #[arg(long, env = "LOCUS_GEO_MAX_SPEED_MPS", default_value_t = 100.0)]
    pub max_speed_mps: f64,

    /// How often the geofences are read again from PostgreSQL: a fence added, changed or
    /// deleted moves device states within this.
    #[arg(long, env = "LOCUS_TRACKER_FENCE_REFRESH_MS", default_value_t = 2_000)]
    pub fence_refresh_ms: u64,

    /// How often the relay looks at the outbox when nothing woke it (a batch that wrote
    /// outbox rows wakes it at once), and how often a replica that is not the relay asks
    /// for the relay's lock.
    #[arg(long, env = "LOCUS_TRACKER_RELAY_INTERVAL_MS", default_value_t = 500)]
    pub relay_interval_ms: u64,

    /// Most outbox rows published in one round of the relay.
    #[arg(long, env = "LOCUS_TRACKER_RELAY_BATCH", default_value_t = 500)]
    pub relay_batch: i64,

    /// Longest pause between two attempts of a batch transaction that failed (PostgreSQL
    /// away); it starts at 100 ms and doubles.
    #[arg(long, env = "LOCUS_TRACKER_RETRY_MAX_MS", default_value_t = 5_000)]
    pub retry_max_ms: u64,

    /// How the tracker stops (shared with the other roles): how long shutdown waits for
    /// the relay to publish what the last transactions wrote.
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
}

impl Config {
    /// The documented defaults, without reading the environment or the command line.
    pub fn defaults() -> Self {
        Self::from_args_only(["locus-tracker"]).expect("every field has a default")
    }

    /// Parses a command line, ignoring the environment (for tests and tools).
    pub fn from_args_only<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        // Unsetting every `env` keeps a variable set on the machine from leaking in.
        let matches = Self::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(args)?;
        Self::from_arg_matches(&matches)
    }

    /// A configuration for tests: no environment read, a free port, short pauses.
    pub fn for_tests(database_url: &str, kafka_brokers: &str, topic_prefix: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: KafkaSettings::new(kafka_brokers, topic_prefix),
            database_url: SecretString::from(database_url),
            relay_interval_ms: 50,
            retry_max_ms: 500,
            fence_refresh_ms: 200,
            shutdown: ShutdownSettings { grace_secs: 10 },
            ..Self::defaults()
        }
    }

    /// The topic names.
    pub fn topics(&self) -> Topics {
        self.kafka.topics()
    }

    /// How long a batch lingers for more records.
    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// The relay's idle interval (at least 10 ms).
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms.max(10))
    }

    /// The fence refresh interval (at least 10 ms).
    pub fn fence_refresh(&self) -> Duration {
        Duration::from_millis(self.fence_refresh_ms.max(10))
    }

    /// The longest pause between attempts of a failed batch (at least 100 ms).
    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8083)));
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.topic_prefix, "locus.");
        assert_eq!(c.group, "locus-tracker");
        assert_eq!(
            c.database_url.expose_secret(),
            "postgres://locus_app@127.0.0.1:5432/locus"
        );
        assert_eq!(c.database_max_connections, 4);
        assert_eq!(c.batch_max_records, 1_000);
        assert_eq!(c.batch_linger_ms, 20);
        assert_eq!(c.max_speed_mps, 100.0);
        assert_eq!(c.fence_refresh_ms, 2_000);
        assert_eq!(c.relay_interval_ms, 500);
        assert_eq!(c.relay_batch, 500);
        assert_eq!(c.retry_max_ms, 5_000);
        assert_eq!(c.shutdown.grace_secs, 30);
    }

    #[test]
    fn the_tracker_reads_locations_and_writes_positions_and_geofence_events() {
        let c = Config::for_tests("postgres://x/y", "b:9092", "t1.");
        assert_eq!(c.topics().locations(), "t1.locations");
        assert_eq!(c.topics().positions(), "t1.positions");
        assert_eq!(c.topics().geofence_events(), "t1.geofence-events");
    }
}
