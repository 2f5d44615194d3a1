//! What the harness watches: every location record on the fault's topic in offset order
//! (a consumer of its own, from the start), the dead-letter topic, the Redis buffer (entries
//! per shard and what each forwarder has read but not acknowledged), and the bridge group's
//! lag (committed offsets against high watermarks).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use locus_wire::SessionId;
use locus_wire::record::LocationRecord;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::kafka;

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

#[derive(Debug, Default)]
struct Read {
    locations: Vec<KafkaSeen>,
    dead_letters: u64,
    unparsed: u64,
}

/// A consumer reading a fault's location and dead-letter topics from the start.
#[derive(Debug)]
pub struct KafkaLog {
    read: Arc<Mutex<Read>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl KafkaLog {
    /// Subscribes with a fresh group and reads in the background.
    pub fn start(brokers: &str, locations: &str, dead_letter: &str) -> anyhow::Result<Self> {
        let group = format!("locus-faults-{}", Uuid::new_v4().simple());
        let consumer: StreamConsumer = kafka::reader_config(brokers, &group).create()?;
        consumer
            .subscribe(&[locations, dead_letter])
            .context("subscribe")?;
        let read = Arc::new(Mutex::new(Read::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(consume(
            consumer,
            locations.to_owned(),
            Arc::clone(&read),
            stop.clone(),
        ));
        Ok(Self { read, stop, task })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Read> {
        self.read.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Location records read so far, copies included.
    pub fn count(&self) -> usize {
        self.lock().locations.len()
    }

    /// Every location record read, in offset order per partition.
    pub fn locations(&self) -> Vec<KafkaSeen> {
        self.lock().locations.clone()
    }

    /// Records read from the dead-letter topic.
    pub fn dead_letters(&self) -> u64 {
        self.lock().dead_letters
    }

    /// Location messages that were not a location record.
    pub fn unparsed(&self) -> u64 {
        self.lock().unparsed
    }

    /// Stops reading.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn consume(
    consumer: StreamConsumer,
    locations: String,
    read: Arc<Mutex<Read>>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            m = consumer.recv() => m,
        };
        let Ok(m) = message else {
            // An unknown topic before ingest made it, or the broker away during fault 2.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
        if m.topic() != locations {
            read.dead_letters += 1;
            continue;
        }
        match m.payload().map(serde_json::from_slice::<LocationRecord>) {
            Some(Ok(r)) => read.locations.push(KafkaSeen {
                partition: m.partition(),
                record_id: r.record_id,
                session_id: r.session_id,
                batch_id: r.batch_id,
                batch_index: r.batch_index,
                lat: r.lat,
            }),
            _ => read.unparsed += 1,
        }
    }
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

/// Records of `topic` past `group`'s committed offsets; `None` when Kafka does not answer.
pub async fn group_lag(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        // Not subscribed: the consumer only asks the coordinator for offsets, it never joins.
        let consumer: BaseConsumer = kafka::reader_config(&brokers, &group).create().ok()?;
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
