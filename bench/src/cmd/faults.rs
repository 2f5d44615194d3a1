//! `locus-bench faults [NAME...]`: the fault harness ([`crate::faults`]). Runs the named
//! faults (all built ones by default) one after another on the harness's own services,
//! prints each one's comparison and a table, and fails when any fault does.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::faults::{FaultReport, Harness, Options, scenarios};

/// Command-line settings of `locus-bench faults`.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultsArgs {
    /// Faults to run, by name (see --list); all of them when none is given.
    pub names: Vec<String>,
    /// List the faults and exit.
    #[arg(long)]
    pub list: bool,
    /// Short faults (seconds instead of the durations), for development.
    #[arg(long)]
    pub quick: bool,
    /// Devices per tenant.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Fixes per batch.
    #[arg(long, default_value_t = 10)]
    pub batch_size: u32,
    /// Pause between a device's batches, in ms.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Longest drain after the load, in seconds.
    #[arg(long, default_value_t = 240)]
    pub drain_secs: u64,
    /// Shard lease of the harness's forwarders, in ms (LOCUS_FORWARDER_LEASE_MS).
    #[arg(long, default_value_t = 3000)]
    pub lease_ms: u64,
    /// Directory of locus-ingest and locus-stream-bridge [default: this binary's].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where the run keeps its services' data and the processes' logs.
    #[arg(long, default_value = ".locus/faults")]
    pub work_dir: PathBuf,
    /// Also write the reports as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs the faults; an error when one of them failed.
pub async fn execute(args: &FaultsArgs) -> anyhow::Result<()> {
    if args.list {
        for (name, what) in scenarios::FAULTS {
            println!("{name:16} {what}");
        }
        return Ok(());
    }
    let names: Vec<String> = if args.names.is_empty() {
        scenarios::FAULTS
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect()
    } else {
        args.names.clone()
    };
    for n in &names {
        anyhow::ensure!(
            scenarios::FAULTS.iter().any(|(f, _)| f == n),
            "unknown fault {n:?} (--list shows them)"
        );
    }
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the binary has no directory")?
            .to_path_buf(),
    };
    let work_dir = std::path::absolute(&args.work_dir)?;
    let opts = Options {
        quick: args.quick,
        devices: args.devices,
        batch_size: args.batch_size,
        interval: Duration::from_millis(args.interval_ms),
        drain: Duration::from_secs(args.drain_secs),
        lease_ms: args.lease_ms,
        bin_dir,
        work_dir,
    };
    println!("[faults] {}", super::command_line());
    let harness = Harness::start(opts).await?;
    let mut reports = Vec::new();
    for name in &names {
        match scenarios::run(&harness, name).await {
            Ok(r) => {
                print_one(&r);
                reports.push(r);
            }
            Err(e) => {
                println!("[faults] {name}: could not run: {e:#}");
                reports.push(FaultReport::broken(name, &format!("{e:#}")));
            }
        }
    }
    harness.shutdown().await;
    print_table(&reports);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&reports)?)?;
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.pass)
        .map(|r| r.name.as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "{} of {} faults FAILED: {}",
        failed.len(),
        reports.len(),
        failed.join(", ")
    );
    Ok(())
}

fn print_one(r: &FaultReport) {
    println!(
        "[faults] {}: {}",
        r.name,
        if r.pass { "PASS" } else { "FAIL" }
    );
    println!(
        "  acknowledged {} fixes ({} batches, {} abandoned); answers {:?}, {} without an answer",
        r.acknowledged, r.acknowledged_batches, r.abandoned_batches, r.statuses, r.transport_errors
    );
    for (leg, l) in [("kafka", &r.kafka), ("webhook", &r.webhook)] {
        println!(
            "  {leg:8} raw {} distinct {} lost {} duplicates {} out-of-order {} wrong-body {} extra {}",
            l.raw, l.distinct, l.lost, l.duplicates, l.out_of_order, l.wrong_body, l.extra
        );
    }
    println!(
        "  dead letters {}; drain {}",
        r.dead_letters,
        r.drain_secs
            .map_or("did not finish".to_owned(), |s| format!("{s:.1} s"))
    );
}

fn print_table(reports: &[FaultReport]) {
    println!();
    println!(
        "| fault | acked | kafka raw / dedup | webhook raw / dedup | lost k / w | dup k / w | out of order k / w | dead letters | drain s | result |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} | {} |",
            r.name,
            r.acknowledged,
            r.kafka.raw,
            r.kafka.distinct,
            r.webhook.raw,
            r.webhook.distinct,
            r.kafka.lost,
            r.webhook.lost,
            r.kafka.duplicates,
            r.webhook.duplicates,
            r.kafka.out_of_order,
            r.webhook.out_of_order,
            r.dead_letters,
            r.drain_secs.map_or("-".to_owned(), |s| format!("{s:.1}")),
            if r.pass { "PASS" } else { "FAIL" }
        );
    }
}
