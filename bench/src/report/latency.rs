//! Latency distributions: the histogram every part of the bench records into, and its
//! summary in milliseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Upper bound of the latency histograms, in microseconds (one hour): anything slower is a
/// hang, and saturating there keeps the histogram small.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// An empty latency histogram in microseconds with 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static bounds are valid")
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Number of samples.
    #[serde(default)]
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    #[serde(default)]
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl LatencyMs {
    /// Summarises a histogram of microseconds; all zeros when it is empty.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// `p50 1.2 ms   p99 4.8 ms   max 9.1 ms`, or `no samples` (the demo's text block).
    pub fn render(&self) -> String {
        if self.count == 0 {
            return "no samples".to_owned();
        }
        format!(
            "p50 {} ms   p99 {} ms   max {} ms",
            format_ms(self.p50),
            format_ms(self.p99),
            format_ms(self.max)
        )
    }

    /// `p50 1.23 / p99 4.80 / p99.9 5.00 / max 9.1 ms`, or `no samples` (the Markdown
    /// reports, which show the tail).
    pub fn render_detailed(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.1} ms",
            self.p50, self.p99, self.p999, self.max
        )
    }
}

/// Milliseconds with one decimal, or none from 100 ms up where it is noise.
fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_out_in_milliseconds() {
        let mut h = latency_histogram();
        for us in 1..=1000 {
            h.record(us * 10).expect("in range");
        }
        let l = LatencyMs::from_micros(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50 - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.max - 10.0).abs() < 0.01, "{l:?}");
        assert_eq!(
            LatencyMs::from_micros(&latency_histogram()).render(),
            "no samples"
        );
    }
}
