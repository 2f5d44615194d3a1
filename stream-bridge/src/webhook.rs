//! The webhook sink, split like Vector's sinks: [`config`] (checked sinks), [`table`] (the
//! live table a refresh swaps), [`request_builder`] (body and signed headers, no I/O),
//! [`service`] (one HTTP attempt, classified) and [`retry`] (classification and backoff).
//! [`WebhookDeliverer`] drives them for one delivery until it is delivered or abandoned: a
//! webhook failure never sends records to the dead-letter topic (only a sink that is gone
//! does).

pub mod config;
pub mod request_builder;
pub mod retry;
pub mod service;
pub mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_wire::TenantId;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

use self::config::Sink;
use self::request_builder::WebhookRequest;
use self::retry::{Outcome, RetryPolicy};
use self::service::WebhookService;
use self::table::SinkTable;
use crate::consumer::ownership::Generation;
use crate::events::{
    DeliveryAttempt, PausedSinkRemoved, RecordsDelivered, SinkPaused, SinkResumed,
};
use crate::record::ParsedRecord;

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The webhook answered 2xx.
    Delivered,
    /// Given up before the webhook took it: shutdown's grace period ran out, or the
    /// records' partitions were revoked. They are not finished, their offsets must not be
    /// stored, and whoever owns their partitions delivers them again.
    Abandoned,
    /// The tenant has no sink in the table any more (deleted or disabled) when an attempt
    /// was due: the records take the path of a tenant without a sink.
    NoSink,
}

/// Whether a tenant's sink is paused, kept by its lane across deliveries so that the pause
/// and the recovery are each logged once.
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Since when, and after how many failed attempts so far.
    paused: Option<(Instant, u32)>,
}

/// Delivers batches of one tenant's records to its webhook, retrying until it takes them.
#[derive(Debug, Clone)]
pub struct WebhookDeliverer {
    service: WebhookService,
    policy: RetryPolicy,
    /// Bounds the HTTP attempts in flight across tenants; a paused sink holds a permit only
    /// while an attempt runs, not while it backs off.
    permits: Arc<Semaphore>,
}

impl WebhookDeliverer {
    /// A deliverer sending through `service`, retrying per `policy`, with at most
    /// `max_in_flight` attempts in flight at once.
    pub fn new(service: WebhookService, policy: RetryPolicy, max_in_flight: usize) -> Self {
        Self {
            service,
            policy,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Delivers `records` (all of `tenant`, in Kafka order) to the tenant's sink in `sinks`
    /// as one delivery: one delivery id and one body for every attempt. A failure of any
    /// kind pauses the sink and the same delivery is tried again with capped backoff, for
    /// as long as it takes: skipping it would leave a hole in the tenant's sessions.
    ///
    /// Each attempt takes the sink as the table has it when the attempt starts and keeps it
    /// to the end of that attempt: a URL or secret changed while a webhook was failing is
    /// tried from the next attempt on (usually the change is the fix), and an attempt in
    /// flight is never redirected. With no sink left for the tenant, it returns
    /// [`DeliveryResult::NoSink`] before sending anything more.
    ///
    /// Gives up with [`DeliveryResult::Abandoned`] when `abort` fires (shutdown's grace is
    /// over), when `generation` is revoked between attempts, or when it is fenced during
    /// one (see [`crate::consumer::ownership`]).
    #[instrument(skip_all, fields(tenant = %tenant, records = records.len(), delivery_id))]
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        sinks: &SinkTable,
        records: &[&ParsedRecord],
        health: &mut SinkHealth,
        generation: &Generation,
        abort: &CancellationToken,
    ) -> DeliveryResult {
        // v7: ids sort by time, which helps a partner reading its delivery log.
        let delivery_id = Uuid::now_v7();
        tracing::Span::current().record("delivery_id", tracing::field::display(delivery_id));
        let raws: Vec<&RawValue> = records.iter().map(|r| r.raw.as_ref()).collect();
        let request = WebhookRequest::build(tenant, delivery_id, &raws);

        let mut attempt = 0;
        loop {
            // A snapshot: refreshes meanwhile do not change the sink of this attempt.
            let table = sinks.current();
            let Some(sink) = table.get(tenant) else {
                if health.paused.take().is_some() {
                    PausedSinkRemoved { tenant }.emit();
                }
                return DeliveryResult::NoSink;
            };
            attempt += 1;
            let outcome = tokio::select! {
                // Dropping the request mid-flight is safe for at-least-once: the webhook
                // may or may not have taken it, and the records are delivered again.
                _ = abort.cancelled() => return DeliveryResult::Abandoned,
                _ = generation.fenced.cancelled() => return DeliveryResult::Abandoned,
                outcome = self.attempt(sink, &request) => outcome,
            };
            let (outcome, duration) = match outcome {
                Some(done) => done,
                // The semaphore is never closed; treat it like an abort if it were.
                None => return DeliveryResult::Abandoned,
            };
            DeliveryAttempt {
                outcome: &outcome,
                attempt,
                duration,
                delivery_id,
            }
            .emit();
            if outcome == Outcome::Delivered {
                if let Some((since, failed)) = health.paused.take() {
                    SinkResumed {
                        tenant,
                        paused_for: since.elapsed(),
                        failed_attempts: failed,
                    }
                    .emit();
                }
                let received_at: Vec<_> = records.iter().map(|r| r.record.received_at).collect();
                RecordsDelivered {
                    received_at: &received_at,
                    delivery_id,
                    attempts: attempt,
                }
                .emit();
                return DeliveryResult::Delivered;
            }
            match &mut health.paused {
                Some((_, failed)) => *failed += 1,
                None => {
                    health.paused = Some((Instant::now(), 1));
                    SinkPaused {
                        tenant,
                        outcome: &outcome,
                    }
                    .emit();
                }
            }
            let delay = self
                .policy
                .delay(attempt, outcome.retry_after(), rand::random::<f64>());
            tokio::select! {
                _ = abort.cancelled() => return DeliveryResult::Abandoned,
                _ = generation.revoked.cancelled() => return DeliveryResult::Abandoned,
                _ = tokio::time::sleep(delay) => {}
            }
            if generation.revoked.is_cancelled() {
                return DeliveryResult::Abandoned;
            }
        }
    }

    /// One HTTP attempt under a permit, with its duration; `None` if the semaphore closed.
    async fn attempt(&self, sink: &Sink, request: &WebhookRequest) -> Option<(Outcome, Duration)> {
        let _permit = self.permits.acquire().await.ok()?;
        let started = Instant::now();
        let outcome = self.service.send(sink, request).await;
        Some((outcome, started.elapsed()))
    }
}
