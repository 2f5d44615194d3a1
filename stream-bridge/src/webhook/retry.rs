//! Retry rules of webhook deliveries: how an answer is classified, and how long to wait
//! before the next attempt. Pure: the service feeds it statuses and headers, the clock and
//! the dice are parameters.
//!
//! Every failure is retried, without a limit on attempts: a sink that fails pauses its
//! tenant's delivery (the retry is the health probe), because skipping past a batch would
//! leave a hole in the tenant's sessions. The classification still tells a passing trouble
//! (retriable) from one someone must fix (rejected: a 401, 404 or 413 during a partner's
//! deploy) for logs and metrics. A 410 Gone is the partner saying the endpoint is gone for
//! good: it disables the endpoint (nothing is sent until the sink is set again), and the
//! tenant's records wait, as for any failure.
//!
//! The published schedule (docs/partners.md "Retries") is [`webhook_delay`]: exponential
//! backoff with jitter up to the cap, and once the circuit is open (after
//! [`CircuitSettings::open_after`] failures in a row), one probe per
//! [`CircuitSettings::probe_interval`]; a Retry-After longer than either is honoured, up to
//! [`CircuitSettings::retry_after_max`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

/// What one HTTP attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The webhook answered 2xx: the records are delivered.
    Delivered,
    /// A passing trouble: a network error, a timeout, 5xx, 408 or 429. `retry_after` is
    /// the webhook's own Retry-After, if it sent one.
    Retriable {
        /// The webhook's Retry-After.
        retry_after: Option<Duration>,
        /// What went wrong, for logs.
        reason: String,
        /// The HTTP status; `None` for a timeout or a connection error.
        status: Option<u16>,
    },
    /// The webhook refused the delivery (any other 4xx, or a redirect, which is not
    /// followed so that a sink cannot bounce the bridge to another address). Sending the
    /// same bytes again helps only once the partner fixed something, so it is retried too,
    /// but logged as needing someone.
    Rejected {
        /// The webhook's Retry-After.
        retry_after: Option<Duration>,
        /// What went wrong, for logs.
        reason: String,
        /// The HTTP status.
        status: Option<u16>,
    },
    /// The webhook answered 410 Gone: the endpoint is disabled until the sink is set again.
    Gone {
        /// What the webhook said, for logs and the endpoint's health.
        reason: String,
    },
}

impl Outcome {
    /// The `outcome` label of the attempts metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retriable { .. } => "retriable",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Gone { .. } => "gone",
        }
    }

    /// What went wrong; `None` for a delivery.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retriable { reason, .. }
            | Outcome::Rejected { reason, .. }
            | Outcome::Gone { reason } => Some(reason),
        }
    }

    /// The HTTP status of a failed attempt, if it got an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Outcome::Delivered => None,
            Outcome::Retriable { status, .. } | Outcome::Rejected { status, .. } => *status,
            Outcome::Gone { .. } => Some(410),
        }
    }

    /// The webhook's Retry-After of a failed attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Delivered | Outcome::Gone { .. } => None,
            Outcome::Retriable { retry_after, .. } | Outcome::Rejected { retry_after, .. } => {
                *retry_after
            }
        }
    }
}

/// The outcome of an HTTP answer with `status` and the raw `Retry-After` header, read at
/// `now`.
pub fn classify(status: StatusCode, retry_after: Option<&str>, now: DateTime<Utc>) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let reason = format!("webhook answered {status}");
    if status == StatusCode::GONE {
        return Outcome::Gone { reason };
    }
    let code = Some(status.as_u16());
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    let retriable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retriable {
        Outcome::Retriable {
            retry_after,
            reason,
            status: code,
        }
    } else {
        // Other 4xx, 3xx and the odd 1xx: the same bytes will not pass until the partner
        // changes something (a key, a route, a size limit).
        Outcome::Rejected {
            retry_after,
            reason,
            status: code,
        }
    }
}

/// Reads a Retry-After value: delay-seconds or an HTTP date (a date in the past means
/// "now"). Anything else is ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // HTTP dates are IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), which RFC 2822 covers.
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter, capped; attempts never run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff before the second attempt.
    pub initial: Duration,
    /// Longest wait between two attempts, Retry-After included: how often a paused sink is
    /// probed.
    pub max: Duration,
}

impl RetryPolicy {
    /// The backoff after failed attempt number `attempt` (1-based), before jitter:
    /// `initial * 2^(attempt-1)`, capped at `max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// How long to wait after failed attempt number `attempt`. `jitter` in [0, 1] picks a
    /// point in the upper half of the backoff (so replicas that failed together do not
    /// retry together, yet the wait still grows); a Retry-After longer than that is
    /// honoured, up to `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let backoff = self.backoff(attempt);
        let jittered = backoff.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max)),
            None => jittered,
        }
    }
}

/// An endpoint's circuit: closed while it works, open after
/// [`CircuitSettings::open_after`] failed attempts in a row (then one probe per
/// [`CircuitSettings::probe_interval`]), half-open while a probe is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CircuitState {
    /// Attempts follow the backoff schedule.
    #[default]
    Closed,
    /// Failing: one probe per interval.
    Open,
    /// A probe is in flight: its answer closes the circuit or opens it again.
    HalfOpen,
}

impl CircuitState {
    /// The name in the health route and the logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// When an endpoint's circuit opens, how often it is probed, and how long a Retry-After is
/// honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Failed attempts in a row that open the circuit (at least 1).
    pub open_after: u32,
    /// While open, the wait between two probes.
    pub probe_interval: Duration,
    /// Longest Retry-After honoured: a webhook cannot park its tenant for longer than this
    /// per attempt.
    pub retry_after_max: Duration,
}

/// How long to wait after the `failures`-th failed attempt in a row (1-based), with
/// `retry_after` the webhook's answer and `jitter` in [0, 1]. While the circuit is closed,
/// the policy's jittered backoff; once `failures` reaches `circuit.open_after`, the probe
/// interval. A Retry-After longer than that wait is honoured, up to `retry_after_max`, so
/// the next attempt is never sent before the time the webhook asked for.
pub fn webhook_delay(
    policy: &RetryPolicy,
    circuit: &CircuitSettings,
    failures: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let base = if failures >= circuit.open_after.max(1) {
        circuit.probe_interval
    } else {
        policy.delay(failures, None, jitter)
    };
    match retry_after {
        Some(asked) => base.max(asked.min(circuit.retry_after_max)),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..=9).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(
            ms,
            [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_keeps_the_delay_in_the_upper_half_of_the_backoff() {
        let p = policy();
        assert_eq!(p.delay(3, None, 0.0), Duration::from_millis(400));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(800));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(600));
        assert_eq!(p.delay(3, None, 7.0), Duration::from_millis(800));
    }

    #[test]
    fn attempts_never_run_out_and_a_paused_sink_is_probed_at_the_cap() {
        let p = policy();
        for attempt in [8, 100, 10_000, u32::MAX] {
            let delay = p.delay(attempt, None, 1.0);
            assert_eq!(delay, Duration::from_secs(10), "attempt {attempt}");
            assert!(p.delay(attempt, None, 0.0) >= Duration::from_secs(5));
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0.0),
            Duration::from_secs(3)
        );
        // A Retry-After shorter than the backoff does not shorten it.
        assert_eq!(
            p.delay(6, Some(Duration::from_secs(1)), 1.0),
            Duration::from_millis(6400)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("7", now()), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 01 May 2024 12:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-3", now()), None);
    }

    #[test]
    fn statuses_are_classified_as_delivered_retriable_or_rejected_and_every_failure_keeps_its_retry_after()
     {
        for code in [200, 201, 202, 204] {
            let s = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify(s, None, now()), Outcome::Delivered, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, None, now()), Outcome::Retriable { .. }),
                "{code}"
            );
        }
        for code in [301, 302, 307, 400, 401, 403, 404, 413, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, None, now()), Outcome::Rejected { .. }),
                "{code}"
            );
            // A partner answering 413 or 401 during a deploy may say when to come back.
            assert_eq!(
                classify(s, Some("4"), now()).retry_after(),
                Some(Duration::from_secs(4)),
                "{code}"
            );
        }
    }

    #[test]
    fn a_429_carries_its_retry_after() {
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some("2"), now()),
            Outcome::Retriable {
                retry_after: Some(Duration::from_secs(2)),
                reason: "webhook answered 429 Too Many Requests".to_owned(),
                status: Some(429),
            }
        );
    }

    #[test]
    fn a_410_is_gone_and_carries_no_retry_after() {
        let gone = classify(StatusCode::GONE, Some("5"), now());
        assert_eq!(
            gone,
            Outcome::Gone {
                reason: "webhook answered 410 Gone".to_owned()
            }
        );
        assert_eq!(gone.label(), "gone");
        assert_eq!(gone.status(), Some(410));
        assert_eq!(gone.retry_after(), None);
    }

    /// The production defaults (LOCUS_BRIDGE_BACKOFF_*, LOCUS_BRIDGE_CIRCUIT_*,
    /// LOCUS_BRIDGE_RETRY_AFTER_MAX_MS): the schedule docs/partners.md publishes.
    fn published() -> (RetryPolicy, CircuitSettings) {
        (
            RetryPolicy {
                initial: Duration::from_millis(200),
                max: Duration::from_secs(30),
            },
            CircuitSettings {
                open_after: 10,
                probe_interval: Duration::from_secs(30),
                retry_after_max: Duration::from_secs(3600),
            },
        )
    }

    #[test]
    fn the_published_schedule_holds_at_both_ends_of_the_jitter() {
        let (policy, circuit) = published();
        // (failed attempts in a row, shortest wait, longest wait) in milliseconds, as the
        // table in docs/partners.md "Retries" has them.
        let table: [(u32, u64, u64); 12] = [
            (1, 100, 200),
            (2, 200, 400),
            (3, 400, 800),
            (4, 800, 1_600),
            (5, 1_600, 3_200),
            (6, 3_200, 6_400),
            (7, 6_400, 12_800),
            (8, 12_800, 25_600),
            (9, 15_000, 30_000),
            (10, 30_000, 30_000),
            (11, 30_000, 30_000),
            (1_000, 30_000, 30_000),
        ];
        for (failures, low, high) in table {
            let at = |jitter| webhook_delay(&policy, &circuit, failures, None, jitter);
            assert_eq!(at(0.0), Duration::from_millis(low), "failure {failures}");
            assert_eq!(at(1.0), Duration::from_millis(high), "failure {failures}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_wait_lies_within_its_jitter_bounds_and_under_the_cap(failures in 1u32..5_000, jitter in 0.0f64..=1.0, initial_ms in 1u64..5_000, max_ms in 1u64..120_000, open_after in 1u32..50) {
            let policy = RetryPolicy { initial: Duration::from_millis(initial_ms), max: Duration::from_millis(max_ms) };
            let circuit = CircuitSettings { open_after, probe_interval: Duration::from_millis(max_ms), retry_after_max: Duration::from_secs(3600) };
            let wait = webhook_delay(&policy, &circuit, failures, None, jitter);
            if failures >= open_after {
                proptest::prop_assert_eq!(wait, circuit.probe_interval);
            } else {
                let backoff = policy.backoff(failures);
                proptest::prop_assert!(wait >= backoff / 2 && wait <= backoff, "{wait:?} vs {backoff:?}");
                proptest::prop_assert!(wait <= policy.max);
            }
        }

        #[test]
        fn a_retry_after_is_never_cut_below_what_was_asked_up_to_its_cap(failures in 1u32..100, jitter in 0.0f64..=1.0, asked_ms in 0u64..10_000_000) {
            let (policy, circuit) = published();
            let asked = Duration::from_millis(asked_ms);
            let wait = webhook_delay(&policy, &circuit, failures, Some(asked), jitter);
            proptest::prop_assert!(wait >= asked.min(circuit.retry_after_max));
            proptest::prop_assert!(wait <= circuit.retry_after_max.max(circuit.probe_interval));
        }
    }
}
