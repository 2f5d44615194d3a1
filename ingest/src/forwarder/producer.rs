//! Kafka production of buffer entries: one record per fix on the location topic, one per
//! session event on the session-event topic, and undecodable entries on the dead-letter
//! topic, each keyed by session (or entry id) and with the headers `locus_wire::headers`
//! names. Sending returns the delivery futures; the caller decides when an entry counts as
//! forwarded.

use std::time::Duration;

use locus_wire::buffer::BufferEntry;
use locus_wire::headers::{self, DeadLetterReason, RecordType};
use locus_wire::record::LocationRecord;
use locus_wire::topics::Topics;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::ForwardError;

/// How long to wait for room when the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);

/// The forwarder's view of the Kafka producer.
#[derive(Clone)]
pub struct RecordProducer {
    producer: FutureProducer,
    topics: Topics,
}

impl RecordProducer {
    /// Production through `producer` to `topics`.
    pub fn new(producer: FutureProducer, topics: Topics) -> Self {
        Self { producer, topics }
    }

    /// Queues the records of `entry`.
    pub async fn produce(&self, entry: &BufferEntry) -> Result<Vec<DeliveryFuture>, ForwardError> {
        match entry {
            BufferEntry::Fixes(batch) => {
                let key = batch.session_id.to_string();
                let headers = locus_service::kafka::headers(&headers::record_headers(
                    RecordType::Location,
                    &batch.tenant_id,
                    batch.session_id,
                ));
                let mut futures = Vec::with_capacity(batch.fixes.len());
                for fix in &batch.fixes {
                    let payload = serde_json::to_vec(&LocationRecord::from_fix(batch, fix))
                        .map_err(ForwardError::Encoding)?;
                    let topic = self.topics.locations();
                    futures.push(self.send(topic, &key, &payload, headers.clone()).await?);
                }
                Ok(futures)
            }
            BufferEntry::SessionEvent(event) => {
                let key = event.session_id.to_string();
                let headers = locus_service::kafka::headers(&headers::record_headers(
                    RecordType::SessionEvent,
                    &event.tenant_id,
                    event.session_id,
                ));
                let payload = serde_json::to_vec(event).map_err(ForwardError::Encoding)?;
                let topic = self.topics.session_events();
                Ok(vec![self.send(topic, &key, &payload, headers).await?])
            }
        }
    }

    /// Queues an entry that did not decode to the dead-letter topic, as it was stored,
    /// keyed by its entry id.
    pub async fn dead_letter(
        &self,
        stream: &str,
        id: &str,
        raw: &[u8],
        error: &str,
    ) -> Result<DeliveryFuture, ForwardError> {
        let origin = format!("{stream}/{id}");
        let pairs =
            headers::dead_letter_headers(DeadLetterReason::Malformed, "none", error, &origin);
        let headers = locus_service::kafka::headers(&pairs);
        self.send(self.topics.dead_letter(), id, raw, headers).await
    }

    /// The idempotent producer's fatal error, if it had one: it then refuses every record
    /// (its guarantees of no duplicates and no reordering could not be kept otherwise).
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// Waits up to `timeout` for queued records to leave. Every record was awaited before
    /// its entry was acknowledged, so at shutdown this is a formality that still bounds the
    /// wait if a send raced with it.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        // flush() blocks its thread; an error only means records were still queued after
        // the timeout, and their entries are still pending in Redis for the next start.
        let _ = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
    }

    /// Queues one record, waiting while the producer's local queue is full.
    async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<DeliveryFuture, ForwardError> {
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => return Err(ForwardError::Kafka(e)),
            }
        }
    }
}
