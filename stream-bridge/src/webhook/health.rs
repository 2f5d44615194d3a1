//! An endpoint's health: what its lane knows of it across deliveries (failure streak,
//! circuit, last success and failure, disabled by a 410), and the reporter that gets that
//! to PostgreSQL for the admin API's `GET /v1/sink/health`.
//!
//! [`SinkHealth`] is pure state, moved by the outcomes of attempts; the lane keeps one per
//! tenant. After every attempt the lane hands a [`HealthSnapshot`] to the
//! [`HealthReporter`], which only keeps the latest one per tenant in memory: the writer
//! ([`crate::sink_store::SinkRefresher::run`]) writes what changed at most once per
//! [`WRITE_INTERVAL`], in one transaction, so a sink failing 50 times a second costs one
//! row update a second, and a healthy one nothing once its state settled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use locus_wire::TenantId;

use super::config::Sink;
use super::retry::{CircuitSettings, CircuitState, Outcome};

/// How often pending health reports are written at most (per sink, and in fact for all of
/// them: one transaction per interval).
pub const WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// The last failed attempt of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The HTTP status; `None` for a timeout or a connection error.
    pub status: Option<u16>,
    /// What went wrong (never a URL: some partners put tokens in theirs).
    pub reason: String,
}

/// What the health route shows of an endpoint, as of the last attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// When the endpoint last took a delivery.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its last failed attempt.
    pub last_failure: Option<Failure>,
    /// Failed attempts since the last success.
    pub failure_streak: u32,
    /// Whether the tenant's delivery is paused (failing, or disabled by a 410).
    pub paused: bool,
    /// The endpoint's circuit.
    pub circuit: CircuitState,
}

/// What an attempt's outcome changed, for the events the lane emits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Transitions {
    /// The first failure after a success: the tenant's delivery pauses.
    pub paused: bool,
    /// A success after failures: since when it was paused, and how many attempts failed.
    pub resumed: Option<(Duration, u32)>,
    /// The circuit opened (this failure reached the threshold, or a probe failed: only
    /// the first is reported).
    pub circuit_opened: bool,
    /// A probe succeeded: the circuit closed, after being open this long.
    pub circuit_closed: Option<Duration>,
}

/// One endpoint's state, kept by its tenant's lane across deliveries.
#[derive(Debug, Default)]
pub struct SinkHealth {
    paused_since: Option<Instant>,
    opened_at: Option<Instant>,
    streak: u32,
    circuit: CircuitState,
    last_success_at: Option<DateTime<Utc>>,
    last_failure: Option<Failure>,
    /// The version of the sink a 410 disabled ([`Sink::version`]), and why.
    gone: Option<(Option<DateTime<Utc>>, String)>,
}

impl SinkHealth {
    /// Failed attempts since the last success.
    pub fn failure_streak(&self) -> u32 {
        self.streak
    }

    /// The circuit's state.
    pub fn circuit(&self) -> CircuitState {
        self.circuit
    }

    /// Whether the tenant's delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Forgets the pause (the sink was removed): returns whether it was paused.
    pub fn forget_pause(&mut self) -> bool {
        self.paused_since.take().is_some()
    }

    /// Why nothing may be sent to `sink`: it answered 410 (recorded in PostgreSQL, or by
    /// this lane against this very version of the sink). `None`: it may be tried.
    pub fn disabled_reason<'a>(&'a self, sink: &'a Sink) -> Option<&'a str> {
        if let Some(reason) = &sink.gone {
            return Some(reason);
        }
        match &self.gone {
            Some((version, reason)) if *version == sink.version => Some(reason),
            _ => None,
        }
    }

    /// Clears a 410 once the sink was set again (another version, not disabled): its
    /// streak and circuit start afresh, as for a new endpoint. Returns whether it did.
    pub fn reenable_if_set_again(&mut self, sink: &Sink) -> bool {
        let set_again = sink.gone.is_none()
            && matches!(&self.gone, Some((version, _)) if *version != sink.version);
        if set_again {
            self.gone = None;
            self.streak = 0;
            self.circuit = CircuitState::Closed;
            self.opened_at = None;
        }
        set_again
    }

    /// An attempt is about to be sent: with the circuit open, it is the probe.
    pub fn begin_attempt(&mut self) {
        if self.circuit == CircuitState::Open {
            self.circuit = CircuitState::HalfOpen;
        }
    }

    /// Moves the state by an attempt's outcome, at `now`, against `sink` (the version a
    /// 410 disables).
    pub fn record(
        &mut self,
        outcome: &Outcome,
        now: DateTime<Utc>,
        sink: &Sink,
        settings: &CircuitSettings,
    ) -> Transitions {
        let mut changes = Transitions::default();
        if *outcome == Outcome::Delivered {
            if let Some(since) = self.paused_since.take() {
                changes.resumed = Some((since.elapsed(), self.streak));
            }
            if self.circuit != CircuitState::Closed {
                changes.circuit_closed = Some(
                    self.opened_at
                        .take()
                        .map(|at| at.elapsed())
                        .unwrap_or_default(),
                );
            }
            self.circuit = CircuitState::Closed;
            self.streak = 0;
            self.last_success_at = Some(now);
            return changes;
        }
        self.streak = self.streak.saturating_add(1);
        self.last_failure = Some(Failure {
            at: now,
            status: outcome.status(),
            reason: outcome.reason().unwrap_or_default().to_owned(),
        });
        if self.paused_since.is_none() {
            self.paused_since = Some(Instant::now());
            changes.paused = true;
        }
        match self.circuit {
            CircuitState::Closed if self.streak >= settings.open_after.max(1) => {
                self.circuit = CircuitState::Open;
                self.opened_at = Some(Instant::now());
                changes.circuit_opened = true;
            }
            // A failed probe: open again, for another interval.
            CircuitState::HalfOpen => self.circuit = CircuitState::Open,
            _ => {}
        }
        if let Outcome::Gone { reason } = outcome {
            self.gone = Some((sink.version, reason.clone()));
        }
        changes
    }

    /// What the health route shows now.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            last_success_at: self.last_success_at,
            last_failure: self.last_failure.clone(),
            failure_streak: self.streak,
            paused: self.paused_since.is_some() || self.gone.is_some(),
            circuit: self.circuit,
        }
    }
}

/// A 410 to persist: the sink's version it was answered for, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoneReport {
    /// The row's `updated_at` when the 410 came: a sink set again since is not disabled.
    pub version: DateTime<Utc>,
    /// What the webhook answered.
    pub reason: String,
}

/// What is waiting to be written for one tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The latest snapshot, if it changed since the last write.
    pub health: Option<HealthSnapshot>,
    /// A 410 not yet persisted.
    pub gone: Option<GoneReport>,
}

/// Where lanes leave their endpoints' health for the writer; cloning shares it. Without a
/// database ([`HealthReporter::disabled`]) it keeps nothing.
#[derive(Debug, Clone, Default)]
pub struct HealthReporter {
    pending: Option<Arc<Mutex<HashMap<TenantId, Pending>>>>,
}

impl HealthReporter {
    /// A reporter that keeps nothing: static sinks only, no database to write to.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// A reporter whose reports [`Self::take`] returns.
    pub fn new() -> Self {
        Self {
            pending: Some(Arc::default()),
        }
    }

    /// `tenant`'s endpoint is now as `snapshot` says (written if it differs from the last
    /// report, at the next write).
    pub fn report(
        &self,
        tenant: &TenantId,
        snapshot: HealthSnapshot,
        last: &mut Option<HealthSnapshot>,
    ) {
        let Some(pending) = &self.pending else {
            return;
        };
        if last.as_ref() == Some(&snapshot) {
            return;
        }
        *last = Some(snapshot.clone());
        let mut pending = pending.lock().expect("the health map is never poisoned");
        pending.entry(tenant.clone()).or_default().health = Some(snapshot);
    }

    /// `tenant`'s endpoint answered 410 for the sink row of `version`. A static sink
    /// (no version) has no row to disable: its lane alone remembers, until a restart.
    pub fn gone(&self, tenant: &TenantId, version: Option<DateTime<Utc>>, reason: &str) {
        let (Some(pending), Some(version)) = (&self.pending, version) else {
            return;
        };
        let mut pending = pending.lock().expect("the health map is never poisoned");
        pending.entry(tenant.clone()).or_default().gone = Some(GoneReport {
            version,
            reason: reason.to_owned(),
        });
    }

    /// Everything waiting, leaving nothing.
    pub fn take(&self) -> HashMap<TenantId, Pending> {
        match &self.pending {
            Some(pending) => std::mem::take(&mut *pending.lock().expect("never poisoned")),
            None => HashMap::new(),
        }
    }

    /// Puts back what a failed write took, unless a newer report came meanwhile.
    pub fn put_back(&self, failed: HashMap<TenantId, Pending>) {
        let Some(pending) = &self.pending else {
            return;
        };
        let mut pending = pending.lock().expect("never poisoned");
        for (tenant, old) in failed {
            let entry = pending.entry(tenant).or_default();
            if entry.health.is_none() {
                entry.health = old.health;
            }
            if entry.gone.is_none() {
                entry.gone = old.gone;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn sink(version: Option<DateTime<Utc>>) -> Sink {
        let (_, mut sink) = Sink::parse(
            "acme",
            "https://hooks.example/locus",
            SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            false,
        )
        .unwrap();
        sink.version = version;
        sink
    }

    fn settings() -> CircuitSettings {
        CircuitSettings {
            open_after: 3,
            probe_interval: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(3600),
        }
    }

    fn failed(status: u16) -> Outcome {
        Outcome::Retriable {
            retry_after: None,
            reason: format!("webhook answered {status}"),
            status: Some(status),
        }
    }

    #[test]
    fn the_circuit_opens_after_the_threshold_a_failed_probe_keeps_it_open_and_a_good_one_closes_it()
    {
        let mut h = SinkHealth::default();
        let s = sink(None);
        let now = Utc::now();
        let first = h.record(&failed(503), now, &s, &settings());
        assert!(first.paused && !first.circuit_opened);
        assert!(!h.record(&failed(503), now, &s, &settings()).circuit_opened);
        assert!(h.record(&failed(503), now, &s, &settings()).circuit_opened);
        assert_eq!(h.circuit(), CircuitState::Open);
        h.begin_attempt();
        assert_eq!(h.circuit(), CircuitState::HalfOpen);
        let probe = h.record(&failed(500), now, &s, &settings());
        assert!(!probe.circuit_opened && !probe.paused, "{probe:?}");
        assert_eq!(h.circuit(), CircuitState::Open);
        assert_eq!(h.failure_streak(), 4);
        let snapshot = h.snapshot();
        assert!(snapshot.paused);
        assert_eq!(snapshot.last_failure.as_ref().unwrap().status, Some(500));
        h.begin_attempt();
        let ok = h.record(&Outcome::Delivered, now, &s, &settings());
        assert!(ok.circuit_closed.is_some());
        assert_eq!(ok.resumed.map(|(_, n)| n), Some(4));
        let snapshot = h.snapshot();
        assert_eq!(snapshot.failure_streak, 0);
        assert!(!snapshot.paused);
        assert_eq!(snapshot.circuit, CircuitState::Closed);
        assert_eq!(snapshot.last_success_at, Some(now));
        // The last failure stays visible after a success.
        assert_eq!(snapshot.last_failure.unwrap().status, Some(500));
    }

    #[test]
    fn a_410_disables_that_version_of_the_sink_until_it_is_set_again() {
        let v1 = Utc::now();
        let v2 = v1 + chrono::Duration::seconds(1);
        let mut h = SinkHealth::default();
        let gone = Outcome::Gone {
            reason: "webhook answered 410 Gone".to_owned(),
        };
        h.record(&gone, v1, &sink(Some(v1)), &settings());
        assert_eq!(
            h.disabled_reason(&sink(Some(v1))),
            Some("webhook answered 410 Gone")
        );
        assert!(!h.reenable_if_set_again(&sink(Some(v1))));
        assert!(h.snapshot().paused);
        // The refresh read the row back disabled: still disabled, whatever the version.
        let mut persisted = sink(Some(v1));
        persisted.gone = Some("webhook answered 410 Gone".to_owned());
        assert!(h.disabled_reason(&persisted).is_some());
        assert!(!h.reenable_if_set_again(&persisted));
        // A PUT: a new version, not disabled.
        assert!(h.reenable_if_set_again(&sink(Some(v2))));
        assert_eq!(h.disabled_reason(&sink(Some(v2))), None);
        assert_eq!(h.failure_streak(), 0);
    }

    #[test]
    fn the_reporter_keeps_only_changes_and_the_latest_snapshot_per_tenant() {
        let reporter = HealthReporter::new();
        let acme = TenantId::parse("acme").unwrap();
        let mut last = None;
        let mut h = SinkHealth::default();
        h.record(&failed(503), Utc::now(), &sink(None), &settings());
        reporter.report(&acme, h.snapshot(), &mut last);
        reporter.report(&acme, h.snapshot(), &mut last);
        let taken = reporter.take();
        assert_eq!(taken.len(), 1);
        assert!(reporter.take().is_empty());
        // Unchanged since the last report: nothing to write.
        reporter.report(&acme, h.snapshot(), &mut last);
        assert!(reporter.take().is_empty());
        // A failed write is put back, under a newer report if one came.
        reporter.put_back(taken);
        assert_eq!(reporter.take().len(), 1);
        // Without a database nothing is kept.
        let off = HealthReporter::disabled();
        off.report(&acme, h.snapshot(), &mut None);
        off.gone(&acme, Some(Utc::now()), "410");
        assert!(off.take().is_empty());
    }
}
