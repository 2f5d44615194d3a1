//! What every Locus service process shares: logging, Prometheus metrics, shutdown signals,
//! and the settings that more than one service reads ([`settings`]).

pub mod settings;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber: JSON lines when `LOCUS_LOG_FORMAT=json`,
/// human-readable otherwise; level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Ignoring the error keeps a second call (tests start several apps) harmless.
    if std::env::var("LOCUS_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Latency buckets in seconds, from 100 µs to 30 s: wide enough for an HTTP handler and
/// for a webhook that retries.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder, installed on first use. Every metric whose name
/// ends in `_seconds` is a histogram with [`LATENCY_BUCKETS`].
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples wait in a buffer until drained. build_recorder() starts no
            // upkeep task, so without this thread an unscraped process grows by every
            // sample it records (a 10-minute soak showed the bridge at +25 MiB a minute).
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            // Another recorder may already be installed (a test binary embedding two
            // services); metrics then go to that one, which is fine for tests.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// A token cancelled on SIGTERM or Ctrl-C: the root of every service's shutdown.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("Ctrl-C received, shutting down."),
            _ = term => tracing::info!("SIGTERM received, shutting down."),
        }
        trigger.cancel();
    });
    token
}
