//! Typed configuration of the stream bridge, from flags or `LOCUS_*` environment variables.
//! Every knob has a documented default; the static sinks are parsed here and checked in
//! [`crate::webhook::config`] before anything connects. The sinks kept in PostgreSQL are
//! read by [`crate::sink_store`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::ffi::{OsStr, OsString};

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{Arg, Command, CommandFactory, FromArgMatches, Parser};

use locus_service::net::SinkTargetSettings;
use locus_service::settings::{KafkaSettings, ShutdownSettings};
use locus_wire::topics::Topics;
use secrecy::SecretString;

use crate::error::BridgeError;
use crate::webhook::config::{SinkSpecs, Sinks};
use crate::webhook::retry::{CircuitSettings, RetryPolicy};

/// Everything the stream bridge reads at start.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "locus-stream-bridge",
    about = "Consumes Locus location records from Kafka and delivers them to partner webhooks."
)]
pub struct Config {
    /// Address /healthz, /readyz and /metrics listen on. Port 0 picks a free port.
    #[arg(long, env = "LOCUS_BRIDGE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,

    /// Kafka brokers and topic names (shared with ingest): the bridge reads
    /// `<prefix>locations` and writes `<prefix>dead-letter`.
    #[command(flatten)]
    pub kafka: KafkaSettings,

    /// Consumer group of the bridge. Replicas sharing it split the partitions; offsets are
    /// committed under it, so a restart resumes after the last delivered record.
    #[arg(
        long,
        env = "LOCUS_BRIDGE_GROUP",
        default_value = "locus-stream-bridge"
    )]
    pub group: String,

    /// Consumer `session.timeout.ms` (librdkafka's default): how long the group waits for a
    /// member that stopped heartbeating before its partitions move to another replica.
    #[arg(long, env = "LOCUS_KAFKA_SESSION_TIMEOUT_MS", default_value_t = 45_000)]
    pub session_timeout_ms: u64,

    /// Consumer `heartbeat.interval.ms` (librdkafka's default); keep it under a third of
    /// the session timeout.
    #[arg(
        long,
        env = "LOCUS_KAFKA_HEARTBEAT_INTERVAL_MS",
        default_value_t = 3_000
    )]
    pub heartbeat_interval_ms: u64,

    /// Consumer `fetch.wait.max.ms` (librdkafka's default): longest the broker holds a fetch
    /// open while it has no new records. Apache Kafka answers a held fetch as soon as a
    /// record arrives, so this bounds idle round trips, not latency (docs/configuration.md
    /// has the measurement).
    #[arg(long, env = "LOCUS_KAFKA_FETCH_WAIT_MAX_MS", default_value_t = 500)]
    pub fetch_wait_max_ms: u64,

    /// How often the consumer lag per partition (`locus_bridge_consumer_lag_records`) is
    /// measured: one offset request per owned partition and one committed-offsets request
    /// per interval.
    #[arg(long, env = "LOCUS_BRIDGE_LAG_INTERVAL_MS", default_value_t = 5_000)]
    pub lag_interval_ms: u64,

    /// Webhook sinks per tenant, as a JSON object:
    /// `{"<tenant>": {"url": "https://...", "secret": "..."}}`. Wins over the file per tenant.
    #[arg(long, env = "LOCUS_BRIDGE_SINKS", hide_env_values = true, value_parser = SinkSpecsParser)]
    pub sinks: Option<SinkSpecs>,

    /// Path of a JSON file with the same shape as `LOCUS_BRIDGE_SINKS`.
    #[arg(long, env = "LOCUS_BRIDGE_SINKS_FILE")]
    pub sinks_file: Option<PathBuf>,

    /// Read webhook sinks from PostgreSQL too (the `sinks` table the admin API writes),
    /// again every `LOCUS_BRIDGE_SINKS_REFRESH_MS`; a row wins over the static sinks for
    /// its tenant. Off: only `LOCUS_BRIDGE_SINKS` and `LOCUS_BRIDGE_SINKS_FILE`, read once.
    #[arg(long, env = "LOCUS_BRIDGE_SINKS_FROM_DATABASE", default_value_t = true, action = clap::ArgAction::Set)]
    pub sinks_from_database: bool,

    /// PostgreSQL URL (the same variable as ingest's), as the service role `locus_app`:
    /// the sink table is read in the system scope (`SET LOCAL ROLE locus_system`).
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "LOCUS_DATABASE_URL",
        default_value = "postgres://locus_app@127.0.0.1:5432/locus",
        hide_env_values = true
    )]
    pub database_url: SecretString,

    /// How often the sink table is read from PostgreSQL: a sink added, changed, disabled
    /// or deleted takes effect within this (plus one delivery).
    #[arg(long, env = "LOCUS_BRIDGE_SINKS_REFRESH_MS", default_value_t = 2_000)]
    pub sinks_refresh_ms: u64,

    /// Allow sink URLs on loopback, private or link-local addresses (and `localhost`).
    /// Off in production: a tenant admin could otherwise point a sink at internal services.
    #[arg(long, env = "LOCUS_BRIDGE_ALLOW_PRIVATE_SINKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_private_sinks: bool,

    /// Which sink targets beyond public https are allowed (`LOCUS_SINK_ALLOW_HTTP`,
    /// `LOCUS_SINK_ALLOW_PRIVATE`, the same switches ingest reads at registration);
    /// `LOCUS_BRIDGE_ALLOW_PRIVATE_SINKS` is the older name of the second.
    #[command(flatten)]
    pub sink_targets: SinkTargetSettings,

    /// Start with an empty sink table. Off by default: a bridge without sinks sends every
    /// record to the dead-letter topic, which is almost always a deployment mistake.
    #[arg(long, env = "LOCUS_BRIDGE_ALLOW_NO_SINKS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_no_sinks: bool,

    /// Most records consumed into one batch.
    #[arg(long, env = "LOCUS_BRIDGE_BATCH_MAX_RECORDS", default_value_t = 500)]
    pub batch_max_records: usize,

    /// How long a batch waits for more records after its first one.
    #[arg(long, env = "LOCUS_BRIDGE_BATCH_LINGER_MS", default_value_t = 100)]
    pub batch_linger_ms: u64,

    /// Most webhook HTTP attempts (each one tenant's batch) in flight at once, across
    /// tenants. A tenant's lane sends one batch at a time.
    #[arg(
        long,
        env = "LOCUS_BRIDGE_MAX_CONCURRENT_DELIVERIES",
        default_value_t = 16
    )]
    pub max_concurrent_deliveries: usize,

    /// Most records one tenant's lane holds (queued or being delivered). When a paused or
    /// slow tenant's lane is full, the partitions feeding it stop being read until it
    /// drains below half; until then other tenants are not held back at all.
    #[arg(long, env = "LOCUS_BRIDGE_LANE_CAPACITY", default_value_t = 10_000)]
    pub lane_capacity: usize,

    /// Backoff before the second attempt; it doubles on each retry (with jitter). A failing
    /// webhook is retried without a limit on attempts: its tenant's delivery pauses.
    #[arg(long, env = "LOCUS_BRIDGE_BACKOFF_INITIAL_MS", default_value_t = 200)]
    pub backoff_initial_ms: u64,

    /// Longest backoff between two attempts while the endpoint's circuit is closed.
    #[arg(long, env = "LOCUS_BRIDGE_BACKOFF_MAX_MS", default_value_t = 30_000)]
    pub backoff_max_ms: u64,

    /// Failed attempts in a row after which an endpoint's circuit opens: from then on it
    /// is sent one probe per `LOCUS_BRIDGE_CIRCUIT_PROBE_MS` until one succeeds.
    #[arg(long, env = "LOCUS_BRIDGE_CIRCUIT_OPEN_AFTER", default_value_t = 10)]
    pub circuit_open_after: u32,

    /// While an endpoint's circuit is open, the wait between two probes (each probe is the
    /// next attempt of the delivery that is waiting).
    #[arg(long, env = "LOCUS_BRIDGE_CIRCUIT_PROBE_MS", default_value_t = 30_000)]
    pub circuit_probe_ms: u64,

    /// Longest `Retry-After` (of a 429, a 503 or any failure) honoured: the next attempt is
    /// not sent before the time the webhook asked for, up to this.
    #[arg(
        long,
        env = "LOCUS_BRIDGE_RETRY_AFTER_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub retry_after_max_ms: u64,

    /// Most bytes of record JSON in one delivery (the body adds a few dozen): a batch is
    /// closed before the record that would pass it. A single record larger than this is
    /// sent alone.
    #[arg(
        long,
        env = "LOCUS_BRIDGE_BATCH_MAX_BYTES",
        default_value_t = 1_048_576
    )]
    pub batch_max_bytes: usize,

    /// Timeout of one webhook HTTP request, connect to last body byte.
    #[arg(
        long,
        env = "LOCUS_BRIDGE_REQUEST_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub request_timeout_ms: u64,

    /// A one-off command instead of running the bridge.
    #[command(subcommand)]
    pub command: Option<BridgeCommand>,

    /// How the bridge stops (shared with ingest): how long shutdown waits for the lanes to
    /// deliver what they hold before giving up on it (those records are then delivered again
    /// after the restart).
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
}

/// One-off commands of the bridge binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BridgeCommand {
    /// Republish dead letters to the location topic, in their order, for delivery (for
    /// example `no_sink` records once the tenant's sink exists). A second run with the
    /// same filter does not replay them again.
    ReplayDeadLetters {
        /// Only dead letters with this `locus-dlq-reason` (`no_sink`, `malformed`, ...).
        #[arg(long)]
        reason: Option<String>,
        /// Only dead letters of this tenant (`locus-tenant-id`).
        #[arg(long)]
        tenant: Option<String>,
    },
}

impl Config {
    /// The documented defaults, without reading the environment or the command line, so
    /// the defaults are written once (in the attributes above).
    pub fn defaults() -> Self {
        Self::from_args_only(["locus-stream-bridge"]).expect("every field has a default")
    }

    /// Parses a command line, ignoring the environment (for tests and tools that build a
    /// configuration by hand).
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

    /// A configuration for tests against the local broker: no environment is read, the
    /// listener takes a free port, batches linger, backoffs are short, the lag is measured
    /// every 200 ms, and private sinks are allowed (the test receivers listen on 127.0.0.1).
    /// The Kafka client settings are the production defaults. PostgreSQL is not read:
    /// add sinks with [`Config::with_sink`], or a database with [`Config::with_database`].
    pub fn for_tests(kafka_brokers: &str, kafka_topic_prefix: &str, group: &str) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka: KafkaSettings::new(kafka_brokers, kafka_topic_prefix),
            group: group.to_owned(),
            allow_private_sinks: true,
            sink_targets: SinkTargetSettings::permissive(),
            lag_interval_ms: 200,
            batch_linger_ms: 50,
            backoff_initial_ms: 20,
            backoff_max_ms: 500,
            circuit_probe_ms: 500,
            request_timeout_ms: 5_000,
            shutdown: ShutdownSettings { grace_secs: 10 },
            sinks_from_database: false,
            ..Self::defaults()
        }
    }

    /// This configuration reading sinks from the database at `url`, every `refresh_ms`.
    pub fn with_database(mut self, url: &str, refresh_ms: u64) -> Self {
        self.sinks_from_database = true;
        self.database_url = SecretString::from(url);
        self.sinks_refresh_ms = refresh_ms;
        self
    }

    /// How often the sink table is read from PostgreSQL (never more often than every 10 ms).
    pub fn sinks_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.sinks_refresh_ms.max(10))
    }

    /// This configuration with one more inline sink (replacing the tenant's previous one).
    pub fn with_sink(mut self, tenant: &str, url: &str, secret: &str) -> Self {
        self.sinks
            .get_or_insert_with(SinkSpecs::default)
            .insert(tenant, url, secret);
        self
    }

    /// The sink targets allowed: `sink_targets`, with private ones allowed by either name.
    pub fn sink_target_policy(&self) -> SinkTargetSettings {
        SinkTargetSettings {
            allow_http: self.sink_targets.allow_http,
            allow_private: self.sink_targets.allow_private || self.allow_private_sinks,
        }
    }

    /// The topic names.
    pub fn topics(&self) -> Topics {
        self.kafka.topics()
    }

    /// How often the consumer lag is measured (never more often than every 10 ms).
    pub fn lag_interval(&self) -> Duration {
        Duration::from_millis(self.lag_interval_ms.max(10))
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown.grace()
    }

    /// The retry rules of webhook deliveries.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.backoff_initial_ms),
            max: Duration::from_millis(self.backoff_max_ms),
        }
    }

    /// The endpoint circuit of webhook deliveries and the longest Retry-After honoured.
    pub fn circuit(&self) -> CircuitSettings {
        CircuitSettings {
            open_after: self.circuit_open_after.max(1),
            probe_interval: Duration::from_millis(self.circuit_probe_ms),
            retry_after_max: Duration::from_millis(self.retry_after_max_ms),
        }
    }

    /// How long a revocation waits for webhook attempts in flight: one request timeout (no
    /// attempt runs longer), at most 60 s, well inside the group's rebalance timeout.
    pub fn revoke_wait(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms).min(Duration::from_secs(60))
    }

    /// The static sinks: the file's entries, overridden per tenant by the inline ones, each
    /// checked (tenant id, URL, private addresses unless allowed).
    pub fn load_sinks(&self) -> Result<Sinks, BridgeError> {
        let mut merged = match &self.sinks_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| BridgeError::SinksFile {
                        path: path.clone(),
                        source,
                    })?;
                SinkSpecs::parse_json(&text).map_err(|e| BridgeError::SinksFileFormat {
                    path: path.clone(),
                    message: e,
                })?
            }
            None => SinkSpecs::default(),
        };
        if let Some(inline) = &self.sinks {
            merged.merge(inline.clone());
        }
        Ok(merged.validate(self.sink_target_policy().allow_private)?)
    }
}

/// Parses `--sinks` / `LOCUS_BRIDGE_SINKS`. Unlike a plain function parser, its error does
/// not quote the value, which holds secrets.
#[derive(Debug, Clone, Copy)]
struct SinkSpecsParser;

impl TypedValueParser for SinkSpecsParser {
    type Value = SinkSpecs;

    fn parse_ref(
        &self,
        cmd: &Command,
        _arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<SinkSpecs, clap::Error> {
        let invalid = |message: String| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid --sinks / LOCUS_BRIDGE_SINKS: {message}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("the value is not UTF-8".to_owned()))?;
        SinkSpecs::parse_json(text).map_err(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = Config::defaults();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8081)));
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.topic_prefix, "locus.");
        assert_eq!(c.group, "locus-stream-bridge");
        assert_eq!(c.session_timeout_ms, 45_000);
        assert_eq!(c.heartbeat_interval_ms, 3_000);
        assert_eq!(c.fetch_wait_max_ms, 500);
        assert_eq!(c.lag_interval_ms, 5_000);
        assert!(c.sinks.is_none() && c.sinks_file.is_none());
        assert!(c.sinks_from_database);
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&c.database_url),
            "postgres://locus_app@127.0.0.1:5432/locus"
        );
        assert_eq!(c.sinks_refresh_ms, 2_000);
        assert!(!c.allow_private_sinks);
        assert!(!c.allow_no_sinks);
        assert_eq!(c.shutdown.grace_secs, 30);
        assert_eq!(c.batch_max_records, 500);
        assert_eq!(c.batch_linger_ms, 100);
        assert_eq!(c.lane_capacity, 10_000);
        assert_eq!(c.max_concurrent_deliveries, 16);
        assert_eq!(c.backoff_initial_ms, 200);
        assert_eq!(c.backoff_max_ms, 30_000);
        assert_eq!(c.circuit_open_after, 10);
        assert_eq!(c.circuit_probe_ms, 30_000);
        assert_eq!(c.retry_after_max_ms, 3_600_000);
        assert_eq!(c.batch_max_bytes, 1_048_576);
        assert_eq!(c.request_timeout_ms, 10_000);
    }

    #[test]
    fn sinks_and_knobs_parse_from_the_command_line() {
        let c = Config::from_args_only([
            "locus-stream-bridge",
            "--sinks",
            r#"{"acme": {"url": "https://hooks.example.com/a", "secret": "s"}}"#,
            "--lane-capacity",
            "3",
        ])
        .expect("valid command line");
        assert_eq!(c.lane_capacity, 3);
        assert_eq!(c.load_sinks().unwrap().len(), 1);
    }

    #[test]
    fn a_malformed_sinks_value_is_refused_without_quoting_it() {
        let err = Config::from_args_only([
            "locus-stream-bridge",
            "--sinks",
            r#"{"acme": {"url": "https://hooks.example.com/a", "secret": "hunter2""#,
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("LOCUS_BRIDGE_SINKS"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn topic_names_carry_the_prefix() {
        let c = Config::for_tests("b:9092", "t1.", "g");
        assert_eq!(c.topics().locations(), "t1.locations");
        assert_eq!(c.topics().dead_letter(), "t1.dead-letter");
    }

    #[test]
    fn inline_sinks_win_over_the_file_per_tenant() {
        let dir = std::env::temp_dir().join(format!("locus-bridge-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sinks.json");
        std::fs::write(
            &file,
            r#"{"acme": {"url": "http://10.0.0.1/a", "secret": "f1"},
                "globex": {"url": "http://10.0.0.2/g", "secret": "f2"}}"#,
        )
        .unwrap();
        let mut c = Config::for_tests("b", "p.", "g").with_sink("acme", "http://10.0.0.9/x", "i1");
        c.sinks_file = Some(file);
        let sinks = c.load_sinks().expect("valid sinks");
        let acme = locus_wire::TenantId::parse("acme").unwrap();
        let globex = locus_wire::TenantId::parse("globex").unwrap();
        assert_eq!(sinks.get(&acme).unwrap().url.as_str(), "http://10.0.0.9/x");
        assert_eq!(
            sinks.get(&globex).unwrap().url.as_str(),
            "http://10.0.0.2/g"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_sinks_file_is_a_clear_error() {
        let mut c = Config::for_tests("b", "p.", "g");
        c.sinks_file = Some(PathBuf::from("/nonexistent/locus-sinks.json"));
        let err = c.load_sinks().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/locus-sinks.json"), "{err}");
    }

    #[test]
    fn private_sinks_are_refused_unless_allowed() {
        let mut c = Config::for_tests("b", "p.", "g").with_sink("acme", "http://127.0.0.1:9/", "s");
        assert!(c.load_sinks().is_ok());
        c.allow_private_sinks = false;
        c.sink_targets.allow_private = false;
        let err = c.load_sinks().unwrap_err().to_string();
        assert!(err.contains("LOCUS_BRIDGE_ALLOW_PRIVATE_SINKS"), "{err}");
    }
}
