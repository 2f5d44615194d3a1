//! `sweep.png`: a sweep's throughput and latency percentiles against the offered load,
//! drawn with plotters.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{LatencyMs, SweepReport};

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

/// The chart builder of one panel: margins, and with a font its label areas and caption
/// (without one, labels would be boxes).
fn panel<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    labels: bool,
    caption: &str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut c = ChartBuilder::on(area);
    c.margin(15)
        .x_label_area_size(if labels { 40 } else { 5 })
        .y_label_area_size(if labels { 80 } else { 5 });
    if labels {
        c.caption(caption, ("sans-serif", 20));
    }
    c
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
    let mut tp = panel(
        &top,
        labels,
        &format!("{}: achieved vs offered fixes/s", r.target),
    )
    .build_cartesian_2d(0.0..max_x, 0.0..max_tp)?;
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
    let mut lc = panel(&bottom, labels, "HTTP latency (ms, log) vs offered fixes/s")
        .build_cartesian_2d(0.0..max_x, (min_ms..max_ms).log_scale())?;
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
