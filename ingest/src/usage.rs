//! Usage metering per tenant: what each tenant sent this replica (fixes accepted, rejected
//! by reason, rate limited; bytes), counted in memory per minute and handed to the flusher
//! ([`crate::usage::UsageFlusher`]) that adds it to PostgreSQL's `usage_minutes` for billing.
//!
//! The request path only takes a short lock and bumps counters: no I/O. The counts also go
//! to Prometheus (typed events in [`crate::events`]) with a bounded tenant label: the first
//! `LOCUS_USAGE_METRIC_TENANTS` tenants seen get their own label value, later ones `other`.
//!
//! Exactly-once is not possible across a crash: what a replica counted since its last
//! flush is lost if it dies without a graceful shutdown (at most one flush interval of
//! one replica). A failed flush keeps its counts for the next try, bounded by
//! `LOCUS_USAGE_MAX_PENDING_ROWS` (the oldest minutes are dropped past it, and counted).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use locus_session::SessionStore;
use locus_session::usage::UsageMinute;
use locus_wire::TenantId;
use tokio_util::sync::CancellationToken;

use crate::events;

/// The label value of the tenants past the bound of `LOCUS_USAGE_METRIC_TENANTS`.
pub const OTHER_TENANTS: &str = "other";

/// What one tenant did in one minute on this replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Fixes stored in the buffer.
    pub accepted: u64,
    /// Fixes refused, by reason (the `error` code or validation reason).
    pub rejected: BTreeMap<Cow<'static, str>, u64>,
    /// Fixes refused for rate (429).
    pub rate_limited: u64,
    /// Request body bytes (after decompression) of accepted batches.
    pub bytes: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.accepted += other.accepted;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
        self.rate_limited += other.rate_limited;
        self.bytes += other.bytes;
    }
}

/// One row of the roll-up: a tenant's counts in one minute (the minute's start, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Whose.
    pub tenant: TenantId,
    /// The start of the minute.
    pub minute: DateTime<Utc>,
    /// What was counted.
    pub counts: Counts,
}

struct State {
    /// Not yet flushed, by tenant and minute.
    pending: HashMap<(TenantId, DateTime<Utc>), Counts>,
    /// The tenants that have their own metric label (at most `metric_tenants`).
    labelled: HashSet<TenantId>,
}

/// The usage accumulator of this replica (see the module documentation).
pub struct Usage {
    state: Mutex<State>,
    metric_tenants: usize,
    max_pending_rows: usize,
}

fn minute_of(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now)
}

impl Usage {
    /// An empty accumulator: `metric_tenants` tenants get their own metric label, and at
    /// most `max_pending_rows` (tenant, minute) rows wait for a flush.
    pub fn new(metric_tenants: usize, max_pending_rows: usize) -> Self {
        Self {
            state: Mutex::new(State {
                pending: HashMap::new(),
                labelled: HashSet::new(),
            }),
            metric_tenants,
            max_pending_rows: max_pending_rows.max(1),
        }
    }

    /// Adds to the current minute of `tenant`, and returns its metric label.
    fn record(&self, tenant: &TenantId, f: impl FnOnce(&mut Counts)) -> String {
        let minute = minute_of(Utc::now());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let labelled = state.labelled.contains(tenant)
            || (state.labelled.len() < self.metric_tenants
                && state.labelled.insert(tenant.clone()));
        f(state.pending.entry((tenant.clone(), minute)).or_default());
        let dropped = self.bound(&mut state);
        drop(state);
        if dropped > 0 {
            events::UsageRowsDropped { rows: dropped }.emit();
        }
        if labelled {
            tenant.to_string()
        } else {
            OTHER_TENANTS.to_owned()
        }
    }

    /// Drops the oldest minutes past the bound; returns how many rows were dropped.
    fn bound(&self, state: &mut State) -> usize {
        let over = state.pending.len().saturating_sub(self.max_pending_rows);
        if over == 0 {
            return 0;
        }
        let mut keys: Vec<_> = state.pending.keys().cloned().collect();
        keys.sort_by_key(|(_, minute)| *minute);
        for key in keys.into_iter().take(over) {
            state.pending.remove(&key);
        }
        over
    }

    /// `fixes` fixes of `tenant` were stored, from a request body of `bytes` bytes.
    pub fn accepted(&self, tenant: &TenantId, fixes: u64, bytes: u64) {
        let label = self.record(tenant, |c| {
            c.accepted += fixes;
            c.bytes += bytes;
        });
        events::UsageAccepted {
            tenant: &label,
            fixes,
            bytes,
        }
        .emit();
    }

    /// `fixes` fixes of `tenant` were refused for `reason` (a stable code, such as
    /// `timestamp_in_future` or `batch_too_large`).
    pub fn rejected(&self, tenant: &TenantId, reason: &'static str, fixes: u64) {
        let label = self.record(tenant, |c| {
            *c.rejected.entry(Cow::Borrowed(reason)).or_default() += fixes;
        });
        events::UsageRejected {
            tenant: &label,
            reason,
            fixes,
        }
        .emit();
    }

    /// `fixes` fixes of `tenant` were refused for rate (429).
    pub fn rate_limited(&self, tenant: &TenantId, fixes: u64) {
        let label = self.record(tenant, |c| c.rate_limited += fixes);
        events::UsageRateLimited {
            tenant: &label,
            fixes,
        }
        .emit();
    }

    /// Takes every pending row out, for a flush.
    pub fn take(&self) -> Vec<MinuteCounts> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<MinuteCounts> = state
            .pending
            .drain()
            .map(|((tenant, minute), counts)| MinuteCounts {
                tenant,
                minute,
                counts,
            })
            .collect();
        rows.sort_by(|a, b| (a.minute, &a.tenant).cmp(&(b.minute, &b.tenant)));
        rows
    }

    /// Puts back the rows of a failed flush, for the next try (added to what was counted
    /// since; the bound applies).
    pub fn restore(&self, rows: Vec<MinuteCounts>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for row in rows {
            state
                .pending
                .entry((row.tenant, row.minute))
                .or_default()
                .add(&row.counts);
        }
        let dropped = self.bound(&mut state);
        drop(state);
        if dropped > 0 {
            events::UsageRowsDropped { rows: dropped }.emit();
        }
    }

    /// How many (tenant, minute) rows wait for a flush.
    pub fn pending_rows(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .len()
    }
}

/// What one `POST /v1/sessions/{id}/locations` counts, settled once its answer is known:
/// the handler tells it what it learnt (how many fixes, which were rejected, what was
/// stored) and [`BatchMeter::settle`] counts it once, whatever path the answer took.
pub struct BatchMeter {
    usage: Arc<Usage>,
    tenant: TenantId,
    fixes: Option<u64>,
    rejected: Vec<&'static str>,
    stored: Option<(u64, u64)>,
}

impl BatchMeter {
    /// A meter for a request of `tenant`.
    pub fn new(usage: Arc<Usage>, tenant: TenantId) -> Self {
        Self {
            usage,
            tenant,
            fixes: None,
            rejected: Vec::new(),
            stored: None,
        }
    }

    /// The batch was decoded with `fixes` fixes: a refusal from here on counts them.
    pub fn decoded(&mut self, fixes: usize) {
        self.fixes = Some(fixes as u64);
    }

    /// The batch was validated: `answer` lists the fixes rejected, by reason.
    pub fn validated(&mut self, answer: &locus_wire::api::BatchResponse) {
        self.rejected = answer.rejected.iter().map(|r| r.reason.as_str()).collect();
    }

    /// `fixes` fixes were stored, from a body of `bytes` bytes (after decompression).
    pub fn stored(&mut self, fixes: usize, bytes: usize) {
        self.stored = Some((fixes as u64, bytes as u64));
    }

    /// Runs a fixes route's `work` with this meter, then counts the request by the answer
    /// it gave ([`BatchMeter::settle`]), whichever check gave it.
    pub async fn measure(
        mut self,
        work: impl AsyncFnOnce(
            &mut BatchMeter,
        ) -> Result<axum::response::Response, crate::error::ApiError>,
    ) -> Result<axum::response::Response, crate::error::ApiError> {
        let answer = work(&mut self).await;
        self.settle(&answer);
        answer
    }

    /// Counts the request by its answer: stored fixes and the ones rejected beside them;
    /// the fixes of a batch refused whole by their error code once they were counted
    /// (earlier refusals, such as a body too large, name no fix count and are left to the
    /// HTTP metrics); a 422 by each fix's reason. Rate refusals are counted where they
    /// are made ([`Usage::rate_limited`]), and a retried batch is not counted again.
    pub fn settle(self, answer: &Result<axum::response::Response, crate::error::ApiError>) {
        use crate::error::ApiError;
        let by_reason = |usage: &Usage| {
            let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
            for reason in &self.rejected {
                *counts.entry(reason).or_default() += 1;
            }
            for (reason, n) in counts {
                usage.rejected(&self.tenant, reason, n);
            }
        };
        if let Some((fixes, bytes)) = self.stored {
            self.usage.accepted(&self.tenant, fixes, bytes);
            by_reason(&self.usage);
            return;
        }
        match answer {
            // A 429 is an answer with its headers (Ok), counted by `rate_limited`.
            Ok(_) => {}
            Err(ApiError::AllRejected(_)) => by_reason(&self.usage),
            Err(e) => {
                if let Some(fixes) = self.fixes {
                    self.usage.rejected(&self.tenant, e.code().as_str(), fixes);
                }
            }
        }
    }
}

/// Saturates instead of wrapping: a count past `i64::MAX` is not a real one.
fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl From<MinuteCounts> for UsageMinute {
    fn from(row: MinuteCounts) -> Self {
        let c = row.counts;
        UsageMinute {
            tenant_id: row.tenant,
            minute: row.minute,
            fixes_accepted: signed(c.accepted),
            fixes_rejected: c
                .rejected
                .into_iter()
                .map(|(k, v)| (k.into_owned(), signed(v)))
                .collect(),
            fixes_rate_limited: signed(c.rate_limited),
            bytes: signed(c.bytes),
        }
    }
}

impl From<UsageMinute> for MinuteCounts {
    fn from(row: UsageMinute) -> Self {
        let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
        MinuteCounts {
            tenant: row.tenant_id,
            minute: row.minute,
            counts: Counts {
                accepted: unsigned(row.fixes_accepted),
                rejected: row
                    .fixes_rejected
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), unsigned(v)))
                    .collect(),
                rate_limited: unsigned(row.fixes_rate_limited),
                bytes: unsigned(row.bytes),
            },
        }
    }
}

/// The task that adds this replica's counts to PostgreSQL every `every`, and once more
/// when stopped (after the HTTP server, so the last requests are in it).
pub struct UsageFlusher {
    /// What is counted.
    pub usage: Arc<Usage>,
    /// Where it goes.
    pub store: SessionStore,
    /// The flush interval (`LOCUS_USAGE_FLUSH_SECS`).
    pub every: Duration,
}

impl UsageFlusher {
    /// Flushes every interval until `stop`, then a last time.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: nothing is counted yet.
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
        // No next try: what the last flush could not write goes with the process.
        let left = self.usage.take().len();
        if left > 0 {
            events::UsageRowsDropped { rows: left }.emit();
        }
    }

    /// Adds what was counted since the last flush to PostgreSQL; what could not be
    /// written is kept for the next flush (within the pending bound).
    pub async fn flush(&self) {
        let rows: Vec<UsageMinute> = self.usage.take().into_iter().map(Into::into).collect();
        if rows.is_empty() {
            events::UsageFlushed {
                rows: 0,
                error: None,
                pending: self.usage.pending_rows(),
            }
            .emit();
            return;
        }
        let written = rows.len();
        match self.store.add_usage(rows).await {
            Ok(()) => events::UsageFlushed {
                rows: written,
                error: None,
                pending: self.usage.pending_rows(),
            }
            .emit(),
            Err((left, error)) => {
                let kept = left.len();
                self.usage
                    .restore(left.into_iter().map(Into::into).collect());
                events::UsageFlushed {
                    rows: kept,
                    error: Some(&error),
                    pending: self.usage.pending_rows(),
                }
                .emit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn counts_add_up_per_tenant_and_are_taken_once() {
        let usage = Usage::new(10, 100);
        usage.accepted(&tenant("a"), 3, 100);
        usage.accepted(&tenant("a"), 2, 50);
        usage.rejected(&tenant("a"), "timestamp_in_future", 1);
        usage.rate_limited(&tenant("b"), 7);
        let rows = usage.take();
        let a = rows.iter().find(|r| r.tenant == tenant("a")).unwrap();
        assert_eq!(a.counts.accepted, 5);
        assert_eq!(a.counts.bytes, 150);
        assert_eq!(a.counts.rejected["timestamp_in_future"], 1);
        let b = rows.iter().find(|r| r.tenant == tenant("b")).unwrap();
        assert_eq!(b.counts.rate_limited, 7);
        assert!(usage.take().is_empty());
    }

    #[test]
    fn restored_rows_add_to_what_was_counted_since() {
        let usage = Usage::new(10, 100);
        usage.accepted(&tenant("a"), 3, 100);
        let rows = usage.take();
        usage.accepted(&tenant("a"), 1, 10);
        usage.restore(rows);
        let rows = usage.take();
        let total: u64 = rows.iter().map(|r| r.counts.accepted).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn past_the_pending_bound_the_oldest_minutes_are_dropped() {
        let usage = Usage::new(10, 2);
        let old = minute_of(Utc::now()) - TimeDelta::minutes(5);
        usage.restore(vec![MinuteCounts {
            tenant: tenant("a"),
            minute: old,
            counts: Counts {
                accepted: 9,
                ..Counts::default()
            },
        }]);
        usage.accepted(&tenant("b"), 1, 1);
        usage.accepted(&tenant("c"), 1, 1);
        let rows = usage.take();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.minute != old));
    }

    #[test]
    fn tenants_past_the_label_bound_share_the_other_label() {
        let usage = Usage::new(1, 100);
        assert_eq!(usage.record(&tenant("a"), |_| {}), "a");
        assert_eq!(usage.record(&tenant("b"), |_| {}), OTHER_TENANTS);
        assert_eq!(usage.record(&tenant("a"), |_| {}), "a");
    }
}
