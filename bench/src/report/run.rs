//! The report of `locus-bench run`: what it measured ([`BenchReport`]), the stage /
//! ceiling fractions, and the files it writes (`run.json`, `run.md`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LatencyMs, rate};
use crate::ceiling::Ceiling;
use crate::driver::{LoadFigures, Mode};
use crate::machine::Machine;
use crate::procstat::ProcUsage;
use crate::register::Registration;

/// The Locus leg: the load through ingest, followed to Kafka and the webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PipelineFigures {
    /// The HTTP side.
    pub http: LoadFigures,
    /// Distinct records of the run read from Kafka.
    pub on_kafka: u64,
    /// 202 -> record read from Kafka (consumer clock).
    pub e2e_kafka_ms: LatencyMs,
    /// Records of the run the webhook receiver got (`None`: no webhook leg).
    pub delivered: Option<u64>,
    /// 202 -> webhook (the receiver's histogram, reset at the start of the leg).
    pub e2e_webhook_ms: Option<LatencyMs>,
    /// Fixes per second from the first request to the last record on Kafka.
    pub kafka_fixes_per_sec: f64,
    /// Fixes per second from the first request to the last webhook delivery.
    pub webhook_fixes_per_sec: Option<f64>,
    /// Backlog (accepted, not yet on Kafka) sampled every second: (second, fixes).
    pub backlog: Vec<(f64, u64)>,
    /// CPU and peak RSS per process, over the load and the drain.
    pub processes: BTreeMap<String, ProcUsage>,
    /// Problems seen (missing records, errors).
    pub problems: Vec<String>,
    /// The registration of the run's devices before their sessions (`None` in reports
    /// written before devices had to be registered).
    #[serde(default)]
    pub registration: Option<Registration>,
}

/// Everything a `run` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// When it ran (UTC).
    pub date: String,
    /// The machine.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Load shape.
    pub mode: Mode,
    /// Fixes per batch.
    pub batch_size: u32,
    /// Devices (sessions).
    pub devices: u32,
    /// Tenants.
    pub tenants: Vec<String>,
    /// Gzip bodies.
    pub gzip: bool,
    /// Seconds per leg.
    pub duration_secs: u64,
    /// Same HTTP load against the no-op handler.
    pub noop_http: LoadFigures,
    /// Redis XADD of the same entries.
    pub redis_xadd: Ceiling,
    /// rdkafka produce of the same records.
    pub kafka_produce: Ceiling,
    /// Reading them back.
    pub kafka_consume: Ceiling,
    /// The Locus leg, if run.
    pub pipeline: Option<PipelineFigures>,
    /// Stage / ceiling ratios.
    pub fractions: BTreeMap<String, f64>,
}

/// Each stage's throughput over its ceiling's, and the end of the pipeline over the
/// slowest ceiling; empty without a Locus leg.
pub fn fractions(
    noop: &LoadFigures,
    redis: &Ceiling,
    produce: &Ceiling,
    consume: &Ceiling,
    pipeline: Option<&PipelineFigures>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(p) = pipeline else { return out };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    out.insert(
        "ingest_http_vs_noop_http".into(),
        ratio(p.http.fixes_per_sec, noop.fixes_per_sec),
    );
    out.insert(
        "ingest_vs_redis_xadd".into(),
        ratio(p.http.fixes_per_sec, redis.fixes_per_sec),
    );
    if p.kafka_fixes_per_sec > 0.0 {
        out.insert(
            "forwarder_vs_kafka_produce".into(),
            ratio(p.kafka_fixes_per_sec, produce.fixes_per_sec),
        );
    }
    if let Some(w) = p.webhook_fixes_per_sec {
        out.insert(
            "bridge_vs_kafka_consume".into(),
            ratio(w, consume.fixes_per_sec),
        );
    }
    let slowest = [
        noop.fixes_per_sec,
        redis.fixes_per_sec,
        produce.fixes_per_sec,
        consume.fixes_per_sec,
    ]
    .into_iter()
    .filter(|v| *v > 0.0)
    .fold(f64::INFINITY, f64::min);
    let end = p.webhook_fixes_per_sec.unwrap_or(p.kafka_fixes_per_sec);
    if slowest.is_finite() && end > 0.0 {
        out.insert("pipeline_vs_slowest_ceiling".into(), ratio(end, slowest));
    }
    if produce.fixes_per_sec > 0.0 && p.kafka_fixes_per_sec > 0.0 {
        out.insert(
            "pipeline_to_kafka_vs_kafka_produce".into(),
            ratio(p.kafka_fixes_per_sec, produce.fixes_per_sec),
        );
    }
    out
}

fn http_row(s: &mut String, name: &str, f: &LoadFigures) {
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {} | {} |",
        rate(f.fixes_per_sec),
        f.ok_requests,
        f.error_count(),
        f.http_ms.render_detailed()
    );
}

/// The Markdown of a run.
pub fn run_markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# locus-bench run, {}\n", r.date);
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), {:.1} GiB RAM, load average {:.2} at start.  ",
        r.machine.nproc, r.machine.cpu, r.machine.mem_gib, r.machine.load_avg_1m
    );
    let _ = writeln!(s, "Command: `{}`  ", r.command);
    let _ = writeln!(
        s,
        "Load: {:?}, batch {} fixes, {} devices over {} tenants, gzip {}, {} s per leg.\n",
        r.mode,
        r.batch_size,
        r.devices,
        r.tenants.len(),
        r.gzip,
        r.duration_secs
    );
    let _ = writeln!(
        s,
        "## HTTP\n\n| target | fixes/s | 202s | errors | latency |\n|---|---|---|---|---|"
    );
    http_row(&mut s, "no-op handler (ceiling)", &r.noop_http);
    if let Some(p) = &r.pipeline {
        http_row(&mut s, "ingest", &p.http);
    }
    let _ = writeln!(
        s,
        "\n## Ceilings\n\n| ceiling | fixes/s | fixes | s | note |\n|---|---|---|---|---|"
    );
    for (name, c) in [
        ("Redis XADD, same entries", &r.redis_xadd),
        ("rdkafka produce, same records", &r.kafka_produce),
        ("rdkafka consume", &r.kafka_consume),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.1} | {} |",
            rate(c.fixes_per_sec),
            c.fixes,
            c.secs,
            c.skipped.as_deref().unwrap_or("")
        );
    }
    if let Some(p) = &r.pipeline {
        let _ = writeln!(s, "\n## Pipeline\n");
        let _ = writeln!(
            s,
            "- accepted: {} fixes; on Kafka: {}; delivered to the webhook: {}",
            p.http.accepted_fixes,
            p.on_kafka,
            p.delivered
                .map_or("(no webhook leg)".into(), |d| d.to_string())
        );
        if let Some(reg) = &p.registration {
            let _ = writeln!(s, "- registered: {} (admin API)", reg.summary());
        }
        let _ = writeln!(
            s,
            "- to Kafka: {} fixes/s (first request to last record read)",
            rate(p.kafka_fixes_per_sec)
        );
        if let Some(w) = p.webhook_fixes_per_sec {
            let _ = writeln!(s, "- to the webhook: {} fixes/s", rate(w));
        }
        let _ = writeln!(s, "- 202 -> Kafka: {}", p.e2e_kafka_ms.render_detailed());
        if let Some(w) = &p.e2e_webhook_ms {
            let _ = writeln!(s, "- 202 -> webhook: {}", w.render_detailed());
        }
        let peak = p.backlog.iter().map(|b| b.1).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "- backlog (accepted, not on Kafka) sampled each second, peak {peak}: {:?}",
            p.backlog.iter().map(|b| b.1).collect::<Vec<_>>()
        );
        let _ = writeln!(
            s,
            "\n| process | pid | CPU s | CPU µs/fix | peak RSS MiB |\n|---|---|---|---|---|"
        );
        for (name, u) in &p.processes {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.2} | {:.2} | {:.1} |",
                u.pid, u.cpu_secs, u.cpu_us_per_fix, u.peak_rss_mib
            );
        }
        for prob in &p.problems {
            let _ = writeln!(s, "\n**Problem:** {prob}");
        }
    }
    if !r.fractions.is_empty() {
        let _ = writeln!(
            s,
            "\n## Fractions of the ceilings\n\n| stage | fraction |\n|---|---|"
        );
        for (k, v) in &r.fractions {
            let _ = writeln!(s, "| {k} | {:.0} % |", v * 100.0);
        }
    }
    s
}

/// Writes `run.json` and `run.md` under `dir`.
pub fn write_run(dir: &Path, r: &BenchReport) -> anyhow::Result<()> {
    super::write_json_and_markdown(dir, "run", r, &run_markdown(r))
}
