//! GET /healthz (the process is alive), GET /readyz (its dependencies answer), GET /metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use rdkafka::producer::Producer;
use serde_json::json;

use crate::config::Role;
use crate::startup::AppState;

/// Always 200 while the process serves requests.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// 200 when what this process needs to do its job answers within a second, 503 naming
/// what does not. The API role needs PostgreSQL and Redis, not Kafka: the Redis buffer is
/// there to ride out a Kafka outage, and taking ingest out of a balancer's rotation then
/// would waste it. Kafka's state is still reported (status `degraded`). A process running
/// only the forwarder role needs Redis and Kafka.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let timeout = Duration::from_secs(1);
    let pg = async {
        match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(state.store.pool()))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let redis = async {
        match tokio::time::timeout(timeout, state.buffer.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    };
    let producer = state.producer.clone();
    let topic = state.config.locations_topic();
    let kafka = async move {
        // fetch_metadata blocks its thread, so it runs off the async workers.
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    };
    let (pg, redis, kafka) = tokio::join!(pg, redis, kafka);
    let api = state.config.runs(Role::Api);
    let checks = [
        ("postgres", pg, api),
        ("redis", redis, true),
        ("kafka", kafka, !api),
    ];
    let ready = checks.iter().all(|(_, r, required)| r.is_ok() || !required);
    let degraded = checks.iter().any(|(_, r, _)| r.is_err());
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, r, _)| {
            let v = match r {
                Ok(()) => json!("ok"),
                Err(e) => json!(format!("unreachable: {e}")),
            };
            (name.to_owned(), v)
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({
            "status": match (ready, degraded) {
                (false, _) => "not_ready",
                (true, true) => "degraded",
                (true, false) => "ready",
            },
            "checks": detail,
        })),
    )
}

/// Prometheus text exposition of every metric of the process.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        locus_service::metrics_handle().render(),
    )
}
