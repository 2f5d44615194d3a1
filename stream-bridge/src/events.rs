//! Internal events of the bridge: each one logs and counts in one place, and this is the
//! only file that names a metric (docs/metrics.md lists them). Label values are bounded:
//! outcomes, reasons, and the location topic's partitions; never tenants.

use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use uuid::Uuid;

use crate::webhook::retry::Outcome;

const RECORDS_CONSUMED: &str = "locus_bridge_records_consumed_total";
const RECORDS_DELIVERED: &str = "locus_bridge_records_delivered_total";
const RECORDS_DEAD_LETTERED: &str = "locus_bridge_records_dead_lettered_total";
const RECORDS_SKIPPED: &str = "locus_bridge_records_skipped_total";
const DELIVERY_ATTEMPTS: &str = "locus_bridge_delivery_attempts_total";
const DELIVERY_DURATION: &str = "locus_bridge_delivery_duration_seconds";
const END_TO_END: &str = "locus_bridge_end_to_end_seconds";
const CONSUMER_LAG: &str = "locus_bridge_consumer_lag_records";

/// Describes every metric and sets the unlabelled counters to zero, so dashboards and
/// alerts see them before the first record.
pub fn register() {
    describe_counter!(
        RECORDS_CONSUMED,
        Unit::Count,
        "Records read from the location topic."
    );
    describe_counter!(
        RECORDS_DELIVERED,
        Unit::Count,
        "Records a webhook accepted (2xx)."
    );
    describe_counter!(
        RECORDS_DEAD_LETTERED,
        Unit::Count,
        "Records written to the dead-letter topic, by reason."
    );
    describe_counter!(
        RECORDS_SKIPPED,
        Unit::Count,
        "Records not delivered on purpose, by reason (no_sink: the tenant has no sink)."
    );
    describe_counter!(
        DELIVERY_ATTEMPTS,
        Unit::Count,
        "Webhook HTTP attempts, by outcome (delivered, retriable, rejected)."
    );
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Duration of one webhook HTTP attempt."
    );
    describe_histogram!(
        END_TO_END,
        Unit::Seconds,
        "Time from ingest accepting a fix to its webhook delivery."
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "Records of a partition past the group's committed offset (high watermark minus \
         committed offset), per partition this replica owns; 0 for one it gave up."
    );
    counter!(RECORDS_CONSUMED).increment(0);
    counter!(RECORDS_DELIVERED).increment(0);
}

/// A batch was read from Kafka.
pub struct RecordsConsumed {
    /// Records in the batch.
    pub count: usize,
}

impl RecordsConsumed {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::debug!(count = self.count, "Batch consumed.");
        counter!(RECORDS_CONSUMED).increment(self.count as u64);
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
            Outcome::Retriable { reason, .. } => tracing::warn!(
                delivery_id = %self.delivery_id,
                attempt = self.attempt,
                reason = %reason,
                "Webhook attempt failed; will retry."
            ),
            Outcome::Rejected { reason } => tracing::warn!(
                delivery_id = %self.delivery_id,
                attempt = self.attempt,
                reason = %reason,
                "Webhook rejected the delivery."
            ),
        }
        counter!(DELIVERY_ATTEMPTS, "outcome" => self.outcome.label()).increment(1);
        histogram!(DELIVERY_DURATION).record(self.duration.as_secs_f64());
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
        counter!(RECORDS_DELIVERED).increment(self.received_at.len() as u64);
        let now = Utc::now();
        let end_to_end = histogram!(END_TO_END);
        for received_at in self.received_at {
            // A clock step can put received_at in the future; count that as zero.
            let seconds = (now - *received_at).to_std().unwrap_or_default();
            end_to_end.record(seconds.as_secs_f64());
        }
    }
}

/// Why records went to the dead-letter topic: the `reason` label and the
/// `locus-dlq-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The webhook refused them for good (a 4xx other than 408 and 429).
    Rejected,
    /// Every attempt failed with a retriable error.
    Exhausted,
    /// The value is not a location record this bridge can read.
    Malformed,
}

impl DeadLetterReason {
    /// The label and header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Exhausted => "exhausted",
            DeadLetterReason::Malformed => "malformed",
        }
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
        counter!(RECORDS_DEAD_LETTERED, "reason" => self.reason.as_str())
            .increment(self.count as u64);
    }
}

/// Why records were skipped on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Their tenant has no sink configured.
    NoSink,
}

impl SkipReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoSink => "no_sink",
        }
    }
}

/// Records were skipped (and their offsets stored).
pub struct RecordsSkipped {
    /// Why.
    pub reason: SkipReason,
    /// How many.
    pub count: usize,
}

impl RecordsSkipped {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::debug!(
            reason = self.reason.as_str(),
            count = self.count,
            "Records skipped."
        );
        counter!(RECORDS_SKIPPED, "reason" => self.reason.as_str()).increment(self.count as u64);
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
        // Lags are far below 2^53, so the f64 is exact.
        gauge!(
            CONSUMER_LAG,
            "topic" => self.topic.to_owned(),
            "partition" => self.partition.to_string()
        )
        .set(self.records as f64);
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
