//! What the harness watches: every location record on the fault's topic in offset order
//! (read once the fault drained, every partition from its start), the dead-letter topic, the Redis buffer (entries
//! per shard and what each forwarder has read but not acknowledged), and the bridge group's
//! lag (committed offsets against high watermarks).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use locus_service::settings::KafkaSettings;
use locus_wire::SessionId;
use locus_wire::record::LocationRecord;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::kafka;

/// The harness's Kafka clients say nothing: while the broker is away on purpose, the
/// default context would log an error every 200 ms over the harness's own figures.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _level: RDKafkaLogLevel, _fac: &str, _log_message: &str) {}
    fn error(&self, _error: KafkaError, _reason: &str) {}
}

impl ConsumerContext for Quiet {}

/// One location record as read from Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSeen {
    /// Its partition (a session's records are all on one).
    pub partition: i32,
    /// Its id.
    pub record_id: Uuid,
    /// Its session.
    pub session_id: SessionId,
    /// Its batch id.
    pub batch_id: String,
    /// Index in the batch.
    pub batch_index: u32,
    /// Latitude.
    pub lat: f64,
}

/// What [`read_topics`] found.
#[derive(Debug, Default)]
pub struct TopicContents {
    /// Every location record, in offset order per partition.
    pub locations: Vec<KafkaSeen>,
    /// Location messages that were not a location record.
    pub unparsed: u64,
    /// Records on the dead-letter topic.
    pub dead_letters: u64,
}

/// Reads the location topic from its low to its high watermarks, every partition, with no
/// group (nothing to rejoin after the broker was away), and counts the dead-letter topic.
pub async fn read_topics(
    brokers: &str,
    locations: &str,
    dead_letter: &str,
) -> anyhow::Result<TopicContents> {
    let (brokers, locations, dead_letter) = (
        brokers.to_owned(),
        locations.to_owned(),
        dead_letter.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        let group = format!("locus-faults-{}", Uuid::new_v4().simple());
        let consumer: BaseConsumer<Quiet> =
            kafka::reader_config(&plaintext(&brokers), &group).create_with_context(Quiet)?;
        let mut out = TopicContents::default();
        let mut tpl = TopicPartitionList::new();
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for (p, low, high) in partitions(&consumer, &locations)? {
            if high > low {
                tpl.add_partition_offset(&locations, p, Offset::Offset(low))?;
                remaining.insert(p, high);
            }
        }
        out.dead_letters = partitions(&consumer, &dead_letter)
            .map(|ps| {
                ps.iter()
                    .map(|(_, low, high)| (high - low).max(0) as u64)
                    .sum()
            })
            .unwrap_or(0);
        if remaining.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !remaining.is_empty() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "could not read {locations} to its end within 120 s"
            );
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            match m.payload().map(serde_json::from_slice::<LocationRecord>) {
                Some(Ok(r)) => out.locations.push(KafkaSeen {
                    partition: m.partition(),
                    record_id: r.record_id,
                    session_id: r.session_id,
                    batch_id: r.batch_id,
                    batch_index: r.batch_index,
                    lat: r.lat,
                }),
                _ => out.unparsed += 1,
            }
            if remaining
                .get(&m.partition())
                .is_some_and(|high| m.offset() + 1 >= *high)
            {
                remaining.remove(&m.partition());
            }
        }
        Ok(out)
    })
    .await?
}

/// `(partition, low, high)` of every partition of `topic`.
fn partitions(consumer: &BaseConsumer<Quiet>, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let t = md.topics().first().context("no metadata for the topic")?;
    t.partitions()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            Ok((p.id(), low, high))
        })
        .collect()
}

/// The Redis buffer of one deployment (prefix) at one moment.
#[derive(Debug, Clone, Default)]
pub struct BufferState {
    /// Entries in all shards (`XLEN`): waiting or in flight.
    pub entries: u64,
    /// Entries read by a forwarder and not yet acknowledged, per consumer name.
    pub pending: HashMap<String, u64>,
}

impl BufferState {
    /// Pending entries of every consumer.
    pub fn pending_total(&self) -> u64 {
        self.pending.values().sum()
    }
}

/// Reads the buffer's state: `XLEN` and `XPENDING` of every shard.
pub async fn buffer_state(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    shards: u32,
) -> redis::RedisResult<BufferState> {
    let mut state = BufferState::default();
    for shard in 0..shards {
        let key = format!("{prefix}:{{s{shard}}}:fixes");
        let len: u64 = redis::cmd("XLEN").arg(&key).query_async(conn).await?;
        state.entries += len;
        let summary: redis::RedisResult<redis::Value> = redis::cmd("XPENDING")
            .arg(&key)
            .arg("forwarder")
            .query_async(conn)
            .await;
        // No group yet (nothing forwarded) is an empty pending list.
        let Ok(redis::Value::Array(parts)) = summary else {
            continue;
        };
        if let Some(redis::Value::Array(consumers)) = parts.get(3) {
            for c in consumers {
                let Ok((name, count)) = redis::from_redis_value::<(String, String)>(c) else {
                    continue;
                };
                *state.pending.entry(name).or_default() += count.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(state)
}

/// The fault harness's own broker: plaintext, like every test node (locus-testkit's
/// `KafkaNode`).
fn plaintext(brokers: &str) -> KafkaSettings {
    KafkaSettings::new(brokers, "")
}

/// Records of `topic` past `group`'s committed offsets; `None` when Kafka does not answer.
pub async fn group_lag(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        // Not subscribed: the consumer only asks the coordinator for offsets, it never joins.
        let consumer: BaseConsumer<Quiet> = kafka::reader_config(&plaintext(&brokers), &group)
            .create_with_context(Quiet)
            .ok()?;
        let timeout = Duration::from_secs(5);
        let md = consumer.fetch_metadata(Some(&topic), timeout).ok()?;
        let partitions: Vec<i32> = md
            .topics()
            .first()?
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(&topic, *p);
        }
        let committed = consumer.committed_offsets(tpl, timeout).ok()?;
        let mut lag = 0;
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(&topic, p, timeout).ok()?;
            let at = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => low,
            };
            lag += (high - at).max(0);
        }
        Some(lag)
    })
    .await
    .ok()
    .flatten()
}
