//! Internal events of the tracker: each one logs and counts in one place, and this is the
//! only file that names a metric (docs/metrics.md lists them). Label values are bounded:
//! skip reasons and the two outbox topics.
//!
//! The metrics are created and registered with the process registry
//! ([`locus_service::metrics`]) on first use; [`register`] makes that happen at start, so
//! the unlabelled ones read 0 from the first scrape.

use std::sync::LazyLock;
use std::time::Duration;

use locus_service::metrics::{counter, counter_vec, gauge_vec, latency_histogram};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGaugeVec};

/// Every metric of the tracker, with its name and description.
struct Metrics {
    records_consumed: IntCounter,
    records_skipped: IntCounterVec,
    fixes_applied: IntCounter,
    late_fixes: IntCounter,
    jumps: IntCounter,
    positions_moved: IntCounter,
    transitions: IntCounter,
    batch_duration: Histogram,
    batch_failures: IntCounter,
    commit_failures: IntCounter,
    consume_errors: IntCounter,
    outbox_published: IntCounterVec,
    outbox_already_published: IntCounterVec,
    relay_failures: IntCounter,
    outbox_refused: IntCounterVec,
    relay_active: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    records_consumed: counter(
        "locus_tracker_records_consumed_total",
        "Records read from the location topic.",
    ),
    records_skipped: counter_vec(
        "locus_tracker_records_skipped_total",
        "Records read and not applied, by reason: replayed (below the partition's offset in \
         PostgreSQL: already applied), duplicate (a fix already in the track), malformed \
         (not a location record).",
        &["reason"],
    ),
    fixes_applied: counter(
        "locus_tracker_fixes_applied_total",
        "Fixes added to a session's track.",
    ),
    late_fixes: counter(
        "locus_tracker_late_fixes_total",
        "Fixes added before the last stored fix of their session (they arrived late; the \
         segments around them were recomputed).",
    ),
    jumps: counter(
        "locus_tracker_jumps_total",
        "New fixes whose step from the previous fix is flagged as an implausible jump \
         (speed above LOCUS_GEO_MAX_SPEED_MPS).",
    ),
    positions_moved: counter(
        "locus_tracker_positions_moved_total",
        "Last known device positions moved forward (each one is a record for the positions \
         topic).",
    ),
    transitions: counter(
        "locus_tracker_geofence_transitions_total",
        "Geofence enter and exit transitions written (each one is a record for the \
         geofence-events topic).",
    ),
    batch_duration: latency_histogram(
        "locus_tracker_batch_duration_seconds",
        "Duration of one batch's PostgreSQL transaction, from BEGIN to COMMIT.",
    ),
    batch_failures: counter(
        "locus_tracker_batch_failures_total",
        "Batch transactions that failed and were rolled back (the batch is tried again).",
    ),
    commit_failures: counter(
        "locus_tracker_commit_failures_total",
        "Kafka offset commits that failed (harmless: the offsets in PostgreSQL decide).",
    ),
    consume_errors: counter(
        "locus_tracker_consume_errors_total",
        "Errors the Kafka consumer reported while polling.",
    ),
    outbox_published: counter_vec(
        "locus_tracker_outbox_published_total",
        "Outbox rows the relay published and Kafka acknowledged, by topic (positions, \
         geofence_events).",
        &["topic"],
    ),
    outbox_already_published: counter_vec(
        "locus_tracker_outbox_already_published_total",
        "Outbox rows deleted without publishing because the partition's last record \
         already carried their sequence number (a relay stopped between publish and \
         delete), by topic.",
        &["topic"],
    ),
    relay_failures: counter(
        "locus_tracker_relay_failures_total",
        "Relay rounds that failed (PostgreSQL or Kafka); the rows stay and are published \
         by a later round.",
    ),
    outbox_refused: counter_vec(
        "locus_tracker_outbox_refused_total",
        "Outbox rows Kafka refused (e.g. larger than the topic's max.message.bytes), by \
         topic; each is kept, exempt from the restart rule, and sent again every round.",
        &["topic"],
    ),
    relay_active: gauge_vec(
        "locus_tracker_relay_active",
        "1 while this replica holds the relay's lock (exactly one replica publishes the \
         outbox), else 0.",
        &[],
    ),
});

/// Describes every metric and registers it.
pub fn register() {
    LazyLock::force(&METRICS);
    METRICS.relay_active.with_label_values::<&str>(&[]).set(0);
}

/// One batch was applied and committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchApplied {
    /// Records in the batch.
    pub records: usize,
    /// Fixes added to tracks.
    pub applied: usize,
    /// Records below the stored offset.
    pub replayed: usize,
    /// Fixes already in a track (or twice in the batch).
    pub duplicates: usize,
    /// Records that are not location records.
    pub malformed: usize,
    /// Fixes added before their session's last fix.
    pub late: usize,
    /// New fixes flagged as jumps.
    pub jumps: usize,
    /// Device positions moved forward.
    pub positions: usize,
    /// Geofence transitions.
    pub transitions: u64,
}

impl BatchApplied {
    /// Logs and counts the event; `duration` is the transaction's.
    pub fn emit(&self, duration: Duration) {
        tracing::debug!(
            records = self.records,
            applied = self.applied,
            replayed = self.replayed,
            duplicates = self.duplicates,
            malformed = self.malformed,
            late = self.late,
            positions = self.positions,
            transitions = self.transitions,
            duration_ms = duration.as_millis() as u64,
            "Batch applied."
        );
        let m = &*METRICS;
        m.records_consumed.inc_by(self.records as u64);
        m.fixes_applied.inc_by(self.applied as u64);
        m.late_fixes.inc_by(self.late as u64);
        m.jumps.inc_by(self.jumps as u64);
        m.positions_moved.inc_by(self.positions as u64);
        m.transitions.inc_by(self.transitions);
        for (reason, n) in [
            ("replayed", self.replayed),
            ("duplicate", self.duplicates),
            ("malformed", self.malformed),
        ] {
            if n > 0 {
                m.records_skipped
                    .with_label_values(&[reason])
                    .inc_by(n as u64);
            }
        }
        m.batch_duration.observe(duration.as_secs_f64());
    }
}

/// A record on the location topic is not a location record; it is skipped.
pub struct RecordMalformed<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Why it does not parse.
    pub error: &'a dyn std::fmt::Display,
}

impl RecordMalformed<'_> {
    /// Logs the event (counted with its batch).
    pub fn emit(self) {
        tracing::warn!(
            partition = self.partition,
            offset = self.offset,
            error = %self.error,
            "Skipping a record that is not a location record."
        );
    }
}

/// A batch transaction failed; it is tried again after `retry_in`.
pub struct BatchFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
    /// Attempts so far, from 1.
    pub attempt: u32,
    /// The pause before the next attempt.
    pub retry_in: Duration,
}

impl BatchFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(
            error = %self.error,
            attempt = self.attempt,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "Could not apply a batch; trying it again."
        );
        METRICS.batch_failures.inc();
    }
}

/// The partitions assigned to this replica, and the offsets PostgreSQL holds for them.
pub struct PartitionsAssigned<'a> {
    /// Partitions assigned.
    pub partitions: &'a [i32],
    /// Of those, the ones with an offset in PostgreSQL, committed to the group.
    pub seeded: usize,
}

impl PartitionsAssigned<'_> {
    /// Logs the event.
    pub fn emit(self) {
        tracing::info!(
            partitions = ?self.partitions,
            seeded = self.seeded,
            "Partitions assigned; reading from the offsets PostgreSQL holds."
        );
    }
}

/// The offsets of PostgreSQL could not be read or committed at assignment: the consumer
/// starts from the group's offsets, and the records already applied are skipped by offset.
pub struct SeedFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl SeedFailed<'_> {
    /// Logs the event.
    pub fn emit(self) {
        tracing::warn!(
            error = %self.error,
            "Could not start the assigned partitions at the PostgreSQL offsets; starting at the group's (applied records are skipped)."
        );
    }
}

/// A Kafka offset commit failed.
pub struct CommitFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
    /// When: after a batch, at revocation, at shutdown.
    pub during: &'static str,
}

impl CommitFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::debug!(error = %self.error, during = self.during, "Kafka offset commit failed.");
        METRICS.commit_failures.inc();
    }
}

/// The consumer reported an error while polling.
pub struct ConsumeFailed<'a> {
    /// The error.
    pub error: &'a dyn std::fmt::Display,
}

impl ConsumeFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Kafka consumer error.");
        METRICS.consume_errors.inc();
    }
}

/// A relay round finished.
pub struct OutboxPublished<'a> {
    /// The outbox topic name (`positions`, `geofence_events`).
    pub topic: &'a str,
    /// Rows published and acknowledged.
    pub published: usize,
    /// Rows deleted because they had been published before.
    pub already: usize,
}

impl OutboxPublished<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        if self.published + self.already == 0 {
            return;
        }
        tracing::debug!(
            topic = self.topic,
            published = self.published,
            already = self.already,
            "Outbox rows published."
        );
        let m = &*METRICS;
        m.outbox_published
            .with_label_values(&[self.topic])
            .inc_by(self.published as u64);
        if self.already > 0 {
            tracing::info!(
                topic = self.topic,
                rows = self.already,
                "Outbox rows were on Kafka already (a relay stopped between publish and delete); deleted without publishing again."
            );
            m.outbox_already_published
                .with_label_values(&[self.topic])
                .inc_by(self.already as u64);
        }
    }
}

/// Kafka refused an outbox row; it stays, marked, and is sent again.
pub struct OutboxRefused<'a> {
    /// The row's sequence number.
    pub seq: i64,
    /// The outbox topic name (`positions`, `geofence_events`).
    pub topic: &'a str,
    /// The partition it was sent to.
    pub partition: i32,
    /// Why Kafka refused it.
    pub error: &'a dyn std::fmt::Display,
}

impl OutboxRefused<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // ERROR: a row refused for good (over the topic's max.message.bytes) waits for an
        // operator, and the rows behind it in its partition go out ahead of it.
        tracing::error!(
            seq = self.seq,
            topic = self.topic,
            partition = self.partition,
            error = %self.error,
            "Kafka refused an outbox row; it is kept, marked refused, and sent again after the rows behind it."
        );
        METRICS
            .outbox_refused
            .with_label_values(&[self.topic])
            .inc();
    }
}

/// A relay round failed.
pub struct RelayFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl RelayFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Outbox relay round failed; the rows stay for the next one.");
        METRICS.relay_failures.inc();
    }
}

/// This replica took or gave up the relay's lock.
pub struct RelayActive {
    /// Whether it holds the lock now.
    pub active: bool,
}

impl RelayActive {
    /// Logs and sets the gauge.
    pub fn emit(self) {
        if self.active {
            tracing::info!("This replica is the outbox relay.");
        } else {
            tracing::info!("This replica is no longer the outbox relay.");
        }
        METRICS
            .relay_active
            .with_label_values::<&str>(&[])
            .set(i64::from(self.active));
    }
}
