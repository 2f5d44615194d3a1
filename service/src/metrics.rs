//! The process's Prometheus registry, and constructors that create a metric and register it
//! there in one step. Metrics are recorded with the `prometheus` crate: a counter or gauge is
//! an atomic, and a histogram counts each observation into its bucket at once, so nothing
//! is buffered between scrapes and no thread has to drain anything.
//!
//! Each service names its metrics in its own `events.rs`, holding the handles in one
//! `static` created on first use; the constructors here panic when a name is registered
//! twice, which can only be a programming error (two definitions of one metric).

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds, from 100 µs to 30 s: wide enough for an HTTP handler and
/// for a webhook that retries. Every histogram of the project measures seconds (its name
/// ends in `_seconds`) and uses these buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The content type of [`render`]'s output (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The registry of every metric of this process, created on first use.
///
/// One per process rather than one per service instance: a test binary that embeds several
/// services (or two of the same) shares it, as it would share any process-wide recorder.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);
    &REGISTRY
}

/// Every registered metric in the Prometheus text format, sorted by name. A labelled metric
/// appears once it has a first label value; an unlabelled one from its registration, at 0.
pub fn render() -> String {
    // Encoding fails only for a family without samples, which gather() leaves out.
    TextEncoder::new()
        .encode_to_string(&registry().gather())
        .unwrap_or_else(|error| {
            tracing::error!(error = %error, "Could not encode the metrics.");
            String::new()
        })
}

/// An unlabelled counter `name`, registered; it reads 0 until first incremented.
pub fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help))
}

/// A counter `name` with the label names `labels`, registered.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels))
}

/// A gauge `name` with the label names `labels`, registered. Integer-valued: every gauge of
/// the project counts something (entries, records).
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels))
}

/// An unlabelled latency histogram `name` with [`LATENCY_BUCKETS`], registered.
pub fn latency_histogram(name: &str, help: &str) -> Histogram {
    register(Histogram::with_opts(latency_opts(name, help)))
}

/// A latency histogram `name` with [`LATENCY_BUCKETS`] and the label names `labels`,
/// registered.
pub fn latency_histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register(HistogramVec::new(latency_opts(name, help), labels))
}

fn latency_opts(name: &str, help: &str) -> HistogramOpts {
    assert!(
        name.ends_with("_seconds"),
        "latency histogram {name} must be named *_seconds"
    );
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
}

/// Registers a freshly created metric and hands it back.
fn register<M>(created: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = created.expect("a valid metric name, help text and label names");
    registry()
        .register(Box::new(metric.clone()))
        .expect("every metric is registered once (names are defined once, in events.rs)");
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_with_the_latency_buckets() {
        let histogram = latency_histogram("locus_test_render_seconds", "A test histogram.");
        histogram.observe(0.003);
        let text = render();
        assert!(text.contains("# HELP locus_test_render_seconds A test histogram.\n"));
        assert!(text.contains("# TYPE locus_test_render_seconds histogram\n"));
        assert!(text.contains("locus_test_render_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("locus_test_render_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("locus_test_render_seconds_bucket{le=\"30\"} 1\n"));
        assert!(text.contains("locus_test_render_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("locus_test_render_seconds_count 1\n"));
    }

    #[test]
    fn a_counter_named_total_keeps_its_name_and_starts_at_zero() {
        let _counter = counter("locus_test_things_total", "Things.");
        let text = render();
        assert!(text.contains("# TYPE locus_test_things_total counter\n"));
        assert!(text.contains("\nlocus_test_things_total 0\n"));
    }

    #[test]
    fn a_labelled_metric_appears_with_its_first_label_value() {
        let gauge = gauge_vec("locus_test_depth", "Depth.", &["shard"]);
        assert!(!render().contains("locus_test_depth"));
        gauge.with_label_values(&["3"]).set(7);
        assert!(render().contains("locus_test_depth{shard=\"3\"} 7\n"));
    }
}
