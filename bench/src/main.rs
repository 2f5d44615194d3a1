//! `locus-bench`: parses the command line, sets up logging and runs one subcommand
//! ([`locus_bench::cmd`]).

use std::process::ExitCode;

use clap::Parser;
use locus_bench::cmd::Command;
use tracing_subscriber::EnvFilter;

/// Load generator and demo partner for Locus.
#[derive(Debug, Parser)]
#[command(name = "locus-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command.execute().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("locus-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: stdout carries the figures, which `--json` callers parse.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
