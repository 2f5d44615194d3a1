//! Lanes: one in-memory queue and one task per tenant with a sink, plus one for the
//! dead-letter topic. The polling thread routes each record to its lane and never waits for
//! a delivery, so a tenant whose webhook fails or hangs holds back its own lane only.
//!
//! The sink table is live ([`crate::sink_store`]): a tenant's lane looks its sink up for
//! every attempt, not once. Once a tenant has a lane, all its records keep going through it,
//! also after its sink is removed (the lane then dead-letters them as `no_sink`, in order),
//! so one tenant's records never travel two lanes at once.
//!
//! A lane takes its records in Kafka order and handles one batch at a time (count and
//! linger as before), so per-session order holds: a session lives in one partition and
//! belongs to one tenant, so all of it goes through one lane, in order. A batch is finished
//! (its offsets may be stored) only once its webhook took it or its dead-letter copies are
//! confirmed; a failing webhook pauses the lane, which retries the same batch until the
//! webhook takes it, shutdown's grace is over, or the partitions are revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use locus_wire::TenantId;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::BridgeConsumer;
use super::ownership::Ownership;
use crate::dead_letter::DeadLetterWriter;
use crate::events::{DeadLetterReason, OffsetStoreFailed};
use crate::record::ParsedRecord;
use crate::webhook::table::SinkTable;
use crate::webhook::{DeliveryResult, LaneHealth, WebhookDeliverer};

/// One record read from the location topic.
#[derive(Debug)]
pub struct Consumed {
    /// The message as read (kept whole for the dead-letter topic).
    pub message: OwnedMessage,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The rebalance generation it was read under: a record read before a revocation
    /// belongs to whoever owns its partition now.
    pub generation: u64,
    /// The record, or why its value cannot be delivered.
    pub parsed: Result<ParsedRecord, String>,
}

/// Which lane a record goes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LaneKey {
    /// The webhook of a tenant with a sink.
    Sink(TenantId),
    /// The dead-letter topic: values that are not records, and tenants without a sink.
    DeadLetter,
}

impl LaneKey {
    /// The lane's name in logs.
    pub fn name(&self) -> &str {
        match self {
            LaneKey::Sink(tenant) => tenant.as_str(),
            LaneKey::DeadLetter => "dead-letter",
        }
    }
}

/// What every lane shares.
pub struct LaneContext {
    /// Offsets are stored through it.
    pub consumer: Arc<BridgeConsumer>,
    /// The location topic.
    pub topic: String,
    /// Generations, work in flight and watermarks.
    pub ownership: Arc<Ownership>,
    /// Webhook deliveries.
    pub deliverer: WebhookDeliverer,
    /// Dead-letter writes.
    pub dead_letter: DeadLetterWriter,
    /// Most records per batch.
    pub batch_max_records: usize,
    /// Most bytes of record JSON per batch (a record larger than this alone goes alone).
    pub batch_max_bytes: usize,
    /// How long a batch waits for more records after its first.
    pub batch_linger: Duration,
    /// Fires once shutdown's grace period is over: lanes give up what they hold.
    pub abort: CancellationToken,
    /// The live sink table.
    pub sinks: SinkTable,
}

/// The polling thread's handle of a lane.
pub struct Lane {
    sender: mpsc::UnboundedSender<Consumed>,
    queued: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Lane {
    /// Starts the lane of `key` on `runtime`.
    pub fn spawn(runtime: &Handle, key: &LaneKey, context: Arc<LaneContext>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let target = match key {
            LaneKey::Sink(tenant) => Target::Webhook {
                tenant: tenant.clone(),
                health: Box::default(),
            },
            LaneKey::DeadLetter => Target::DeadLetter,
        };
        let task = runtime.spawn(
            LaneTask {
                target,
                held: None,
                receiver,
                queued: Arc::clone(&queued),
                context,
            }
            .run(),
        );
        Self {
            sender,
            queued,
            task,
        }
    }

    /// Queues a record. The channel is unbounded on purpose: the polling thread must never
    /// block, and [`Lane::queued`] is what bounds it (the caller pauses the partition).
    pub fn push(&self, record: Consumed) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        if self.sender.send(record).is_err() {
            // The task ended, which only an abort does: the record stays unfinished and is
            // read again after the restart.
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Records the lane holds: queued, or in the batch it is delivering.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// No more records: the lane finishes what it holds and ends.
    pub fn close(self) -> JoinHandle<()> {
        drop(self.sender);
        self.task
    }
}

enum Target {
    Webhook {
        tenant: TenantId,
        health: Box<LaneHealth>,
    },
    DeadLetter,
}

struct LaneTask {
    target: Target,
    /// A record taken from the channel that did not fit the last batch by bytes: the first
    /// of the next one.
    held: Option<Consumed>,
    receiver: mpsc::UnboundedReceiver<Consumed>,
    queued: Arc<AtomicUsize>,
    context: Arc<LaneContext>,
}

impl LaneTask {
    async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            let held = batch.len();
            self.handle(batch).await;
            self.queued.fetch_sub(held, Ordering::SeqCst);
            if self.context.abort.is_cancelled() {
                return;
            }
        }
    }

    /// The next batch of the current generation: waits for a first record, then takes more
    /// until the batch is full (by count or by bytes) or the linger time passed. `None` once
    /// the lane is closed and empty, or aborted.
    async fn next_batch(&mut self) -> Option<Vec<Consumed>> {
        let abort = self.context.abort.clone();
        let first = match self.held.take() {
            Some(held) => held,
            None => tokio::select! {
                biased;
                _ = abort.cancelled() => return None,
                first = self.receiver.recv() => first?,
            },
        };
        let mut bytes = record_bytes(&first);
        let mut batch = vec![first];
        let linger = tokio::time::sleep(self.context.batch_linger);
        tokio::pin!(linger);
        while batch.len() < self.context.batch_max_records {
            // What is already queued is taken at once: a lane that was paused catches up
            // in full batches.
            let next = match self.receiver.try_recv() {
                Ok(record) => record,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    biased;
                    _ = &mut linger => break,
                    next = self.receiver.recv() => match next {
                        Some(record) => record,
                        None => break,
                    },
                },
            };
            let size = record_bytes(&next);
            if bytes + size > self.context.batch_max_bytes {
                // It opens the next batch, keeping the lane's order.
                self.held = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        // Records read before a revocation are dropped unhandled: their partition's owner
        // reads them again from the committed offset.
        let current = self.context.ownership.current().number;
        let before = batch.len();
        batch.retain(|c| c.generation == current);
        self.queued
            .fetch_sub(before - batch.len(), Ordering::SeqCst);
        Some(batch)
    }

    /// Delivers or dead-letters `batch`, and marks what got there finished.
    async fn handle(&mut self, batch: Vec<Consumed>) {
        let Some(first) = batch.first() else {
            return;
        };
        // Refused if a revocation came after `next_batch` looked: then nothing is sent.
        let Some(work) = self.context.ownership.begin(first.generation) else {
            return;
        };
        let context = &self.context;
        let done = match &mut self.target {
            Target::Webhook { tenant, health } => {
                let records: Vec<&ParsedRecord> = batch
                    .iter()
                    .filter_map(|c| c.parsed.as_ref().ok())
                    .collect();
                let delivered = context
                    .deliverer
                    .deliver(
                        tenant,
                        &context.sinks,
                        &records,
                        health,
                        &work.generation,
                        &context.abort,
                    )
                    .await;
                match delivered {
                    DeliveryResult::Delivered => batch.len(),
                    DeliveryResult::Abandoned => 0,
                    // The sink was deleted or disabled: the records go where those of a
                    // tenant without a sink go, still in this lane's order.
                    DeliveryResult::NoSink => {
                        tokio::select! {
                            done = dead_letter(context, &batch) => done,
                            _ = work.generation.fenced.cancelled() => 0,
                        }
                    }
                }
            }
            Target::DeadLetter => {
                tokio::select! {
                    done = dead_letter(context, &batch) => done,
                    // Past the revocation's wait; the new owner writes them again.
                    _ = work.generation.fenced.cancelled() => 0,
                }
            }
        };
        for c in &batch[..done] {
            context
                .ownership
                .finished(c.generation, c.partition, c.offset, |partition, offset| {
                    store(context, partition, offset);
                });
        }
        // Only now, with the offsets stored, may a revocation commit and move on.
        drop(work);
    }
}

/// Writes `batch` to the dead-letter topic in order, each run of records with the same
/// reason together. Returns how many records, from the start, are confirmed.
async fn dead_letter(context: &LaneContext, batch: &[Consumed]) -> usize {
    let why = |c: &Consumed| match &c.parsed {
        Err(detail) => (DeadLetterReason::Malformed, detail.clone()),
        // Not dropped: a sink table missing a tenant (a partial deploy, a typo) must not
        // consume and commit that tenant's backlog. The records wait in the dead-letter
        // topic, in order, to be replayed once the sink exists.
        Ok(parsed) => (
            DeadLetterReason::NoSink,
            format!("tenant {} has no sink configured", parsed.record.tenant_id),
        ),
    };
    let mut done = 0;
    while done < batch.len() {
        let (reason, detail) = why(&batch[done]);
        let run = batch[done..]
            .iter()
            .take_while(|c| why(c) == (reason, detail.clone()))
            .count();
        let messages: Vec<&OwnedMessage> =
            batch[done..done + run].iter().map(|c| &c.message).collect();
        let written = context
            .dead_letter
            .write(&messages, reason, "none", &detail, &context.abort)
            .await;
        if !written {
            break;
        }
        done += run;
    }
    done
}

/// What a record adds to a delivery's body: its JSON as read (a value that is not a record
/// is dead-lettered, never sent: its size counts as the message's).
fn record_bytes(consumed: &Consumed) -> usize {
    match &consumed.parsed {
        Ok(parsed) => parsed.raw.get().len() + 1,
        Err(_) => consumed.message.payload().map_or(0, <[u8]>::len),
    }
}

fn store(context: &LaneContext, partition: i32, offset: i64) {
    // `store_offset` stores `offset + 1` (librdkafka's rd_kafka_offset_store): the
    // committed position is the next record to read, so a restart resumes right after the
    // last finished one.
    if let Err(error) = context
        .consumer
        .store_offset(&context.topic, partition, offset)
    {
        OffsetStoreFailed {
            partition,
            offset,
            error: &error,
        }
        .emit();
    }
}
