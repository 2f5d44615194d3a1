//! `locus-bench`: parses the command line and runs one subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use locus_bench::demo::{DemoArgs, run_demo};
use locus_bench::perf::{RunArgs, SweepArgs};
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
    /// The benchmark: ceilings and the Locus pipeline on the same data; writes reports.
    Run(RunArgs),
    /// Open loop at rising rates until p99 or errors blow up; finds the knee; draws a chart.
    Sweep(SweepArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Receiver(args) => {
            let shutdown = locus_service::shutdown_on_signal();
            receiver::run(&args, shutdown.cancelled_owned()).await
        }
        Command::Demo(args) => demo(&args).await,
        Command::Run(args) => bench_run(&args).await,
        Command::Sweep(args) => bench_sweep(&args).await,
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

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

async fn bench_run(args: &RunArgs) -> anyhow::Result<()> {
    let report = locus_bench::perf::run(args, command_line()).await?;
    print!("{}", locus_bench::perf_report::run_markdown(&report));
    eprintln!("Reports written to {}.", args.out.display());
    Ok(())
}

async fn bench_sweep(args: &SweepArgs) -> anyhow::Result<()> {
    let report = locus_bench::perf::sweep(args, command_line()).await?;
    print!("{}", locus_bench::perf_report::sweep_markdown(&report));
    eprintln!(
        "Reports and sweep.png written to {}.",
        args.run.out.display()
    );
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
