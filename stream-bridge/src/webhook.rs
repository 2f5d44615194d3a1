//! The webhook sink, split like Vector's sinks: [`config`] (the checked sink table),
//! [`request_builder`] (body and signed headers, no I/O), [`service`] (one HTTP attempt,
//! classified) and [`retry`] (which outcomes to retry, and when). [`WebhookDeliverer`]
//! drives them for one delivery until it is delivered, dead-lettered or abandoned.

pub mod config;
pub mod request_builder;
pub mod retry;
pub mod service;

use std::time::Instant;

use locus_wire::TenantId;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

use self::config::Sink;
use self::request_builder::WebhookRequest;
use self::retry::{Outcome, RetryPolicy};
use self::service::WebhookService;
use crate::events::{DeadLetterReason, DeliveryAttempt, RecordsDelivered};
use crate::record::ParsedRecord;

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The webhook answered 2xx.
    Delivered,
    /// The records belong in the dead-letter topic.
    DeadLetter {
        /// Rejected or exhausted.
        reason: DeadLetterReason,
        /// The last failure, in words.
        detail: String,
    },
    /// Shutdown's grace period ran out first: the records are neither delivered nor
    /// dead-lettered, and their offsets must not be stored.
    Abandoned,
}

/// Delivers batches of one tenant's records to its webhook, retrying per [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct WebhookDeliverer {
    service: WebhookService,
    policy: RetryPolicy,
}

impl WebhookDeliverer {
    /// A deliverer sending through `service` and retrying per `policy`.
    pub fn new(service: WebhookService, policy: RetryPolicy) -> Self {
        Self { service, policy }
    }

    /// Delivers `records` (all of `tenant`, in Kafka order) to `sink` as one delivery: one
    /// delivery id and one body for every attempt. Gives up with
    /// [`DeliveryResult::Abandoned`] as soon as `abort` is cancelled.
    #[instrument(skip_all, fields(tenant = %tenant, records = records.len(), delivery_id))]
    pub async fn deliver(
        &self,
        tenant: &TenantId,
        sink: &Sink,
        records: &[&ParsedRecord],
        abort: &CancellationToken,
    ) -> DeliveryResult {
        // v7: ids sort by time, which helps a partner reading its delivery log.
        let delivery_id = Uuid::now_v7();
        tracing::Span::current().record("delivery_id", tracing::field::display(delivery_id));
        let raws: Vec<&RawValue> = records.iter().map(|r| r.raw.as_ref()).collect();
        let request = WebhookRequest::build(tenant, delivery_id, &raws);

        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let outcome = tokio::select! {
                // Dropping the request mid-flight is safe: the webhook may or may not have
                // taken it, and the records will be delivered again after the restart.
                _ = abort.cancelled() => return DeliveryResult::Abandoned,
                outcome = self.service.send(sink, &request) => outcome,
            };
            DeliveryAttempt {
                outcome: &outcome,
                attempt,
                duration: started.elapsed(),
                delivery_id,
            }
            .emit();
            match outcome {
                Outcome::Delivered => {
                    let received_at: Vec<_> =
                        records.iter().map(|r| r.record.received_at).collect();
                    RecordsDelivered {
                        received_at: &received_at,
                        delivery_id,
                        attempts: attempt,
                    }
                    .emit();
                    return DeliveryResult::Delivered;
                }
                Outcome::Rejected { reason } => {
                    return DeliveryResult::DeadLetter {
                        reason: DeadLetterReason::Rejected,
                        detail: reason,
                    };
                }
                Outcome::Retriable {
                    retry_after,
                    reason,
                } => {
                    let Some(delay) =
                        self.policy
                            .delay(attempt, retry_after, rand::random::<f64>())
                    else {
                        return DeliveryResult::DeadLetter {
                            reason: DeadLetterReason::Exhausted,
                            detail: format!("{reason} (after {attempt} attempts)"),
                        };
                    };
                    tokio::select! {
                        _ = abort.cancelled() => return DeliveryResult::Abandoned,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
