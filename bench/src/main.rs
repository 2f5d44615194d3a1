//! `locus-bench`: parses the command line and runs one subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use locus_bench::demo::{DemoArgs, run_demo};
use locus_bench::receiver::{self, ReceiverArgs};
use tracing_subscriber::EnvFilter;

/// Load generator and demo partner for Locus.
#[derive(Debug, Parser)]
#[command(name = "locus-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo partner: a webhook receiver that verifies, counts and dedupes records.
    Receiver(ReceiverArgs),
    /// Drive a short load through ingest, Kafka and the webhook, and print the figures.
    Demo(DemoArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Receiver(args) => {
            let shutdown = locus_telemetry::shutdown_on_signal();
            receiver::run(&args, shutdown.cancelled_owned()).await
        }
        Command::Demo(args) => demo(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs) -> anyhow::Result<()> {
    let figures = run_demo(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print!("{}", figures.render_text());
    }
    anyhow::ensure!(figures.ok(), "demo FAILED: {}", figures.problems.join("; "));
    Ok(())
}

/// Logs go to stderr: stdout carries the figures, which `--json` callers parse.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
