//! The Kafka loop: read a batch, hand every record to its fate (webhook, dead-letter topic,
//! or skipped), then store offsets. The order of those steps is the at-least-once
//! guarantee, so it is spelled out here.
//!
//! - Offsets are stored by hand (`enable.auto.offset.store=false`) and committed by
//!   librdkafka's auto-commit, as in rust-rdkafka's `examples/at_least_once.rs`.
//! - A batch is handled completely (every tenant group delivered, dead-lettered or
//!   skipped) before its offsets are stored and before the consumer is polled again. So a
//!   stored offset always covers records that are done, and per-session order holds across
//!   batches: batch N+1 is not read until batch N is finished.
//! - librdkafka serves rebalances only while the consumer is polled, which this loop does
//!   only between batches (or while filling one). A revocation therefore never interrupts a
//!   delivery; [`BridgeContext`] commits the stored offsets synchronously before the
//!   partitions go, and records read before the revocation are dropped unhandled: their
//!   partition's new owner reads them again.
//! - On shutdown the in-flight batch is finished (within the grace period), the offsets are
//!   committed synchronously, and only then is the consumer closed.

pub mod batch;
pub mod lag;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use locus_wire::TenantId;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use self::batch::{Consumed, group_by_tenant, offsets_to_store};
use crate::dead_letter::DeadLetterWriter;
use crate::error::BridgeError;
use crate::events::{
    CommitFailed, ConsumeFailed, DeadLetterReason, OffsetStoreFailed, RecordsConsumed,
};
use crate::record::ParsedRecord;
use crate::webhook::config::{Sink, Sinks};
use crate::webhook::{DeliveryResult, WebhookDeliverer};

/// The consumer's context: commits on revocation and counts rebalances.
#[derive(Debug, Default)]
pub struct BridgeContext {
    /// Bumped on every revocation. A record read under an older generation may belong to
    /// another consumer by now.
    generation: AtomicU64,
}

impl BridgeContext {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

impl ClientContext for BridgeContext {}

impl ConsumerContext for BridgeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(partitions) = rebalance {
            self.generation.fetch_add(1, Ordering::SeqCst);
            tracing::info!(
                partitions = partitions.count(),
                "Partitions revoked; committing stored offsets."
            );
            // This runs inside a poll, that is, between batches: every stored offset
            // belongs to a finished batch. Committing now, synchronously, hands the next
            // owner exactly where we stopped instead of the last auto-commit. It blocks
            // the polling thread briefly, which is what a revocation should do.
            commit_sync(consumer, "revocation");
        }
    }
}

/// The bridge's Kafka consumer.
pub type BridgeConsumer = StreamConsumer<BridgeContext>;

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
    brokers: &str,
    group: &str,
    session_timeout_ms: u64,
    heartbeat_interval_ms: u64,
    fetch_wait_max_ms: u64,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("group.id", group)
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
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// Most tenant deliveries in flight at once.
    pub max_concurrent_deliveries: usize,
    /// How long shutdown waits for the in-flight batch.
    pub shutdown_grace: Duration,
}

/// The consume, deliver, store loop.
pub struct ConsumerLoop {
    consumer: Arc<BridgeConsumer>,
    deliverer: WebhookDeliverer,
    dead_letter: DeadLetterWriter,
    sinks: Arc<Sinks>,
    settings: LoopSettings,
}

impl ConsumerLoop {
    /// A loop over `consumer` (not yet subscribed).
    pub fn new(
        consumer: Arc<BridgeConsumer>,
        deliverer: WebhookDeliverer,
        dead_letter: DeadLetterWriter,
        sinks: Arc<Sinks>,
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

    /// Runs until `shutdown` is cancelled, then finishes the in-flight batch (giving up on
    /// it after the grace period), commits synchronously and returns. The caller closes
    /// the consumer.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), BridgeError> {
        self.consumer.subscribe(&[&self.settings.topic])?;
        tracing::info!(topic = %self.settings.topic, "Consuming.");

        // `abort` fires once the grace period after shutdown has passed: deliveries and
        // dead-letter writes still running then give up, and their records stay unstored.
        let abort = CancellationToken::new();
        let watchdog = tokio::spawn({
            let shutdown = shutdown.clone();
            let abort = abort.clone();
            let grace = self.settings.shutdown_grace;
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
                abort.cancel();
            }
        });

        while let Some(batch) = self.next_batch(&shutdown).await {
            let complete = self.handle(batch, &abort).await;
            if !complete {
                // Only an abort leaves records unhandled, and aborts happen only after
                // shutdown: stop here, since a later batch would store offsets past them.
                tracing::warn!(
                    "Shutdown grace period over; unfinished records will be delivered again after the restart."
                );
                break;
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        // The loop is done, so the grace deadline has nothing left to abort.
        watchdog.abort();

        // Everything handled is stored; make it durable before the consumer leaves the
        // group. Blocking call, so off the async threads.
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || commit_sync(consumer.as_ref(), "shutdown")).await?;
        tracing::info!("Consumer stopped; offsets committed.");
        Ok(())
    }

    /// Reads the next batch: waits for a first record, then takes more until the batch is
    /// full, the linger time passed or shutdown began. `None` once shutdown began with
    /// nothing read.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Vec<Consumed>> {
        let first = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                received = self.consumer.recv() => match received {
                    Ok(message) => break self.consumed(&message),
                    Err(error) => {
                        ConsumeFailed { error: &error }.emit();
                        // Errors here are mostly transient (broker down); do not spin.
                        tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        }
                    }
                },
            }
        };
        let mut batch = vec![first];
        let linger = tokio::time::sleep(self.settings.batch_linger);
        tokio::pin!(linger);
        while batch.len() < self.settings.batch_max_records {
            tokio::select! {
                biased;
                // What was read is finished, not dropped: it is the in-flight batch.
                _ = shutdown.cancelled() => break,
                _ = &mut linger => break,
                received = self.consumer.recv() => match received {
                    Ok(message) => batch.push(self.consumed(&message)),
                    Err(error) => ConsumeFailed { error: &error }.emit(),
                },
            }
        }
        // Records read before a revocation are someone else's now (maybe ours again, in
        // which case they are read again from the committed offset).
        let generation = self.consumer.context().generation();
        batch.retain(|c| c.generation == generation);
        Some(batch)
    }

    fn consumed(&self, message: &BorrowedMessage<'_>) -> Consumed {
        let message: OwnedMessage = message.detach();
        Consumed {
            partition: message.partition(),
            offset: message.offset(),
            generation: self.consumer.context().generation(),
            parsed: ParsedRecord::parse(message.payload()),
            message,
        }
    }

    /// Handles every record of `batch`, then stores the offsets it may. Returns whether
    /// every record was handled (false only after an abort).
    async fn handle(&self, batch: Vec<Consumed>, abort: &CancellationToken) -> bool {
        if batch.is_empty() {
            return true;
        }
        RecordsConsumed { count: batch.len() }.emit();
        let mut handled = vec![false; batch.len()];
        let groups = group_by_tenant(&batch);

        // Unreadable values: straight to the dead-letter topic, each with its own reason.
        for &i in &groups.malformed {
            let detail = batch[i].parsed.as_ref().err().map_or("", String::as_str);
            handled[i] = self
                .dead_letter
                .write(
                    &[&batch[i].message],
                    DeadLetterReason::Malformed,
                    "none",
                    detail,
                    abort,
                )
                .await;
        }

        // One delivery per tenant, tenants concurrently; a tenant's records stay in one
        // delivery in Kafka order, so per-session order holds.
        let mut deliveries = Vec::new();
        for (tenant, indices) in &groups.tenants {
            match self.sinks.get(tenant) {
                // Not dropped: a sink table missing a tenant (a partial deploy, a typo) must
                // not consume and commit that tenant's backlog. The records wait in the
                // dead-letter topic, in order, to be replayed once the sink exists.
                None => {
                    let messages: Vec<_> = indices.iter().map(|&i| &batch[i].message).collect();
                    let detail = format!("tenant {tenant} has no sink configured");
                    let written = self
                        .dead_letter
                        .write(&messages, DeadLetterReason::NoSink, "none", &detail, abort)
                        .await;
                    for &i in indices {
                        handled[i] = written;
                    }
                }
                Some(sink) => deliveries.push((tenant, sink, indices)),
            }
        }
        // The futures are built first and only then driven: a closure returning an async
        // block that borrows from the batch trips the compiler's Send inference.
        let pending: Vec<_> = deliveries
            .into_iter()
            .map(|(tenant, sink, indices)| self.deliver_group(&batch, tenant, sink, indices, abort))
            .collect();
        let results: Vec<(&Vec<usize>, bool)> = futures::stream::iter(pending)
            .buffer_unordered(self.settings.max_concurrent_deliveries.max(1))
            .collect()
            .await;
        for (indices, done) in results {
            for &i in indices {
                handled[i] = done;
            }
        }

        for (partition, offset) in offsets_to_store(&batch, &handled) {
            // `store_offset` stores `offset + 1` (librdkafka's rd_kafka_offset_store): the
            // committed position is the next record to read, so a restart resumes right
            // after the last handled one.
            if let Err(error) = self
                .consumer
                .store_offset(&self.settings.topic, partition, offset)
            {
                OffsetStoreFailed {
                    partition,
                    offset,
                    error: &error,
                }
                .emit();
            }
        }
        handled.iter().all(|h| *h)
    }

    /// Delivers one tenant's records of `batch`, or dead-letters them. Returns them with
    /// whether they are handled.
    async fn deliver_group<'a>(
        &self,
        batch: &[Consumed],
        tenant: &TenantId,
        sink: &Sink,
        indices: &'a Vec<usize>,
        abort: &CancellationToken,
    ) -> (&'a Vec<usize>, bool) {
        let records: Vec<&ParsedRecord> = indices
            .iter()
            .filter_map(|&i| batch[i].parsed.as_ref().ok())
            .collect();
        let done = match self.deliverer.deliver(tenant, sink, &records, abort).await {
            DeliveryResult::Delivered => true,
            DeliveryResult::Abandoned => false,
            DeliveryResult::DeadLetter { reason, detail } => {
                let messages: Vec<&OwnedMessage> =
                    indices.iter().map(|&i| &batch[i].message).collect();
                self.dead_letter
                    .write(&messages, reason, "webhook", &detail, abort)
                    .await
            }
        };
        (indices, done)
    }
}
