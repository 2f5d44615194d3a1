//! Every figure the bench reports and how it is shown: latency summaries ([`latency`]),
//! the demo's text block and JSON ([`demo`]), the report files of `run` ([`run`]) and of
//! `sweep` ([`sweep`]) with its chart ([`chart`]). JSON for scripts, text and Markdown for
//! people.

use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

pub mod chart;
pub mod demo;
pub mod latency;
pub mod run;
pub mod sweep;

pub use demo::DemoFigures;
pub use latency::{LatencyMs, MAX_LATENCY_US, latency_histogram};
pub use run::{BenchReport, PipelineFigures};
pub use sweep::{SweepReport, SweepStep};

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Writes `<name>.json` (for scripts) and `<name>.md` (for people) under `dir`, creating it.
fn write_json_and_markdown(
    dir: &Path,
    name: &str,
    report: &impl Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_vec_pretty(report)?,
    )?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    Ok(())
}

/// A rate as a whole number with thousands separators (`22,187`).
pub fn rate(per_sec: f64) -> String {
    thousands(per_sec.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(3950), "3,950");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
