//! Internal events of ingest: each one logs (where a person would want a line) and counts in
//! one place, and this is the only file that names a metric (docs/metrics.md lists them).
//! Label values are bounded: route templates, status codes, reasons, shards, topic kinds;
//! tenants only in the usage metrics, where their count is bounded by configuration
//! (`LOCUS_USAGE_METRIC_TENANTS`, the rest `other`).
//!
//! The metrics are created and registered with the process registry
//! ([`locus_service::metrics`]) on first use, in three groups: HTTP (every process), API
//! and forwarder. [`register`] registers the groups of the roles a process runs, so each
//! process exports the metrics of its roles, the unlabelled ones at 0 from the start.
//!
//! The file runs past 400 lines on purpose: twenty small event types, and splitting them
//! would scatter the metric names this file exists to keep in one place.

use std::sync::LazyLock;
use std::time::Duration;

use locus_service::metrics::{
    counter, counter_vec, gauge_vec, latency_histogram, latency_histogram_vec,
};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use crate::config::Role;

/// What every process counts: its HTTP requests.
struct HttpMetrics {
    requests: IntCounterVec,
    request_duration: HistogramVec,
}

static HTTP: LazyLock<HttpMetrics> = LazyLock::new(|| HttpMetrics {
    requests: counter_vec(
        "locus_http_requests_total",
        "Finished HTTP requests, by route template (or unmatched) and status code; \
         /healthz, /readyz and /metrics included.",
        &["route", "status"],
    ),
    request_duration: latency_histogram_vec(
        "locus_http_request_duration_seconds",
        "Time from receiving a request to its response being ready, by route template.",
        &["route"],
    ),
});

/// What the API role counts: fixes, admission, buffer writes, session events.
struct ApiMetrics {
    fixes_accepted: IntCounter,
    fixes_rejected: IntCounterVec,
    batches_duplicate: IntCounter,
    admission_refused: IntCounterVec,
    buffer_write_errors: IntCounter,
    session_changes_refused: IntCounterVec,
    session_events: IntCounterVec,
    session_event_publish_errors: IntCounter,
    session_event_outbox_rows: IntGauge,
    session_event_outbox_oldest_age: IntGauge,
}

static API: LazyLock<ApiMetrics> = LazyLock::new(|| ApiMetrics {
    fixes_accepted: counter(
        "locus_fixes_accepted_total",
        "Fixes stored in the buffer (batches answered 202, not duplicates).",
    ),
    fixes_rejected: counter_vec(
        "locus_fixes_rejected_total",
        "Fixes refused by validation, by reason, in batches answered 202 or 422; a retried \
         batch has its rejected fixes counted again.",
        &["reason"],
    ),
    batches_duplicate: counter(
        "locus_batches_duplicate_total",
        "Retried batches recognised by batch id and not stored again.",
    ),
    admission_refused: counter_vec(
        "locus_admission_refused_total",
        "Batches refused by admission, by reason (device or tenant: rate limit, 429; \
         buffer_full: 503).",
        &["reason"],
    ),
    buffer_write_errors: counter(
        "locus_buffer_write_errors_total",
        "Batches that Redis could not take, answered 503 buffer_unavailable.",
    ),
    session_changes_refused: counter_vec(
        "locus_session_changes_refused_total",
        "Session starts and stops refused with 503 before anything was written, by reason \
         (buffer_full: the buffer holds its bound).",
        &["reason"],
    ),
    session_events: counter_vec(
        "locus_session_events_total",
        "Session events buffered for Kafka, by kind (started, stopped; stops include \
         expiries).",
        &["kind"],
    ),
    session_event_publish_errors: counter(
        "locus_session_event_publish_errors_total",
        "Attempts to append session events from the PostgreSQL outbox to Redis that failed; \
         the events stay in the outbox and are published again (none is lost).",
    ),
    session_event_outbox_rows: gauge(
        "locus_session_event_outbox_rows",
        "Session events waiting in the PostgreSQL outbox for Redis, as last counted by this \
         process's relay (every replica counts the same table).",
    ),
    session_event_outbox_oldest_age: gauge(
        "locus_session_event_outbox_oldest_age_seconds",
        "Age of the oldest session event waiting in the PostgreSQL outbox, in whole seconds \
         (0 when none waits).",
    ),
});

/// An unlabelled integer gauge `name`, registered; it reads 0 until first set.
fn gauge(name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("a valid gauge name and help");
    locus_service::metrics::registry()
        .register(Box::new(gauge.clone()))
        .expect("each gauge is registered once");
    gauge
}

/// What the forwarder role counts: the buffer's depth, production to Kafka, acks.
struct ForwarderMetrics {
    buffer_entries: IntGaugeVec,
    records_produced: IntCounterVec,
    produce_duration: Histogram,
    ingest_to_kafka: Histogram,
    produce_errors: IntCounter,
    entries_acked: IntCounter,
    entries_claimed: IntCounter,
    entries_dead_lettered: IntCounter,
    entries_undecodable: IntCounter,
    entries_rejected: IntCounter,
    groups_recreated: IntCounter,
    progress_errors: IntCounter,
}

static FORWARDER: LazyLock<ForwarderMetrics> = LazyLock::new(|| ForwarderMetrics {
    buffer_entries: gauge_vec(
        "locus_buffer_entries",
        "Entries in a shard's stream (XLEN), waiting or in flight, as last seen by the \
         forwarder that owns the shard.",
        &["shard"],
    ),
    records_produced: counter_vec(
        "locus_forwarder_records_produced_total",
        "Records that Kafka confirmed, by topic (locations, session_events).",
        &["topic"],
    ),
    produce_duration: latency_histogram(
        "locus_forwarder_produce_duration_seconds",
        "For one read of buffer entries: from starting to produce to the XACK and XDEL of \
         the confirmed entries.",
    ),
    ingest_to_kafka: latency_histogram(
        "locus_forwarder_ingest_to_kafka_seconds",
        "Per forwarded batch: from ingest accepting it to Kafka confirming all its records.",
    ),
    produce_errors: counter(
        "locus_forwarder_produce_errors_total",
        "Reads that stopped short because Kafka refused or did not confirm a record; the \
         entry stays pending and is retried.",
    ),
    entries_acked: counter(
        "locus_forwarder_entries_acked_total",
        "Buffer entries acknowledged and deleted after Kafka confirmed all their records.",
    ),
    entries_claimed: counter(
        "locus_forwarder_entries_claimed_total",
        "Entries moved to this forwarder with XAUTOCLAIM when it took a shard over.",
    ),
    entries_dead_lettered: counter(
        "locus_forwarder_entries_dead_lettered_total",
        "Buffer entries that could not be decoded and were sent to the dead-letter topic.",
    ),
    entries_undecodable: counter(
        "locus_forwarder_entries_undecodable_total",
        "Reads of a buffer entry this forwarder could not decode and left pending for a \
         later attempt (a newer writer during a rolling upgrade, or a broken entry); alert \
         on any: after LOCUS_FORWARDER_UNDECODABLE_ATTEMPTS it is dead-lettered.",
    ),
    entries_rejected: counter(
        "locus_forwarder_entries_rejected_total",
        "Buffer entries Kafka refused for good (a record too large) that were moved to \
         their shard's dead-letter stream in Redis after LOCUS_FORWARDER_REJECTED_ATTEMPTS.",
    ),
    groups_recreated: counter(
        "locus_forwarder_groups_recreated_total",
        "Times a shard's consumer group was found missing (Redis restarted without its data, \
         or was flushed) and created again.",
    ),
    progress_errors: counter(
        "locus_session_progress_errors_total",
        "Failed writes of fix counts to PostgreSQL (counts lag; fixes are safe).",
    ),
});

/// Describes and registers the metrics of `roles` (and the HTTP ones, which every process
/// has), so their unlabelled metrics read 0 before the first event.
pub fn register(roles: &[Role]) {
    LazyLock::force(&HTTP);
    LazyLock::force(&SERVER);
    if roles.contains(&Role::Api) {
        LazyLock::force(&API);
        LazyLock::force(&USAGE);
        LazyLock::force(&QUOTAS);
        LazyLock::force(&LOOKUP_CACHE);
        LazyLock::force(&CLIENTS);
    }
    if roles.contains(&Role::Forwarder) {
        LazyLock::force(&FORWARDER);
    }
}

/// An HTTP request finished. Not logged here: the trace layer logs requests.
pub struct HttpRequest<'a> {
    /// The route template (`/v1/sessions/{id}/locations`), or `unmatched`.
    pub route: &'a str,
    /// The status code of the response.
    pub status: u16,
    /// From receiving the request to its response being ready.
    pub duration: Duration,
}

impl HttpRequest<'_> {
    /// Counts and times the request.
    pub fn emit(self) {
        HTTP.requests
            .with_label_values(&[self.route, &self.status.to_string()])
            .inc();
        HTTP.request_duration
            .with_label_values(&[self.route])
            .observe(self.duration.as_secs_f64());
    }
}

/// Fixes of a batch were stored in the buffer.
pub struct FixesAccepted {
    /// How many.
    pub count: usize,
}

impl FixesAccepted {
    /// Counts the event.
    pub fn emit(self) {
        API.fixes_accepted.inc_by(self.count as u64);
    }
}

/// Fixes of a batch were refused by validation.
pub struct FixesRejected {
    /// Why (a `RejectReason`'s label, such as `latitude_out_of_range`).
    pub reason: &'static str,
    /// How many.
    pub count: usize,
}

impl FixesRejected {
    /// Counts the event. Not logged: the answer lists every rejected fix.
    pub fn emit(self) {
        API.fixes_rejected
            .with_label_values(&[self.reason])
            .inc_by(self.count as u64);
    }
}

/// A retried batch was recognised by its batch id and not stored again.
pub struct BatchDuplicate;

impl BatchDuplicate {
    /// Counts the event.
    pub fn emit(self) {
        API.batches_duplicate.inc();
    }
}

/// A batch was refused by admission.
pub struct AdmissionRefused {
    /// Why: `device` or `tenant` (a rate limit, 429), `buffer_full` (503).
    pub reason: &'static str,
}

impl AdmissionRefused {
    /// Counts the event. Not logged: a refusal is the client's to handle (Retry-After).
    pub fn emit(self) {
        API.admission_refused
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// A session start or stop was refused with 503 because of the buffer.
pub struct SessionChangeRefused {
    /// Why: `buffer_full`.
    pub reason: &'static str,
}

impl SessionChangeRefused {
    /// Counts the event. Not logged: the buffer's own metrics say why it is full or away.
    pub fn emit(self) {
        API.session_changes_refused
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// The buffer could not take a write (Redis down or failing); the batch is answered 503.
pub struct BufferWriteFailed<'a> {
    /// The Redis error.
    pub error: &'a dyn std::fmt::Display,
}

impl BufferWriteFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Redis buffer refused a write; answering 503.");
        API.buffer_write_errors.inc();
    }
}

/// A session event was buffered for Kafka.
pub struct SessionEventBuffered {
    /// `started` or `stopped`.
    pub kind: &'static str,
}

impl SessionEventBuffered {
    /// Counts the event.
    pub fn emit(self) {
        API.session_events.with_label_values(&[self.kind]).inc();
    }
}

/// Session events could not be appended from the outbox to Redis now; they stay in the
/// outbox and are published again.
pub struct SessionEventPublishFailed<'a> {
    /// What failed.
    pub error: &'a dyn std::fmt::Display,
}

impl SessionEventPublishFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // A warning, not an error: nothing is lost, the events wait in PostgreSQL. The
        // outbox age gauge tells whether the wait grows.
        tracing::warn!(
            error = %self.error,
            "Session events could not be buffered yet; they stay in the outbox and will be published again."
        );
        API.session_event_publish_errors.inc();
    }
}

/// The relay counted the session event outbox.
pub struct SessionEventOutbox {
    /// Rows waiting.
    pub rows: i64,
    /// Age of the oldest, in seconds.
    pub oldest_age_secs: f64,
}

impl SessionEventOutbox {
    /// Sets the gauges.
    pub fn emit(self) {
        API.session_event_outbox_rows.set(self.rows);
        API.session_event_outbox_oldest_age
            .set(self.oldest_age_secs as i64);
    }
}

/// The entries of one buffer shard were counted.
pub struct BufferDepth {
    /// The shard.
    pub shard: u32,
    /// Entries in its stream, waiting or in flight.
    pub entries: u64,
}

impl BufferDepth {
    /// Sets the gauge.
    pub fn emit(self) {
        FORWARDER
            .buffer_entries
            .with_label_values(&[&self.shard.to_string()])
            .set(i64::try_from(self.entries).unwrap_or(i64::MAX));
    }
}

/// The forwarder produced records and Kafka confirmed them.
pub struct RecordsProduced {
    /// Which topic: `locations` or `session_events`.
    pub topic: &'static str,
    /// How many.
    pub count: usize,
}

impl RecordsProduced {
    /// Counts the event.
    pub fn emit(self) {
        FORWARDER
            .records_produced
            .with_label_values(&[self.topic])
            .inc_by(self.count as u64);
    }
}

/// One read of buffer entries was produced, confirmed and acknowledged.
pub struct ProduceDuration {
    /// From starting to produce to the acknowledgement of the confirmed entries.
    pub elapsed: Duration,
}

impl ProduceDuration {
    /// Records the duration.
    pub fn emit(self) {
        FORWARDER
            .produce_duration
            .observe(self.elapsed.as_secs_f64());
    }
}

/// Kafka confirmed every record of a batch.
pub struct IngestToKafka {
    /// From ingest accepting the batch (its `received_at`) to Kafka's confirmation.
    pub elapsed: Duration,
}

impl IngestToKafka {
    /// Records the duration.
    pub fn emit(self) {
        FORWARDER
            .ingest_to_kafka
            .observe(self.elapsed.as_secs_f64());
    }
}

/// Kafka refused or did not confirm a record; its entry stays pending and is retried.
pub struct ProduceFailed<'a> {
    /// The Kafka error.
    pub error: &'a dyn std::fmt::Display,
}

impl ProduceFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(
            error = %self.error,
            "Kafka did not confirm a record; the entry stays pending and will be retried."
        );
        FORWARDER.produce_errors.inc();
    }
}

/// Entries were acknowledged and deleted from the buffer after Kafka confirmed them.
pub struct EntriesAcked {
    /// How many.
    pub count: usize,
}

impl EntriesAcked {
    /// Counts the event.
    pub fn emit(self) {
        FORWARDER.entries_acked.inc_by(self.count as u64);
    }
}

/// Entries left pending by a shard's previous owner were claimed.
pub struct EntriesClaimed {
    /// How many (often 0).
    pub count: usize,
}

impl EntriesClaimed {
    /// Logs (when there were any) and counts the event.
    pub fn emit(self) {
        if self.count > 0 {
            tracing::info!(
                entries = self.count,
                "Claimed entries left pending by another forwarder."
            );
        }
        FORWARDER.entries_claimed.inc_by(self.count as u64);
    }
}

/// A buffer entry could not be decoded; it went to the dead-letter topic.
pub struct EntryDeadLettered<'a> {
    /// Why it could not be decoded.
    pub error: &'a dyn std::fmt::Display,
}

impl EntryDeadLettered<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // An error: something wrote an entry this forwarder cannot read, and its fixes
        // reach Kafka only through someone replaying the dead letter.
        tracing::error!(error = %self.error, "Undecodable buffer entry sent to the dead-letter topic.");
        FORWARDER.entries_dead_lettered.inc();
    }
}

/// A buffer entry could not be decoded and was left pending for a later attempt.
pub struct EntryUndecodable<'a> {
    /// The shard's stream.
    pub stream: &'a str,
    /// The entry id.
    pub id: &'a str,
    /// Deliveries so far (XPENDING's count).
    pub attempts: u64,
    /// Why it could not be decoded.
    pub error: &'a dyn std::fmt::Display,
}

impl EntryUndecodable<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // An error: the fixes of a 202 are not moving, and someone should look (a version
        // skew between ingest replicas, or a foreign writer) before the attempts run out.
        tracing::error!(
            stream = self.stream,
            id = self.id,
            attempts = self.attempts,
            error = %self.error,
            "Undecodable buffer entry left pending for a later attempt."
        );
        FORWARDER.entries_undecodable.inc();
    }
}

/// Kafka refused an entry's records for good; the entry went to its shard's dead-letter
/// stream in Redis.
pub struct EntryRejected<'a> {
    /// The shard's stream.
    pub stream: &'a str,
    /// The entry id.
    pub id: &'a str,
    /// Why, with the attempts.
    pub error: &'a dyn std::fmt::Display,
}

impl EntryRejected<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // An error: accepted fixes left the path to Kafka; someone replays them from the
        // dead-letter stream once Kafka can take them.
        tracing::error!(
            stream = self.stream,
            id = self.id,
            error = %self.error,
            "Kafka refused a buffer entry for good; moved it to the shard's dead-letter stream."
        );
        FORWARDER.entries_rejected.inc();
    }
}

/// The forwarder's idempotent producer failed for good; the process stops.
pub struct ProducerFailed<'a> {
    /// librdkafka's fatal error.
    pub error: &'a dyn std::fmt::Display,
}

impl ProducerFailed<'_> {
    /// Logs the event (the restart is what counts).
    pub fn emit(self) {
        tracing::error!(
            error = %self.error,
            "The Kafka producer failed for good; the process stops so that its supervisor restarts it. Pending entries stay in Redis."
        );
    }
}

/// A shard's consumer group was missing and was created again.
pub struct ConsumerGroupRecreated<'a> {
    /// The shard's stream.
    pub stream: &'a str,
}

impl ConsumerGroupRecreated<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        // An error: Redis lost its data, and with it every entry it held that had not been
        // forwarded yet (batches answered 202). Forwarding goes on with what comes next.
        tracing::error!(
            stream = self.stream,
            "The forwarder's consumer group was missing (Redis lost its data?); created it again. Entries the stream held before are gone."
        );
        FORWARDER.groups_recreated.inc();
    }
}

/// Session fix counts could not be written to PostgreSQL (counts lag, fixes are safe).
pub struct ProgressWriteFailed<'a> {
    /// The PostgreSQL error.
    pub error: &'a dyn std::fmt::Display,
}

impl ProgressWriteFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Could not update session fix counts; they will lag.");
        FORWARDER.progress_errors.inc();
    }
}

/// Usage per tenant (ingest/src/usage.rs), for billing and SREs. The tenant label is
/// bounded by configuration: the first `LOCUS_USAGE_METRIC_TENANTS` tenants a process
/// sees get their own value, the rest share `other`.
struct UsageMetrics {
    fixes_accepted: IntCounterVec,
    fixes_rejected: IntCounterVec,
    fixes_rate_limited: IntCounterVec,
    bytes: IntCounterVec,
    flushes: IntCounterVec,
    rows_dropped: IntCounter,
    pending_rows: IntGauge,
}

static USAGE: LazyLock<UsageMetrics> = LazyLock::new(|| UsageMetrics {
    fixes_accepted: counter_vec(
        "locus_usage_fixes_accepted_total",
        "Fixes stored in the buffer, by tenant (bounded: LOCUS_USAGE_METRIC_TENANTS tenants \
         by name, the rest `other`).",
        &["tenant"],
    ),
    fixes_rejected: counter_vec(
        "locus_usage_fixes_rejected_total",
        "Fixes refused, by tenant (bounded, see locus_usage_fixes_accepted_total) and reason \
         (a validation reason or the error code of a refused batch).",
        &["tenant", "reason"],
    ),
    fixes_rate_limited: counter_vec(
        "locus_usage_fixes_rate_limited_total",
        "Fixes refused for rate (429), by tenant (bounded).",
        &["tenant"],
    ),
    bytes: counter_vec(
        "locus_usage_bytes_received_total",
        "Request body bytes (as sent, before decompression) of accepted batches, by tenant \
         (bounded).",
        &["tenant"],
    ),
    flushes: counter_vec(
        "locus_usage_flushes_total",
        "Flushes of this replica's usage counts into PostgreSQL's usage_minutes, by outcome \
         (ok, error).",
        &["outcome"],
    ),
    rows_dropped: counter(
        "locus_usage_rows_dropped_total",
        "(tenant, minute) usage rows dropped unflushed because PostgreSQL refused flushes for \
         longer than LOCUS_USAGE_MAX_PENDING_ROWS rows could hold: billing is short by them.",
    ),
    pending_rows: gauge(
        "locus_usage_pending_rows",
        "(tenant, minute) usage rows counted by this replica and not yet in PostgreSQL.",
    ),
});

/// Fixes of a tenant were stored.
pub struct UsageAccepted<'a> {
    /// The tenant's label (its id, or `other` past the bound).
    pub tenant: &'a str,
    /// How many fixes.
    pub fixes: u64,
    /// Request body bytes.
    pub bytes: u64,
}

impl UsageAccepted<'_> {
    /// Counts the event.
    pub fn emit(self) {
        USAGE
            .fixes_accepted
            .with_label_values(&[self.tenant])
            .inc_by(self.fixes);
        USAGE
            .bytes
            .with_label_values(&[self.tenant])
            .inc_by(self.bytes);
    }
}

/// Fixes of a tenant were refused.
pub struct UsageRejected<'a> {
    /// The tenant's label (its id, or `other` past the bound).
    pub tenant: &'a str,
    /// Why (a stable code).
    pub reason: &'static str,
    /// How many fixes.
    pub fixes: u64,
}

impl UsageRejected<'_> {
    /// Counts the event.
    pub fn emit(self) {
        USAGE
            .fixes_rejected
            .with_label_values(&[self.tenant, self.reason])
            .inc_by(self.fixes);
    }
}

/// Fixes of a tenant were refused for rate.
pub struct UsageRateLimited<'a> {
    /// The tenant's label (its id, or `other` past the bound).
    pub tenant: &'a str,
    /// How many fixes.
    pub fixes: u64,
}

impl UsageRateLimited<'_> {
    /// Counts the event.
    pub fn emit(self) {
        USAGE
            .fixes_rate_limited
            .with_label_values(&[self.tenant])
            .inc_by(self.fixes);
    }
}

/// This replica's usage counts were written to PostgreSQL (or not).
pub struct UsageFlushed<'a> {
    /// Rows written (or kept for the next try).
    pub rows: usize,
    /// The PostgreSQL error, if the flush failed.
    pub error: Option<&'a dyn std::fmt::Display>,
    /// Rows still waiting after this flush.
    pub pending: usize,
}

impl UsageFlushed<'_> {
    /// Logs a failure and counts the event.
    pub fn emit(self) {
        let outcome = match self.error {
            None => "ok",
            Some(error) => {
                tracing::warn!(
                    %error,
                    rows = self.rows,
                    "Could not flush usage counts to PostgreSQL; kept for the next try."
                );
                "error"
            }
        };
        USAGE.flushes.with_label_values(&[outcome]).inc();
        USAGE.pending_rows.set(self.pending as i64);
    }
}

/// Usage rows were dropped unflushed (the pending bound was reached).
pub struct UsageRowsDropped {
    /// How many (tenant, minute) rows.
    pub rows: usize,
}

impl UsageRowsDropped {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::error!(
            rows = self.rows,
            "Usage rows dropped unflushed: PostgreSQL has refused flushes for too long (LOCUS_USAGE_MAX_PENDING_ROWS); billing is short by them."
        );
        USAGE.rows_dropped.inc_by(self.rows as u64);
    }
}

/// What admission counts besides refused batches: request-rate refusals, the shared
/// budget's Redis calls, the limits table's reloads, session starts over the cap.
struct QuotaMetrics {
    requests_refused: IntCounterVec,
    shared_duration: Histogram,
    shared_errors: IntCounter,
    limits_tenants: IntGauge,
    limits_reload_errors: IntCounter,
    sessions_refused: IntCounter,
}

static QUOTAS: LazyLock<QuotaMetrics> = LazyLock::new(|| QuotaMetrics {
    requests_refused: counter_vec(
        "locus_requests_rate_limited_total",
        "Requests refused 429 for the request rate (any /v1 route), by whose budget: device \
         (the caller: a device, admin or partner) or tenant.",
        &["scope"],
    ),
    shared_duration: latency_histogram(
        "locus_admission_shared_duration_seconds",
        "Per batch: the Redis call that checks and charges the shared fixes budget (device \
         and tenant, across replicas).",
    ),
    shared_errors: counter(
        "locus_admission_shared_errors_total",
        "Batches whose shared-budget call failed or passed LOCUS_REDIS_DEADLINE_MS; answered \
         503 buffer_unavailable.",
    ),
    limits_tenants: gauge(
        "locus_tenant_limits_rows",
        "Tenants with limits of their own in the table this replica last loaded.",
    ),
    limits_reload_errors: counter(
        "locus_tenant_limits_reload_errors_total",
        "Reloads of tenant_limits that failed (PostgreSQL away); the last table stays in force.",
    ),
    sessions_refused: counter(
        "locus_sessions_refused_total",
        "Session starts refused 409 too_many_active_sessions (the tenant's max_active_sessions).",
    ),
});

/// A request was refused for the request rate.
pub struct RequestRefused {
    /// `device` or `tenant`.
    pub scope: &'static str,
}

impl RequestRefused {
    /// Counts the event. Not logged: the client has Retry-After.
    pub fn emit(self) {
        QUOTAS
            .requests_refused
            .with_label_values(&[self.scope])
            .inc();
    }
}

/// The shared budget's Redis call of one batch finished (or failed).
pub struct SharedBudgetCall {
    /// How long it took.
    pub duration: Duration,
}

impl SharedBudgetCall {
    /// Times the call.
    pub fn emit(self) {
        QUOTAS.shared_duration.observe(self.duration.as_secs_f64());
    }
}

/// The shared budget gave no answer: the batch is answered 503.
pub struct SharedBudgetFailed<'a> {
    /// What went wrong.
    pub error: &'a dyn std::fmt::Display,
}

impl SharedBudgetFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "The shared rate budget did not answer; answering 503.");
        QUOTAS.shared_errors.inc();
    }
}

/// The limits table was reloaded.
pub struct LimitsReloaded {
    /// Tenants with limits of their own.
    pub tenants: usize,
}

impl LimitsReloaded {
    /// Sets the gauge.
    pub fn emit(self) {
        QUOTAS.limits_tenants.set(self.tenants as i64);
    }
}

/// A reload of the limits table failed; the last one stays in force.
pub struct LimitsReloadFailed<'a> {
    /// The PostgreSQL error.
    pub error: &'a dyn std::fmt::Display,
}

impl LimitsReloadFailed<'_> {
    /// Logs and counts the event.
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "Could not reload tenant limits; keeping the last table.");
        QUOTAS.limits_reload_errors.inc();
    }
}

/// A session start was refused: the tenant is at its cap of active sessions.
pub struct SessionCapReached;

impl SessionCapReached {
    /// Counts the event.
    pub fn emit(self) {
        QUOTAS.sessions_refused.inc();
    }
}

/// What the HTTP server's connection protection counts (ingest/src/server.rs; every
/// process serves HTTP).
struct ServerMetrics {
    connections_open: IntGauge,
    connection_cap_reached: IntCounter,
    requests_in_flight: IntGauge,
    requests_shed: IntCounterVec,
    timeouts: IntCounterVec,
}

static SERVER: LazyLock<ServerMetrics> = LazyLock::new(|| ServerMetrics {
    connections_open: gauge(
        "locus_http_connections_open",
        "HTTP connections open now (at most LOCUS_HTTP_MAX_CONNECTIONS).",
    ),
    connection_cap_reached: counter(
        "locus_http_connection_cap_reached_total",
        "Times the server stopped accepting because LOCUS_HTTP_MAX_CONNECTIONS connections \
         were open (new ones wait in the kernel's backlog).",
    ),
    requests_in_flight: gauge(
        "locus_http_requests_in_flight",
        "Requests being served now, health, readiness and metrics not counted (at most \
         LOCUS_HTTP_MAX_IN_FLIGHT).",
    ),
    requests_shed: counter_vec(
        "locus_http_requests_shed_total",
        "Requests refused before any token was read, by reason: overloaded (503, over \
         LOCUS_HTTP_MAX_IN_FLIGHT), address_rate (429, over LOCUS_HTTP_PER_ADDRESS_RPS).",
        &["reason"],
    ),
    timeouts: counter_vec(
        "locus_http_timeouts_total",
        "Connections and requests cut by a timeout, by kind: header (connection closed: \
         headers or the next request not sent within LOCUS_HTTP_HEADER_TIMEOUT_MS), body \
         (408), request (503 deadline_exceeded), shutdown (connection dropped at the end of \
         the grace period).",
        &["kind"],
    ),
});

/// A connection opened (`delta` 1) or closed (-1).
pub struct ConnectionsOpen {
    /// +1 or -1.
    pub delta: i64,
}

impl ConnectionsOpen {
    /// Moves the gauge.
    pub fn emit(self) {
        SERVER.connections_open.add(self.delta);
    }
}

/// The server holds its most connections and waits for one to close before accepting.
pub struct ConnectionCapReached;

impl ConnectionCapReached {
    /// Counts the event. Not logged: under a flood it would log once per connection.
    pub fn emit(self) {
        SERVER.connection_cap_reached.inc();
    }
}

/// A request started (`delta` 1) or finished (-1) being served.
pub struct RequestsInFlight {
    /// +1 or -1.
    pub delta: i64,
}

impl RequestsInFlight {
    /// Moves the gauge.
    pub fn emit(self) {
        SERVER.requests_in_flight.add(self.delta);
    }
}

/// A request was refused by the connection-level protection.
pub struct RequestShed {
    /// `overloaded` or `address_rate`.
    pub reason: &'static str,
}

impl RequestShed {
    /// Counts the event. Not logged: the client is told to retry.
    pub fn emit(self) {
        SERVER.requests_shed.with_label_values(&[self.reason]).inc();
    }
}

/// A connection was closed by a timer (`header`, `shutdown`).
pub struct ConnectionTimedOut {
    /// `header` or `shutdown`.
    pub kind: &'static str,
}

impl ConnectionTimedOut {
    /// Counts the event.
    pub fn emit(self) {
        SERVER.timeouts.with_label_values(&[self.kind]).inc();
    }
}

/// A request was answered by a timeout (`body`: 408, `request`: 503).
pub struct RequestTimedOut {
    /// `body` or `request`.
    pub kind: &'static str,
}

impl RequestTimedOut {
    /// Counts the event.
    pub fn emit(self) {
        SERVER.timeouts.with_label_values(&[self.kind]).inc();
    }
}

/// What the API role counts of its session and credential caches (ingest/src/cache.rs).
static LOOKUP_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "locus_lookup_cache_total",
        "Session and credential lookups PostgreSQL did not answer (failed or past \
         LOCUS_DATABASE_DEADLINE_MS), by kind (session, credential) and outcome: served \
         from this replica's cache, or answered 503 because the entry was past its bound \
         (expired) or absent (missing).",
        &["kind", "outcome"],
    )
});

/// A session or credential lookup that PostgreSQL did not answer, and what the cache did.
pub struct LookupCacheUsed {
    /// `session` or `credential`.
    pub kind: &'static str,
    /// `served`, `expired` or `missing`.
    pub outcome: &'static str,
}

impl LookupCacheUsed {
    /// Counts the event; the lookup itself logged why PostgreSQL did not answer.
    pub fn emit(self) {
        LOOKUP_CACHE
            .with_label_values(&[self.kind, self.outcome])
            .inc();
    }
}

/// What the API role counts of the client-app routes (ingest/src/clients.rs).
struct ClientMetrics {
    heartbeats: IntCounterVec,
    ignored: IntCounterVec,
    implicit_sessions: IntCounterVec,
    credential_lookups: IntCounterVec,
}

static CLIENTS: LazyLock<ClientMetrics> = LazyLock::new(|| ClientMetrics {
    heartbeats: counter_vec(
        "locus_client_heartbeats_total",
        "Client requests without a position (an OsmAnd heartbeat), by format: answered \
         200, not forwarded.",
        &["format"],
    ),
    ignored: counter_vec(
        "locus_client_messages_ignored_total",
        "Client messages of a type Locus does not use (OwnTracks transition, waypoint, \
         lwt, card...), by format: answered 200, not stored.",
        &["format"],
    ),
    implicit_sessions: counter_vec(
        "locus_implicit_sessions_total",
        "Changes of client devices' implicit sessions, by change: started, rolled_over \
         (idle for LOCUS_CLIENT_SESSION_IDLE_SECS), reresolved (a batch found the \
         remembered session stopped).",
        &["change"],
    ),
    credential_lookups: counter_vec(
        "locus_client_credential_lookups_total",
        "Device credentials of client requests, by how they were checked: cached (this \
         replica's exchange within LOCUS_CLIENT_CREDENTIAL_CACHE_SECS, no PostgreSQL) or \
         exchanged (through PostgreSQL).",
        &["outcome"],
    ),
});

/// A client request carried no position.
pub struct ClientHeartbeat {
    /// The format: `osmand`.
    pub format: &'static str,
}

impl ClientHeartbeat {
    /// Counts the event. Not logged: a tracker sends one every interval.
    pub fn emit(self) {
        CLIENTS.heartbeats.with_label_values(&[self.format]).inc();
    }
}

/// A client message of a type Locus does not use was answered and dropped.
pub struct ClientMessageIgnored {
    /// The format: `owntracks`.
    pub format: &'static str,
}

impl ClientMessageIgnored {
    /// Counts the event.
    pub fn emit(self) {
        CLIENTS.ignored.with_label_values(&[self.format]).inc();
    }
}

/// A client device's implicit session changed.
pub struct ImplicitSessionChanged {
    /// `started`, `rolled_over` or `reresolved`.
    pub change: &'static str,
}

impl ImplicitSessionChanged {
    /// Counts the event; the session code logs the starts and rollovers.
    pub fn emit(self) {
        CLIENTS
            .implicit_sessions
            .with_label_values(&[self.change])
            .inc();
    }
}

/// A client request's device credential was checked.
pub struct ClientCredentialLookup {
    /// `cached` or `exchanged`.
    pub outcome: &'static str,
}

impl ClientCredentialLookup {
    /// Counts the event.
    pub fn emit(self) {
        CLIENTS
            .credential_lookups
            .with_label_values(&[self.outcome])
            .inc();
    }
}
