//! `locus-stream-bridge replay-dead-letters`: puts dead letters back on the location topic,
//! in their dead-letter order, for the bridge to deliver (for example `no_sink` records
//! once their tenant's sink exists).
//!
//! One pass: the command reads the dead-letter topic from its own consumer group's
//! committed offsets up to the end the broker reports at the start, republishes the records
//! that match the filter with their original key and headers (the `locus-dlq-*` ones
//! dropped), waits until the broker confirmed every copy, and only then commits. So a second
//! run does not replay them again, and a run that fails halfway replays its records again
//! next time (copies, which `record_id` lets a partner drop). The group is named after the
//! filter, so replaying one tenant does not pass over another tenant's dead letters.
//!
//! A record is republished behind whatever its session wrote since: replay a session whose
//! records all went to the dead letters (a tenant without a sink), or expect the partner to
//! reorder by `batch_index`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use locus_service::settings::KafkaSettings;
use locus_wire::headers::{DLQ_DETAIL, DLQ_ORIGIN, DLQ_REASON, DLQ_SINK, TENANT};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::error::BridgeError;

/// How long the command waits for the broker's answers and for the read to reach the end.
const PATIENCE: Duration = Duration::from_secs(60);

/// Records sent to the broker before their confirmations are awaited.
const CHUNK: usize = 1_000;

/// Which dead letters to replay; `None` matches every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayFilter {
    /// The `locus-dlq-reason` header, e.g. `no_sink`.
    pub reason: Option<String>,
    /// The `locus-tenant-id` header.
    pub tenant: Option<String>,
}

impl ReplayFilter {
    fn matches(&self, message: &OwnedMessage) -> bool {
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        self.reason
            .as_ref()
            .is_none_or(|r| header(DLQ_REASON).as_ref() == Some(r))
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| header(TENANT).as_ref() == Some(t))
    }

    /// The consumer group of replays with this filter: `<group>-replay.<reason>.<tenant>`.
    pub fn group(&self, bridge_group: &str) -> String {
        format!(
            "{bridge_group}-replay.{}.{}",
            self.reason.as_deref().unwrap_or("all"),
            self.tenant.as_deref().unwrap_or("all")
        )
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters read (past the group's committed offsets).
    pub read: usize,
    /// Of those, republished to the location topic.
    pub replayed: usize,
}

/// Replays the dead letters that match `filter` (see the module docs).
pub async fn replay_dead_letters(
    config: &Config,
    filter: &ReplayFilter,
) -> Result<ReplayReport, BridgeError> {
    config.kafka.security.validate()?;
    let topics = config.topics();
    let dead_letter = topics.dead_letter().to_owned();
    let kafka = config.kafka.clone();
    let group = filter.group(&config.group);

    // Reading blocks; off the async threads.
    let (consumer, messages, ends) = tokio::task::spawn_blocking({
        let dead_letter = dead_letter.clone();
        move || read_to_end(&kafka, &group, &dead_letter)
    })
    .await??;

    let producer: FutureProducer = config
        .kafka
        .client_config()
        .set("client.id", "locus-stream-bridge-replay")
        .set("acks", "all")
        // In order per partition, and no timeout that would send a copy again behind its
        // successors.
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "0")
        .create()?;
    let matching: Vec<&OwnedMessage> = messages.iter().filter(|m| filter.matches(m)).collect();
    for chunk in matching.chunks(CHUNK) {
        // Futures polled in order enqueue in order; idempotence keeps that order.
        let sent = join_all(chunk.iter().map(|m| {
            let headers = original_headers(m.headers());
            let mut record = FutureRecord::<[u8], [u8]>::to(topics.locations()).headers(headers);
            if let Some(key) = m.key() {
                record = record.key(key);
            }
            if let Some(payload) = m.payload() {
                record = record.payload(payload);
            }
            producer.send(record, Timeout::Never)
        }))
        .await;
        for result in sent {
            result.map_err(|(error, _)| error)?;
        }
    }

    // Every copy is confirmed: now the group may move past them.
    let report = ReplayReport {
        read: messages.len(),
        replayed: matching.len(),
    };
    tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        for (partition, end) in ends {
            list.add_partition_offset(&dead_letter, partition, Offset::Offset(end))?;
        }
        if list.count() > 0 {
            consumer.commit(&list, CommitMode::Sync)?;
        }
        Ok::<_, BridgeError>(())
    })
    .await??;
    tracing::info!(
        read = report.read,
        replayed = report.replayed,
        "Dead letters replayed."
    );
    Ok(report)
}

type ReadResult = (BaseConsumer, Vec<OwnedMessage>, HashMap<i32, i64>);

/// Reads `topic` from `group`'s committed offsets (the beginning if none) to the end each
/// partition has now. Returns the consumer (to commit with), the records in order per
/// partition, and each read partition's end.
fn read_to_end(kafka: &KafkaSettings, group: &str, topic: &str) -> Result<ReadResult, BridgeError> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", group)
        .set("client.id", "locus-stream-bridge-replay")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), PATIENCE)?;
    let mut list = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            list.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(list, PATIENCE)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for element in committed.elements() {
        let partition = element.partition();
        let (low, high) = consumer.fetch_watermarks(topic, partition, PATIENCE)?;
        let start = match element.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        if start < high {
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
            ends.insert(partition, high);
        }
    }
    let mut messages = Vec::new();
    if ends.is_empty() {
        return Ok((consumer, messages, ends));
    }
    consumer.assign(&assignment)?;
    let mut left: HashMap<i32, i64> = ends.clone();
    let deadline = Instant::now() + PATIENCE;
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(BridgeError::ReplayIncomplete {
                topic: topic.to_owned(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(error)) => return Err(error.into()),
            Some(Ok(message)) => {
                let (partition, offset) = (message.partition(), message.offset());
                if left.get(&partition).is_some_and(|&end| offset < end) {
                    messages.push(message.detach());
                }
                if left.get(&partition).is_some_and(|&end| offset + 1 >= end) {
                    left.remove(&partition);
                }
            }
        }
    }
    Ok((consumer, messages, ends))
}

/// The record's headers without the dead-letter ones.
fn original_headers(headers: Option<&OwnedHeaders>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    for h in headers.into_iter().flat_map(|h| h.iter()) {
        if [DLQ_REASON, DLQ_SINK, DLQ_DETAIL, DLQ_ORIGIN].contains(&h.key) {
            continue;
        }
        out = out.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_group_is_named_after_the_filter() {
        let filter = ReplayFilter {
            reason: Some("no_sink".to_owned()),
            tenant: None,
        };
        assert_eq!(
            filter.group("locus-stream-bridge"),
            "locus-stream-bridge-replay.no_sink.all"
        );
    }

    #[test]
    fn replayed_records_lose_only_the_dead_letter_headers() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: TENANT,
                value: Some("acme"),
            })
            .insert(Header {
                key: DLQ_REASON,
                value: Some("no_sink"),
            })
            .insert(Header {
                key: DLQ_ORIGIN,
                value: Some("t/0/1"),
            });
        let kept: Vec<_> = original_headers(Some(&headers))
            .iter()
            .map(|h| h.key.to_owned())
            .collect();
        assert_eq!(kept, vec![TENANT.to_owned()]);
    }
}
