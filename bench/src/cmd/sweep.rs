//! `locus-bench sweep`: the open loop at rising rates until p99 or errors blow up; marks
//! the knee; writes `sweep.json`, `sweep.md` and `sweep.png` and prints the Markdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use super::run::{REQUEST_TIMEOUT, RunArgs};
use crate::ceiling;
use crate::client::{self, IngestClient};
use crate::driver::{self, Mode};
use crate::machine::Machine;
use crate::report::{self, SweepReport, SweepStep};
use crate::sessions::{self, start_sessions, stop_sessions};
use crate::workload::Workload;

/// Settings of `locus-bench sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Load shape and endpoints (the fixes/s per device flag is ignored: rates are swept).
    #[command(flatten)]
    pub run: RunArgs,
    /// First offered rate, fixes per second.
    #[arg(long, default_value_t = 5000.0)]
    pub start_rate: f64,
    /// Each step multiplies the rate by this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Most steps.
    #[arg(long, default_value_t = 12)]
    pub max_steps: u32,
    /// Seconds per step.
    #[arg(long, default_value_t = 5)]
    pub step_secs: u64,
    /// Stop once p99 passes this many milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub max_p99_ms: f64,
    /// Sweep the no-op ceiling instead of ingest.
    #[arg(long)]
    pub noop: bool,
}

/// Runs the sweep and prints its Markdown; the files go to `--out`.
pub async fn execute(args: &SweepArgs) -> anyhow::Result<()> {
    let report = sweep(args, super::command_line()).await?;
    print!("{}", report::sweep::sweep_markdown(&report));
    eprintln!(
        "Reports and sweep.png written to {}.",
        args.run.out.display()
    );
    Ok(())
}

/// Open loop at rising rates until p99 or errors blow up; writes the reports.
pub async fn sweep(args: &SweepArgs, command: String) -> anyhow::Result<SweepReport> {
    let mut run_args = args.run.clone();
    run_args.fixes_per_sec_per_device = 0.0;
    let tenants = super::tenant_ids(&run_args.tenants)?;
    let work = Workload::new(
        &tenants,
        run_args.devices,
        run_args.batch_size,
        run_args.gzip,
    )?;
    let http = client::http_client(REQUEST_TIMEOUT, 256)?;
    let ingest_url = run_args.stack.ingest_url();
    let ingest = Arc::new(IngestClient::new(http.clone(), ingest_url.clone()));
    let stop = CancellationToken::new();
    let (driven, targets, sessions) = if args.noop {
        let url = ceiling::noop_http::start(stop.clone()).await?;
        let noop = Arc::new(IngestClient::new(http.clone(), url));
        (noop, work.noop_targets(), Vec::new())
    } else {
        anyhow::ensure!(
            client::wait_ready(&http, &format!("{ingest_url}/readyz"), Duration::ZERO)
                .await
                .is_ok(),
            "ingest at {ingest_url} is not ready"
        );
        let secret = SecretString::from(run_args.jwt_secret.clone());
        let lifetime = sessions::lifetime_secs(run_args.duration_secs, run_args.drain_secs);
        let (sessions, _registration) = start_sessions(&ingest, &secret, &work, lifetime).await?;
        let targets = sessions.iter().map(|s| s.target.clone()).collect();
        (Arc::clone(&ingest), targets, sessions)
    };
    let targets = Arc::new(targets);
    let mut steps: Vec<SweepStep> = Vec::new();
    let mut rate = args.start_rate;
    for _ in 0..args.max_steps {
        let rps = rate / f64::from(run_args.batch_size);
        let figures = driver::drive(
            Arc::clone(&driven),
            Arc::clone(&targets),
            Mode::Open {
                requests_per_sec: rps,
            },
            Duration::from_secs(args.step_secs),
            &format!("{}-{}", work.run_id, steps.len()),
        )
        .await;
        tracing::info!(
            offered = rate,
            achieved = figures.fixes_per_sec,
            p99_ms = figures.http_ms.p99,
            errors = figures.error_count(),
            "Sweep step done."
        );
        let blown = figures.http_ms.p99 > args.max_p99_ms
            || figures.error_count() * 100 > figures.ok_requests.max(1)
            || figures.fixes_per_sec < 0.8 * rate;
        steps.push(SweepStep {
            offered: rate,
            figures,
        });
        if blown {
            break;
        }
        rate *= args.factor;
        // Let queues drain between steps.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    stop_sessions(&ingest, &sessions).await;
    let knee = knee(&steps);
    let report = SweepReport {
        date: Utc::now().to_rfc3339(),
        machine: Machine::detect(),
        command,
        target: if args.noop {
            "noop".into()
        } else {
            "ingest".into()
        },
        batch_size: run_args.batch_size,
        steps,
        knee,
    };
    report::sweep::write_sweep(&run_args.out, &report)?;
    Ok(report)
}

/// The last step that kept up (>= 95 % of offered, no errors) with p99 under 3x the
/// first step's (and at most 10 ms when the first was faster).
fn knee(steps: &[SweepStep]) -> Option<usize> {
    let base_p99 = steps.first().map_or(0.0, |s| s.figures.http_ms.p99);
    steps.iter().rposition(|s| {
        s.figures.error_count() == 0
            && s.figures.fixes_per_sec >= 0.95 * s.offered
            && s.figures.http_ms.p99 <= (3.0 * base_p99).max(10.0)
    })
}
