//! The HTTP surface of the bridge: health, readiness and metrics. There is no API: the
//! bridge's work is the Kafka loop.

mod health;
mod metrics;
mod ready;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::consumer::BridgeConsumer;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The consumer, for the readiness probe's metadata request.
    pub consumer: Arc<BridgeConsumer>,
    /// The location topic.
    pub topic: String,
}

/// Every route of the bridge. No layers: these endpoints are scraped and probed every few
/// seconds, and a request log for them would be noise.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(ready::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(state)
}
