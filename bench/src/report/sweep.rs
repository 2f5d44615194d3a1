//! The report of `locus-bench sweep`: its steps and knee ([`SweepReport`]), and the files
//! it writes (`sweep.json`, `sweep.md`, `sweep.png`).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::rate;
use crate::driver::LoadFigures;
use crate::machine::Machine;

/// One step of a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepStep {
    /// Offered fixes per second.
    pub offered: f64,
    /// What the step measured.
    pub figures: LoadFigures,
}

/// A sweep's steps and its knee.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// When (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Target: `ingest` or `noop`.
    pub target: String,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Steps, in order.
    pub steps: Vec<SweepStep>,
    /// Index of the knee: the last step that kept up (>= 95 % of offered, no errors) with
    /// p99 under 3x the first step's.
    pub knee: Option<usize>,
}

/// The Markdown of a sweep.
pub fn sweep_markdown(r: &SweepReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# locus-bench sweep ({}), {}\n", r.target, r.date);
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), load average {:.2} at start.  ",
        r.machine.nproc, r.machine.cpu, r.machine.load_avg_1m
    );
    let _ = writeln!(
        s,
        "Command: `{}`  \nBatch: {} fixes. Open loop; latency from the intended send time.\n",
        r.command, r.batch_size
    );
    let _ = writeln!(
        s,
        "| offered fixes/s | achieved fixes/s | errors+dropped | p50 ms | p99 ms | p99.9 ms |\n|---|---|---|---|---|---|"
    );
    for (i, st) in r.steps.iter().enumerate() {
        let f = &st.figures;
        let mark = if r.knee == Some(i) { " **knee**" } else { "" };
        let _ = writeln!(
            s,
            "| {}{mark} | {} | {} | {:.2} | {:.2} | {:.2} |",
            rate(st.offered),
            rate(f.fixes_per_sec),
            f.error_count(),
            f.http_ms.p50,
            f.http_ms.p99,
            f.http_ms.p999
        );
    }
    s
}

/// Writes `sweep.json`, `sweep.md` and `sweep.png` under `dir`.
pub fn write_sweep(dir: &Path, r: &SweepReport) -> anyhow::Result<()> {
    super::write_json_and_markdown(dir, "sweep", r, &sweep_markdown(r))?;
    if let Err(e) = super::chart::chart(&dir.join("sweep.png"), r) {
        tracing::warn!(error = %e, "Could not draw the sweep chart.");
    }
    Ok(())
}
