//! The forwarder role: moves buffered entries from the Redis streams to Kafka.
//!
//! One task per shard reads its stream through the consumer group `forwarder`, produces
//! one Kafka record per fix (and one per session event), waits until Kafka confirmed every
//! record of an entry, and only then acknowledges and deletes the entry. A crash anywhere
//! before the acknowledgement leaves the entry pending, so it is produced again: delivery
//! is at-least-once, and the stable `record_id` lets consumers drop the copies.
//!
//! One forwarder at a time owns a shard, through a lease in Redis that it renews
//! ([`lease`]). A forwarder that takes a shard over first claims every entry still pending
//! with the shard's previous owner (XAUTOCLAIM) and forwards those, oldest first, before
//! reading new ones ([`reader`]). A graceful stop releases the leases at once; a crashed
//! owner's lapse after `LOCUS_FORWARDER_LEASE_MS`.
//!
//! The lease fences the work: the owner checks it right before each read and each
//! acknowledgement, against a local deadline that a hung renewal cannot hold up, and Redis
//! refuses a read or claim that reaches it after the lease moved on. Every Redis call of
//! the forwarder has a response timeout under a third of the lease, so no call can outlast
//! the lease unseen. Every two leases, the owner also claims entries that have sat idle in
//! any consumer's pending list for two leases, and forwards them before new ones.
//!
//! This file is the loop; the parts are the lease, the shard reader, the record producer
//! ([`producer`]) and the session progress tally ([`progress`]).

pub mod health;
pub mod lease;
pub mod producer;
pub mod progress;
pub mod reader;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use locus_session::SessionStore;
use locus_wire::buffer::BufferEntry;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use self::health::Health;
use self::lease::{LeaseGuard, Leases};
use self::producer::RecordProducer;
use self::progress::Tally;
use self::reader::{Body, Entry, Read, ReadFrom, ShardReader};
use crate::buffer::Keys;
use crate::config::Config;
use crate::events;

pub use self::reader::GROUP;

/// Longest wait for new entries: also how quickly a shard task notices shutdown. Shorter
/// when the response timeout is (a wait must end well within it).
const MAX_BLOCK: Duration = Duration::from_millis(500);
/// Wait after a failure before reading the pending entries again.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often each shard task reports its stream's depth.
const DEPTH_INTERVAL: Duration = Duration::from_secs(1);
/// Bound of the producer flush at the very end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a forwarder stopped working a shard.
enum ShardEnd {
    /// Its lease lapsed or was taken: look for a shard again.
    LeaseLost,
    /// Shutdown, after draining.
    Stopped,
    /// The producer failed for good (why): the process must restart.
    Failed(String),
}

/// The forwarder's producer failed for good; the process should exit and be restarted.
#[derive(Debug, thiserror::Error)]
#[error("the forwarder's Kafka producer failed for good: {0}")]
pub struct Fatal(String);

/// The forwarder role.
#[derive(Clone)]
pub struct Forwarder {
    redis: redis::Client,
    keys: Keys,
    consumer: String,
    read_count: usize,
    leases: Leases,
    /// The lease's length.
    lease: Duration,
    /// Deliveries of an undecodable entry before it is dead-lettered.
    undecodable_attempts: u64,
    /// Deliveries of an entry Kafka refuses for good before it is dead-lettered.
    rejected_attempts: u64,
    producer: RecordProducer,
    store: SessionStore,
    /// Why the producer failed for good, set by the first shard that saw it.
    failure: Arc<OnceLock<String>>,
    /// Cancelled when `failure` is set: every shard stops.
    failed: CancellationToken,
    /// Progress per shard, for readiness.
    health: Health,
}

impl Forwarder {
    /// A forwarder configured by `config`.
    pub fn new(
        config: &Config,
        redis: redis::Client,
        producer: FutureProducer,
        store: SessionStore,
    ) -> Self {
        let settings = &config.forwarder;
        Self {
            redis,
            keys: Keys::new(&config.redis.prefix, config.redis.shards),
            consumer: settings.consumer.clone(),
            read_count: settings.read_count,
            leases: Leases::new(
                &settings.consumer,
                Duration::from_millis(settings.lease_ms),
                settings.max_shards,
            ),
            lease: Duration::from_millis(settings.lease_ms),
            undecodable_attempts: settings.undecodable_attempts.max(1),
            rejected_attempts: settings.rejected_attempts.max(1),
            producer: RecordProducer::new(producer, config.topic_names()),
            store,
            failure: Arc::default(),
            failed: CancellationToken::new(),
            health: Health::new(
                config.redis.shards.max(1),
                Duration::from_secs(settings.stall_secs),
            ),
        }
    }

    /// The progress of this forwarder's shards, for readiness.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Runs every shard until `shutdown`, then drains what is left in the streams for at
    /// most `grace`, and flushes the producer. Returns early with an error when the
    /// producer failed for good: the process should then exit, so that its supervisor
    /// starts it again with a new producer.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> Result<(), Fatal> {
        let shards: Vec<_> = (0..self.keys.shards())
            .map(|shard| {
                let this = self.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move { this.run_shard(shard, stop, grace).await })
            })
            .collect();
        let aborts: Vec<_> = shards.iter().map(|t| t.abort_handle()).collect();
        tokio::select! {
            done = join_all(shards) => {
                for task in done {
                    // A panicked shard task has already dropped its lease guard; its
                    // entries stay pending for the next owner, so logging is all that is
                    // left to do.
                    if let Err(e) = task {
                        tracing::error!(error = %e, "A forwarder shard task panicked.");
                    }
                }
            }
            () = self.failed.cancelled() => {
                // Other shards may wait on deliveries the dead producer will never make.
                // Their entries stay pending in Redis for the next owner, so stopping them
                // anywhere loses nothing; their leases lapse by themselves.
                for abort in aborts {
                    abort.abort();
                }
            }
        }
        if let Some(reason) = self.failure.get() {
            return Err(Fatal(reason.clone()));
        }
        self.producer.flush(FLUSH_TIMEOUT).await;
        tracing::info!("Forwarder stopped.");
        Ok(())
    }

    /// Takes, works and gives back shard `shard` until shutdown.
    async fn run_shard(&self, shard: u32, shutdown: CancellationToken, grace: Duration) {
        let reader = ShardReader::new(self.keys.stream(shard), &self.consumer, self.read_count);
        let lease_key = self.keys.lease(shard);
        let Some((mut conn, keeper_conn)) = self.connect(&reader, shard, &shutdown).await else {
            return;
        };
        loop {
            let Some(lease) = self
                .leases
                .acquire(&mut conn, &keeper_conn, shard, &lease_key, &shutdown)
                .await
            else {
                return;
            };
            tracing::info!(shard, "Forwarder took the shard.");
            // The depth is reported beside the work, on the keeper's connection: a read can
            // wait on Kafka for as long as the broker is away, and that is exactly when the
            // buffer's depth matters.
            let depth = tokio::spawn(report_depth(
                keeper_conn.clone(),
                reader.stream().to_owned(),
                shard,
            ));
            self.health.progressed(shard);
            let end = self
                .work_shard(&mut conn, shard, &reader, &lease, &shutdown, grace)
                .await;
            self.health.released(shard);
            // Only the owner reports a shard's depth; aborting at the sleep or mid-XLEN is
            // harmless.
            depth.abort();
            match end {
                ShardEnd::LeaseLost => {
                    // Dropping the guard stops the renewals and frees the slot for another
                    // shard; the key itself is already someone else's or lapsed.
                    drop(lease);
                    tracing::warn!(
                        shard,
                        "Forwarder lost the shard's lease; another forwarder takes over."
                    );
                }
                ShardEnd::Stopped => {
                    lease.release(&mut conn, shard).await;
                    return;
                }
                ShardEnd::Failed(reason) => {
                    // Released, so another replica can take over now rather than after
                    // the lease: this one produces nothing more.
                    lease.release(&mut conn, shard).await;
                    let _ = self.failure.set(reason);
                    self.failed.cancel();
                    return;
                }
            }
        }
    }

    /// The response timeout of the forwarder's Redis connections: a quarter of the lease,
    /// so that a call that hangs fails while the lease can still be renewed.
    fn response_timeout(&self) -> Duration {
        response_timeout(self.lease)
    }

    /// How long a wait for new entries blocks: well within the response timeout.
    fn block(&self) -> Duration {
        block(self.lease)
    }

    /// Two connections per shard, retried until Redis answers or shutdown: one for reads,
    /// as a blocking XREAD holds the connection it runs on, and one for the lease keeper,
    /// so a renewal never waits behind a blocked read.
    async fn connect(
        &self,
        reader: &ShardReader,
        shard: u32,
        shutdown: &CancellationToken,
    ) -> Option<(ConnectionManager, ConnectionManager)> {
        loop {
            // redis-rs's default reconnect backs off from 1 s to 60 s, six times, and every
            // command waits on it: after an outage a shard would sit idle for minutes. One
            // quick retry, then the command fails and this task's own loop takes over.
            let settings = ConnectionManagerConfig::new()
                .set_factor(1)
                .set_number_of_retries(1)
                .set_response_timeout(self.response_timeout())
                .set_connection_timeout(self.response_timeout());
            let both = async {
                let mut conn =
                    ConnectionManager::new_with_config(self.redis.clone(), settings.clone())
                        .await?;
                reader.ensure_group(&mut conn).await?;
                let keeper =
                    ConnectionManager::new_with_config(self.redis.clone(), settings).await?;
                Ok::<_, redis::RedisError>((conn, keeper))
            };
            match both.await {
                Ok(both) => return Some(both),
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Forwarder cannot reach Redis; retrying.");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
    }

    /// Forwards a shard this forwarder holds the lease of, until the lease is lost or
    /// shutdown has drained the shard.
    async fn work_shard(
        &self,
        conn: &mut ConnectionManager,
        shard: u32,
        reader: &ShardReader,
        lease: &LeaseGuard,
        shutdown: &CancellationToken,
        grace: Duration,
    ) -> ShardEnd {
        let fence = lease.fence();
        // Entries the previous owner read but did not acknowledge come first, in stream
        // order: they are older than anything not yet read.
        if let Err(e) = reader.claim(conn, fence, Duration::ZERO).await {
            tracing::warn!(shard, error = %e, "Could not claim the previous owner's entries.");
            return ShardEnd::LeaseLost;
        }
        let mut from = first_pending();
        let mut drain_deadline = None;
        let mut next_sweep = Instant::now() + self.sweep_interval();
        loop {
            // Right before each read: once the deadline passed, a stalled owner reads
            // nothing more, whatever its renewals are doing.
            if !lease.holds() {
                return ShardEnd::LeaseLost;
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
            if Instant::now() >= next_sweep {
                next_sweep = Instant::now() + self.sweep_interval();
                // Entries idle that long are in no one's hands: a consumer that read them
                // and then lost the shard in a way the fence did not see (an older version,
                // an operator's XREADGROUP). Taking them now puts them out of order, which
                // is still better than never.
                match reader.claim(conn, fence, self.sweep_interval()).await {
                    Err(e) if reader::not_owner(&e) => return ShardEnd::LeaseLost,
                    Err(e) => {
                        tracing::warn!(shard, error = %e, "Could not claim idle pending entries.");
                    }
                    Ok(_) => {}
                }
                // Our own pending entries are read again too: that is how entries held
                // back (undecodable ones) get their next attempt.
                from = first_pending();
            }
            let entries = match reader.read(conn, fence, &from).await {
                Ok(Read::Entries(entries)) => entries,
                Ok(Read::Empty { last_delivered }) => {
                    // Nothing waits that this forwarder can take: it is not stuck.
                    self.health.progressed(shard);
                    match from {
                        ReadFrom::Pending { .. } => from = ReadFrom::New,
                        ReadFrom::New if draining => return ShardEnd::Stopped,
                        ReadFrom::New => {
                            let waited = reader
                                .wait_for_new(conn, &last_delivered, self.block())
                                .await;
                            if let Err(e) = waited {
                                tracing::warn!(shard, error = %e, "Forwarder wait on Redis failed; retrying.");
                                tokio::time::sleep(RETRY_DELAY).await;
                            }
                        }
                    }
                    continue;
                }
                Err(e) if reader::not_owner(&e) => return ShardEnd::LeaseLost,
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Forwarder read from Redis failed; retrying.");
                    // The read may have run with its answer lost (a response timeout):
                    // its entries are then pending with us, unseen, so read those first.
                    from = first_pending();
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            if let ReadFrom::Pending { after } = &mut from
                && let Some(last) = entries.last()
            {
                after.clone_from(&last.id);
            }
            match self.forward(conn, reader, lease, entries).await {
                Ok(()) => self.health.progressed(shard),
                Err(ForwardError::LeaseLost) => return ShardEnd::LeaseLost,
                Err(ForwardError::Fatal(reason)) => {
                    events::ProducerFailed { error: &reason }.emit();
                    return ShardEnd::Failed(reason);
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "Forwarding stopped short; pending entries will be retried.");
                    from = first_pending();
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(RETRY_DELAY) => {}
                    }
                }
            }
        }
    }

    /// How often the owner of a shard claims entries idle in any pending list, and how
    /// long they must have been idle: two leases, so that an entry of a live owner that
    /// is merely slow is not taken from it.
    fn sweep_interval(&self) -> Duration {
        self.lease * 2
    }

    /// Produces the records of `entries` and acknowledges the entries Kafka confirmed, in
    /// stream order: after the first entry with a failed record nothing is acknowledged,
    /// so a retry cannot reorder a session. An undecodable entry is held (left pending)
    /// until its attempts are used up; the entries after it go on.
    async fn forward(
        &self,
        conn: &mut ConnectionManager,
        reader: &ShardReader,
        lease: &LeaseGuard,
        entries: Vec<Entry>,
    ) -> Result<(), ForwardError> {
        let started = Instant::now();
        // Everything is queued before anything is awaited, so one read costs one round
        // trip to the broker, not one per entry.
        let mut sent: Vec<(String, Sent, Option<BufferEntry>)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match entry.body {
                Body::Decoded(decoded) => match self.producer.produce(&decoded).await {
                    Ok(futures) => sent.push((entry.id, Sent::Queued(futures), Some(decoded))),
                    // Refused before it was queued (too large, say): it fails like a
                    // refused delivery, and nothing after it is queued, to keep the order.
                    Err(e) => {
                        sent.push((entry.id, Sent::Refused(e), Some(decoded)));
                        break;
                    }
                },
                Body::Undecodable { raw, error } => {
                    // Left pending, not acknowledged: in a rolling upgrade it may be a
                    // newer writer's entry that a newer forwarder can read. It cannot be
                    // told apart from a broken one, so after enough attempts it goes to
                    // the dead-letter topic rather than holding the buffer for good.
                    let attempts = reader
                        .deliveries(conn, &entry.id)
                        .await
                        .map_err(ForwardError::Redis)?;
                    if attempts < self.undecodable_attempts {
                        events::EntryUndecodable {
                            stream: reader.stream(),
                            id: &entry.id,
                            attempts,
                            error: &error,
                        }
                        .emit();
                        continue;
                    }
                    events::EntryDeadLettered { error: &error }.emit();
                    let detail = format!("{error} (dead-lettered after {attempts} attempts)");
                    let delivery = self
                        .producer
                        .dead_letter(reader.stream(), &entry.id, &raw, &detail)
                        .await?;
                    sent.push((entry.id, Sent::Queued(vec![delivery]), None));
                }
                Body::Gone => sent.push((entry.id, Sent::Queued(Vec::new()), None)),
            }
        }

        let mut acked = Vec::with_capacity(sent.len());
        let mut tally = Tally::default();
        let mut failure = None;
        for (id, sent, decoded) in sent {
            let refused = match sent {
                Sent::Queued(futures) => {
                    join_all(futures).await.into_iter().find_map(|r| match r {
                        Ok(Ok(_)) => None,
                        Ok(Err((e, _))) => Some(ForwardError::Kafka(e)),
                        Err(_) => Some(ForwardError::Canceled),
                    })
                }
                Sent::Refused(e) => Some(e),
            };
            if let Some(e) = refused {
                events::ProduceFailed { error: &e }.emit();
                if let Some(fatal) = self.producer.fatal_error() {
                    return Err(ForwardError::Fatal(fatal));
                }
                if let (true, Some(entry)) = (e.is_permanent_for_entry(), &decoded) {
                    // Kafka will never take it: after its attempts it goes aside, with
                    // why, and the entries after it go on. Until then it is retried, as a
                    // broker can be reconfigured (a larger max.message.bytes).
                    let attempts = reader
                        .deliveries(conn, &id)
                        .await
                        .map_err(ForwardError::Redis)?;
                    if attempts >= self.rejected_attempts {
                        if !lease.holds() {
                            return Err(ForwardError::LeaseLost);
                        }
                        let detail = format!("{e} (after {attempts} attempts)");
                        reader
                            .dead_letter(conn, &id, entry, "rejected", &detail)
                            .await
                            .map_err(ForwardError::Redis)?;
                        events::EntryRejected {
                            stream: reader.stream(),
                            id: &id,
                            error: &detail,
                        }
                        .emit();
                        continue;
                    }
                }
                failure = Some(e);
                break;
            }
            match &decoded {
                Some(BufferEntry::Fixes(batch)) => {
                    events::RecordsProduced {
                        topic: "locations",
                        count: batch.fixes.len(),
                    }
                    .emit();
                    let age = chrono::Utc::now() - batch.received_at;
                    events::IngestToKafka {
                        elapsed: age.to_std().unwrap_or_default(),
                    }
                    .emit();
                    tally.add(batch);
                }
                Some(BufferEntry::SessionEvent(_)) => events::RecordsProduced {
                    topic: "session_events",
                    count: 1,
                }
                .emit(),
                None => {}
            }
            acked.push(id);
        }

        if !acked.is_empty() {
            // Right before the acknowledgement: an owner past its deadline leaves the
            // entries pending for the new owner, who produces them again (copies with the
            // same record ids) in their place in the stream.
            if !lease.holds() {
                return Err(ForwardError::LeaseLost);
            }
            reader
                .ack(conn, &acked)
                .await
                .map_err(ForwardError::Redis)?;
            events::EntriesAcked { count: acked.len() }.emit();
            events::ProduceDuration {
                elapsed: started.elapsed(),
            }
            .emit();
        }
        if !tally.is_empty() {
            // Counts only: a failed write makes them lag, the fixes are safe in Kafka.
            if let Err(e) = self.store.record_progress(&tally.into_progress()).await {
                events::ProgressWriteFailed { error: &e }.emit();
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Sets the depth gauge of `shard` from its stream's XLEN every [`DEPTH_INTERVAL`], until
/// aborted.
async fn report_depth(mut conn: ConnectionManager, stream: String, shard: u32) {
    let mut tick = tokio::time::interval(DEPTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Only a gauge: a failed XLEN shows as a stale depth, not as an error.
        let depth: redis::RedisResult<u64> =
            redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await;
        if let Ok(entries) = depth {
            events::BufferDepth { shard, entries }.emit();
        }
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
    /// The shard's lease is no longer surely ours: nothing more may be acknowledged.
    #[error("the shard lease was lost")]
    LeaseLost,
    /// The idempotent producer hit a fatal error: it cannot produce again, and only a new
    /// producer (a restart) can.
    #[error("fatal producer error: {0}")]
    Fatal(String),
}

impl ForwardError {
    /// Whether Kafka refuses this entry's record for good, whatever the retries: a record
    /// too large or malformed. Everything else (the broker away, a leader moving) passes.
    fn is_permanent_for_entry(&self) -> bool {
        match self {
            Self::Encoding(_) => true,
            Self::Kafka(KafkaError::MessageProduction(code)) => matches!(
                code,
                RDKafkaErrorCode::MessageSizeTooLarge
                    | RDKafkaErrorCode::InvalidMessageSize
                    | RDKafkaErrorCode::InvalidMessage
                    | RDKafkaErrorCode::InvalidRecord
            ),
            _ => false,
        }
    }
}

/// How an entry's records went to the producer.
enum Sent {
    /// Queued: the delivery futures of its records.
    Queued(Vec<DeliveryFuture>),
    /// Refused before it was queued.
    Refused(ForwardError),
}

/// The response timeout of Redis calls under a lease of `lease`: a quarter of it, below the
/// third between two renewals.
fn response_timeout(lease: Duration) -> Duration {
    lease / 4
}

/// How long a wait for new entries blocks under a lease of `lease`: at most half the
/// response timeout, so the wait's own answer is never taken for a hung call.
fn block(lease: Duration) -> Duration {
    MAX_BLOCK.min(response_timeout(lease) / 2)
}

/// Where a pass over this consumer's pending entries starts.
fn first_pending() -> ReadFrom {
    ReadFrom::Pending {
        after: "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_records_kafka_can_never_take_are_permanent_for_their_entry() {
        let produce = |code| ForwardError::Kafka(KafkaError::MessageProduction(code));
        assert!(produce(RDKafkaErrorCode::MessageSizeTooLarge).is_permanent_for_entry());
        assert!(produce(RDKafkaErrorCode::InvalidRecord).is_permanent_for_entry());
        // The broker away, a leader moving, the local queue full: retried, never set aside.
        assert!(!produce(RDKafkaErrorCode::BrokerTransportFailure).is_permanent_for_entry());
        assert!(!produce(RDKafkaErrorCode::NotLeaderForPartition).is_permanent_for_entry());
        assert!(!produce(RDKafkaErrorCode::QueueFull).is_permanent_for_entry());
        assert!(!ForwardError::Canceled.is_permanent_for_entry());
        assert!(!ForwardError::Fatal("x".into()).is_permanent_for_entry());
    }

    #[test]
    fn calls_time_out_within_a_renewal_period_and_waits_within_the_timeout() {
        for ms in [300, 1500, 10_000, 60_000] {
            let lease = Duration::from_millis(ms);
            assert!(response_timeout(lease) < lease / 3, "{ms}");
            assert!(block(lease) < response_timeout(lease), "{ms}");
            assert!(block(lease) <= MAX_BLOCK, "{ms}");
        }
    }
}
