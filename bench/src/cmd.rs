//! The subcommands of `locus-bench`, one module each: [`receiver`] (the demo partner),
//! [`demo`] (a short load that proves the pipeline), [`run`] (the benchmark) and
//! [`sweep`] (open loop at rising rates). Each parses its arguments into the library's
//! types, runs, and prints its figures; errors go back to `main` as `anyhow` errors.

pub mod demo;
pub mod faults;
pub mod receiver;
pub mod run;
pub mod sweep;

use anyhow::Context as _;
use locus_wire::TenantId;

/// One subcommand with its arguments.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the demo partner: a webhook receiver that verifies, counts and dedupes records.
    Receiver(receiver::ReceiverArgs),
    /// Drive a short load through ingest, Kafka and the webhook, and print the figures.
    Demo(demo::DemoArgs),
    /// The benchmark: ceilings and the Locus pipeline on the same data; writes reports.
    Run(run::RunArgs),
    /// Open loop at rising rates until p99 or errors blow up; finds the knee; draws a chart.
    Sweep(sweep::SweepArgs),
    /// The fault harness: load, a fault, a drain, then acknowledged against delivered.
    Faults(faults::FaultsArgs),
}

impl Command {
    /// Runs the subcommand to its end (the receiver: until SIGINT or SIGTERM).
    pub async fn execute(self) -> anyhow::Result<()> {
        match self {
            Self::Receiver(args) => {
                let shutdown = locus_service::shutdown_on_signal();
                receiver::run(&args, shutdown.cancelled_owned()).await
            }
            Self::Demo(args) => demo::execute(&args).await,
            Self::Run(args) => run::execute(&args).await,
            Self::Sweep(args) => sweep::execute(&args).await,
            Self::Faults(args) => faults::execute(&args).await,
        }
    }
}

/// The process's command line, for the reports (which say how they were made).
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// The `--tenants` flag as tenant ids; at least one.
pub fn tenant_ids(tenants: &[String]) -> anyhow::Result<Vec<TenantId>> {
    let ids = tenants
        .iter()
        .map(|t| TenantId::parse(t.trim()).with_context(|| format!("bad tenant id {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!ids.is_empty(), "give at least one tenant");
    Ok(ids)
}
