//! What the bridge's `/readyz` checks: Kafka answers a metadata request for the location
//! topic, and the topic exists with partitions. Liveness and metrics are the shared ones
//! ([`locus_service::health`]).

use std::time::Duration;

use locus_service::health::{Need, Readiness};
use rdkafka::consumer::Consumer;

use super::AppState;

/// How long the metadata request may take before the bridge counts as not ready.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// One required check, `kafka`: without the location topic the bridge has nothing to do.
/// Every cause names the topic.
pub fn readiness(state: AppState) -> Readiness {
    Readiness::new().check("kafka", Need::Required, move || {
        let state = state.clone();
        async move {
            // fetch_metadata blocks; the consumer is thread-safe, so ask from a blocking
            // thread.
            tokio::task::spawn_blocking(move || topic_is_readable(&state))
                .await
                .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")))
        }
    })
}

/// Asks the broker about the location topic, within [`METADATA_TIMEOUT`].
fn topic_is_readable(state: &AppState) -> Result<(), String> {
    let topic = &state.topic;
    let metadata = state
        .consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
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
