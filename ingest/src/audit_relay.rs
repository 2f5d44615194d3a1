//! The audit relay: publishes the audit log's unpublished rows to the tenant-events topic,
//! at least once and in order per tenant.
//!
//! An admin change writes its audit row in its own transaction (`locus_session::audit`);
//! this task, one per API process, claims rows with `published_at` NULL, oldest first,
//! produces each to `<prefix>tenant-events` (key: the tenant id, or `platform` for changes
//! that belong to no tenant; value: the row as [`AuditRecord`] JSON), and sets
//! `published_at` only for the rows Kafka acknowledged. Claims lock their rows
//! (`FOR UPDATE SKIP LOCKED`), so replicas share the work without publishing a row twice at
//! once; a crash between the ack and the mark publishes the row again, which is why
//! consumers dedupe on `event_id` (also sent as the `locus-event-id` header).
//!
//! Order: a claim's records are queued in id order and only the acknowledged prefix is
//! marked: a row after a failed one is published again with the failed one, so a tenant's
//! changes reach the topic in the order they were made (the idempotent producer keeps the
//! order of what it was given within a partition, and a tenant's key is one partition).

use std::time::Duration;

use locus_session::SessionStore;
use locus_session::audit::AuditRecord;
use locus_wire::headers::{CONTENT_TYPE, CONTENT_TYPE_JSON, TENANT};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Header carrying the audit row's `event_id`: what consumers dedupe on.
pub const EVENT_ID: &str = "locus-event-id";
/// Key of the records of changes that belong to no tenant (partners).
pub const PLATFORM_KEY: &str = "platform";
/// Rows one claim takes.
const CLAIM: i64 = 100;
/// Longest wait for Kafka's acknowledgement of one claim's records. The producer never
/// times a record out itself (`message.timeout.ms` 0), so without this a broker outage
/// would hold the claim's rows locked forever. A record acknowledged after this is simply
/// published again with the next claim.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause while the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(20);
/// First pause after a failed attempt; it doubles up to the scan interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Why a claim could not be published now (its rows stay unpublished).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Kafka refused a record or did not acknowledge it.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Kafka did not acknowledge within [`ACK_TIMEOUT`].
    #[error("Kafka did not acknowledge within {}s", ACK_TIMEOUT.as_secs())]
    Timeout,
    /// PostgreSQL failed to hand out or mark the rows.
    #[error("audit log: {0}")]
    Database(#[from] locus_session::SessionError),
}

/// The task that publishes the audit log.
pub struct AuditRelay {
    store: SessionStore,
    producer: FutureProducer,
    topic: String,
    every: Duration,
}

/// The key of `record` on the topic: its tenant, or [`PLATFORM_KEY`].
pub fn key_of(record: &AuditRecord) -> &str {
    record.tenant_id.as_deref().unwrap_or(PLATFORM_KEY)
}

impl AuditRelay {
    /// A relay from `store`'s audit log to `topic` (`Topics::tenant_events`), scanning
    /// every `every`.
    pub fn new(
        store: SessionStore,
        producer: FutureProducer,
        topic: impl Into<String>,
        every: Duration,
    ) -> Self {
        Self {
            store,
            producer,
            topic: topic.into(),
            every: every.max(Duration::from_millis(10)),
        }
    }

    /// Publishes until `shutdown`. Rows left unpublished then wait for the next process
    /// (or another replica): nothing is lost, so there is no drain on the way out.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let pause = match self.drain().await {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    self.every
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Could not publish audit events; retrying.");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.every);
                    pause
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes claim after claim until nothing is left for this relay.
    pub async fn drain(&self) -> Result<(), RelayError> {
        while self.publish_once().await? > 0 {}
        Ok(())
    }

    /// Claims and publishes one batch; returns how many rows were marked published (0:
    /// nothing waits that another relay does not hold).
    pub async fn publish_once(&self) -> Result<usize, RelayError> {
        let claim = self.store.claim_audit(CLAIM).await?;
        if claim.records().is_empty() {
            claim.finish(&[]).await?;
            return Ok(0);
        }
        // Queue every record first, in order, then wait for the acks: one round trip for
        // the claim rather than one per row.
        let mut deliveries = Vec::with_capacity(claim.records().len());
        let mut failure = None;
        for record in claim.records() {
            match self.send(record).await {
                Ok(delivery) => deliveries.push((record.id, delivery)),
                Err(e) => {
                    failure = Some(RelayError::Kafka(e));
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(deliveries.len());
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        for (id, delivery) in deliveries {
            match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(_))) => acked.push(id),
                Ok(Ok(Err((e, _)))) => {
                    failure.get_or_insert(RelayError::Kafka(e));
                    break;
                }
                // The producer was dropped: only at shutdown.
                Ok(Err(_)) => {
                    failure.get_or_insert(RelayError::Kafka(KafkaError::Canceled));
                    break;
                }
                Err(_) => {
                    failure.get_or_insert(RelayError::Timeout);
                    break;
                }
            }
        }
        // Only the acknowledged prefix is marked: see "Order" at the top. If the mark
        // fails, the rows are published again (consumers dedupe on the event id).
        let published = acked.len();
        claim.finish(&acked).await?;
        if published > 0 {
            tracing::debug!(published, "Published audit events.");
        }
        failure.map_or(Ok(published), Err)
    }

    /// Queues `record`, waiting while the producer's local queue is full.
    async fn send(&self, record: &AuditRecord) -> Result<DeliveryFuture, KafkaError> {
        let payload = serde_json::to_vec(record).expect("an audit record serializes");
        let key = key_of(record);
        let event_id = record.event_id.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: TENANT,
                value: Some(key),
            })
            .insert(Header {
                key: EVENT_ID,
                value: Some(&event_id),
            })
            .insert(Header {
                key: CONTENT_TYPE,
                value: Some(CONTENT_TYPE_JSON),
            });
        let mut queued = FutureRecord::to(&self.topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        loop {
            match self.producer.send_result(queued) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    queued = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: Option<&str>) -> AuditRecord {
        AuditRecord {
            id: 1,
            event_id: uuid::Uuid::nil(),
            tenant_id: tenant.map(str::to_owned),
            actor: "a".into(),
            actor_role: "tenant_admin".into(),
            action: "sink.set".into(),
            target_kind: "sink".into(),
            target_id: "s".into(),
            before: None,
            after: None,
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_tenants_change_is_keyed_by_its_tenant_and_a_platform_change_by_platform() {
        assert_eq!(key_of(&record(Some("acme"))), "acme");
        assert_eq!(key_of(&record(None)), "platform");
    }
}
