//! The forwarder role: moves buffered entries from the Redis streams to Kafka.
//!
//! One task per shard reads its stream through the consumer group `forwarder`, produces
//! one Kafka record per fix (and one per session event), waits until Kafka confirmed every
//! record of an entry, and only then acknowledges and deletes the entry. A crash anywhere
//! before the acknowledgement leaves the entry pending, so it is produced again: delivery
//! is at-least-once, and the stable `record_id` lets consumers drop the copies.
//!
//! Entries pending with this consumer (its previous run crashed) are read first; entries
//! pending with another consumer for longer than the claim idle time are claimed
//! (XAUTOCLAIM), which is how a replica takes over from a dead one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use locus_session::{SessionProgress, SessionStore};
use locus_wire::SessionId;
use locus_wire::api::Position;
use locus_wire::buffer::{BufferEntry, ENTRY_FIELD};
use locus_wire::record::LocationRecord;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio_util::sync::CancellationToken;

use crate::buffer::Keys;
use crate::config::Config;
use crate::events;
use crate::kafka;

/// Consumer group of the forwarders in every shard stream.
pub const GROUP: &str = "forwarder";

/// How long one XREADGROUP blocks: also how quickly a shard task notices shutdown.
const BLOCK_MS: u64 = 500;
/// Wait after a failure before reading the pending entries again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often to look for entries abandoned by another forwarder.
const CLAIM_EVERY: Duration = Duration::from_secs(5);

/// The forwarder role.
#[derive(Clone)]
pub struct Forwarder {
    redis: redis::Client,
    keys: Keys,
    consumer: String,
    read_count: usize,
    claim_idle_ms: u64,
    producer: FutureProducer,
    locations_topic: String,
    events_topic: String,
    dead_letter_topic: String,
    store: SessionStore,
}

impl Forwarder {
    /// A forwarder configured by `config`.
    pub fn new(
        config: &Config,
        redis: redis::Client,
        producer: FutureProducer,
        store: SessionStore,
    ) -> Self {
        Self {
            redis,
            keys: Keys::new(&config.redis_prefix, config.redis_shards),
            consumer: config.forwarder_consumer.clone(),
            read_count: config.forwarder_read_count,
            claim_idle_ms: config.forwarder_claim_idle_ms,
            producer,
            locations_topic: config.locations_topic(),
            events_topic: config.session_events_topic(),
            dead_letter_topic: config.dead_letter_topic(),
            store,
        }
    }

    /// Runs every shard until `shutdown`, then drains what is left in the streams for at
    /// most `grace`, and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let shards = (0..self.keys.shards()).map(|shard| {
            let this = self.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move { this.run_shard(shard, stop, grace).await })
        });
        for task in join_all(shards).await {
            if let Err(e) = task {
                tracing::error!(error = %e, "A forwarder shard task panicked.");
            }
        }
        let producer = self.producer.clone();
        // Every record was awaited before its entry was acknowledged, so this is a
        // formality; it still bounds the wait if a send raced with shutdown.
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
        tracing::info!("Forwarder stopped.");
    }

    async fn run_shard(&self, shard: u32, shutdown: CancellationToken, grace: Duration) {
        let stream = self.keys.stream(shard);
        // A dedicated connection per shard: XREADGROUP BLOCK holds the connection it runs on.
        let mut conn = loop {
            match self.connect(&stream).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Forwarder cannot reach Redis; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        };
        // Start with our own pending entries: a previous run of this consumer may have
        // died between producing and acknowledging.
        let mut pending_first = true;
        let mut last_claim = Instant::now();
        let mut drain_deadline = None;
        loop {
            // On shutdown, keep going without blocking until the stream is empty or the
            // grace period is over: what ingest accepted while draining gets out too.
            let draining = shutdown.is_cancelled();
            if draining {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + grace);
                if Instant::now() >= deadline {
                    tracing::warn!(
                        shard,
                        "Shutdown grace period over; entries left stay in Redis for the next start."
                    );
                    break;
                }
            }
            let read = if pending_first {
                self.read(&mut conn, &stream, "0", None).await
            } else if last_claim.elapsed() >= CLAIM_EVERY {
                last_claim = Instant::now();
                self.claim(&mut conn, &stream).await
            } else {
                let block = (!draining).then_some(BLOCK_MS);
                self.read(&mut conn, &stream, ">", block).await
            };
            let entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Forwarder read from Redis failed; retrying.");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            if entries.is_empty() {
                if draining && !pending_first {
                    break;
                }
                pending_first = false;
                self.report_depth(&mut conn, shard, &stream).await;
                continue;
            }
            if let Err(e) = self.forward(&mut conn, &stream, entries).await {
                tracing::warn!(shard, error = %e, "Forwarding stopped short; pending entries will be retried.");
                pending_first = true;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }

    async fn connect(&self, stream: &str) -> redis::RedisResult<ConnectionManager> {
        let mut conn = ConnectionManager::new(self.redis.clone()).await?;
        // "0" rather than "$": entries written before the group existed are forwarded too.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => Ok(conn),
        }
    }

    async fn read(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
        from: &str,
        block_ms: Option<u64>,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer);
        cmd.arg("COUNT").arg(self.read_count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(stream).arg(from);
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    async fn claim(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.claim_idle_ms)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.read_count)
            .query_async(conn)
            .await?;
        events::entries_claimed(reply.claimed.len());
        Ok(reply.claimed)
    }

    async fn report_depth(&self, conn: &mut ConnectionManager, shard: u32, stream: &str) {
        if let Ok(len) = redis::cmd("XLEN")
            .arg(stream)
            .query_async::<u64>(conn)
            .await
        {
            events::buffer_depth(shard, len);
        }
    }

    /// Produces the records of `entries` and acknowledges the entries Kafka confirmed, in
    /// stream order: after the first entry with a failed record nothing is acknowledged,
    /// so a retry cannot reorder a session.
    async fn forward(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
        entries: Vec<StreamId>,
    ) -> Result<(), ForwardError> {
        let started = Instant::now();
        let mut sent: Vec<(String, Vec<DeliveryFuture>, Option<BufferEntry>)> =
            Vec::with_capacity(entries.len());
        for entry in entries {
            let raw = match entry.map.get(ENTRY_FIELD) {
                Some(redis::Value::BulkString(bytes)) => bytes.clone(),
                // Deleted while pending: nothing left to produce, only to acknowledge.
                _ => {
                    sent.push((entry.id, Vec::new(), None));
                    continue;
                }
            };
            match serde_json::from_slice::<BufferEntry>(&raw) {
                Ok(decoded) => {
                    let futures = self.produce(&decoded).await?;
                    sent.push((entry.id, futures, Some(decoded)));
                }
                Err(e) => {
                    events::entry_dead_lettered(&e);
                    let f = self.dead_letter(&entry.id, &raw, &e.to_string()).await?;
                    sent.push((entry.id, vec![f], None));
                }
            }
        }

        let mut acked = Vec::with_capacity(sent.len());
        let mut progress: HashMap<SessionId, SessionProgress> = HashMap::new();
        let mut failure = None;
        for (id, futures, decoded) in sent {
            let results = join_all(futures).await;
            if let Some(e) = results.into_iter().find_map(|r| match r {
                Ok(Ok(_)) => None,
                Ok(Err((e, _))) => Some(ForwardError::Kafka(e)),
                Err(_) => Some(ForwardError::Canceled),
            }) {
                events::produce_failed(&e);
                failure = Some(e);
                break;
            }
            match &decoded {
                Some(BufferEntry::Fixes(batch)) => {
                    events::records_produced("locations", batch.fixes.len());
                    let age = chrono::Utc::now() - batch.received_at;
                    events::ingest_to_kafka(age.to_std().unwrap_or_default());
                    add_progress(&mut progress, batch);
                }
                Some(BufferEntry::SessionEvent(_)) => events::records_produced("session_events", 1),
                None => {}
            }
            acked.push(id);
        }

        if !acked.is_empty() {
            // XACK then XDEL: the stream is a queue, and deleting keeps XLEN (the bound
            // admission checks) equal to what is still waiting.
            redis::pipe()
                .atomic()
                .cmd("XACK")
                .arg(stream)
                .arg(GROUP)
                .arg(&acked)
                .ignore()
                .cmd("XDEL")
                .arg(stream)
                .arg(&acked)
                .ignore()
                .query_async::<()>(conn)
                .await
                .map_err(ForwardError::Redis)?;
            events::entries_acked(acked.len());
            events::produce_duration(started.elapsed());
        }
        if !progress.is_empty() {
            let progress: Vec<_> = progress.into_values().collect();
            if let Err(e) = self.store.record_progress(&progress).await {
                events::progress_write_failed(&e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn produce(&self, entry: &BufferEntry) -> Result<Vec<DeliveryFuture>, ForwardError> {
        match entry {
            BufferEntry::Fixes(batch) => {
                let key = batch.session_id.to_string();
                let headers = kafka::headers("location", &batch.tenant_id, batch.session_id);
                let mut futures = Vec::with_capacity(batch.fixes.len());
                for fix in &batch.fixes {
                    let payload = serde_json::to_vec(&LocationRecord::from_fix(batch, fix))
                        .map_err(ForwardError::Encoding)?;
                    futures.push(
                        self.send(&self.locations_topic, &key, &payload, headers.clone())
                            .await?,
                    );
                }
                Ok(futures)
            }
            BufferEntry::SessionEvent(event) => {
                let key = event.session_id.to_string();
                let headers = kafka::headers("session_event", &event.tenant_id, event.session_id);
                let payload = serde_json::to_vec(event).map_err(ForwardError::Encoding)?;
                Ok(vec![
                    self.send(&self.events_topic, &key, &payload, headers)
                        .await?,
                ])
            }
        }
    }

    async fn dead_letter(
        &self,
        id: &str,
        raw: &[u8],
        reason: &str,
    ) -> Result<DeliveryFuture, ForwardError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "locus-dlq-reason",
            value: Some(reason),
        });
        self.send(&self.dead_letter_topic, id, raw, headers).await
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
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(ForwardError::Kafka(e)),
            }
        }
    }
}

fn add_progress(
    progress: &mut HashMap<SessionId, SessionProgress>,
    batch: &locus_wire::buffer::BufferedBatch,
) {
    let Some(last) = batch.fixes.iter().max_by_key(|f| f.recorded_at) else {
        return;
    };
    let p = progress.entry(batch.session_id).or_insert(SessionProgress {
        session_id: batch.session_id,
        fixes: 0,
        last_fix_at: last.recorded_at,
        last_position: Position {
            lat: last.lat,
            lon: last.lon,
        },
    });
    p.fixes += batch.fixes.len() as i64;
    if last.recorded_at >= p.last_fix_at {
        p.last_fix_at = last.recorded_at;
        p.last_position = Position {
            lat: last.lat,
            lon: last.lon,
        };
    }
}

/// Why forwarding a read stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Kafka refused or did not confirm a record.
    #[error("kafka: {0}")]
    Kafka(KafkaError),
    /// The producer dropped a delivery (it is shutting down).
    #[error("delivery canceled")]
    Canceled,
    /// Redis failed while acknowledging.
    #[error("redis: {0}")]
    Redis(redis::RedisError),
    /// A record did not serialize.
    #[error("encoding: {0}")]
    Encoding(serde_json::Error),
}
