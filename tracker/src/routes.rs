//! The HTTP surface of the tracker: health, readiness and metrics, the shared router of
//! [`locus_service::health`]. There is no API: the tracker's work is the Kafka loop, and
//! what it keeps is read through ingest's routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use locus_service::health::{Need, Readiness, within};
use rdkafka::consumer::Consumer;
use sqlx::PgPool;

use crate::consumer::TrackerConsumer;

/// How long each readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The consumer, for the metadata request of the readiness probe.
    pub consumer: Arc<TrackerConsumer>,
    /// The location topic.
    pub topic: String,
    /// The pool the batches are written through.
    pub pool: PgPool,
}

/// `/healthz`, `/readyz` and `/metrics`. Ready takes both: PostgreSQL (`postgres`, every
/// batch is a transaction there) and the location topic (`kafka`). No layers: these
/// endpoints are probed every few seconds, and a request log for them would be noise.
pub fn router(state: AppState) -> Router {
    let pool = state.pool.clone();
    let readiness = Readiness::new()
        .check("postgres", Need::Required, move || {
            let pool = pool.clone();
            async move { within(PROBE_TIMEOUT, sqlx::query("SELECT 1").execute(&pool)).await }
        })
        .check("kafka", Need::Required, move || {
            let state = state.clone();
            async move {
                // fetch_metadata blocks; the consumer is thread-safe.
                tokio::task::spawn_blocking(move || topic_is_readable(&state))
                    .await
                    .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")))
            }
        });
    locus_service::health::router(readiness)
}

/// Asks the broker about the location topic.
fn topic_is_readable(state: &AppState) -> Result<(), String> {
    let topic = &state.topic;
    let metadata = state
        .consumer
        .fetch_metadata(Some(topic), PROBE_TIMEOUT)
        .map_err(|e| format!("Kafka metadata request for topic {topic} failed: {e}"))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        None => Err(format!("Kafka did not describe topic {topic}")),
        Some(t) => match t.error() {
            Some(error) => Err(format!("Kafka reports {error:?} for topic {topic}")),
            None if t.partitions().is_empty() => Err(format!("topic {topic} has no partitions")),
            None => Ok(()),
        },
    }
}
