//! GET /metrics: the Prometheus text exposition of every metric of the process.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

/// The metrics, in the Prometheus text format.
pub async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        locus_service::metrics_handle().render(),
    )
}
