//! The forwarder role: moves buffered entries from the Redis streams to Kafka.
//!
//! One task per shard reads its stream through the consumer group `forwarder`, produces
//! one Kafka record per fix (and one per session event), waits until Kafka confirmed every
//! record of an entry, and only then acknowledges and deletes the entry. A crash anywhere
//! before the acknowledgement leaves the entry pending, so it is produced again: delivery
//! is at-least-once, and the stable `record_id` lets consumers drop the copies.
//!
//! One forwarder at a time owns a shard, through a lease in Redis that it renews: a
//! consumer group alone would hand one session's entries to two replicas at once and let
//! Kafka see them out of order. A forwarder that takes a shard over first claims every
//! entry still pending with the shard's previous owner (XAUTOCLAIM) and forwards those,
//! oldest first, before reading new ones. A graceful stop releases the leases at once; a
//! crashed owner's lapse after `LOCUS_FORWARDER_LEASE_MS`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
use redis::Script;
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
/// Renews the lease only while this forwarder still holds it.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";
/// Releases the lease only if this forwarder still holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Why a forwarder stopped working a shard.
enum ShardEnd {
    /// Its lease lapsed or was taken: look for a shard again.
    LeaseLost,
    /// Shutdown, after draining.
    Stopped,
}

/// The forwarder role.
#[derive(Clone)]
pub struct Forwarder {
    redis: redis::Client,
    keys: Keys,
    consumer: String,
    /// Value of the leases this process holds: the consumer name plus a per-process
    /// nonce, so a restarted process does not mistake a lease of its predecessor for its own.
    lease_token: String,
    lease: Duration,
    max_shards: u32,
    owned: Arc<AtomicU32>,
    read_count: usize,
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
            lease_token: format!("{}/{}", config.forwarder_consumer, uuid::Uuid::new_v4()),
            lease: Duration::from_millis(config.forwarder_lease_ms.max(300)),
            max_shards: config.forwarder_max_shards,
            owned: Arc::default(),
            read_count: config.forwarder_read_count,
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
        let lease = self.keys.lease(shard);
        // A dedicated connection per shard: XREADGROUP BLOCK holds the connection it runs on.
        // And one for the lease keeper, so a renewal never waits behind a blocked read.
        let (mut conn, lease_conn) = loop {
            let both = match self.connect(&stream).await {
                Ok(c) => ConnectionManager::new(self.redis.clone())
                    .await
                    .map(|l| (c, l)),
                Err(e) => Err(e),
            };
            match both {
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
        loop {
            if !self.acquire(&mut conn, shard, &lease, &shutdown).await {
                return;
            }
            tracing::info!(shard, "Forwarder took the shard.");
            // Renewals run beside the work: forwarding one read can wait on Kafka for
            // longer than the lease, and the shard must not change hands meanwhile.
            let lost = CancellationToken::new();
            let keeper = tokio::spawn(self.clone().keep_lease(
                lease_conn.clone(),
                lease.clone(),
                lost.clone(),
            ));
            let end = self
                .work_shard(&mut conn, shard, &stream, &lost, &shutdown, grace)
                .await;
            keeper.abort();
            self.owned.fetch_sub(1, Ordering::SeqCst);
            match end {
                ShardEnd::LeaseLost => {
                    tracing::warn!(
                        shard,
                        "Forwarder lost the shard's lease; another forwarder takes over."
                    );
                }
                ShardEnd::Stopped => {
                    let released: redis::RedisResult<i64> = Script::new(RELEASE_LEASE)
                        .key(&lease)
                        .arg(&self.lease_token)
                        .invoke_async(&mut conn)
                        .await;
                    if let Err(e) = released {
                        tracing::warn!(shard, error = %e, "Could not release the shard lease; it lapses by itself.");
                    }
                    return;
                }
            }
        }
    }

    /// Waits until this forwarder holds the lease of `shard`; false on shutdown.
    async fn acquire(
        &self,
        conn: &mut ConnectionManager,
        shard: u32,
        lease: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        loop {
            if shutdown.is_cancelled() {
                return false;
            }
            let room = self.max_shards == 0 || self.owned.load(Ordering::SeqCst) < self.max_shards;
            if room {
                // Count the shard before asking, so sibling tasks respect max_shards.
                self.owned.fetch_add(1, Ordering::SeqCst);
                let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
                    .arg(lease)
                    .arg(&self.lease_token)
                    .arg("NX")
                    .arg("PX")
                    .arg(self.lease.as_millis() as u64)
                    .query_async(conn)
                    .await;
                match taken {
                    Ok(Some(_)) => return true,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "Could not ask for the shard lease.")
                    }
                }
                self.owned.fetch_sub(1, Ordering::SeqCst);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(self.lease / 3) => {}
            }
        }
    }

    /// Forwards a shard this forwarder holds the lease of, until the lease is lost or
    /// shutdown has drained the shard.
    async fn work_shard(
        &self,
        conn: &mut ConnectionManager,
        shard: u32,
        stream: &str,
        lost: &CancellationToken,
        shutdown: &CancellationToken,
        grace: Duration,
    ) -> ShardEnd {
        // Entries the previous owner read but did not acknowledge come first, in stream
        // order: they are older than anything not yet read.
        let mut pending_first = match self.claim_all(conn, stream).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(shard, error = %e, "Could not claim the previous owner's entries.");
                return ShardEnd::LeaseLost;
            }
        };
        let mut depth_reported = Instant::now() - Duration::from_secs(1);
        let mut drain_deadline = None;
        loop {
            if lost.is_cancelled() {
                return ShardEnd::LeaseLost;
            }
            if depth_reported.elapsed() >= Duration::from_secs(1) {
                self.report_depth(conn, shard, stream).await;
                depth_reported = Instant::now();
            }
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
                    return ShardEnd::Stopped;
                }
            }
            let read = if pending_first {
                self.read(conn, stream, "0", None).await
            } else {
                let block = (!draining).then_some(BLOCK_MS);
                self.read(conn, stream, ">", block).await
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
                    return ShardEnd::Stopped;
                }
                pending_first = false;
                continue;
            }
            if let Err(e) = self.forward(conn, stream, entries).await {
                tracing::warn!(shard, error = %e, "Forwarding stopped short; pending entries will be retried.");
                pending_first = true;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    }

    /// Renews the lease every third of its length until it cannot, then cancels `lost`.
    async fn keep_lease(self, mut conn: ConnectionManager, lease: String, lost: CancellationToken) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.lease / 3).await;
            let result: redis::RedisResult<i64> = Script::new(RENEW_LEASE)
                .key(&lease)
                .arg(&self.lease_token)
                .arg(self.lease.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok(1) => renewed = Instant::now(),
                // Another forwarder holds it now (ours lapsed).
                Ok(_) => break,
                // Past the lease's length it may be someone else's: stop to be safe.
                Err(_) if renewed.elapsed() >= self.lease => break,
                Err(e) => tracing::warn!(error = %e, "Could not renew a shard lease; retrying."),
            }
        }
        lost.cancel();
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

    /// Moves every entry pending with any consumer of the group to this one.
    async fn claim_all(
        &self,
        conn: &mut ConnectionManager,
        stream: &str,
    ) -> redis::RedisResult<()> {
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.read_count)
                .arg("JUSTID")
                .query_async(conn)
                .await?;
            events::entries_claimed(reply.claimed.len());
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
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
