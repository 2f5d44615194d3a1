//! Internal events: the only place ingest names its metrics. Each function logs (where a
//! person would want a line) and counts; docs/metrics.md lists every name.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

/// An HTTP request finished.
pub fn http_request(route: String, status: u16, elapsed: Duration) {
    let status = status.to_string();
    counter!("locus_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    histogram!("locus_http_request_duration_seconds", "route" => route.clone())
        .record(elapsed.as_secs_f64());
}

/// Fixes of a batch were stored in the buffer.
pub fn fixes_accepted(n: usize) {
    counter!("locus_fixes_accepted_total").increment(n as u64);
}

/// Fixes of a batch were refused, by reason.
pub fn fixes_rejected(reason: &'static str, n: usize) {
    counter!("locus_fixes_rejected_total", "reason" => reason).increment(n as u64);
}

/// A retried batch was recognised and not stored again.
pub fn batch_duplicate() {
    counter!("locus_batches_duplicate_total").increment(1);
}

/// A request was refused by admission (rate limit or full buffer).
pub fn admission_refused(reason: &'static str) {
    counter!("locus_admission_refused_total", "reason" => reason).increment(1);
}

/// The buffer could not take a write (Redis down or full).
pub fn buffer_unavailable(error: &dyn std::fmt::Display) {
    tracing::warn!(error = %error, "Redis buffer refused a write; answering 503.");
    counter!("locus_buffer_write_errors_total").increment(1);
}

/// Entries waiting in one buffer shard.
pub fn buffer_depth(shard: u32, entries: u64) {
    gauge!("locus_buffer_entries", "shard" => shard.to_string()).set(entries as f64);
}

/// The forwarder produced records and Kafka confirmed them.
pub fn records_produced(topic_kind: &'static str, n: usize) {
    counter!("locus_forwarder_records_produced_total", "topic" => topic_kind).increment(n as u64);
}

/// Time from reading entries to Kafka confirming all their records.
pub fn produce_duration(elapsed: Duration) {
    histogram!("locus_forwarder_produce_duration_seconds").record(elapsed.as_secs_f64());
}

/// Kafka refused or timed out a record; its entry stays pending and is retried.
pub fn produce_failed(error: &dyn std::fmt::Display) {
    tracing::warn!(error = %error, "Kafka did not confirm a record; the entry stays pending and will be retried.");
    counter!("locus_forwarder_produce_errors_total").increment(1);
}

/// Entries acknowledged (and removed) from the buffer after Kafka confirmed them.
pub fn entries_acked(n: usize) {
    counter!("locus_forwarder_entries_acked_total").increment(n as u64);
}

/// Entries claimed from a consumer that stopped acknowledging them.
pub fn entries_claimed(n: usize) {
    if n > 0 {
        tracing::info!(
            entries = n,
            "Claimed entries left pending by another forwarder."
        );
    }
    counter!("locus_forwarder_entries_claimed_total").increment(n as u64);
}

/// An entry could not be decoded; it went to the dead-letter topic.
pub fn entry_dead_lettered(error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "Undecodable buffer entry sent to the dead-letter topic.");
    counter!("locus_forwarder_entries_dead_lettered_total").increment(1);
}

/// Time from a batch's 202 to Kafka's confirmation of its records.
pub fn ingest_to_kafka(elapsed: Duration) {
    histogram!("locus_forwarder_ingest_to_kafka_seconds").record(elapsed.as_secs_f64());
}

/// A session started or stopped.
pub fn session_event(kind: &'static str) {
    counter!("locus_session_events_total", "kind" => kind).increment(1);
}

/// A session event could not be buffered even after retries: it will be missing on Kafka.
pub fn session_event_lost(error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "A session event could not be buffered and is lost; the session row in PostgreSQL is still right.");
    counter!("locus_session_events_lost_total").increment(1);
}

/// Session counts could not be written to PostgreSQL (counts lag, fixes are safe).
pub fn progress_write_failed(error: &dyn std::fmt::Display) {
    tracing::warn!(error = %error, "Could not update session fix counts; they will lag.");
    counter!("locus_session_progress_errors_total").increment(1);
}
