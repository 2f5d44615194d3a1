//! The outbox relay: publishes `geo_outbox` to the positions and geofence-events topics,
//! once. The order of operations is the guarantee:
//!
//! - One relay at a time: a replica publishes only while it holds a PostgreSQL session
//!   advisory lock (`pg_try_advisory_lock`) on a connection of its own; the others ask
//!   again every interval. A lost connection loses the lock, and the relay starts over.
//! - Rows are published in `seq` order, each to an explicit partition (murmur2 of its key,
//!   [`partitioner`]), with its `seq` in the header `locus-outbox-seq`, by an idempotent
//!   producer that never times a record out: within a partition the log holds the rows in
//!   `seq` order without gaps. A row is deleted only after Kafka acknowledged it.
//! - When it takes the lock, the relay reads the last record of every partition of both
//!   topics and deletes, without publishing, the rows whose `seq` is at or below that
//!   partition's last one: a relay that stopped between Kafka's acknowledgement and the
//!   delete does not publish a row twice. While it runs it keeps the same rule with the
//!   `seq`s it saw acknowledged, so a delete that failed is not a second publish either.
//! - A row Kafka refuses for good (not a broker outage: those are retried without end)
//!   breaks that partition's order: it is logged and published again by the next round,
//!   after the rows behind it.
//! - A refused row is marked in PostgreSQL (`geo_outbox.refused_at`) in the round that saw
//!   the refusal, before the round returns, and a marked row is exempt from the restart
//!   rule: the rows behind it may be on Kafka while it is not, so a higher last `seq` in
//!   its partition proves nothing about it. Without the mark a restart (a crash, another
//!   replica taking the lock, or this relay starting over after the failed round) would
//!   delete it as published: a lost event. Marked rows are sent again every round until
//!   Kafka takes them (each refusal is logged with its `seq` and counted in
//!   `locus_tracker_outbox_refused_total`); while one is refused for good (a record over
//!   the topic's `max.message.bytes`: raise the limit) it keeps its place at the head of
//!   the outbox.
//! - A marked row that Kafka later takes and the relay stops before deleting is, being
//!   exempt, published once more by the next relay: a duplicate (consumers dedupe by
//!   `event_id` / key), never a loss. One window stays: a relay that stops after Kafka
//!   acknowledged the rows behind a refused row and before it wrote the mark (the same
//!   round, milliseconds) leaves that row unmarked, and the next relay deletes it as
//!   published.

pub mod partitioner;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use locus_service::settings::KafkaSettings;
use locus_session::scope::SYSTEM_ROLE;
use locus_wire::headers::{CONTENT_TYPE, CONTENT_TYPE_JSON, RECORD_TYPE, TENANT};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::partitioner::partition_of;
use crate::events::{OutboxPublished, OutboxRefused, RelayActive, RelayFailed};
use crate::store::{GEOFENCE_EVENTS, POSITIONS};

/// Header carrying the outbox row's sequence number.
pub const SEQ_HEADER: &str = "locus-outbox-seq";
/// The advisory lock of the relay: "locus_tr" in ASCII. Advisory locks are per database,
/// so each deployment (and each test database) has its own relay.
pub const LOCK_KEY: i64 = 0x6c6f_6375_735f_7472;
/// How long Kafka may take to describe a topic or hand out a partition's last record.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause while the producer's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(20);

/// Why a relay round failed (the rows stay for the next one).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    /// Kafka refused, or could not describe a topic.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic is missing or has no partitions.
    #[error(
        "topic {0} does not exist or has no partitions (ingest creates it at start; create it with the partitions of the location topic)"
    )]
    NoTopic(String),
    /// The last record of a partition did not arrive in time.
    #[error("could not read the last record of {topic} partition {partition} within 10 s")]
    Tail {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A blocking Kafka call panicked.
    #[error("task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Its sequence number: the order of publication.
    pub seq: i64,
    /// The tenant.
    pub tenant_id: String,
    /// `positions` or `geofence_events`.
    pub topic: String,
    /// The Kafka key.
    pub key: String,
    /// The record value (JSON).
    pub payload: String,
}

/// The Kafka topics of the outbox's topic names.
#[derive(Debug, Clone)]
pub struct RelayTopics {
    /// `<prefix>positions`.
    pub positions: String,
    /// `<prefix>geofence-events`.
    pub geofence_events: String,
}

impl RelayTopics {
    /// The Kafka topic of an outbox topic name, and the name as a static.
    fn resolve(&self, outbox: &str) -> Option<(&'static str, &str)> {
        match outbox {
            POSITIONS => Some((POSITIONS, &self.positions)),
            GEOFENCE_EVENTS => Some((GEOFENCE_EVENTS, &self.geofence_events)),
            _ => None,
        }
    }

    fn all(&self) -> [(&'static str, &str); 2] {
        [
            (POSITIONS, &self.positions),
            (GEOFENCE_EVENTS, &self.geofence_events),
        ]
    }
}

/// The `locus-record-type` of an outbox topic's records.
fn record_type(outbox: &str) -> &'static str {
    match outbox {
        POSITIONS => "position",
        _ => "geofence_event",
    }
}

/// The highest `seq` known to be on Kafka per (outbox topic, partition).
pub type Published = HashMap<(&'static str, i32), i64>;

/// The producer settings of the relay: idempotent, acks=all, and no message timeout (a
/// record that timed out could still be written after the ones behind it, which would
/// break the no-gap rule the restart relies on; see the module docs).
pub fn producer(kafka: &KafkaSettings) -> Result<FutureProducer, KafkaError> {
    kafka
        .client_config()
        .set("client.id", "locus-tracker-relay")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "0")
        .create()
}

/// The relay task.
pub struct Relay {
    pool: PgPool,
    producer: FutureProducer,
    kafka: KafkaSettings,
    topics: RelayTopics,
    interval: Duration,
    batch: i64,
    wake: Arc<Notify>,
}

impl Relay {
    /// A relay of the outbox in `pool` to `topics`, woken by [`Relay::waker`] or every
    /// `interval`, publishing up to `batch` rows per round.
    pub fn new(
        pool: PgPool,
        producer: FutureProducer,
        kafka: &KafkaSettings,
        topics: RelayTopics,
        interval: Duration,
        batch: i64,
    ) -> Self {
        Self {
            pool,
            producer,
            kafka: kafka.clone(),
            topics,
            interval,
            batch: batch.max(1),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Wakes the relay: the consumer calls it after a batch that wrote outbox rows.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Publishes while this replica holds the lock, until `stop`. Once `stop` is
    /// cancelled, the relay that holds the lock publishes what the outbox holds then (the
    /// last batches' rows) before it returns; one that does not returns at once.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            if stop.is_cancelled() {
                return;
            }
            let mut conn = match self.lock().await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    if self.pause(&stop).await {
                        return;
                    }
                    continue;
                }
                Err(error) => {
                    RelayFailed { error: &error }.emit();
                    if self.pause(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            RelayActive { active: true }.emit();
            let served = self.serve(&mut conn, &stop).await;
            RelayActive { active: false }.emit();
            // Closing the connection releases the lock (a broken one is gone anyway).
            let _ = conn.close().await;
            match served {
                Ok(()) => return,
                Err(error) => {
                    RelayFailed { error: &error }.emit();
                    if self.pause(&stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Waits one interval, a wake-up or `stop`; true when stopped.
    async fn pause(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = stop.cancelled() => true,
            _ = self.wake.notified() => false,
            _ = tokio::time::sleep(self.interval) => false,
        }
    }

    /// A connection of its own holding the relay's lock, or `None` when another replica
    /// holds it.
    async fn lock(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        // Detached: the lock lives as long as the connection, which must not go back to
        // the pool with the lock still held.
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(conn))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Publishes until `stop` (see [`Relay::run`]) or the first failure.
    async fn serve(
        &self,
        conn: &mut PgConnection,
        stop: &CancellationToken,
    ) -> Result<(), RelayError> {
        let partitions = partition_counts(&self.producer, &self.topics).await?;
        let mut published = last_published(&self.kafka, &self.topics, &partitions).await?;
        loop {
            let stopping = stop.is_cancelled();
            while self.round(conn, &partitions, &mut published).await? == self.batch as usize {}
            if stopping {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One round: reads up to a batch of rows in `seq` order, deletes those already on
    /// Kafka, publishes the others and deletes the acknowledged ones. Returns how many rows
    /// it read.
    pub async fn round(
        &self,
        conn: &mut PgConnection,
        partitions: &HashMap<&'static str, i32>,
        published: &mut Published,
    ) -> Result<usize, RelayError> {
        let (rows, refused) = read_outbox(conn, self.batch).await?;
        let mut done: Vec<i64> = Vec::with_capacity(rows.len());
        let mut counts: HashMap<&'static str, (usize, usize)> = HashMap::new();
        let mut sends: Vec<(i64, &'static str, i32, DeliveryFuture)> = Vec::new();
        let mut failure = None;
        for row in &rows {
            let Some((outbox, topic)) = self.topics.resolve(&row.topic) else {
                // The table's CHECK allows no other name; a row that has one is kept.
                tracing::error!(seq = row.seq, topic = %row.topic, "Outbox row for an unknown topic; left in place.");
                continue;
            };
            let partition = partition_of(&row.key, partitions[outbox]);
            // A row Kafka refused before is never taken for published (module docs).
            if !refused.contains(&row.seq)
                && published
                    .get(&(outbox, partition))
                    .is_some_and(|&last| row.seq <= last)
            {
                done.push(row.seq);
                counts.entry(outbox).or_default().1 += 1;
                continue;
            }
            match send(&self.producer, topic, partition, row).await {
                Ok(delivery) => sends.push((row.seq, outbox, partition, delivery)),
                Err(error) => {
                    failure = Some(RelayError::Kafka(error));
                    break;
                }
            }
        }
        // The acknowledgements, in order. A partition with a refused row stops counting
        // as published past it, so that row is sent again (see the module docs).
        let mut broken: HashSet<(&'static str, i32)> = HashSet::new();
        let mut failed: Vec<i64> = Vec::new();
        for (seq, outbox, partition, delivery) in sends {
            match delivery.await {
                Ok(Ok(_)) => {
                    done.push(seq);
                    counts.entry(outbox).or_default().0 += 1;
                    if !broken.contains(&(outbox, partition)) {
                        published.insert((outbox, partition), seq);
                    }
                }
                Ok(Err((error, _))) => {
                    OutboxRefused {
                        seq,
                        topic: outbox,
                        partition,
                        error: &error,
                    }
                    .emit();
                    broken.insert((outbox, partition));
                    failed.push(seq);
                    failure.get_or_insert(RelayError::Kafka(error));
                }
                // The producer went away: only at shutdown.
                Err(_) => {
                    broken.insert((outbox, partition));
                    // It may or may not be on Kafka: marking it risks a duplicate only.
                    failed.push(seq);
                    failure.get_or_insert(RelayError::Kafka(KafkaError::Canceled));
                }
            }
        }
        // The mark first: it is what keeps a refused row from the restart rule.
        mark_refused(conn, &failed).await?;
        delete_outbox(conn, &done).await?;
        for (outbox, (sent, already)) in counts {
            OutboxPublished {
                topic: outbox,
                published: sent,
                already,
            }
            .emit();
        }
        failure.map_or(Ok(rows.len()), Err)
    }
}

/// Opens a system-scope transaction on the relay's own connection.
async fn system(
    conn: &mut PgConnection,
) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
    conn.begin_with(format!("BEGIN; SET LOCAL ROLE {SYSTEM_ROLE}"))
        .await
}

/// The oldest `limit` rows of the outbox, and the `seq`s among them that Kafka refused
/// before (`refused_at` set).
pub async fn read_outbox(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<(Vec<OutboxRow>, HashSet<i64>), sqlx::Error> {
    let mut tx = system(conn).await?;
    let rows: Vec<(i64, String, String, String, String, bool)> = sqlx::query_as(
        "SELECT seq, tenant_id, topic, key, payload::text, refused_at IS NOT NULL \
         FROM geo_outbox ORDER BY seq LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let refused = rows.iter().filter(|row| row.5).map(|row| row.0).collect();
    let rows = rows
        .into_iter()
        .map(|(seq, tenant_id, topic, key, payload, _)| OutboxRow {
            seq,
            tenant_id,
            topic,
            key,
            payload,
        })
        .collect();
    Ok((rows, refused))
}

/// Marks the rows `seqs` as refused by Kafka: the restart rule leaves them alone.
async fn mark_refused(conn: &mut PgConnection, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut tx = system(conn).await?;
    sqlx::query("UPDATE geo_outbox SET refused_at = now() WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Deletes the rows `seqs`.
async fn delete_outbox(conn: &mut PgConnection, seqs: &[i64]) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut tx = system(conn).await?;
    sqlx::query("DELETE FROM geo_outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Queues `row` for `topic` partition `partition`, waiting while the producer's local
/// queue is full. Public so that a test can publish a row the way the relay does and then
/// "crash" before the delete.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    row: &OutboxRow,
) -> Result<DeliveryFuture, KafkaError> {
    let seq = row.seq.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: SEQ_HEADER,
            value: Some(&seq),
        })
        .insert(Header {
            key: TENANT,
            value: Some(&row.tenant_id),
        })
        .insert(Header {
            key: RECORD_TYPE,
            value: Some(record_type(&row.topic)),
        })
        .insert(Header {
            key: CONTENT_TYPE,
            value: Some(CONTENT_TYPE_JSON),
        });
    let mut record = FutureRecord::to(topic)
        .partition(partition)
        .key(&row.key)
        .payload(&row.payload)
        .headers(headers);
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(QUEUE_FULL_WAIT).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// The partitions of each outbox topic, from the broker's metadata.
pub async fn partition_counts(
    producer: &FutureProducer,
    topics: &RelayTopics,
) -> Result<HashMap<&'static str, i32>, RelayError> {
    let producer = producer.clone();
    let topics = topics.clone();
    tokio::task::spawn_blocking(move || {
        let mut counts = HashMap::new();
        for (outbox, topic) in topics.all() {
            let metadata = producer
                .client()
                .fetch_metadata(Some(topic), KAFKA_TIMEOUT)?;
            let n = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic && t.error().is_none())
                .map_or(0, |t| t.partitions().len());
            if n == 0 {
                return Err(RelayError::NoTopic(topic.to_owned()));
            }
            counts.insert(outbox, n as i32);
        }
        Ok(counts)
    })
    .await?
}

/// The `seq` of the last record of every partition of both topics (partitions that are
/// empty, or whose last record has no `seq` header, are left out).
pub async fn last_published(
    kafka: &KafkaSettings,
    topics: &RelayTopics,
    partitions: &HashMap<&'static str, i32>,
) -> Result<Published, RelayError> {
    let kafka = kafka.clone();
    let topics = topics.clone();
    let partitions = partitions.clone();
    tokio::task::spawn_blocking(move || read_tails(&kafka, &topics, &partitions)).await?
}

fn read_tails(
    kafka: &KafkaSettings,
    topics: &RelayTopics,
    partitions: &HashMap<&'static str, i32>,
) -> Result<Published, RelayError> {
    // Assigned, never subscribed, never committing: the group id is only a label here.
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "locus-tracker-relay-tail")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut wanted: HashMap<(String, i32), (&'static str, i64)> = HashMap::new();
    let mut list = TopicPartitionList::new();
    for (outbox, topic) in topics.all() {
        for partition in 0..partitions[outbox] {
            let (low, high) = consumer.fetch_watermarks(topic, partition, KAFKA_TIMEOUT)?;
            if high > low {
                list.add_partition_offset(topic, partition, Offset::Offset(high - 1))?;
                wanted.insert((topic.to_owned(), partition), (outbox, high - 1));
            }
        }
    }
    let mut published = Published::new();
    if wanted.is_empty() {
        return Ok(published);
    }
    consumer.assign(&list)?;
    let deadline = std::time::Instant::now() + KAFKA_TIMEOUT;
    let mut missing: HashSet<(String, i32)> = wanted.keys().cloned().collect();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            let (topic, partition) = missing.into_iter().next().expect("not empty");
            return Err(RelayError::Tail { topic, partition });
        }
        let Some(message) = consumer.poll(left.min(Duration::from_millis(200))) else {
            continue;
        };
        let message = message?;
        let at = (message.topic().to_owned(), message.partition());
        let Some(&(outbox, last)) = wanted.get(&at) else {
            continue;
        };
        if message.offset() < last {
            continue;
        }
        missing.remove(&at);
        let seq = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == SEQ_HEADER)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<i64>().ok())
        });
        if let Some(seq) = seq {
            let slot = published.entry((outbox, at.1)).or_insert(seq);
            *slot = (*slot).max(seq);
        }
    }
    Ok(published)
}
