//! The dead-letter topic: records that cannot be delivered (a value that is not a record, a
//! tenant without a sink) are written there with their original key, value and headers,
//! plus headers saying why, so an operator can inspect and replay them. A failing webhook
//! never sends records here: it pauses its tenant's lane instead. A record's offset is stored only after the broker confirmed its dead-letter copy.

use std::time::Duration;

use futures::future::join_all;
use locus_service::settings::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use locus_wire::headers::{self, DeadLetterReason};

use crate::events::{DeadLetterProduceFailed, RecordsDeadLettered};
use crate::webhook::retry::RetryPolicy;

/// Writes records to the dead-letter topic, retrying until the broker confirms.
#[derive(Clone)]
pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
    backoff: RetryPolicy,
}

impl DeadLetterWriter {
    /// The producer settings: every in-sync replica must have the copy before the original
    /// offset may be stored, and the copies stay in their original order, which a replay
    /// follows: idempotence keeps librdkafka's own retries in order, and without a message
    /// timeout a copy is never timed out and sent again behind its successors.
    pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
        let mut c = kafka.client_config();
        c.set("client.id", "locus-stream-bridge-dlq")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "0");
        c
    }

    /// A writer to `topic`, waiting per `backoff` between attempts (a dead-letter write is
    /// retried until it succeeds or shutdown gives up).
    pub fn new(producer: FutureProducer, topic: String, backoff: RetryPolicy) -> Self {
        Self {
            producer,
            topic,
            backoff,
        }
    }

    /// Writes every message, each with the reason headers. Returns `false` if `abort` was
    /// cancelled before the broker confirmed all of them (then none may be counted as
    /// handled: the caller cannot tell which were written, and writing one twice is fine).
    pub async fn write(
        &self,
        messages: &[&OwnedMessage],
        reason: DeadLetterReason,
        sink: &str,
        detail: &str,
        abort: &CancellationToken,
    ) -> bool {
        if messages.is_empty() {
            return true;
        }
        // Sent together so librdkafka batches them; each retries on its own.
        let written = join_all(
            messages
                .iter()
                .map(|m| self.write_one(m, reason, sink, detail, abort)),
        )
        .await;
        let all = written.iter().all(|ok| *ok);
        if all {
            RecordsDeadLettered {
                reason,
                detail,
                count: messages.len(),
            }
            .emit();
        }
        all
    }

    async fn write_one(
        &self,
        message: &OwnedMessage,
        reason: DeadLetterReason,
        sink: &str,
        detail: &str,
        abort: &CancellationToken,
    ) -> bool {
        let origin = format!(
            "{}/{}/{}",
            message.topic(),
            message.partition(),
            message.offset()
        );
        let headers = dead_letter_headers(message.headers(), reason, sink, detail, &origin);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            let sent = tokio::select! {
                _ = abort.cancelled() => return false,
                sent = self.producer.send(record, Duration::from_secs(5)) => sent,
            };
            match sent {
                Ok(_) => return true,
                Err((error, _)) => {
                    DeadLetterProduceFailed { error: &error }.emit();
                    let delay = self.backoff.backoff(attempt);
                    tokio::select! {
                        _ = abort.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// The original headers, then the dead-letter ones (an original header of the same name
/// is dropped, so a record dead-lettered twice does not carry two reasons).
fn dead_letter_headers(
    original: Option<&OwnedHeaders>,
    reason: DeadLetterReason,
    sink: &str,
    detail: &str,
    origin: &str,
) -> OwnedHeaders {
    let ours = headers::dead_letter_headers(reason, sink, detail, origin);
    let mut headers = OwnedHeaders::new();
    if let Some(original) = original {
        for h in original.iter() {
            if ours.iter().any(|(k, _)| *k == h.key) {
                continue;
            }
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    for (key, value) in ours {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_headers_keep_the_original_ones_and_replace_old_reasons() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "locus-tenant-id",
                value: Some("acme"),
            })
            .insert(Header {
                key: headers::DLQ_REASON,
                value: Some("malformed"),
            });
        let headers = dead_letter_headers(
            Some(&original),
            DeadLetterReason::Rejected,
            "webhook",
            "webhook answered 400 Bad Request",
            "locus.locations/0/42",
        );
        let pairs: Vec<(String, String)> = headers
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("locus-tenant-id", "acme"),
                ("locus-dlq-reason", "rejected"),
                ("locus-dlq-sink", "webhook"),
                ("locus-dlq-detail", "webhook answered 400 Bad Request"),
                ("locus-dlq-origin", "locus.locations/0/42"),
            ]
        );
    }
}
