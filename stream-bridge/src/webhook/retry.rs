//! Retry rules of webhook deliveries: how an answer is classified, and how long to wait
//! before the next attempt. Pure: the service feeds it statuses and headers, the clock and
//! the dice are parameters.
//!
//! Every failure is retried, without a limit on attempts: a sink that fails pauses its
//! tenant's delivery (the retry is the health probe), because skipping past a batch would
//! leave a hole in the tenant's sessions. The classification still tells a passing trouble
//! (retriable) from one someone must fix (rejected: a 401, 404 or 413 during a partner's
//! deploy) for logs and metrics.

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
    },
}

impl Outcome {
    /// The `outcome` label of the attempts metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retriable { .. } => "retriable",
            Outcome::Rejected { .. } => "rejected",
        }
    }

    /// The webhook's Retry-After of a failed attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Delivered => None,
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
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    let retriable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    if retriable {
        Outcome::Retriable {
            retry_after,
            reason,
        }
    } else {
        // Other 4xx, 3xx and the odd 1xx: the same bytes will not pass until the partner
        // changes something (a key, a route, a size limit).
        Outcome::Rejected {
            retry_after,
            reason,
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
        for code in [301, 302, 400, 401, 403, 404, 410, 413, 422] {
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
            }
        );
    }
}
