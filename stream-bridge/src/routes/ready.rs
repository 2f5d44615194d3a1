//! GET /readyz: the bridge can reach Kafka and its topic exists.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdkafka::consumer::Consumer;
use serde_json::json;

use super::AppState;

/// How long the metadata request may take before the bridge counts as not ready.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 when a metadata request for the location topic succeeds within two seconds; 503
/// with `{"error": "not_ready", "message": ...}` otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let topic = state.topic.clone();
    // fetch_metadata blocks; the consumer is thread-safe, so ask from a blocking thread.
    let checked = tokio::task::spawn_blocking(move || {
        let metadata = state
            .consumer
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
            .map_err(|e| format!("Kafka metadata request failed: {e}"))?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        match found {
            None => Err(format!("Kafka did not describe topic {topic}")),
            Some(t) => match t.error() {
                Some(error) => Err(format!("Kafka reports {error:?} for topic {topic}")),
                None if t.partitions().is_empty() => {
                    Err(format!("topic {topic} has no partitions"))
                }
                None => Ok(()),
            },
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("readiness check failed: {e}")));

    match checked {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response(),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "not_ready", "message": message })),
        )
            .into_response(),
    }
}
