//! The `locus-stream-bridge` binary: configuration, telemetry, run until a signal.

/// mimalloc: glibc malloc and free were about 15 % of ingest's CPU under load (perf, see
/// docs/performance.md); per-request and per-record allocations are many and short-lived.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;
use locus_stream_bridge::config::BridgeCommand;
use locus_stream_bridge::replay::{ReplayFilter, replay_dead_letters};
use locus_stream_bridge::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    locus_service::init_tracing();
    if let Some(BridgeCommand::ReplayDeadLetters { reason, tenant }) = &config.command {
        let filter = ReplayFilter {
            reason: reason.clone(),
            tenant: tenant.clone(),
        };
        let report = replay_dead_letters(&config, &filter)
            .await
            .context("replaying dead letters")?;
        println!(
            "read {} dead letters, replayed {} to {}",
            report.read,
            report.replayed,
            config.topics().locations()
        );
        return Ok(());
    }
    let app = Application::build(config)
        .await
        .context("building the stream bridge")?;
    app.run_until_stopped(locus_service::shutdown_on_signal())
        .await
        .context("running the stream bridge")?;
    tracing::info!("Shutdown complete.");
    Ok(())
}
