//! The Locus ingest service: the HTTP API devices post to, admission, the Redis buffer,
//! and the forwarder role that moves buffered fixes to Kafka.

pub mod admission;
pub mod auth;
pub mod body;
pub mod buffer;
pub mod config;
pub mod error;
pub mod events;
pub mod forwarder;
pub mod kafka;
pub mod routes;
pub mod startup;

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
}

/// Arguments of `locus-ingest token`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Tenant the token belongs to.
    #[arg(long, default_value = "acme")]
    pub tenant: String,
    /// Subject: the device id (or admin user).
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

/// Parses a [`Config`] from `args` (as if given on the command line after `serve`),
/// falling back to `LOCUS_*` variables and defaults. Tests use it to build configs.
pub fn config_from_args<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        config: Config,
    }
    let argv = std::iter::once(std::ffi::OsString::from("locus-ingest"))
        .chain(args.into_iter().map(Into::into));
    <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.config)
}
