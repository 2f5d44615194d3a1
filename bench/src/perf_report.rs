//! Report files of `run` and `sweep`: JSON for scripts, Markdown for people, a PNG chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use crate::perf::{BenchReport, LoadFigures, SweepReport};
use crate::report::{LatencyMs, thousands};

fn lat(l: &LatencyMs) -> String {
    if l.count == 0 {
        return "no samples".into();
    }
    format!(
        "p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.1} ms",
        l.p50, l.p99, l.p999, l.max
    )
}

fn rate(v: f64) -> String {
    thousands(v.round() as u64)
}

fn http_row(s: &mut String, name: &str, f: &LoadFigures) {
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {} | {} |",
        rate(f.fixes_per_sec),
        f.ok_requests,
        f.error_count(),
        lat(&f.http_ms)
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
        let _ = writeln!(
            s,
            "- to Kafka: {} fixes/s (first request to last record read)",
            rate(p.kafka_fixes_per_sec)
        );
        if let Some(w) = p.webhook_fixes_per_sec {
            let _ = writeln!(s, "- to the webhook: {} fixes/s", rate(w));
        }
        let _ = writeln!(s, "- 202 -> Kafka: {}", lat(&p.e2e_kafka_ms));
        if let Some(w) = &p.e2e_webhook_ms {
            let _ = writeln!(s, "- 202 -> webhook: {}", lat(w));
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
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("run.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("run.md"), run_markdown(r))?;
    Ok(())
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
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("sweep.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("sweep.md"), sweep_markdown(r))?;
    if let Err(e) = chart(&dir.join("sweep.png"), r) {
        tracing::warn!(error = %e, "Could not draw the sweep chart.");
    }
    Ok(())
}

/// Text needs a TrueType font; the `ab_glyph` backend takes one registered at run time,
/// so no fontconfig or freetype is needed. DejaVu Sans is on most Debian machines; without
/// it the chart is drawn without labels.
fn register_font() -> bool {
    const CANDIDATES: &[&str] = &[
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    ];
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        CANDIDATES.iter().any(|p| {
            std::fs::read(p).ok().is_some_and(|bytes| {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok()
            })
        })
    })
}

/// Picks one percentile of a latency summary.
type Pick = fn(&LatencyMs) -> f64;

/// Two panels against offered load: achieved throughput (top) and latency percentiles
/// (bottom, log scale).
pub fn chart(path: &Path, r: &SweepReport) -> anyhow::Result<()> {
    let labels = register_font();
    let root = BitMapBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    let max_x = r.steps.iter().map(|s| s.offered).fold(1.0, f64::max) * 1.05;
    let max_tp = r
        .steps
        .iter()
        .map(|s| s.figures.fixes_per_sec.max(s.offered))
        .fold(1.0, f64::max)
        * 1.05;
    let mut c = ChartBuilder::on(&top);
    c.margin(15)
        .x_label_area_size(if labels { 40 } else { 5 })
        .y_label_area_size(if labels { 80 } else { 5 });
    if labels {
        c.caption(
            format!("{}: achieved vs offered fixes/s", r.target),
            ("sans-serif", 20),
        );
    }
    let mut tp = c.build_cartesian_2d(0.0..max_x, 0.0..max_tp)?;
    if labels {
        tp.configure_mesh()
            .x_desc("offered fixes/s")
            .y_desc("achieved fixes/s")
            .draw()?;
    }
    tp.draw_series(LineSeries::new(
        [(0.0, 0.0), (max_x, max_x)],
        BLACK.mix(0.3),
    ))?;
    let s = tp.draw_series(LineSeries::new(
        r.steps.iter().map(|s| (s.offered, s.figures.fixes_per_sec)),
        BLUE.stroke_width(2),
    ))?;
    if labels {
        s.label("achieved")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        tp.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }

    let max_ms = r
        .steps
        .iter()
        .map(|s| s.figures.http_ms.p999)
        .fold(1.0, f64::max)
        * 1.5;
    let min_ms = r
        .steps
        .iter()
        .map(|s| s.figures.http_ms.p50)
        .fold(f64::INFINITY, f64::min)
        .max(0.01)
        / 1.5;
    let mut c = ChartBuilder::on(&bottom);
    c.margin(15)
        .x_label_area_size(if labels { 40 } else { 5 })
        .y_label_area_size(if labels { 80 } else { 5 });
    if labels {
        c.caption(
            "HTTP latency (ms, log) vs offered fixes/s",
            ("sans-serif", 20),
        );
    }
    let mut lc = c.build_cartesian_2d(0.0..max_x, (min_ms..max_ms).log_scale())?;
    if labels {
        lc.configure_mesh()
            .x_desc("offered fixes/s")
            .y_desc("ms")
            .draw()?;
    }
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", GREEN, |l| l.p50),
        ("p99", RED, |l| l.p99),
        ("p99.9", MAGENTA, |l| l.p999),
    ];
    for (name, color, pick) in series {
        let s = lc.draw_series(LineSeries::new(
            r.steps
                .iter()
                .map(|s| (s.offered, pick(&s.figures.http_ms).max(min_ms))),
            color.stroke_width(2),
        ))?;
        if labels {
            s.label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
    }
    if labels {
        lc.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;
    }
    if let Some(k) = r.knee {
        let x = r.steps[k].offered;
        lc.draw_series(LineSeries::new([(x, min_ms), (x, max_ms)], BLACK.mix(0.5)))?;
    }
    root.present()?;
    Ok(())
}
