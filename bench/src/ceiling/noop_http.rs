//! The HTTP ceiling: a no-op axum handler that reads the body and answers 202, so the
//! same load as the Locus leg measures what HTTP alone costs on this machine.

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A no-op HTTP server on `127.0.0.1:0`: reads the whole body, answers 202. Stops when
/// `stop` is cancelled.
pub async fn start(stop: CancellationToken) -> anyhow::Result<String> {
    async fn noop(body: Bytes) -> (StatusCode, &'static str) {
        // The body is read in full (axum buffers it into `body`) and then dropped.
        std::hint::black_box(body.len());
        (StatusCode::ACCEPTED, r#"{"accepted":0}"#)
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the no-op server")?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .fallback(noop)
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "The no-op server failed.");
        }
    });
    Ok(format!("http://{addr}"))
}
