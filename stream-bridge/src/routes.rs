//! The HTTP surface of the bridge: health, readiness and metrics, the shared router of
//! [`locus_service::health`]. There is no API: the bridge's work is the Kafka loop.

mod health;

use std::sync::Arc;

use axum::Router;

use crate::consumer::BridgeConsumer;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The consumer, for the readiness probe's metadata request.
    pub consumer: Arc<BridgeConsumer>,
    /// The location topic.
    pub topic: String,
}

/// Every route of the bridge: `/healthz`, `/readyz` (Kafka answers for the location topic)
/// and `/metrics`. No layers: these endpoints are scraped and probed every few seconds, and
/// a request log for them would be noise.
pub fn router(state: AppState) -> Router {
    locus_service::health::router(health::readiness(state))
}
