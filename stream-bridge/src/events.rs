//! Internal events of the bridge: each one logs and counts in one place, and this is the
//! only file that names a metric (docs/metrics.md lists them). Label values are bounded:
//! outcomes, reasons, the location topic's partitions, and the tenants of the sink table
//! (bounded by configuration); never a tenant read from a record.
//!
//! The metrics are created and registered with the process registry
//! ([`locus_service::metrics`]) together, on first use; [`register`] makes that happen at
//! start.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use locus_service::metrics::{counter, counter_vec, gauge_vec, latency_histogram};
use locus_wire::TenantId;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec};
use uuid::Uuid;

use crate::error::{SinkError, SinkRefreshError};
use crate::webhook::retry::Outcome;
use crate::webhook::table::TableChanges;

/// Why records went to the dead-letter topic: the `reason` label of
/// `locus_bridge_records_dead_lettered_total` and the `locus-dlq-reason` header.
pub use locus_wire::headers::DeadLetterReason;

/// Every metric of the bridge, with its name and description.
struct Metrics {
    records_consumed: IntCounter,
    records_delivered: IntCounter,
    records_dead_lettered: IntCounterVec,
    delivery_attempts: IntCounterVec,
    delivery_duration: Histogram,
    end_to_end: Histogram,
    consumer_lag: IntGaugeVec,
    sink_paused: IntGaugeVec,
    partitions_paused: IntGaugeVec,
    sinks_loaded: IntGaugeVec,
    sinks_skipped: IntGaugeVec,
    sink_refresh_failures: IntCounter,
    sink_circuit_open: IntGaugeVec,
    sink_disabled: IntGaugeVec,
    sink_health_write_failures: IntCounter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    records_consumed: counter(
        "locus_bridge_records_consumed_total",
        "Records read from the location topic.",
    ),
    records_delivered: counter(
        "locus_bridge_records_delivered_total",
        "Records a webhook accepted (2xx).",
    ),
    records_dead_lettered: counter_vec(
        "locus_bridge_records_dead_lettered_total",
        "Records written to the dead-letter topic, by reason.",
        &["reason"],
    ),
    delivery_attempts: counter_vec(
        "locus_bridge_delivery_attempts_total",
        "Webhook HTTP attempts, by outcome (delivered, retriable, rejected).",
        &["outcome"],
    ),
    delivery_duration: latency_histogram(
        "locus_bridge_delivery_duration_seconds",
        "Duration of one webhook HTTP attempt.",
    ),
    end_to_end: latency_histogram(
        "locus_bridge_end_to_end_seconds",
        "Time from ingest accepting a fix to its webhook delivery.",
    ),
    consumer_lag: gauge_vec(
        "locus_bridge_consumer_lag_records",
        "Records of a partition past the group's committed offset (high watermark minus \
         committed offset), per partition this replica owns; 0 for one it gave up.",
        &["topic", "partition"],
    ),
    sink_paused: gauge_vec(
        "locus_bridge_sink_paused",
        "1 while a tenant's webhook is failing and its delivery is paused (the same batch is \
         retried with capped backoff until the webhook takes it), else 0; per tenant of the \
         sink table.",
        &["tenant"],
    ),
    partitions_paused: gauge_vec(
        "locus_bridge_partitions_paused",
        "Partitions this replica stopped reading because a tenant's lane is full \
         (LOCUS_BRIDGE_LANE_CAPACITY); every tenant of those partitions waits meanwhile.",
        &[],
    ),
    sinks_loaded: gauge_vec(
        "locus_bridge_sinks_loaded",
        "Tenants with a webhook sink in the live table: the static sinks with the valid \
         PostgreSQL rows laid over them, as of the last successful refresh.",
        &[],
    ),
    sinks_skipped: gauge_vec(
        "locus_bridge_sinks_skipped",
        "Enabled PostgreSQL sink rows the last successful refresh skipped as invalid (a \
         bad URL or tenant id, or a private host while those are not allowed).",
        &[],
    ),
    sink_refresh_failures: counter(
        "locus_bridge_sink_refresh_failures_total",
        "Refreshes of the sink table from PostgreSQL that failed (unreachable, refused, or \
         no answer within 5 s); the bridge kept its last table each time.",
    ),
    sink_circuit_open: gauge_vec(
        "locus_bridge_sink_circuit_open",
        "1 while a tenant's endpoint circuit is open (LOCUS_BRIDGE_CIRCUIT_OPEN_AFTER failed \
         attempts in a row; one probe per LOCUS_BRIDGE_CIRCUIT_PROBE_MS until one succeeds), \
         else 0; per tenant of the sink table.",
        &["tenant"],
    ),
    sink_disabled: gauge_vec(
        "locus_bridge_sink_disabled",
        "1 while a tenant's endpoint is disabled because it answered 410 Gone (nothing is \
         sent, its records wait until the sink is set again with PUT /v1/sink), else 0.",
        &["tenant"],
    ),
    sink_health_write_failures: counter(
        "locus_bridge_sink_health_write_failures_total",
        "Writes of endpoint health (sink_health, and 410s to sinks) to PostgreSQL that \
         failed; what they held is written at the next one.",
    ),
});

/// Describes every metric and registers it, so the unlabelled ones (the consumed and
/// delivered counters, the two histograms, the sink refresh failures) read 0 before the
/// first event and dashboards and alerts see them from the start.
pub fn register() {
    LazyLock::force(&METRICS);
}

/// Records were read from Kafka.
pub struct RecordsConsumed {
    /// How many.
    pub count: usize,
}

impl RecordsConsumed {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::trace!(count = self.count, "Records consumed.");
        METRICS.records_consumed.inc_by(self.count as u64);
    }
}

/// One webhook HTTP attempt finished.
pub struct DeliveryAttempt<'a> {
    /// Its outcome.
    pub outcome: &'a Outcome,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// How long the HTTP exchange took.
    pub duration: Duration,
    /// The delivery it belongs to.
    pub delivery_id: Uuid,
}

impl DeliveryAttempt<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        match self.outcome {
            Outcome::Delivered => tracing::debug!(
                delivery_id = %self.delivery_id,
                attempt = self.attempt,
                "Webhook accepted the delivery."
            ),
            // Debug: a paused sink is probed for as long as it fails; SinkPaused and
            // SinkResumed say so once each.
            Outcome::Retriable { reason, .. }
            | Outcome::Rejected { reason, .. }
            | Outcome::Gone { reason } => {
                tracing::debug!(
                    delivery_id = %self.delivery_id,
                    attempt = self.attempt,
                    reason = %reason,
                    "Webhook attempt failed; will retry."
                )
            }
        }
        METRICS
            .delivery_attempts
            .with_label_values(&[self.outcome.label()])
            .inc();
        METRICS
            .delivery_duration
            .observe(self.duration.as_secs_f64());
    }
}

/// A webhook accepted records.
pub struct RecordsDelivered<'a> {
    /// When ingest accepted each delivered record.
    pub received_at: &'a [DateTime<Utc>],
    /// The delivery.
    pub delivery_id: Uuid,
    /// Attempts it took.
    pub attempts: u32,
}

impl RecordsDelivered<'_> {
    /// Logs and counts the event, with each record's end-to-end latency.
    pub fn emit(self) {
        tracing::debug!(
            delivery_id = %self.delivery_id,
            count = self.received_at.len(),
            attempts = self.attempts,
            "Records delivered."
        );
        METRICS
            .records_delivered
            .inc_by(self.received_at.len() as u64);
        let now = Utc::now();
        for received_at in self.received_at {
            // A clock step can put received_at in the future; count that as zero.
            let seconds = (now - *received_at).to_std().unwrap_or_default();
            METRICS.end_to_end.observe(seconds.as_secs_f64());
        }
    }
}

/// A tenant's webhook failed: its lane stops moving and retries the same batch.
pub struct SinkPaused<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// The failed attempt.
    pub outcome: &'a Outcome,
}

impl SinkPaused<'_> {
    /// Logs the event and sets the tenant's paused gauge.
    pub fn emit(self) {
        match self.outcome {
            // An error: the partner refuses the bridge (a key, a route, a size limit);
            // someone must act before the tenant's records move again.
            Outcome::Rejected { reason, .. } | Outcome::Gone { reason } => tracing::error!(
                tenant = %self.tenant,
                reason = %reason,
                "Webhook refused a delivery; the tenant's delivery is paused and retried until it is taken."
            ),
            Outcome::Retriable { reason, .. } => tracing::warn!(
                tenant = %self.tenant,
                reason = %reason,
                "Webhook failed; the tenant's delivery is paused and retried until it is taken."
            ),
            Outcome::Delivered => {}
        }
        METRICS
            .sink_paused
            .with_label_values(&[self.tenant.as_str()])
            .set(1);
    }
}

/// A paused tenant's webhook took its batch: the lane moves again.
pub struct SinkResumed<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// How long it was paused.
    pub paused_for: Duration,
    /// Failed attempts meanwhile.
    pub failed_attempts: u32,
}

impl SinkResumed<'_> {
    /// Logs the event and clears the tenant's paused gauge.
    pub fn emit(self) {
        tracing::info!(
            tenant = %self.tenant,
            paused_for = ?self.paused_for,
            failed_attempts = self.failed_attempts,
            "Webhook took the delivery again; the tenant's delivery resumed."
        );
        METRICS
            .sink_paused
            .with_label_values(&[self.tenant.as_str()])
            .set(0);
    }
}

/// A tenant's lane is full: the partition its latest record came from is no longer read.
pub struct PartitionPaused<'a> {
    /// The partition.
    pub partition: i32,
    /// The tenant whose lane is full, or `dead-letter`.
    pub lane: &'a str,
    /// Records the lane holds.
    pub queued: usize,
}

impl PartitionPaused<'_> {
    /// Logs the event and counts the partition.
    pub fn emit(self) {
        // A warning: from here on, other tenants of this partition wait too.
        tracing::warn!(
            partition = self.partition,
            lane = self.lane,
            queued = self.queued,
            "A lane is full; reading of its partition is paused until it drains."
        );
        METRICS
            .partitions_paused
            .with_label_values::<&str>(&[])
            .inc();
    }
}

/// A paused partition is read again (its lanes drained below half, or it was revoked).
pub struct PartitionResumed {
    /// The partition.
    pub partition: i32,
}

impl PartitionResumed {
    /// Logs the event and uncounts the partition.
    pub fn emit(self) {
        tracing::info!(
            partition = self.partition,
            "Lanes drained; reading of the partition resumed."
        );
        METRICS
            .partitions_paused
            .with_label_values::<&str>(&[])
            .dec();
    }
}

/// A revocation stopped waiting for deliveries in flight.
pub struct RevocationWaitExpired {
    /// How long it waited.
    pub waited: Duration,
}

impl RevocationWaitExpired {
    /// Logs the event.
    pub fn emit(self) {
        // A warning: the attempts are dropped now, but one may already have reached its
        // webhook, which can then see it after the new owner's copy (record_id tells).
        tracing::warn!(
            waited = ?self.waited,
            "Deliveries still in flight when the partitions were revoked; dropping them."
        );
    }
}

/// Records were written to the dead-letter topic.
pub struct RecordsDeadLettered<'a> {
    /// Why.
    pub reason: DeadLetterReason,
    /// What went wrong, in words.
    pub detail: &'a str,
    /// How many.
    pub count: usize,
}

impl RecordsDeadLettered<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // A warning, not an error: the records are safe in the dead-letter topic, and the
        // counter is what alerts.
        tracing::warn!(
            reason = self.reason.as_str(),
            detail = %self.detail,
            count = self.count,
            "Records sent to the dead-letter topic."
        );
        METRICS
            .records_dead_lettered
            .with_label_values(&[self.reason.as_str()])
            .inc_by(self.count as u64);
    }
}

/// Producing to the dead-letter topic failed; the bridge retries and does not move on.
pub struct DeadLetterProduceFailed<'a> {
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl DeadLetterProduceFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        // An error: until the broker takes the record, this partition does not advance.
        tracing::error!(error = %self.error, "Could not write to the dead-letter topic; retrying.");
    }
}

/// Storing a partition's offset failed (usually: the partition was revoked meanwhile).
pub struct OffsetStoreFailed<'a> {
    /// The partition.
    pub partition: i32,
    /// The offset of the last handled record.
    pub offset: i64,
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl OffsetStoreFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        // A warning: the records were delivered; whoever owns the partition now delivers
        // them again (at-least-once), nothing is lost.
        tracing::warn!(
            partition = self.partition,
            offset = self.offset,
            error = %self.error,
            "Could not store an offset; the records will be delivered again."
        );
    }
}

/// A synchronous offset commit failed.
pub struct CommitFailed<'a> {
    /// When it happened (shutdown, revocation).
    pub during: &'static str,
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        tracing::warn!(
            during = self.during,
            error = %self.error,
            "Could not commit offsets; records since the last commit will be delivered again."
        );
    }
}

/// Reading from Kafka failed.
pub struct ConsumeFailed<'a> {
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl ConsumeFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Kafka consume error.");
    }
}

/// The consumer lag of one partition was measured.
pub struct ConsumerLag<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// Records past the committed offset (0 for a partition this replica no longer owns).
    pub records: i64,
}

impl ConsumerLag<'_> {
    /// Logs and sets the gauge.
    pub fn emit(self) {
        tracing::trace!(
            topic = self.topic,
            partition = self.partition,
            records = self.records,
            "Consumer lag measured."
        );
        METRICS
            .consumer_lag
            .with_label_values(&[self.topic, &self.partition.to_string()])
            .set(self.records);
    }
}

/// Measuring the consumer lag failed (the broker did not answer in time, or a rebalance was
/// under way).
pub struct ConsumerLagFailed<'a> {
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl ConsumerLagFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        // A warning: the lag gauges keep their last values until a measurement succeeds,
        // so a dashboard may show a stale lag meanwhile.
        tracing::warn!(
            error = %self.error,
            "Could not measure the consumer lag; the lag metric keeps its last values."
        );
    }
}

/// The sink table was read from PostgreSQL and installed.
pub struct SinkTableRefreshed<'a> {
    /// Tenants with a sink now (static and PostgreSQL).
    pub sinks: usize,
    /// Enabled rows read.
    pub rows: usize,
    /// Rows skipped as invalid.
    pub skipped: usize,
    /// What changed since the previous table.
    pub changes: &'a TableChanges,
}

impl SinkTableRefreshed<'_> {
    /// Logs the changes (if any) and sets the gauges.
    pub fn emit(self) {
        let names = |tenants: &[locus_wire::TenantId]| {
            tenants
                .iter()
                .map(TenantId::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        if self.changes.is_empty() {
            tracing::trace!(
                sinks = self.sinks,
                rows = self.rows,
                "Sink table refreshed."
            );
        } else {
            // Info: a partner's deliveries start, move or stop here.
            tracing::info!(
                sinks = self.sinks,
                rows = self.rows,
                skipped = self.skipped,
                added = %names(&self.changes.added),
                changed = %names(&self.changes.changed),
                removed = %names(&self.changes.removed),
                "Sink table changed; deliveries use the new sinks from their next attempt."
            );
        }
        METRICS
            .sinks_loaded
            .with_label_values::<&str>(&[])
            .set(self.sinks as i64);
        METRICS
            .sinks_skipped
            .with_label_values::<&str>(&[])
            .set(self.skipped as i64);
    }
}

/// A PostgreSQL sink row is invalid and was left out of the table.
pub struct SinkRowSkipped<'a> {
    /// The row's tenant, as stored.
    pub tenant: &'a str,
    /// What is wrong with it (never quotes the secret).
    pub error: &'a SinkError,
}

impl SinkRowSkipped<'_> {
    /// Logs the event (once per distinct problem; the refresher remembers).
    pub fn emit(self) {
        // A warning: the tenant's records go to its static sink, if it has one, or to the
        // dead-letter topic (`no_sink`) until the row is fixed.
        tracing::warn!(
            tenant = self.tenant,
            reason = %self.error,
            "A sink row in PostgreSQL is invalid and was skipped; the tenant has no sink from it until it is fixed."
        );
    }
}

/// Reading the sink table from PostgreSQL failed; the last table stays.
pub struct SinkRefreshFailed<'a> {
    /// What failed.
    pub error: &'a SinkRefreshError,
    /// Failures in a row, this one included.
    pub consecutive: u64,
}

impl SinkRefreshFailed<'_> {
    /// Logs the event (a warning for the first failure of a run and every 30th after it,
    /// so an outage is visible without a line every interval) and counts it.
    pub fn emit(self) {
        if self.consecutive == 1 || self.consecutive.is_multiple_of(30) {
            tracing::warn!(
                error = %self.error,
                consecutive = self.consecutive,
                "Could not refresh the sink table from PostgreSQL; delivering with the last one."
            );
        } else {
            tracing::debug!(
                error = %self.error,
                consecutive = self.consecutive,
                "Could not refresh the sink table from PostgreSQL; delivering with the last one."
            );
        }
        METRICS.sink_refresh_failures.inc();
    }
}

/// The sink table was read again after failures.
pub struct SinkRefreshRecovered {
    /// Refreshes that had failed in a row.
    pub failed: u64,
}

impl SinkRefreshRecovered {
    /// Logs the event.
    pub fn emit(self) {
        tracing::info!(
            failed = self.failed,
            "The sink table is read from PostgreSQL again."
        );
    }
}

/// A tenant whose webhook was failing lost its sink (deleted or disabled): its lane stops
/// retrying and sends its records to the dead-letter topic (`no_sink`).
pub struct PausedSinkRemoved<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
}

impl PausedSinkRemoved<'_> {
    /// Logs the event and clears the tenant's paused gauge.
    pub fn emit(self) {
        tracing::info!(
            tenant = %self.tenant,
            "The paused tenant's sink was removed; its records go to the dead-letter topic (no_sink)."
        );
        METRICS
            .sink_paused
            .with_label_values(&[self.tenant.as_str()])
            .set(0);
    }
}

/// A tenant's endpoint failed `failures` times in a row: its circuit opened, and it is
/// probed once per interval until a probe succeeds.
pub struct CircuitOpened<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The wait between two probes.
    pub probe_interval: Duration,
}

impl CircuitOpened<'_> {
    /// Logs the event and sets the tenant's circuit gauge.
    pub fn emit(self) {
        tracing::warn!(
            tenant = %self.tenant,
            failures = self.failures,
            probe_interval = ?self.probe_interval,
            "Webhook circuit opened; one probe per interval until one succeeds."
        );
        METRICS
            .sink_circuit_open
            .with_label_values(&[self.tenant.as_str()])
            .set(1);
    }
}

/// A probe of an open circuit succeeded: the endpoint is back on the backoff schedule.
pub struct CircuitClosed<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// How long the circuit was open.
    pub open_for: Duration,
}

impl CircuitClosed<'_> {
    /// Logs the event and clears the tenant's circuit gauge.
    pub fn emit(self) {
        tracing::info!(
            tenant = %self.tenant,
            open_for = ?self.open_for,
            "Webhook circuit closed: a probe succeeded."
        );
        METRICS
            .sink_circuit_open
            .with_label_values(&[self.tenant.as_str()])
            .set(0);
    }
}

/// A tenant's endpoint answered 410 Gone: it is disabled until the sink is set again.
pub struct EndpointDisabled<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
    /// What the webhook answered.
    pub reason: &'a str,
}

impl EndpointDisabled<'_> {
    /// Logs the event (an error: the tenant's records wait until someone sets the sink
    /// again) and sets the tenant's disabled gauge.
    pub fn emit(self) {
        tracing::error!(
            tenant = %self.tenant,
            reason = %self.reason,
            "Webhook answered 410 Gone; the endpoint is disabled and the tenant's records wait until its sink is set again (PUT /v1/sink)."
        );
        METRICS
            .sink_disabled
            .with_label_values(&[self.tenant.as_str()])
            .set(1);
    }
}

/// A sink disabled by a 410 was set again: deliveries resume.
pub struct EndpointReenabled<'a> {
    /// The tenant.
    pub tenant: &'a TenantId,
}

impl EndpointReenabled<'_> {
    /// Logs the event and clears the tenant's disabled and circuit gauges.
    pub fn emit(self) {
        tracing::info!(
            tenant = %self.tenant,
            "The sink disabled by a 410 was set again; deliveries resume."
        );
        for gauge in [&METRICS.sink_disabled, &METRICS.sink_circuit_open] {
            gauge.with_label_values(&[self.tenant.as_str()]).set(0);
        }
    }
}

/// Endpoint health could not be written to PostgreSQL.
pub struct SinkHealthWriteFailed<'a> {
    /// Why.
    pub error: &'a dyn std::error::Error,
}

impl SinkHealthWriteFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(
            error = %self.error,
            "Cannot write endpoint health to PostgreSQL; it is written at the next try."
        );
        METRICS.sink_health_write_failures.inc();
    }
}
