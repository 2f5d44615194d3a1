//! The `locus-stream-bridge` binary: configuration, telemetry, run until a signal.

/// mimalloc: glibc malloc and free were about 15 % of ingest's CPU under load (perf, see
/// docs/performance.md); per-request and per-record allocations are many and short-lived.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use locus_stream_bridge::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    locus_service::init_tracing();
    let app = Application::build(config)
        .await
        .context("building the stream bridge")?;
    app.run_until_stopped(locus_service::shutdown_on_signal())
        .await
        .context("running the stream bridge")?;
    tracing::info!("Shutdown complete.");
    Ok(())
}
