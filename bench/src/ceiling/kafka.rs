//! The Kafka ceilings: the same records, key and headers as the forwarder's, produced with
//! its settings to a scratch topic, then read back, counted as they arrive (a consumer's
//! throughput is records read and handed to the application, which watermarks do not
//! show).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use locus_service::settings::KafkaSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;

use super::Ceiling;
use crate::kafka;

/// One record to produce, prepared before the clock starts.
#[derive(Debug, Clone)]
pub struct ScratchRecord {
    /// Kafka key: the session id.
    pub key: String,
    /// The headers of a location record (`locus_wire::headers::record_headers`).
    pub headers: [(&'static str, String); 5],
    /// JSON `LocationRecord`.
    pub value: Bytes,
}

/// Produces `records` to `topic` as fast as the producer takes them; the time runs until
/// the last delivery report.
pub async fn produce(
    settings: &KafkaSettings,
    topic: &str,
    records: &[ScratchRecord],
) -> anyhow::Result<Ceiling> {
    let producer = kafka::producer(settings).context("cannot create the producer")?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let mut record = FutureRecord::to(topic)
            .key(r.key.as_str())
            .payload(r.value.as_ref())
            .headers(locus_service::kafka::headers(&r.headers));
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e).context("produce failed"),
            }
        }
    }
    let mut delivered = 0u64;
    for d in deliveries {
        if matches!(d.await, Ok(Ok(_))) {
            delivered += 1;
        }
    }
    Ok(Ceiling::new(delivered, started.elapsed()))
}

/// Reads `topic` from the start with a fresh group until `expected` records were read or
/// `timeout` passed. Time runs from the first record read (the group join is not the
/// consumer's throughput) to the last.
pub async fn consume(
    settings: &KafkaSettings,
    topic: &str,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<Ceiling> {
    let group = format!("locus-bench-ceiling-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer = kafka::reader_config(settings, &group)
        .create()
        .context("cannot create the consumer")?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut read = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while read < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(_)) => {
                read += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => break,
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| last - f);
    Ok(Ceiling::new(read, elapsed))
}
