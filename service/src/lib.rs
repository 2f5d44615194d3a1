//! What every Locus service process shares: logging, the Prometheus registry ([`metrics`]),
//! the health, readiness and metrics endpoints ([`health`]), shutdown signals, rdkafka headers from the wire crate's pairs
//! ([`kafka`]), the special-address check of outgoing connections ([`net`]), and the settings that more than one service reads ([`settings`]).

pub mod health;
pub mod kafka;
pub mod metrics;
pub mod net;
pub mod settings;

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
