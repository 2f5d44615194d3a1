//! [`LoadReport`]: what a planned load did and how ingest answered, tallied per device
//! task and added up.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use locus_wire::SessionId;

use super::SessionRun;
use crate::client::Attempt;
use crate::register::Registration;
use crate::report::latency_histogram;

/// Error messages kept in a report; the counters hold the totals.
const MAX_ERRORS_KEPT: usize = 20;

/// What a run did and how ingest answered.
#[derive(Debug)]
pub struct LoadReport {
    /// Sessions started (and stopped at the end, see `failed_stops`).
    pub sessions: Vec<SessionRun>,
    /// Batches that got a 202 or 422 answer.
    pub batches_answered: u64,
    /// Fixes in the answered batches.
    pub fixes_sent: u64,
    /// Fixes ingest accepted.
    pub accepted: u64,
    /// Fixes ingest rejected.
    pub rejected: u64,
    /// Rejected fixes by reason code.
    pub reject_reasons: BTreeMap<String, u64>,
    /// Batches ingest answered as already stored (a retry of an earlier attempt).
    pub duplicate_batches: u64,
    /// Requests sent again after 429, 503 or a transport error.
    pub retries: u64,
    /// Planned batches without a usable answer: refused, out of attempts, or never sent
    /// because their device had no session or gave up.
    pub failed_batches: u64,
    /// Devices whose session could not be started.
    pub failed_sessions: u64,
    /// Sessions that could not be stopped.
    pub failed_stops: u64,
    /// The first few error messages.
    pub errors: Vec<String>,
    /// Latency of every answered batch POST attempt, in microseconds.
    pub batch_latency_us: Histogram<u64>,
    /// Latency of the session start and stop calls, in microseconds.
    pub session_latency_us: Histogram<u64>,
    /// Wall time of the batch phase (first batch sent to last batch answered).
    pub load_elapsed: Duration,
    /// The registration of the tenants and devices before the sessions.
    pub registration: Registration,
}

impl LoadReport {
    pub(super) fn new() -> Self {
        Self {
            sessions: Vec::new(),
            batches_answered: 0,
            fixes_sent: 0,
            accepted: 0,
            rejected: 0,
            reject_reasons: BTreeMap::new(),
            duplicate_batches: 0,
            retries: 0,
            failed_batches: 0,
            failed_sessions: 0,
            failed_stops: 0,
            errors: Vec::new(),
            batch_latency_us: latency_histogram(),
            session_latency_us: latency_histogram(),
            load_elapsed: Duration::ZERO,
            registration: Registration::default(),
        }
    }

    /// Ids of the sessions the run started.
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|s| s.session_id).collect()
    }

    /// Accepted fixes per second over the batch phase.
    pub fn throughput(&self) -> f64 {
        let secs = self.load_elapsed.as_secs_f64();
        if secs > 0.0 {
            self.accepted as f64 / secs
        } else {
            0.0
        }
    }

    /// Records a session call's attempt: its latency when answered, or a retry.
    pub(super) fn session_attempt(&mut self, attempt: Attempt) {
        note(&mut self.session_latency_us, &mut self.retries, attempt);
    }

    /// Records a batch POST's attempt: its latency when answered, or a retry.
    pub(super) fn batch_attempt(&mut self, attempt: Attempt) {
        note(&mut self.batch_latency_us, &mut self.retries, attempt);
    }

    pub(super) fn error(&mut self, message: String) {
        tracing::warn!(error = %message, "Load request failed.");
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(message);
        }
    }

    /// Adds a device's tally to the run's.
    pub(super) fn absorb(&mut self, other: LoadReport) {
        self.batches_answered += other.batches_answered;
        self.fixes_sent += other.fixes_sent;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        for (reason, n) in other.reject_reasons {
            *self.reject_reasons.entry(reason).or_default() += n;
        }
        self.duplicate_batches += other.duplicate_batches;
        self.retries += other.retries;
        self.failed_batches += other.failed_batches;
        self.failed_sessions += other.failed_sessions;
        self.failed_stops += other.failed_stops;
        for e in other.errors {
            if self.errors.len() < MAX_ERRORS_KEPT {
                self.errors.push(e);
            }
        }
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.batch_latency_us.add(&other.batch_latency_us);
        let _ = self.session_latency_us.add(&other.session_latency_us);
    }
}

fn note(latency_us: &mut Histogram<u64>, retries: &mut u64, attempt: Attempt) {
    match attempt {
        Attempt::Answered(elapsed) => {
            latency_us.saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        }
        Attempt::Retrying => *retries += 1,
    }
}
