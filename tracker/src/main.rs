//! The `locus-tracker` binary: configuration, telemetry, run until a signal.

/// mimalloc, as in the other roles: many short-lived allocations per record.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use locus_tracker::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    locus_service::init_tracing();
    let app = Application::build(config)
        .await
        .context("building the tracker")?;
    app.run_until_stopped(locus_service::shutdown_on_signal())
        .await
        .context("running the tracker")?;
    tracing::info!("Shutdown complete.");
    Ok(())
}
