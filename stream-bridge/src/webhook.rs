//! The webhook sink, split like Vector's sinks: [`config`] (checked sinks), [`table`] (the
//! live table a refresh swaps), [`request_builder`] (body and signed headers, no I/O),
//! [`service`] (one HTTP attempt, classified) and [`retry`] (classification and backoff).
//! [`WebhookDeliverer`] drives them for one delivery until it is delivered or abandoned: a
//! webhook failure never sends records to the dead-letter topic (only a sink that is gone
//! does).

pub mod config;
pub mod health;
pub mod request_builder;
pub mod retry;
pub mod service;
pub mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use locus_wire::TenantId;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tracing::instrument;
use uuid::Uuid;

use self::config::Sink;
pub use self::health::SinkHealth;
use self::health::{HealthReporter, HealthSnapshot, Transitions};
use self::request_builder::WebhookRequest;
use self::retry::{CircuitSettings, Outcome, RetryPolicy, webhook_delay};
use self::service::WebhookService;
use self::table::SinkTable;
use crate::consumer::ownership::Generation;
use crate::events::{
    CircuitClosed, CircuitOpened, DeliveryAttempt, EndpointDisabled, EndpointReenabled,
    PausedSinkRemoved, RecordsDelivered, SinkPaused, SinkResumed,
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

/// The defaults of [`CircuitSettings`] (the documented ones of the configuration).
pub const DEFAULT_CIRCUIT: CircuitSettings = CircuitSettings {
    open_after: 10,
    probe_interval: Duration::from_secs(30),
    retry_after_max: Duration::from_secs(3600),
};

/// Delivers batches of one tenant's records to its webhook, retrying until it takes them.
#[derive(Debug, Clone)]
pub struct WebhookDeliverer {
    service: WebhookService,
    policy: RetryPolicy,
    circuit: CircuitSettings,
    /// Where each endpoint's health goes (to PostgreSQL, when the bridge reads sinks from
    /// there).
    health: HealthReporter,
    /// Bounds the HTTP attempts in flight across tenants; a paused sink holds a permit only
    /// while an attempt runs, not while it backs off.
    permits: Arc<Semaphore>,
}

impl WebhookDeliverer {
    /// A deliverer sending through `service`, retrying per `policy`, with at most
    /// `max_in_flight` attempts in flight at once, the default circuit and no health
    /// reports.
    pub fn new(service: WebhookService, policy: RetryPolicy, max_in_flight: usize) -> Self {
        Self {
            service,
            policy,
            circuit: DEFAULT_CIRCUIT,
            health: HealthReporter::disabled(),
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// This deliverer with the endpoint circuit `circuit`.
    pub fn with_circuit(mut self, circuit: CircuitSettings) -> Self {
        self.circuit = circuit;
        self
    }

    /// This deliverer reporting endpoint health to `health`.
    pub fn with_health(mut self, health: HealthReporter) -> Self {
        self.health = health;
        self
    }

    /// Delivers `records` (all of `tenant`, in Kafka order) to the tenant's sink in `sinks`
    /// as one delivery: one delivery id (`webhook-id`) and one body for every attempt. A
    /// failure of any kind pauses the sink and the same delivery is tried again on the
    /// published schedule ([`webhook_delay`]: backoff with jitter, then one probe per
    /// interval once the endpoint's circuit is open), for as long as it takes: skipping it
    /// would leave a hole in the tenant's sessions. A 410 Gone disables the endpoint:
    /// nothing more is sent until the sink is set again, and the records wait.
    ///
    /// Each attempt takes the sink as the table has it when the attempt starts and keeps it
    /// to the end of that attempt: a URL or secret changed while a webhook was failing is
    /// tried at once (a wait is cut short when the tenant's sink changes: usually the
    /// change is the fix), and an attempt in flight is never redirected. With no sink left
    /// for the tenant, it returns [`DeliveryResult::NoSink`] before sending anything more.
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
        health: &mut LaneHealth,
        generation: &Generation,
        abort: &CancellationToken,
    ) -> DeliveryResult {
        // v7: ids sort by time, which helps a partner reading its delivery log.
        let delivery_id = Uuid::now_v7();
        tracing::Span::current().record("delivery_id", tracing::field::display(delivery_id));
        let raws: Vec<&RawValue> = records.iter().map(|r| r.raw.as_ref()).collect();
        let request = WebhookRequest::build(tenant, delivery_id, &raws);
        let mut changes = sinks.subscribe();

        let mut attempt = 0;
        loop {
            // A snapshot: refreshes meanwhile do not change the sink of this attempt.
            let table = sinks.current();
            let Some(sink) = table.get(tenant) else {
                if health.state.forget_pause() {
                    PausedSinkRemoved { tenant }.emit();
                }
                return DeliveryResult::NoSink;
            };
            if health.state.reenable_if_set_again(sink) {
                EndpointReenabled { tenant }.emit();
                self.report(tenant, health);
            }
            if health.state.disabled_reason(sink).is_some() {
                // Disabled by a 410: nothing is sent, the records wait in the lane (whose
                // partitions pause once it is full) until the sink is set again.
                if !wait(None, tenant, sink, sinks, &mut changes, generation, abort).await {
                    return DeliveryResult::Abandoned;
                }
                continue;
            }
            attempt += 1;
            health.state.begin_attempt();
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
            let transitions = health
                .state
                .record(&outcome, Utc::now(), sink, &self.circuit);
            self.emit_transitions(tenant, &outcome, &transitions, health);
            if let Outcome::Gone { reason } = &outcome {
                EndpointDisabled { tenant, reason }.emit();
                self.health.gone(tenant, sink.version, reason);
            }
            self.report(tenant, health);
            if outcome == Outcome::Delivered {
                let received_at: Vec<_> = records.iter().map(|r| r.record.received_at).collect();
                RecordsDelivered {
                    received_at: &received_at,
                    delivery_id,
                    attempts: attempt,
                }
                .emit();
                return DeliveryResult::Delivered;
            }
            if matches!(outcome, Outcome::Gone { .. }) {
                continue;
            }
            let delay = webhook_delay(
                &self.policy,
                &self.circuit,
                health.state.failure_streak(),
                outcome.retry_after(),
                rand::random::<f64>(),
            );
            if !wait(
                Some(delay),
                tenant,
                sink,
                sinks,
                &mut changes,
                generation,
                abort,
            )
            .await
            {
                return DeliveryResult::Abandoned;
            }
        }
    }

    fn emit_transitions(
        &self,
        tenant: &TenantId,
        outcome: &Outcome,
        transitions: &Transitions,
        health: &LaneHealth,
    ) {
        if transitions.paused {
            SinkPaused { tenant, outcome }.emit();
        }
        if let Some((paused_for, failed_attempts)) = transitions.resumed {
            SinkResumed {
                tenant,
                paused_for,
                failed_attempts,
            }
            .emit();
        }
        if transitions.circuit_opened {
            CircuitOpened {
                tenant,
                failures: health.state.failure_streak(),
                probe_interval: self.circuit.probe_interval,
            }
            .emit();
        }
        if let Some(open_for) = transitions.circuit_closed {
            CircuitClosed { tenant, open_for }.emit();
        }
    }

    fn report(&self, tenant: &TenantId, health: &mut LaneHealth) {
        let snapshot = health.state.snapshot();
        self.health.report(tenant, snapshot, &mut health.reported);
    }

    /// One HTTP attempt under a permit, with its duration; `None` if the semaphore closed.
    async fn attempt(&self, sink: &Sink, request: &WebhookRequest) -> Option<(Outcome, Duration)> {
        let _permit = self.permits.acquire().await.ok()?;
        let started = Instant::now();
        let outcome = self.service.send(sink, request).await;
        Some((outcome, started.elapsed()))
    }
}

/// A lane's view of its endpoint: the state, and what was last reported of it.
#[derive(Debug, Default)]
pub struct LaneHealth {
    /// The endpoint's state.
    pub state: SinkHealth,
    /// The last snapshot handed to the reporter (an unchanged one is not handed again).
    reported: Option<HealthSnapshot>,
}

/// Waits `delay` (forever with `None`), cut short when `tenant`'s sink in `sinks` stops
/// being `sink` (changed, disabled, re-enabled or removed). `false` when the wait was
/// abandoned: `abort` fired or `generation` was revoked.
async fn wait(
    delay: Option<Duration>,
    tenant: &TenantId,
    sink: &Sink,
    sinks: &SinkTable,
    changes: &mut watch::Receiver<u64>,
    generation: &Generation,
    abort: &CancellationToken,
) -> bool {
    let deadline = delay.map(|d| tokio::time::Instant::now() + d);
    loop {
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = abort.cancelled() => return false,
            _ = generation.revoked.cancelled() => return false,
            _ = sleep => return !generation.revoked.is_cancelled(),
            changed = changes.changed() => {
                if changed.is_err() {
                    // The table is gone (never while a lane holds it): wait out the delay.
                    if let Some(at) = deadline {
                        tokio::time::sleep_until(at).await;
                    }
                    return !generation.revoked.is_cancelled();
                }
                let moved = match sinks.current().get(tenant) {
                    None => true,
                    Some(now) => !now.same_as(sink),
                };
                if moved {
                    return !generation.revoked.is_cancelled();
                }
            }
        }
    }
}
