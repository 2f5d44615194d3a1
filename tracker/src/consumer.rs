//! The Kafka side of the tracker: one thread polls the location topic, gathers a batch,
//! applies it in one PostgreSQL transaction ([`crate::store`]) and only then commits the
//! offsets to Kafka. The order of operations is the guarantee, so it is spelled out here.
//!
//! - PostgreSQL's offsets are the truth. A batch's transaction stores the next offset of
//!   each partition it read; records below it are skipped. So Kafka's committed offsets
//!   may lag (a crash between the two commits) and the records read again change nothing.
//! - On assignment, before fetching starts, the context reads the PostgreSQL offsets of
//!   the assigned partitions and commits them to the group, so the fetch begins where the
//!   last transaction ended (also when Kafka's offsets were lost or are ahead). If that
//!   fails, the fetch begins at the group's offsets and the skip rule does the rest.
//! - Everything runs on the one polling thread: a rebalance is served inside `poll`, so it
//!   never meets a transaction in flight. A batch gathered across a revocation is dropped
//!   unapplied: its partitions' new owner reads those records (or this replica again).
//! - A failed transaction is rolled back and the same batch tried again with a doubling
//!   pause (PostgreSQL away): no record is skipped, and nothing is read past the batch.
//! - On shutdown, polling stops, the transaction in flight finishes (or its retries stop),
//!   the offsets are committed synchronously, and the caller closes the consumer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use locus_service::settings::KafkaSettings;
use locus_wire::record::LocationRecord;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::{
    BatchFailed, CommitFailed, ConsumeFailed, PartitionsAssigned, RecordMalformed, SeedFailed,
};
use crate::store::{Consumed, GeoStore};

/// How long one poll waits for a record: also how often the thread looks at shutdown.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the offsets of PostgreSQL may take to read at assignment.
const SEED_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after a failed batch transaction.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// The consumer's context: seeds the group's offsets from PostgreSQL on assignment and
/// counts revocations.
pub struct TrackerContext {
    store: GeoStore,
    topic: String,
    runtime: Handle,
    /// Bumped on every revocation: a batch gathered across one is dropped.
    revocations: AtomicU64,
}

impl TrackerContext {
    /// A context reading offsets from `store` for `topic`, blocking on `runtime`.
    pub fn new(store: GeoStore, topic: impl Into<String>, runtime: Handle) -> Self {
        Self {
            store,
            topic: topic.into(),
            runtime,
            revocations: AtomicU64::new(0),
        }
    }

    /// Commits the PostgreSQL offsets of `assigned` to the group. Runs on the polling
    /// thread, inside `poll`, before librdkafka fetches the committed offsets.
    fn seed(&self, consumer: &BaseConsumer<Self>, assigned: &TopicPartitionList) {
        let partitions: Vec<i32> = assigned
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        if partitions.is_empty() {
            return;
        }
        let read = self.runtime.block_on(async {
            tokio::time::timeout(SEED_TIMEOUT, self.store.offsets(&partitions)).await
        });
        let offsets = match read {
            Ok(Ok(offsets)) => offsets,
            Ok(Err(error)) => return SeedFailed { error: &error }.emit(),
            Err(_) => {
                return SeedFailed {
                    error: &"PostgreSQL did not answer within 5 s",
                }
                .emit();
            }
        };
        let mut list = TopicPartitionList::new();
        for (&partition, &next) in &offsets {
            if let Err(error) =
                list.add_partition_offset(&self.topic, partition, Offset::Offset(next))
            {
                return SeedFailed { error: &error }.emit();
            }
        }
        if list.count() > 0
            && let Err(error) = consumer.commit(&list, CommitMode::Sync)
        {
            return SeedFailed { error: &error }.emit();
        }
        PartitionsAssigned {
            partitions: &partitions,
            seeded: offsets.len(),
        }
        .emit();
    }
}

impl ClientContext for TrackerContext {}

impl ConsumerContext for TrackerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => self.seed(consumer, assigned),
            Rebalance::Revoke(_) => {
                self.revocations.fetch_add(1, Ordering::SeqCst);
                // Every applied batch was committed after its transaction; this makes the
                // last of those commits durable before the next owner reads the offsets.
                commit_sync(consumer, "revocation");
            }
            Rebalance::Error(_) => {}
        }
    }
}

/// The tracker's Kafka consumer, polled by one thread of its own.
pub type TrackerConsumer = BaseConsumer<TrackerContext>;

/// The consumer settings: offsets stored and committed by hand, after the transaction.
pub fn consumer_config(
    kafka: &KafkaSettings,
    group: &str,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    fetch_wait_max_ms: u64,
) -> ClientConfig {
    let mut c = kafka.client_config();
    c.set("group.id", group)
        .set("client.id", "locus-tracker")
        // The classic protocol with an eager assignor: a revocation takes every partition,
        // which the dropped-batch rule above relies on.
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat_interval_ms.to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string());
    c
}

/// Commits the stored offsets synchronously; "nothing to commit" is not an error.
fn commit_sync<C: Consumer<TrackerContext>>(consumer: &C, during: &'static str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => CommitFailed {
            error: &error,
            during,
        }
        .emit(),
    }
}

/// Knobs of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// The location topic.
    pub topic: String,
    /// Most records per batch.
    pub batch_max_records: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// Longest pause between attempts of a failed batch.
    pub retry_max: Duration,
}

/// The poll, apply, commit loop.
pub struct ConsumerLoop {
    consumer: Arc<TrackerConsumer>,
    store: GeoStore,
    settings: LoopSettings,
    relay: Arc<Notify>,
}

impl ConsumerLoop {
    /// A loop over `consumer` (not yet subscribed) writing through `store`, waking the
    /// relay through `relay` after a batch that wrote outbox rows.
    pub fn new(
        consumer: Arc<TrackerConsumer>,
        store: GeoStore,
        settings: LoopSettings,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            consumer,
            store,
            settings,
            relay,
        }
    }

    /// Runs until `shutdown`, on a blocking thread of its own (polling blocks, and so do
    /// the rebalance callbacks that read PostgreSQL).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), KafkaError> {
        self.consumer.subscribe(&[&self.settings.topic])?;
        tracing::info!(topic = %self.settings.topic, "Consuming.");
        let runtime = Handle::current();
        tokio::task::spawn_blocking(move || self.poll_loop(&runtime, &shutdown))
            .await
            .map_err(|_| KafkaError::Canceled)?;
        Ok(())
    }

    fn poll_loop(self, runtime: &Handle, shutdown: &CancellationToken) {
        while !shutdown.is_cancelled() {
            let batch = self.gather(shutdown);
            if batch.is_empty() {
                continue;
            }
            if !runtime.block_on(self.apply(&batch, shutdown)) {
                // Shutdown while the batch kept failing: it was not applied, and its
                // records are read again after the restart.
                break;
            }
            self.commit(&batch);
        }
        commit_sync(self.consumer.as_ref(), "shutdown");
        tracing::info!("Consumer stopped; offsets committed.");
    }

    /// Polls until a first record arrives (or shutdown), then for more until the batch is
    /// full or has lingered. Empty when a revocation happened meanwhile.
    fn gather(&self, shutdown: &CancellationToken) -> Vec<Consumed> {
        let context = self.consumer.context();
        let generation = context.revocations.load(Ordering::SeqCst);
        let mut batch = Vec::new();
        let mut deadline = None;
        while batch.len() < self.settings.batch_max_records && !shutdown.is_cancelled() {
            let wait = match deadline {
                None => POLL_TIMEOUT,
                Some(at) => {
                    let left = at - Instant::now().min(at);
                    if left.is_zero() {
                        break;
                    }
                    left.min(POLL_TIMEOUT)
                }
            };
            match self.consumer.poll(wait) {
                None => {
                    if deadline.is_none() && batch.is_empty() {
                        // Nothing yet: go back to the caller, which looks at shutdown.
                        return batch;
                    }
                }
                Some(Err(error)) => {
                    ConsumeFailed { error: &error }.emit();
                    std::thread::sleep(POLL_TIMEOUT);
                }
                Some(Ok(message)) => {
                    if message.topic() != self.settings.topic {
                        continue;
                    }
                    let (partition, offset) = (message.partition(), message.offset());
                    let record = match serde_json::from_slice::<LocationRecord>(
                        message.payload().unwrap_or_default(),
                    ) {
                        Ok(record) => Some(record),
                        Err(error) => {
                            RecordMalformed {
                                partition,
                                offset,
                                error: &error,
                            }
                            .emit();
                            None
                        }
                    };
                    batch.push(Consumed {
                        partition,
                        offset,
                        record,
                    });
                    deadline.get_or_insert_with(|| Instant::now() + self.settings.batch_linger);
                }
            }
            if context.revocations.load(Ordering::SeqCst) != generation {
                return Vec::new();
            }
        }
        batch
    }

    /// Applies `batch`, trying again after a failure until it is applied (true) or
    /// shutdown is asked for while it keeps failing (false).
    async fn apply(&self, batch: &[Consumed], shutdown: &CancellationToken) -> bool {
        let mut pause = FIRST_RETRY;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.apply(batch).await {
                Ok(done) => {
                    if done.positions > 0 || done.transitions > 0 {
                        self.relay.notify_one();
                    }
                    return true;
                }
                Err(error) => {
                    BatchFailed {
                        error: &error,
                        attempt,
                        retry_in: pause,
                    }
                    .emit();
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(self.settings.retry_max);
                }
            }
        }
    }

    /// Stores the next offset of each partition of `batch` and commits asynchronously (a
    /// failed or lost commit only means records read again and skipped).
    fn commit(&self, batch: &[Consumed]) {
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for c in batch {
            let n = next.entry(c.partition).or_insert(0);
            *n = (*n).max(c.offset + 1);
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next {
            if list
                .add_partition_offset(&self.settings.topic, partition, Offset::Offset(offset))
                .is_err()
            {
                continue;
            }
        }
        if let Err(error) = self.consumer.store_offsets(&list) {
            // A partition revoked meanwhile: its next owner starts from PostgreSQL.
            return CommitFailed {
                error: &error,
                during: "batch",
            }
            .emit();
        }
        match self.consumer.commit_consumer_state(CommitMode::Async) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => CommitFailed {
                error: &error,
                during: "batch",
            }
            .emit(),
        }
    }
}
