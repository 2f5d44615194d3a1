//! The Locus ingest service: the HTTP API devices post to, admission, the Redis buffer,
//! and the forwarder role that moves buffered fixes to Kafka.

pub mod access;
pub mod admission;
pub mod audit_relay;
pub mod auth;
pub mod body;
pub mod buffer;
pub mod cache;
pub mod clients;
pub mod config;
pub mod error;
pub mod events;
pub mod forwarder;
pub mod kafka;
pub mod limits;
pub mod pipeline;
pub mod routes;
pub mod server;
pub mod session_events;
pub mod startup;
pub mod sweeper;
pub mod usage;

pub use config::Config;
pub use startup::{Application, StartupError};

/// The command line of `locus-ingest`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "locus-ingest",
    version,
    about = "Locus ingest: HTTP API, Redis buffer and Kafka forwarder"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `locus-ingest`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the service (roles from LOCUS_INGEST_ROLES).
    Serve(Box<Config>),
    /// Mint a token signed with LOCUS_JWT_SECRET (for local use and tests).
    Token(TokenArgs),
    /// Create the service roles and run the database migrations, as the database owner.
    Migrate(MigrateArgs),
    /// Print a new ES256 signing key for device tokens (PKCS#8 PEM) on stdout.
    Keygen,
}

/// Arguments of `locus-ingest migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL of a role that may create roles and owns (or may create) the tables:
    /// the database owner. The services never get this URL.
    #[arg(
        long,
        env = "LOCUS_DATABASE_OWNER_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/locus"
    )]
    pub database_owner_url: String,
}

/// Arguments of `locus-ingest token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Tenant the token belongs to.
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// Subject: the device id (or the admin user, or the partner id).
    #[arg(long, default_value = "phone-1")]
    pub device: String,
    /// Role.
    #[arg(long, value_enum, default_value = "device")]
    pub role: auth::Role,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl_secs: i64,
    /// HS256 secret.
    #[arg(long, env = "LOCUS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: secrecy::SecretString,
    /// `iss` claim.
    #[arg(long, env = "LOCUS_JWT_ISSUER", default_value = "locus")]
    pub issuer: String,
    /// `aud` claim.
    #[arg(long, env = "LOCUS_JWT_AUDIENCE", default_value = "locus")]
    pub audience: String,
}
