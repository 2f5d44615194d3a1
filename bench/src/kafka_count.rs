//! Counts a run's location records on Kafka by reading them.
//!
//! Watermarks count offsets, not the run's records: the topic also holds earlier runs and
//! other producers, and the forwarder is at-least-once, so a shard takeover can write a
//! record twice. "Caught up" is therefore decided by distinct `record_id`s of the run's
//! sessions actually read, and reading them also gives each record's 202 -> Kafka latency.
//! The consumer starts before the load. When the topic exists, it is assigned every
//! partition at the offset of [`START_MARGIN_SECS`] before its start (`offsets_for_times`),
//! so a topic holding millions of earlier records (a day of benchmarks on the shared
//! broker) is not read from its beginning: the demo once read 6.7 million old messages in
//! its 60 s and found 1000 of its 4000. A topic that does not exist yet is subscribed to
//! and read from the start (it holds only this run's records); joining the group (a
//! coordinator lookup, a join and a sync, plus `group.initial.rebalance.delay.ms`) then
//! overlaps the load.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use hdrhistogram::Histogram;
use locus_service::kafka::KafkaSecurity;
use locus_service::settings::KafkaSettings;
use locus_wire::SessionId;
use locus_wire::record::LocationRecord;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::kafka;
use crate::report::{LatencyMs, latency_histogram};

/// How far before its start the counter reads: more than any clock difference between
/// this host and the broker's record timestamps (the forwarder's produce time, later than
/// the run's start anyway).
pub const START_MARGIN_SECS: i64 = 30;

/// Timeout of the metadata and offset look-ups at start.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to read and which records belong to the run.
#[derive(Debug, Clone)]
pub struct KafkaCountConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// How to authenticate to them (the stack's `LOCUS_KAFKA_*` security settings).
    pub security: KafkaSecurity,
    /// The location topic, prefix included (`locus.locations`).
    pub topic: String,
    /// Only records whose device id starts with this are kept (the run's devices), so
    /// memory stays bounded by the run however much else the topic holds.
    pub device_prefix: String,
}

/// What the consumer has read so far.
#[derive(Debug)]
struct Seen {
    by_session: HashMap<SessionId, HashSet<Uuid>>,
    /// Distinct records of the run, all sessions.
    distinct: u64,
    /// From ingest's `received_at` to the consumer reading the record, first copies only.
    e2e_us: Histogram<u64>,
    messages: u64,
    unparsed: u64,
    last_error: Option<String>,
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            by_session: HashMap::new(),
            distinct: 0,
            e2e_us: latency_histogram(),
            messages: 0,
            unparsed: 0,
            last_error: None,
        }
    }
}

/// Progress of the consumer, for messages when the count falls short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaProgress {
    /// Messages read from the topic, any run.
    pub messages: u64,
    /// Messages whose value was not a `LocationRecord`.
    pub unparsed: u64,
    /// The latest consumer error, if any.
    pub last_error: Option<String>,
}

/// A background consumer that counts distinct location records per session.
#[derive(Debug)]
pub struct KafkaCounter {
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl KafkaCounter {
    /// Starts counting in the background: every partition from [`START_MARGIN_SECS`] ago
    /// when the topic exists, else a subscription with a fresh group from the start. The
    /// look-ups block for a moment (a metadata and an offsets request to a local broker).
    pub fn start(config: KafkaCountConfig) -> anyhow::Result<Self> {
        let group = format!("locus-bench-{}", Uuid::new_v4().simple());
        let consumer: StreamConsumer = kafka::reader_config(
            &KafkaSettings::new(&config.brokers, "").with_security(config.security.clone()),
            &group,
        )
        .create()
        .with_context(|| format!("cannot create a Kafka consumer for {}", config.brokers))?;
        let since_ms =
            (Utc::now() - chrono::Duration::seconds(START_MARGIN_SECS)).timestamp_millis();
        match start_offsets(&consumer, &config.topic, since_ms) {
            Ok(Some(offsets)) => consumer
                .assign(&offsets)
                .with_context(|| format!("cannot assign the partitions of {}", config.topic))?,
            found => {
                if let Err(e) = found {
                    tracing::debug!(error = %e, "No start offsets; reading from the start.");
                }
                consumer
                    .subscribe(&[&config.topic])
                    .with_context(|| format!("cannot subscribe to {}", config.topic))?;
            }
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(consume(
            consumer,
            config.device_prefix,
            Arc::clone(&seen),
            stop.clone(),
        ));
        Ok(Self { seen, stop, task })
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Distinct records read so far whose session is one of `sessions`.
    pub fn distinct_for(&self, sessions: &[SessionId]) -> u64 {
        let seen = self.seen();
        sessions
            .iter()
            .filter_map(|s| seen.by_session.get(s))
            .map(|ids| ids.len() as u64)
            .sum()
    }

    /// Distinct records of the run read so far, whatever their session.
    pub fn distinct(&self) -> u64 {
        self.seen().distinct
    }

    /// Latency from ingest's `received_at` to the record being read, first copies only.
    pub fn e2e(&self) -> LatencyMs {
        LatencyMs::from_micros(&self.seen().e2e_us)
    }

    /// How far the consumer got.
    pub fn progress(&self) -> KafkaProgress {
        let seen = self.seen();
        KafkaProgress {
            messages: seen.messages,
            unparsed: seen.unparsed,
            last_error: seen.last_error.clone(),
        }
    }

    /// Stops the consumer and waits for it to leave its group.
    pub async fn stop(self) {
        self.stop.cancel();
        // The task only ends by cancellation; a join error means it panicked, and the
        // counts it left are still what was read.
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "Kafka counter task failed.");
        }
    }
}

/// Per partition of `topic`, the offset of its first record at or after `since_ms`, or its
/// end when there is none; `None` when the topic does not exist (yet).
fn start_offsets(
    consumer: &StreamConsumer,
    topic: &str,
    since_ms: i64,
) -> KafkaResult<Option<TopicPartitionList>> {
    let metadata = consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let mut times = TopicPartitionList::new();
    for p in t.partitions() {
        times.add_partition_offset(topic, p.id(), Offset::Offset(since_ms))?;
    }
    let found = consumer.offsets_for_times(times, LOOKUP_TIMEOUT)?;
    let mut offsets = TopicPartitionList::new();
    for e in found.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => o,
            // No record that recent: from the current end, as an exact offset (a logical
            // "end" resolved later could skip what is produced in between).
            _ => {
                consumer
                    .fetch_watermarks(topic, e.partition(), LOOKUP_TIMEOUT)?
                    .1
            }
        };
        offsets.add_partition_offset(topic, e.partition(), Offset::Offset(offset))?;
    }
    Ok(Some(offsets))
}

async fn consume(
    consumer: StreamConsumer,
    device_prefix: String,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            // Cancellation wins over a ready message: the caller has its figures already.
            biased;
            () = stop.cancelled() => break,
            m = consumer.recv() => m,
        };
        match message {
            Ok(m) => {
                let parsed = m.payload().map(serde_json::from_slice::<LocationRecord>);
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.messages += 1;
                match parsed {
                    Some(Ok(r)) if r.device_id.as_str().starts_with(&device_prefix) => {
                        let first = seen
                            .by_session
                            .entry(r.session_id)
                            .or_default()
                            .insert(r.record_id);
                        if first {
                            // 202 -> readable on Kafka, on this host's clock (ingest runs
                            // on the same machine, so the clocks agree).
                            let us = (Utc::now() - r.received_at).num_microseconds().unwrap_or(0);
                            seen.distinct += 1;
                            seen.e2e_us
                                .saturating_record(u64::try_from(us).unwrap_or(0));
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => seen.unparsed += 1,
                }
            }
            Err(e) => {
                // Not fatal: an unknown topic (nothing produced yet) or a broker hiccup
                // clears up by itself; the caller's deadline bounds the wait.
                tracing::debug!(error = %e, "Kafka consumer error.");
                seen.lock().unwrap_or_else(|e| e.into_inner()).last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // Dropping the consumer closes it and leaves the group; `stop` awaits this task so that
    // happens before the process exits instead of leaving a member for the broker to expire.
    drop(consumer);
}
