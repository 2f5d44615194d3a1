//! Typed configuration of the ingest service, from flags or `LOCUS_*` environment
//! variables, in groups by what each part of the service needs. Every knob has a
//! documented default; docs/configuration.md lists them all. The Kafka and shutdown groups
//! are shared with the stream bridge ([`locus_service::settings`]).
//!
//! Over 400 lines on purpose: every knob is declared here once, with its documentation.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use locus_service::settings::{KafkaSettings, ShutdownSettings};
use locus_wire::topics::Topics;
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
#[derive(Debug, Clone, Parser)]
#[command(name = "locus-ingest")]
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

    /// PostgreSQL: the session metadata.
    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Redis: the buffer.
    #[command(flatten)]
    pub redis: RedisSettings,

    /// Kafka brokers and topic names (shared with the bridge).
    #[command(flatten)]
    pub kafka: KafkaSettings,

    /// The topics ingest creates.
    #[command(flatten)]
    pub topics: TopicSettings,

    /// The Kafka producer of the forwarder.
    #[command(flatten)]
    pub producer: ProducerSettings,

    /// Token verification.
    #[command(flatten)]
    pub jwt: JwtSettings,

    /// Session lifetimes.
    #[command(flatten)]
    pub sessions: SessionSettings,

    /// Where tenants' sink URLs may point (`LOCUS_SINK_ALLOW_HTTP`, `LOCUS_SINK_ALLOW_PRIVATE`),
    /// checked at `PUT /v1/sink`; the bridge reads the same two switches.
    #[command(flatten)]
    pub sink_targets: locus_service::net::SinkTargetSettings,

    /// Bounds of one request.
    #[command(flatten)]
    pub limits: RequestLimits,

    /// Rate limits of admission.
    #[command(flatten)]
    pub rates: RateSettings,

    /// The forwarder role.
    #[command(flatten)]
    pub forwarder: ForwarderSettings,

    /// Usage metering per tenant.
    #[command(flatten)]
    pub usage: UsageSettings,

    /// How the service stops (shared with the bridge).
    #[command(flatten)]
    pub shutdown: ShutdownSettings,

    /// Connection-level protection of the HTTP server (ingest/src/server.rs).
    #[command(flatten)]
    pub server: ServerSettings,

    /// What session and credential lookups serve while PostgreSQL is away (ingest/src/cache.rs).
    #[command(flatten)]
    pub cache: CacheSettings,

    /// The client-app routes: credentials and implicit sessions (ingest/src/clients.rs).
    #[command(flatten)]
    pub clients: ClientSettings,

    /// The track and position routes (`GET /v1/sessions/{id}/track`).
    #[command(flatten)]
    pub track: TrackSettings,

    /// Webhook sinks: secret rollover (`POST /v1/sink/rotate-secret`).
    #[command(flatten)]
    pub webhooks: WebhookSettings,
}

/// Webhook sink settings of the admin API.
#[derive(Debug, Clone, Args)]
pub struct WebhookSettings {
    /// How long the previous secret keeps signing (a second `v1,` signature) after
    /// `POST /v1/sink/rotate-secret`, when the call names no `rollover_secs` of its own.
    #[arg(
        id = "webhook_rollover_secs",
        long = "webhook-rollover-secs",
        env = "LOCUS_WEBHOOK_ROLLOVER_SECS",
        default_value_t = 86_400
    )]
    pub rollover_secs: u64,
}

/// The bounded caches of session rows and credential exchanges: used only when PostgreSQL
/// fails or is slower than the deadline, and only for a bounded time.
#[derive(Debug, Clone, Args)]
pub struct CacheSettings {
    /// How long a session or credential lookup on the request path waits for PostgreSQL
    /// before it counts as failed (the cache answers, or 503 `database_unavailable`).
    #[arg(
        id = "database_deadline_ms",
        long = "database-deadline-ms",
        env = "LOCUS_DATABASE_DEADLINE_MS",
        default_value_t = 1000
    )]
    pub database_deadline_ms: u64,

    /// How long this replica answers batches from its own read of a session without asking
    /// PostgreSQL again, and how long it may still do so while PostgreSQL is away. A stop
    /// reaches every replica through the buffer's closed mark, and expiry is checked on the
    /// cached row, so this bounds only what the mark cannot carry. 0 turns the cache off.
    #[arg(
        id = "session_cache_secs",
        long = "session-cache-secs",
        env = "LOCUS_SESSION_CACHE_SECS",
        default_value_t = 5
    )]
    pub session_secs: u64,

    /// Most sessions the cache holds (the oldest reads go first).
    #[arg(
        id = "session_cache_entries",
        long = "session-cache-entries",
        env = "LOCUS_SESSION_CACHE_ENTRIES",
        default_value_t = 100_000
    )]
    pub session_entries: usize,

    /// How long after a credential was last exchanged through PostgreSQL it may still be
    /// exchanged while PostgreSQL is away (a credential revoked on another replica can go
    /// on working this long; a revoked device never does). 0 turns the cache off.
    #[arg(
        id = "credential_cache_secs",
        long = "credential-cache-secs",
        env = "LOCUS_CREDENTIAL_CACHE_SECS",
        default_value_t = 60
    )]
    pub credential_secs: u64,

    /// Most credentials the cache holds (the oldest exchanges go first).
    #[arg(
        id = "credential_cache_entries",
        long = "credential-cache-entries",
        env = "LOCUS_CREDENTIAL_CACHE_ENTRIES",
        default_value_t = 100_000
    )]
    pub credential_entries: usize,
}

/// The client-app routes (`/v1/clients/...`, docs/clients.md).
#[derive(Debug, Clone, Args)]
pub struct ClientSettings {
    /// Seconds without a fix after which a client device's implicit session is stopped
    /// and its next fix starts a new one. With several replicas the last activity is
    /// shared at a tenth of this, so a device spread over replicas may roll over up to a
    /// tenth early.
    #[arg(
        id = "client_session_idle_secs",
        long = "client-session-idle-secs",
        env = "LOCUS_CLIENT_SESSION_IDLE_SECS",
        default_value_t = 3600
    )]
    pub session_idle_secs: u64,

    /// How long a device credential a client app sends is trusted after this replica
    /// checked it in PostgreSQL: a credential revoked alone (its device kept) goes on
    /// working this long; a revoked device is refused within LOCUS_REVOCATION_REFRESH_MS.
    /// 0: every request checks PostgreSQL.
    #[arg(
        id = "client_credential_cache_secs",
        long = "client-credential-cache-secs",
        env = "LOCUS_CLIENT_CREDENTIAL_CACHE_SECS",
        default_value_t = 60
    )]
    pub credential_cache_secs: u64,

    /// Most devices (and, apart, credentials) each replica remembers for the client
    /// routes; past it, the quiet ones and then an arbitrary half are forgotten (read
    /// again from PostgreSQL on their next request).
    #[arg(
        id = "client_cache_entries",
        long = "client-cache-entries",
        env = "LOCUS_CLIENT_CACHE_ENTRIES",
        default_value_t = 100_000
    )]
    pub cache_entries: usize,
}

/// The track route (`GET /v1/sessions/{id}/track`, ingest/src/routes/sessions_track.rs).
#[derive(Debug, Clone, Args)]
pub struct TrackSettings {
    /// Most points one track answer holds: a caller's `max_points` above it is lowered to it,
    /// and the tolerance is raised until the simplified track fits.
    #[arg(
        id = "track_max_points",
        long = "track-max-points",
        env = "LOCUS_TRACK_MAX_POINTS",
        default_value_t = 5000
    )]
    pub max_points: usize,

    /// Tolerance in metres of the simplification when the caller gives none (0: none, every
    /// point is kept unless the point bound needs fewer).
    #[arg(
        id = "track_default_tolerance_m",
        long = "track-default-tolerance-m",
        env = "LOCUS_TRACK_DEFAULT_TOLERANCE_M",
        default_value_t = 0.0
    )]
    pub default_tolerance_m: f64,

    /// Most points read from PostgreSQL for one track answer: a longer session is read as
    /// every n-th point and the last (n the smallest that fits), so its memory is bounded.
    #[arg(
        id = "track_max_read_points",
        long = "track-max-read-points",
        env = "LOCUS_TRACK_MAX_READ_POINTS",
        default_value_t = 100_000
    )]
    pub max_read_points: usize,
}

/// PostgreSQL settings.
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL of the session metadata, as the service role `locus_app` (created by
    /// `locus-ingest migrate`). A superuser, a BYPASSRLS role or the tables' owner is
    /// refused at start: row-level security would not hold.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "LOCUS_DATABASE_URL",
        default_value = "postgres://locus_app@127.0.0.1:5432/locus"
    )]
    pub url: String,

    /// Maximum PostgreSQL connections of this process.
    #[arg(
        id = "database_max_connections",
        long = "database-max-connections",
        env = "LOCUS_DATABASE_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub max_connections: u32,
}

/// Redis buffer settings.
#[derive(Debug, Clone, Args)]
pub struct RedisSettings {
    /// Redis URL of the buffer.
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "LOCUS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,

    /// Prefix of every Redis key Locus writes (several deployments can share a Redis).
    #[arg(
        id = "redis_prefix",
        long = "redis-prefix",
        env = "LOCUS_REDIS_PREFIX",
        default_value = "locus"
    )]
    pub prefix: String,

    /// Number of Redis streams the buffer is sharded over (by session). Changing it moves
    /// sessions between shards: drain the buffer first.
    #[arg(
        id = "redis_shards",
        long = "redis-shards",
        env = "LOCUS_REDIS_SHARDS",
        default_value_t = 4
    )]
    pub shards: u32,

    /// Bound of the buffer, in entries (one entry = one accepted HTTP batch) per shard.
    /// Past it, ingest answers 503 with Retry-After.
    #[arg(
        id = "buffer_max_entries",
        long = "buffer-max-entries",
        env = "LOCUS_BUFFER_MAX_ENTRIES",
        default_value_t = 100_000
    )]
    pub max_entries: u64,

    /// How long a batch id is remembered: a retry within this window is not stored twice.
    #[arg(
        id = "dedupe_window_secs",
        long = "dedupe-window-secs",
        env = "LOCUS_DEDUPE_WINDOW_SECS",
        default_value_t = 86_400
    )]
    pub dedupe_window_secs: u64,

    /// How long a batch posted with `Locus-Durability: kafka` waits for the forwarder's
    /// Kafka confirmation before the answer is 503 (stored, not yet confirmed).
    #[arg(
        id = "durability_kafka_timeout_ms",
        long = "durability-kafka-timeout-ms",
        env = "LOCUS_DURABILITY_KAFKA_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub durability_kafka_timeout_ms: u64,

    /// Tenants whose batches default to `Locus-Durability: kafka` (comma-separated); a
    /// request's header still decides for that request.
    #[arg(
        id = "durability_kafka_tenants",
        long = "durability-kafka-tenants",
        env = "LOCUS_DURABILITY_KAFKA_TENANTS",
        value_delimiter = ','
    )]
    pub durability_kafka_tenants: Vec<String>,

    /// How long any Redis call on the request path (buffer append, dedupe, bound check,
    /// shared rate budget) may take before the answer is 503 `buffer_unavailable` with
    /// Retry-After, instead of holding the request while Redis is away or slow.
    #[arg(
        id = "redis_deadline_ms",
        long = "redis-deadline-ms",
        env = "LOCUS_REDIS_DEADLINE_MS",
        default_value_t = 500
    )]
    pub deadline_ms: u64,
}

/// The topics ingest creates at start.
#[derive(Debug, Clone, Args)]
pub struct TopicSettings {
    /// Create the topics at start if they are missing (and warn about existing ones with
    /// fewer partitions or replicas than configured below).
    #[arg(id = "kafka_create_topics", long = "kafka-create-topics", env = "LOCUS_KAFKA_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create: bool,

    /// Partitions of the location and session-event topics created at start. The
    /// dead-letter topic always gets one.
    #[arg(id = "kafka_partitions", long = "kafka-partitions", env = "LOCUS_KAFKA_PARTITIONS", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: i32,

    /// Replication factor of the topics created at start (1 for one local broker;
    /// production uses 3). From 3 on, the topics also get `min.insync.replicas` set to a
    /// majority of it.
    #[arg(id = "kafka_replication_factor", long = "kafka-replication-factor", env = "LOCUS_KAFKA_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: i32,
}

/// The forwarder's Kafka producer.
#[derive(Debug, Clone, Args)]
pub struct ProducerSettings {
    /// Producer linger: how long records wait to fill a batch.
    #[arg(
        id = "kafka_linger_ms",
        long = "kafka-linger-ms",
        env = "LOCUS_KAFKA_LINGER_MS",
        default_value_t = 5
    )]
    pub linger_ms: u64,

    /// Producer compression (none, gzip, snappy, lz4).
    #[arg(
        id = "kafka_compression",
        long = "kafka-compression",
        env = "LOCUS_KAFKA_COMPRESSION",
        default_value = "lz4"
    )]
    pub compression: String,
}

/// Token verification and issuance: which tokens are accepted, and the device tokens
/// Locus signs itself.
#[derive(Debug, Clone, Args)]
pub struct JwtSettings {
    /// Development mode: accept HS256 tokens signed with a weak or published secret
    /// (`LOCUS_JWT_SECRET`), and sign device tokens with a key generated at start when no
    /// key file is given. Never in production.
    #[arg(id = "dev_mode", long = "dev-mode", env = "LOCUS_DEV_MODE", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_mode: bool,

    /// HS256 secret of locally minted tokens (`locus-ingest token`); for development.
    /// Unset: HS256 tokens are refused. Under 32 bytes or a published default: refused at
    /// start unless `LOCUS_DEV_MODE=true`.
    #[arg(
        id = "jwt_secret",
        long = "jwt-secret",
        env = "LOCUS_JWT_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<SecretString>,

    /// `iss` of the tokens Locus signs (device tokens) and of HS256 development tokens.
    #[arg(
        id = "jwt_issuer",
        long = "jwt-issuer",
        env = "LOCUS_JWT_ISSUER",
        default_value = "locus"
    )]
    pub issuer: String,

    /// The audience every accepted token must name in `aud`.
    #[arg(
        id = "jwt_audience",
        long = "jwt-audience",
        env = "LOCUS_JWT_AUDIENCE",
        default_value = "locus"
    )]
    pub audience: String,

    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[arg(
        id = "jwt_leeway_secs",
        long = "jwt-leeway-secs",
        env = "LOCUS_JWT_LEEWAY_SECS",
        default_value_t = 30
    )]
    pub leeway_secs: u64,

    /// Longest lifetime of an accepted token (`exp` - `iat`, or `exp` - now), in seconds.
    #[arg(
        id = "jwt_max_lifetime_secs",
        long = "jwt-max-lifetime-secs",
        env = "LOCUS_JWT_MAX_LIFETIME_SECS",
        default_value_t = 86_400
    )]
    pub max_lifetime_secs: u64,

    /// Largest accepted token, in bytes.
    #[arg(
        id = "jwt_max_bytes",
        long = "jwt-max-bytes",
        env = "LOCUS_JWT_MAX_BYTES",
        default_value_t = 8192
    )]
    pub max_bytes: usize,

    /// Most verified tokens remembered per replica, so a token's signature is checked once
    /// rather than per request (0: off). A full cache drops expired tokens, else part of
    /// itself; size it above the tokens in use at once.
    #[arg(
        id = "jwt_cache_entries",
        long = "jwt-cache-entries",
        env = "LOCUS_JWT_CACHE_ENTRIES",
        default_value_t = 65_536
    )]
    pub cache_entries: usize,

    /// PKCS#8 PEM file of the ES256 key Locus signs device tokens with (`locus-ingest
    /// keygen` writes one). Every replica needs the same key. Unset: refused at start,
    /// unless in development mode (then a key is generated, good for one replica).
    #[arg(
        id = "token_signing_key_file",
        long = "token-signing-key-file",
        env = "LOCUS_TOKEN_SIGNING_KEY_FILE"
    )]
    pub signing_key_file: Option<std::path::PathBuf>,

    /// PEM files of earlier signing keys (comma-separated): their tokens are still accepted
    /// and they stay in the JWKS, so a key can be rotated without logging devices out.
    #[arg(
        id = "token_previous_key_files",
        long = "token-previous-key-files",
        env = "LOCUS_TOKEN_PREVIOUS_KEY_FILES",
        value_delimiter = ','
    )]
    pub previous_key_files: Vec<std::path::PathBuf>,

    /// Lifetime of the device tokens `POST /v1/auth/token` issues, in seconds.
    #[arg(
        id = "device_token_ttl_secs",
        long = "device-token-ttl-secs",
        env = "LOCUS_DEVICE_TOKEN_TTL_SECS",
        default_value_t = 900
    )]
    pub device_token_ttl_secs: u64,

    /// How often each replica reloads revoked devices and credentials from PostgreSQL: a
    /// revoked device's tokens stop working within this time.
    #[arg(
        id = "revocation_refresh_ms",
        long = "revocation-refresh-ms",
        env = "LOCUS_REVOCATION_REFRESH_MS",
        default_value_t = 2000
    )]
    pub revocation_refresh_ms: u64,

    /// How long the list of revoked devices may go without a successful reload (PostgreSQL
    /// away) before device tokens are answered 503 `database_unavailable` instead of
    /// passing: a device revoked during the outage is refused within this bound, never
    /// served on an old list forever.
    #[arg(
        id = "revocation_max_staleness_ms",
        long = "revocation-max-staleness-ms",
        env = "LOCUS_REVOCATION_MAX_STALENESS_MS",
        default_value_t = 30_000
    )]
    pub revocation_max_staleness_ms: u64,

    /// An external OpenID Connect provider (Cognito, Keycloak, Auth0...).
    #[command(flatten)]
    pub oidc: OidcSettings,
}

/// An external identity provider whose tokens are accepted, verified with its JWKS.
#[derive(Debug, Clone, Args)]
pub struct OidcSettings {
    /// The provider's `iss` (for example `https://cognito-idp.eu-west-1.amazonaws.com/<pool>`).
    /// Unset: no external provider.
    #[arg(id = "oidc_issuer", long = "oidc-issuer", env = "LOCUS_OIDC_ISSUER")]
    pub issuer: Option<String>,

    /// URL of the provider's JWKS (its `jwks_uri`).
    #[arg(
        id = "oidc_jwks_url",
        long = "oidc-jwks-url",
        env = "LOCUS_OIDC_JWKS_URL"
    )]
    pub jwks_url: Option<String>,

    /// Audience the provider's tokens must carry, when it is not `LOCUS_JWT_AUDIENCE`
    /// (Cognito access tokens carry `client_id` instead: set the app client id here).
    #[arg(
        id = "oidc_audience",
        long = "oidc-audience",
        env = "LOCUS_OIDC_AUDIENCE"
    )]
    pub audience: Option<String>,

    /// Claim that holds the tenant id (a dotted path: `custom:tenant`, `app_metadata.tenant`).
    #[arg(
        id = "oidc_tenant_claim",
        long = "oidc-tenant-claim",
        env = "LOCUS_OIDC_TENANT_CLAIM",
        default_value = "tenant"
    )]
    pub tenant_claim: String,

    /// Claim that holds the role (a string or an array, a dotted path:
    /// `realm_access.roles`, `cognito:groups`).
    #[arg(
        id = "oidc_role_claim",
        long = "oidc-role-claim",
        env = "LOCUS_OIDC_ROLE_CLAIM",
        default_value = "role"
    )]
    pub role_claim: String,

    /// Provider role values to Locus roles, `value=role` comma-separated (for example
    /// `locus-admins=tenant_admin,ops=platform_admin`); the role names themselves always map.
    #[arg(
        id = "oidc_role_map",
        long = "oidc-role-map",
        env = "LOCUS_OIDC_ROLE_MAP",
        value_delimiter = ','
    )]
    pub role_map: Vec<String>,

    /// Claim that holds a partner's id.
    #[arg(
        id = "oidc_partner_claim",
        long = "oidc-partner-claim",
        env = "LOCUS_OIDC_PARTNER_CLAIM",
        default_value = "sub"
    )]
    pub partner_claim: String,

    /// Fewest seconds between two JWKS fetches caused by an unknown `kid`.
    #[arg(
        id = "oidc_jwks_min_refresh_secs",
        long = "oidc-jwks-min-refresh-secs",
        env = "LOCUS_OIDC_JWKS_MIN_REFRESH_SECS",
        default_value_t = 60
    )]
    pub jwks_min_refresh_secs: u64,

    /// Seconds between scheduled JWKS fetches (keys the provider removed stop working).
    #[arg(
        id = "oidc_jwks_refresh_secs",
        long = "oidc-jwks-refresh-secs",
        env = "LOCUS_OIDC_JWKS_REFRESH_SECS",
        default_value_t = 3600
    )]
    pub jwks_refresh_secs: u64,
}

/// Session lifetimes.
#[derive(Debug, Clone, Args)]
pub struct SessionSettings {
    /// Session duration when the device asks for none (the seed system's 10 minutes).
    #[arg(
        id = "session_default_duration_secs",
        long = "session-default-duration-secs",
        env = "LOCUS_SESSION_DEFAULT_DURATION_SECS",
        default_value_t = 600
    )]
    pub default_duration_secs: u64,

    /// Longest session a device may ask for.
    #[arg(
        id = "session_max_duration_secs",
        long = "session-max-duration-secs",
        env = "LOCUS_SESSION_MAX_DURATION_SECS",
        default_value_t = 86_400
    )]
    pub max_duration_secs: u64,

    /// How often the sweeper stops expired sessions.
    #[arg(
        id = "session_sweep_interval_ms",
        long = "session-sweep-interval-ms",
        env = "LOCUS_SESSION_SWEEP_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub sweep_interval_ms: u64,

    /// How often the relay scans PostgreSQL's outbox for session events that a failed
    /// Redis append, a crash or another replica left behind (a failed append wakes it at
    /// once; this is the longest a left event waits once Redis is up).
    #[arg(
        id = "session_events_scan_ms",
        long = "session-events-scan-ms",
        env = "LOCUS_SESSION_EVENTS_SCAN_MS",
        default_value_t = 1000
    )]
    pub events_scan_ms: u64,
}

/// Bounds of one request.
#[derive(Debug, Clone, Args)]
pub struct RequestLimits {
    /// Largest request body, in bytes, after gzip decompression.
    #[arg(
        id = "max_body_bytes",
        long = "max-body-bytes",
        env = "LOCUS_MAX_BODY_BYTES",
        default_value_t = 1024 * 1024
    )]
    pub max_body_bytes: usize,

    /// Most fixes in one batch.
    #[arg(
        id = "max_fixes_per_batch",
        long = "max-fixes-per-batch",
        env = "LOCUS_MAX_FIXES_PER_BATCH",
        default_value_t = 1000
    )]
    pub max_fixes_per_batch: usize,

    /// Most levels of nested arrays and objects in a batch (the batch, its list and a fix
    /// are 3; the rest is for unknown fields, which are skipped).
    #[arg(
        id = "max_json_depth",
        long = "max-json-depth",
        env = "LOCUS_MAX_JSON_DEPTH",
        default_value_t = 32
    )]
    pub max_json_depth: usize,

    /// Longest string (a key or a value) in a batch, in bytes as sent.
    #[arg(
        id = "max_string_bytes",
        long = "max-string-bytes",
        env = "LOCUS_MAX_STRING_BYTES",
        default_value_t = 1024
    )]
    pub max_string_bytes: usize,

    /// How far ahead of the server clock a fix may be.
    #[arg(
        id = "max_future_skew_secs",
        long = "max-future-skew-secs",
        env = "LOCUS_MAX_FUTURE_SKEW_SECS",
        default_value_t = 300
    )]
    pub max_future_skew_secs: u64,

    /// How old a fix may be.
    #[arg(
        id = "max_fix_age_secs",
        long = "max-fix-age-secs",
        env = "LOCUS_MAX_FIX_AGE_SECS",
        default_value_t = 7 * 86_400
    )]
    pub max_fix_age_secs: u64,
}

/// Rate limits of admission, in fixes.
#[derive(Debug, Clone, Args)]
pub struct RateSettings {
    /// Sustained fixes per second one device may post.
    #[arg(
        id = "rate_device_fixes_per_sec",
        long = "rate-device-fixes-per-sec",
        env = "LOCUS_RATE_DEVICE_FIXES_PER_SEC",
        default_value_t = 200
    )]
    pub device_fixes_per_sec: u32,

    /// Fixes a device may post in a burst (at least the largest batch).
    #[arg(
        id = "rate_device_burst",
        long = "rate-device-burst",
        env = "LOCUS_RATE_DEVICE_BURST",
        default_value_t = 5000
    )]
    pub device_burst: u32,

    /// Sustained fixes per second one tenant may post (all its devices together).
    #[arg(
        id = "rate_tenant_fixes_per_sec",
        long = "rate-tenant-fixes-per-sec",
        env = "LOCUS_RATE_TENANT_FIXES_PER_SEC",
        default_value_t = 50_000
    )]
    pub tenant_fixes_per_sec: u32,

    /// Fixes a tenant may post in a burst.
    #[arg(
        id = "rate_tenant_burst",
        long = "rate-tenant-burst",
        env = "LOCUS_RATE_TENANT_BURST",
        default_value_t = 200_000
    )]
    pub tenant_burst: u32,

    /// Requests per second one device (or admin, or partner) may make, every `/v1` route
    /// together. Per replica: with N replicas a caller may get up to N times this.
    #[arg(
        id = "rate_device_requests_per_sec",
        long = "rate-device-requests-per-sec",
        env = "LOCUS_RATE_DEVICE_REQUESTS_PER_SEC",
        default_value_t = 100
    )]
    pub device_requests_per_sec: u32,

    /// Requests one device (or admin, or partner) may make in a burst.
    #[arg(
        id = "rate_device_requests_burst",
        long = "rate-device-requests-burst",
        env = "LOCUS_RATE_DEVICE_REQUESTS_BURST",
        default_value_t = 1000
    )]
    pub device_requests_burst: u32,

    /// Requests per second one tenant may make (all its devices and admins), every `/v1`
    /// route together. Per replica, like the device's.
    #[arg(
        id = "rate_tenant_requests_per_sec",
        long = "rate-tenant-requests-per-sec",
        env = "LOCUS_RATE_TENANT_REQUESTS_PER_SEC",
        default_value_t = 10_000
    )]
    pub tenant_requests_per_sec: u32,

    /// Requests a tenant may make in a burst.
    #[arg(
        id = "rate_tenant_requests_burst",
        long = "rate-tenant-requests-burst",
        env = "LOCUS_RATE_TENANT_REQUESTS_BURST",
        default_value_t = 20_000
    )]
    pub tenant_requests_burst: u32,

    /// Most sessions active at once in one tenant (a start past it is answered 409
    /// `too_many_active_sessions`).
    #[arg(
        id = "rate_tenant_max_active_sessions",
        long = "rate-tenant-max-active-sessions",
        env = "LOCUS_RATE_TENANT_MAX_ACTIVE_SESSIONS",
        default_value_t = 100_000
    )]
    pub tenant_max_active_sessions: u32,

    /// Whether the fixes budgets (device and tenant) are shared by every replica through
    /// Redis (one script call per batch). `false`: each replica enforces them alone, so N
    /// replicas admit up to N times the budget (for one replica, or when measuring).
    #[arg(id = "rate_shared", long = "rate-shared", env = "LOCUS_RATE_SHARED", default_value_t = true, action = clap::ArgAction::Set)]
    pub shared: bool,

    /// How often each replica reloads the per-tenant limits from PostgreSQL: a change made
    /// through the admin API is in force within this. A failed reload keeps the last table.
    #[arg(
        id = "limits_refresh_ms",
        long = "limits-refresh-ms",
        env = "LOCUS_LIMITS_REFRESH_MS",
        default_value_t = 2000
    )]
    pub limits_refresh_ms: u64,
}

/// Usage metering per tenant (ingest/src/usage.rs): the Prometheus label bound and the
/// roll-up into PostgreSQL's `usage_minutes`.
#[derive(Debug, Clone, Args)]
pub struct UsageSettings {
    /// Tenants that get their own `tenant` label value in the usage metrics (the first
    /// seen by a process); the rest share `other`, so the series count stays bounded.
    #[arg(
        id = "usage_metric_tenants",
        long = "usage-metric-tenants",
        env = "LOCUS_USAGE_METRIC_TENANTS",
        default_value_t = 100
    )]
    pub metric_tenants: usize,

    /// How often each replica adds its usage counts to PostgreSQL, in seconds (and once
    /// more on graceful shutdown). A crash loses at most this much of one replica's counts.
    #[arg(
        id = "usage_flush_secs",
        long = "usage-flush-secs",
        env = "LOCUS_USAGE_FLUSH_SECS",
        default_value_t = 60
    )]
    pub flush_secs: u64,

    /// (tenant, minute) rows a replica keeps while PostgreSQL refuses flushes; past it the
    /// oldest are dropped (and counted in locus_usage_rows_dropped_total).
    #[arg(
        id = "usage_max_pending_rows",
        long = "usage-max-pending-rows",
        env = "LOCUS_USAGE_MAX_PENDING_ROWS",
        default_value_t = 100_000
    )]
    pub max_pending_rows: usize,
}

/// Connection-level protection of the HTTP server, applied before any token is read
/// (ingest/src/server.rs; docs/operations.md says what each one does).
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Longest a connection may take to send a request's headers, counted from when it is
    /// ready for a request: a new connection, or a kept-alive one after its last answer (so
    /// this is also the keep-alive idle timeout). Past it the connection is closed.
    #[arg(
        id = "http_header_timeout_ms",
        long = "http-header-timeout-ms",
        env = "LOCUS_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub header_timeout_ms: u64,

    /// Largest request head (request line and headers), in bytes. Past it the answer is a
    /// bare 431 written by the HTTP library, and the connection is closed.
    #[arg(
        id = "http_max_header_bytes",
        long = "http-max-header-bytes",
        env = "LOCUS_HTTP_MAX_HEADER_BYTES",
        default_value_t = 16 * 1024
    )]
    pub max_header_bytes: usize,

    /// Longest a request's body may take to arrive, from its headers to its last byte
    /// (the largest body, 1 MiB by default, then needs about 420 kbit/s). Past it the
    /// answer is 408 `request_timeout`.
    #[arg(
        id = "http_body_timeout_ms",
        long = "http-body-timeout-ms",
        env = "LOCUS_HTTP_BODY_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub body_timeout_ms: u64,

    /// Longest a request may take, from its headers to its answer. Past it the answer is
    /// 503 `deadline_exceeded` with Retry-After (408 `request_timeout` if its body was late).
    #[arg(
        id = "http_request_timeout_ms",
        long = "http-request-timeout-ms",
        env = "LOCUS_HTTP_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,

    /// Most connections open at once; the next is accepted when one closes (the kernel's
    /// backlog holds it meanwhile).
    #[arg(
        id = "http_max_connections",
        long = "http-max-connections",
        env = "LOCUS_HTTP_MAX_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Most requests served at once (health, readiness and metrics not counted). One more
    /// is answered 503 `overloaded` with Retry-After at once: shed, not queued.
    #[arg(
        id = "http_max_in_flight",
        long = "http-max-in-flight",
        env = "LOCUS_HTTP_MAX_IN_FLIGHT",
        default_value_t = 1024
    )]
    pub max_in_flight: usize,

    /// Requests per second one client address may make, before any token is read (0: no
    /// limit). Per replica. Past it: 429 `rate_limited` with Retry-After.
    #[arg(
        id = "http_per_address_rps",
        long = "http-per-address-rps",
        env = "LOCUS_HTTP_PER_ADDRESS_RPS",
        default_value_t = 1000
    )]
    pub per_address_rps: u32,

    /// Requests one client address may make in a burst.
    #[arg(
        id = "http_per_address_burst",
        long = "http-per-address-burst",
        env = "LOCUS_HTTP_PER_ADDRESS_BURST",
        default_value_t = 2000
    )]
    pub per_address_burst: u32,

    /// Header that carries the client address when ingest runs behind a proxy that sets
    /// it (for example `x-forwarded-for`: its last entry is used, the one the proxy
    /// added). Unset (the default): the peer address of the connection. Set it only
    /// behind such a proxy: clients can write any header.
    #[arg(
        id = "http_client_address_header",
        long = "http-client-address-header",
        env = "LOCUS_HTTP_CLIENT_ADDRESS_HEADER"
    )]
    pub client_address_header: Option<String>,
}

/// The forwarder role.
#[derive(Debug, Clone, Args)]
pub struct ForwarderSettings {
    /// Name of this forwarder in the Redis consumer group and in its shard leases; unique
    /// per replica.
    #[arg(
        id = "forwarder_consumer",
        long = "forwarder-consumer",
        env = "LOCUS_FORWARDER_CONSUMER",
        default_value = "forwarder-1"
    )]
    pub consumer: String,

    /// Entries read from a shard at a time.
    #[arg(
        id = "forwarder_read_count",
        long = "forwarder-read-count",
        env = "LOCUS_FORWARDER_READ_COUNT",
        default_value_t = 200
    )]
    pub read_count: usize,

    /// Lease on a shard: one forwarder at a time owns a shard (that keeps each session in
    /// order). The owner renews it every third of this; a crashed owner's shards are taken
    /// over once it lapses. A graceful stop releases its leases at once.
    #[arg(
        id = "forwarder_lease_ms",
        long = "forwarder-lease-ms",
        env = "LOCUS_FORWARDER_LEASE_MS",
        default_value_t = 10_000
    )]
    pub lease_ms: u64,

    /// Most shards this forwarder owns at once (0: as many as it can get). With N replicas,
    /// set it to about shards / N so that they share the work.
    #[arg(
        id = "forwarder_max_shards",
        long = "forwarder-max-shards",
        env = "LOCUS_FORWARDER_MAX_SHARDS",
        default_value_t = 0
    )]
    pub max_shards: u32,

    /// Attempts at a buffer entry this forwarder cannot decode before it goes to the
    /// dead-letter topic (XPENDING's delivery count). Until then it stays pending, counted
    /// and logged, and is read again every two leases: during a rolling upgrade, a newer
    /// forwarder that can read it may take the shard meanwhile.
    #[arg(
        id = "forwarder_undecodable_attempts",
        long = "forwarder-undecodable-attempts",
        env = "LOCUS_FORWARDER_UNDECODABLE_ATTEMPTS",
        default_value_t = 10
    )]
    pub undecodable_attempts: u64,

    /// Attempts at an entry whose records Kafka refuses for good (a record too large)
    /// before the entry goes to the shard's dead-letter stream in Redis.
    #[arg(
        id = "forwarder_rejected_attempts",
        long = "forwarder-rejected-attempts",
        env = "LOCUS_FORWARDER_REJECTED_ATTEMPTS",
        default_value_t = 5
    )]
    pub rejected_attempts: u64,

    /// How long an owned shard may go without progress (an acknowledged entry, or finding
    /// nothing to forward) before /readyz reports the forwarder stalled.
    #[arg(
        id = "forwarder_stall_secs",
        long = "forwarder-stall-secs",
        env = "LOCUS_FORWARDER_STALL_SECS",
        default_value_t = 60
    )]
    pub stall_secs: u64,
}

impl Config {
    /// The configuration of the process: flags after `serve` on its command line, then
    /// `LOCUS_*` variables, then the defaults.
    pub fn from_env_and_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv =
            std::iter::once(OsString::from("locus-ingest")).chain(args.into_iter().map(Into::into));
        Self::try_parse_from(argv)
    }

    /// Parses flags ignoring the environment, so a variable set on the machine cannot leak
    /// into a test or a tool that builds its configuration by hand.
    pub fn from_args_only<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let argv =
            std::iter::once(OsString::from("locus-ingest")).chain(args.into_iter().map(Into::into));
        let matches = Self::command()
            .mut_args(|arg| arg.env(None::<&'static str>))
            .try_get_matches_from(argv)?;
        Self::from_arg_matches(&matches)
    }

    /// A configuration for tests: the documented defaults (no environment read), a free
    /// port, development mode and `jwt_secret`. Change typed fields with [`Config::with`].
    pub fn for_tests(jwt_secret: &str) -> Self {
        let mut config = Self::from_args_only(["--jwt-secret", jwt_secret, "--dev-mode", "true"])
            .expect("every other field has a default");
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    /// This configuration changed by `change` (`Config::for_tests(s).with(|c| c.redis.shards = 2)`).
    pub fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The topic names.
    pub fn topic_names(&self) -> Topics {
        self.kafka.topics()
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown.grace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_keep_their_names_and_land_in_their_groups() {
        let c = Config::from_args_only([
            "--jwt-secret",
            "s",
            "--roles",
            "forwarder",
            "--database-url",
            "postgres://db/x",
            "--redis-url",
            "redis://r:1",
            "--redis-shards",
            "2",
            "--kafka-brokers",
            "k:9",
            "--kafka-topic-prefix",
            "p.",
            "--kafka-partitions",
            "12",
            "--forwarder-lease-ms",
            "1500",
            "--shutdown-grace-secs",
            "5",
        ])
        .expect("valid flags");
        assert_eq!(c.roles, [Role::Forwarder]);
        assert_eq!(c.database.url, "postgres://db/x");
        assert_eq!(c.redis.url, "redis://r:1");
        assert_eq!(c.redis.shards, 2);
        assert_eq!(c.kafka.brokers, "k:9");
        assert_eq!(c.topic_names().locations(), "p.locations");
        assert_eq!(c.topics.partitions, 12);
        assert_eq!(c.forwarder.lease_ms, 1500);
        assert_eq!(c.shutdown_grace(), Duration::from_secs(5));
    }

    #[test]
    fn the_test_builder_starts_from_the_defaults_and_changes_typed_fields() {
        let c = Config::for_tests("s").with(|c| c.redis.prefix = "t".into());
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.redis.prefix, "t");
        assert_eq!(c.redis.shards, 4);
        assert_eq!(c.kafka.topic_prefix, "locus.");
        assert_eq!(c.topics.partitions, 6);
        assert_eq!(c.rates.device_fixes_per_sec, 200);
        assert_eq!(c.shutdown.grace_secs, 30);
        assert!(c.runs(Role::Api) && c.runs(Role::Forwarder));
    }
}
