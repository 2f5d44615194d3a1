//! The shared counters of a timed run's requests, turned into [`LoadFigures`] at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use reqwest::StatusCode;

use super::LoadFigures;
use crate::client::{Answer, CallError};
use crate::report::{LatencyMs, latency_histogram};

/// Counters every request task of a run adds to.
pub(super) struct Tally {
    ok: AtomicU64,
    fixes: AtomicU64,
    dropped: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            ok: AtomicU64::new(0),
            fixes: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: Mutex::default(),
            latency: Mutex::new(latency_histogram()),
        }
    }

    /// Counts one request: a 202 with its fixes and latency, anything else as an error
    /// keyed by status (`transport` for no answer).
    pub(super) fn record(&self, result: &Result<Answer, CallError>, fixes: u64, latency: Duration) {
        let status = match result {
            Ok(answer) => Some(answer.status),
            Err(e) => e.status(),
        };
        if status == Some(StatusCode::ACCEPTED) {
            self.ok.fetch_add(1, Ordering::Relaxed);
            self.fixes.fetch_add(fixes, Ordering::Relaxed);
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .saturating_record(us);
            return;
        }
        let key = match status {
            Some(s) => s.as_u16().to_string(),
            None => "transport".to_owned(),
        };
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Counts a request the open loop did not send.
    pub(super) fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures of a run that began at `started` and offered `offered` fixes/s.
    pub(super) fn figures(&self, started: Instant, offered: f64) -> LoadFigures {
        let secs = started.elapsed().as_secs_f64();
        let fixes = self.fixes.load(Ordering::Relaxed);
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        LoadFigures {
            ok_requests: self.ok.load(Ordering::Relaxed),
            accepted_fixes: fixes,
            errors: self
                .errors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            dropped: self.dropped.load(Ordering::Relaxed),
            fixes_per_sec: fixes as f64 / secs.max(1e-9),
            offered_fixes_per_sec: offered,
            http_ms: LatencyMs::from_micros(&latency),
            secs,
        }
    }
}
