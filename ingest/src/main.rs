//! `locus-ingest`: reads its configuration, starts the roles it is given and runs until
//! SIGTERM or Ctrl-C.

/// mimalloc: glibc malloc and free were about 15 % of ingest's CPU under load (perf, see
/// docs/performance.md); per-request and per-record allocations are many and short-lived.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use locus_ingest::{Application, Cli, Command, auth};
use locus_wire::{DeviceId, TenantId};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(t)) => {
            let tenant = TenantId::parse(t.tenant).context("invalid --tenant")?;
            if t.role == auth::Role::Device {
                DeviceId::parse(t.device.as_str()).context("invalid --device")?;
            }
            let token = auth::mint(
                &t.jwt_secret,
                &t.issuer,
                &t.audience,
                Some(&tenant),
                &t.device,
                t.role,
                t.ttl_secs,
            )
            .context("could not sign the token")?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Serve(config)) => serve(*config).await,
        Some(Command::Migrate(m)) => {
            locus_service::init_tracing();
            let pool = sqlx::PgPool::connect(&m.database_owner_url).await.context(
                "could not connect to PostgreSQL as the owner (LOCUS_DATABASE_OWNER_URL)",
            )?;
            locus_session::bootstrap(&pool)
                .await
                .context("could not set the database up")?;
            tracing::info!("Database roles and migrations are in place.");
            Ok(())
        }
        Some(Command::Keygen) => {
            print!("{}", locus_identity::TokenSigner::generate().to_pkcs8_pem());
            Ok(())
        }
        None => {
            let config = locus_ingest::Config::from_env_and_args(std::iter::empty::<String>())
                .unwrap_or_else(|e| e.exit());
            serve(config).await
        }
    }
}

async fn serve(config: locus_ingest::Config) -> anyhow::Result<()> {
    locus_service::init_tracing();
    let shutdown = locus_service::shutdown_on_signal();
    let app = Application::build(config)
        .await
        .context("ingest could not start (are PostgreSQL, Redis and Kafka up? `./locus services` starts them)")?;
    app.run_until_stopped(shutdown)
        .await
        .context("the HTTP server failed")
}
