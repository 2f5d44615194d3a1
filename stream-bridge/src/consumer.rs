//! The Kafka side of the bridge: a polling thread that reads records and routes each to its
//! lane ([`lane`]), never waiting for a delivery, and the rules that make that at least
//! once. The order of operations is the guarantee, so it is spelled out here.
//!
//! - The polling thread only reads and routes, so it polls the consumer every 100 ms or
//!   faster whatever the webhooks do: `max.poll.interval.ms` is never exceeded, and a
//!   slow or failing tenant holds back its own lane only.
//! - Offsets are stored by hand (`enable.auto.offset.store=false`) and committed by
//!   librdkafka's auto-commit, as in rust-rdkafka's `examples/at_least_once.rs`. Records
//!   of one partition finish out of order (each tenant's lane at its own pace), so each
//!   partition stores the position below its oldest unfinished record
//!   ([`offsets::Watermarks`]): a stored offset never passes a record that is not done.
//! - Memory is bounded per lane: when a lane holds `lane_capacity` records, the partition
//!   its latest record came from is paused (no longer fetched) until the lane drains below
//!   half. Isolation holds until then: from that point the other tenants of that partition
//!   wait too, since Kafka order within a partition cannot be split further without
//!   buffering it.
//! - A revocation (served inside `poll`, on the polling thread) stops the lanes' work of
//!   the old generation, waits, bounded, for the deliveries in flight, commits what is
//!   stored, and forgets the rest ([`ownership`] has the steps): records queued for the
//!   revoked partitions are dropped unhandled and their new owner reads them again, and
//!   two replicas never deliver one session at the same time.
//! - On shutdown, reading stops, the lanes finish what they hold within the grace period,
//!   the offsets are committed synchronously, and only then is the consumer closed.

pub mod lag;
pub mod lane;
pub mod offsets;
pub mod ownership;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_service::settings::KafkaSettings;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use self::lane::{Consumed, Lane, LaneContext, LaneKey};
use self::ownership::Ownership;
use crate::dead_letter::DeadLetterWriter;
use crate::error::BridgeError;
use crate::events::{
    CommitFailed, ConsumeFailed, PartitionPaused, PartitionResumed, RecordsConsumed,
    RevocationWaitExpired,
};
use crate::record::ParsedRecord;
use crate::webhook::WebhookDeliverer;
use crate::webhook::table::SinkTable;

/// How long one poll waits for a record: also how often the thread looks at shutdown and at
/// paused partitions.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// The consumer's context: on a revocation, stops the old generation's work, waits for
/// what is in flight, and commits.
#[derive(Debug)]
pub struct BridgeContext {
    ownership: Arc<Ownership>,
    revoke_wait: Duration,
}

impl BridgeContext {
    /// A context waiting up to `revoke_wait` for deliveries in flight on a revocation.
    pub fn new(revoke_wait: Duration) -> Self {
        Self {
            ownership: Arc::default(),
            revoke_wait,
        }
    }
}

impl ClientContext for BridgeContext {}

impl ConsumerContext for BridgeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            tracing::info!(
                partitions = partitions.count(),
                "Partitions revoked; finishing deliveries in flight and committing."
            );
            // This runs on the polling thread, inside `poll`: blocking here blocks only
            // reading, which is what a revocation should do; the lanes run on the async
            // runtime and finish their attempts meanwhile.
            let old = self.ownership.revoke();
            let started = Instant::now();
            if !self.ownership.wait_idle(self.revoke_wait) {
                old.fenced.cancel();
                RevocationWaitExpired {
                    waited: started.elapsed(),
                }
                .emit();
                // Dropped attempts let go at their task's next turn.
                self.ownership.wait_idle(Duration::from_secs(1));
            }
            // The partitions are still ours until this returns: hand the next owner
            // exactly where we stopped instead of the last auto-commit.
            commit_sync(consumer, "revocation");
            self.ownership.forget();
        }
    }
}

/// The bridge's Kafka consumer, polled by one thread of its own.
pub type BridgeConsumer = BaseConsumer<BridgeContext>;

/// Commits the stored offsets synchronously; "nothing to commit" is not an error.
fn commit_sync<C: Consumer<BridgeContext>>(consumer: &C, during: &'static str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => CommitFailed {
            during,
            error: &error,
        }
        .emit(),
    }
}

/// The consumer settings (see the module docs for why offsets are stored by hand).
pub fn consumer_config(
    kafka: &KafkaSettings,
    group: &str,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    fetch_wait_max_ms: u64,
) -> ClientConfig {
    let mut c = kafka.client_config();
    c.set("group.id", group)
        .set("client.id", "locus-stream-bridge")
        // The classic protocol with an eager assignor: a rebalance revokes every
        // partition, which the generation counter relies on.
        .set("group.protocol", "classic")
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("session.timeout.ms", session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", heartbeat_interval_ms.to_string())
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_max_ms.to_string());
    c
}

/// Knobs of the loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// The location topic.
    pub topic: String,
    /// Most records per batch.
    pub batch_max_records: usize,
    /// Most bytes of record JSON per batch.
    pub batch_max_bytes: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// Most records one lane holds before the partitions feeding it are paused.
    pub lane_capacity: usize,
    /// How long shutdown waits for the lanes.
    pub shutdown_grace: Duration,
}

/// The poll, route, deliver, store loop.
pub struct ConsumerLoop {
    consumer: Arc<BridgeConsumer>,
    deliverer: WebhookDeliverer,
    dead_letter: DeadLetterWriter,
    sinks: SinkTable,
    settings: LoopSettings,
}

impl ConsumerLoop {
    /// A loop over `consumer` (not yet subscribed).
    pub fn new(
        consumer: Arc<BridgeConsumer>,
        deliverer: WebhookDeliverer,
        dead_letter: DeadLetterWriter,
        sinks: SinkTable,
        settings: LoopSettings,
    ) -> Self {
        Self {
            consumer,
            deliverer,
            dead_letter,
            sinks,
            settings,
        }
    }

    /// Runs until `shutdown` is cancelled, then lets the lanes finish what they hold
    /// (giving up on it after the grace period), commits synchronously and returns. The
    /// caller closes the consumer.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BridgeError> {
        self.consumer.subscribe(&[&self.settings.topic])?;
        tracing::info!(topic = %self.settings.topic, "Consuming.");

        // `abort` fires once the grace period after shutdown has passed: deliveries and
        // dead-letter writes still running then give up, and their records stay unstored.
        let abort = CancellationToken::new();
        let context = Arc::new(LaneContext {
            consumer: Arc::clone(&self.consumer),
            topic: self.settings.topic.clone(),
            ownership: Arc::clone(&self.consumer.context().ownership),
            deliverer: self.deliverer,
            dead_letter: self.dead_letter,
            batch_max_records: self.settings.batch_max_records.max(1),
            batch_max_bytes: self.settings.batch_max_bytes.max(1),
            batch_linger: self.settings.batch_linger,
            abort: abort.clone(),
            sinks: self.sinks.clone(),
        });
        let poller = Poller {
            consumer: Arc::clone(&self.consumer),
            sinks: self.sinks,
            settings: self.settings.clone(),
            context,
            runtime: Handle::current(),
            lanes: HashMap::new(),
            paused: HashMap::new(),
        };
        // A thread of its own: polling blocks, and so does a revocation waiting for the
        // lanes, which must not take an async worker from them.
        let lanes = tokio::task::spawn_blocking({
            let shutdown = shutdown.clone();
            move || poller.run(&shutdown)
        })
        .await?;

        // Reading has stopped; the lanes finish what they hold, within the grace period.
        let all = futures::future::join_all(lanes.into_values().map(Lane::close));
        tokio::pin!(all);
        tokio::select! {
            _ = &mut all => {}
            _ = tokio::time::sleep(self.settings.shutdown_grace) => {
                tracing::warn!(
                    "Shutdown grace period over; unfinished records will be delivered again after the restart."
                );
                abort.cancel();
                all.await;
            }
        }

        // Everything finished is stored; make it durable before the consumer leaves the
        // group. Blocking call, so off the async threads.
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || commit_sync(consumer.as_ref(), "shutdown")).await?;
        tracing::info!("Consumer stopped; offsets committed.");
        Ok(())
    }
}

/// The polling thread's state.
struct Poller {
    consumer: Arc<BridgeConsumer>,
    sinks: SinkTable,
    settings: LoopSettings,
    context: Arc<LaneContext>,
    runtime: Handle,
    lanes: HashMap<LaneKey, Lane>,
    /// Partitions paused, with the full lanes that asked for it.
    paused: HashMap<i32, Vec<LaneKey>>,
}

impl Poller {
    /// Polls and routes until `shutdown`; returns the lanes, still running.
    fn run(mut self, shutdown: &CancellationToken) -> HashMap<LaneKey, Lane> {
        let ownership = Arc::clone(&self.context.ownership);
        let consumer = Arc::clone(&self.consumer);
        let mut generation = ownership.current().number;
        while !shutdown.is_cancelled() {
            let polled = consumer.poll(POLL_TIMEOUT);
            // A revocation may have run inside that poll.
            let now = ownership.current().number;
            if now != generation {
                generation = now;
                self.resume_all();
            }
            match polled {
                None => {}
                Some(Err(error)) => {
                    ConsumeFailed { error: &error }.emit();
                    // Errors here are mostly transient (broker down); do not spin.
                    std::thread::sleep(POLL_TIMEOUT);
                }
                Some(Ok(message)) => {
                    let message = message.detach();
                    self.route(message, generation);
                }
            }
            self.resume_drained();
        }
        self.lanes
    }

    fn route(&mut self, message: rdkafka::message::OwnedMessage, generation: u64) {
        RecordsConsumed { count: 1 }.emit();
        let (partition, offset) = (message.partition(), message.offset());
        self.context.ownership.read(partition, offset);
        let parsed = ParsedRecord::parse(message.payload());
        // A tenant that has a lane keeps it whatever the table says now (see `lane`): its
        // records stay in one queue, in order, and the lane itself sees a removed sink.
        let key = match &parsed {
            Ok(p) => {
                let lane = LaneKey::Sink(p.record.tenant_id.clone());
                if self.lanes.contains_key(&lane) || self.sinks.contains(&p.record.tenant_id) {
                    lane
                } else {
                    LaneKey::DeadLetter
                }
            }
            Err(_) => LaneKey::DeadLetter,
        };
        let lane = match self.lanes.get(&key) {
            Some(lane) => lane,
            None => {
                let lane = Lane::spawn(&self.runtime, &key, Arc::clone(&self.context));
                self.lanes.entry(key.clone()).or_insert(lane)
            }
        };
        lane.push(Consumed {
            message,
            partition,
            offset,
            generation,
            parsed,
        });
        let queued = lane.queued();
        if queued >= self.settings.lane_capacity {
            let keys = self.paused.entry(partition).or_default();
            if keys.is_empty() {
                set_paused(&self.consumer, &self.settings.topic, partition, true);
                PartitionPaused {
                    partition,
                    lane: key.name(),
                    queued,
                }
                .emit();
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }

    /// Resumes every paused partition whose full lanes all drained below half.
    fn resume_drained(&mut self) {
        let low = (self.settings.lane_capacity / 2).max(1);
        let lanes = &self.lanes;
        let drained: Vec<i32> = self
            .paused
            .iter()
            .filter(|(_, keys)| {
                keys.iter()
                    .all(|k| lanes.get(k).is_none_or(|lane| lane.queued() < low))
            })
            .map(|(&partition, _)| partition)
            .collect();
        for partition in drained {
            self.paused.remove(&partition);
            set_paused(&self.consumer, &self.settings.topic, partition, false);
            PartitionResumed { partition }.emit();
        }
    }

    /// After a revocation: the lanes dropped the old generation's records, and whatever we
    /// own now starts unpaused.
    fn resume_all(&mut self) {
        for (partition, _) in std::mem::take(&mut self.paused) {
            set_paused(&self.consumer, &self.settings.topic, partition, false);
            PartitionResumed { partition }.emit();
        }
    }
}

/// Pauses or resumes fetching one partition. An error (the partition is no longer ours)
/// is logged and otherwise harmless.
fn set_paused(consumer: &BridgeConsumer, topic: &str, partition: i32, pause: bool) {
    let mut list = TopicPartitionList::new();
    list.add_partition(topic, partition);
    let result = if pause {
        consumer.pause(&list)
    } else {
        consumer.resume(&list)
    };
    if let Err(error) = result {
        ConsumeFailed { error: &error }.emit();
    }
}
