//! What ingest's `/readyz` checks, by role: PostgreSQL (`SELECT 1`), Redis (`PING`),
//! Kafka (a metadata request for the location topic), each within a second, and in a
//! process with the forwarder role, that no shard it owns has gone without progress for
//! `LOCUS_FORWARDER_STALL_SECS`. Liveness,
//! readiness and metrics are served by the shared router ([`locus_service::health`]).

use std::time::Duration;

use locus_service::health::{Need, Readiness, within};
use rdkafka::producer::Producer;

use crate::config::Role;
use crate::routes::AppState;

/// How long each dependency has to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The three dependencies, each checked on every request whatever the roles, and which of
/// them this process requires. The API role needs PostgreSQL and Redis, not Kafka: the
/// Redis buffer is there to ride out a Kafka outage, and taking ingest out of a balancer's
/// rotation then would waste it; Kafka's state is still reported (status `degraded`). A
/// process running only the forwarder role needs Redis and Kafka (PostgreSQL only takes
/// its fix counts). The forwarder's progress is required where the forwarder is all the
/// process does, and only reported beside the API, for the same reason as Kafka.
pub fn readiness(state: &AppState) -> Readiness {
    let (postgres_need, kafka_need) = if state.config.runs(Role::Api) {
        (Need::Required, Need::Optional)
    } else {
        (Need::Optional, Need::Required)
    };

    let pool = state.store.pool().clone();
    let buffer = state.buffer.clone();
    let producer = state.producer.clone();
    let topic = state.config.topic_names().locations().to_owned();
    let readiness = match state.forwarder.clone() {
        Some(health) => Readiness::new().check("forwarder", kafka_need, move || {
            let health = health.clone();
            async move { health.check() }
        }),
        None => Readiness::new(),
    };
    readiness
        .check("postgres", postgres_need, move || {
            let pool = pool.clone();
            async move { within(TIMEOUT, sqlx::query("SELECT 1").execute(&pool)).await }
        })
        .check("redis", Need::Required, move || {
            let buffer = buffer.clone();
            async move { within(TIMEOUT, buffer.ping()).await }
        })
        .check("kafka", kafka_need, move || {
            let producer = producer.clone();
            let topic = topic.clone();
            // fetch_metadata blocks its thread, so it runs off the async workers. It needs
            // only the broker to answer, not the topic to exist.
            async move {
                tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(Some(&topic), TIMEOUT)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
        })
}
