//! When a request to ingest is sent again, and after how long.
//!
//! 429 and 503 are retriable: the same request (same batch id or idempotency key) is sent
//! again after the `Retry-After` the server asked for, so a retry never duplicates data. A
//! transport error is retried after a short backoff: the batch may have been stored before
//! the connection broke, and ingest recognises it when it comes again.

use std::time::Duration;

use reqwest::StatusCode;

/// Longest `Retry-After` honoured; a larger value is capped so one answer cannot stall a run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Delay after a retriable answer without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How often a request is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per request, the first included; 1 means never retry.
    max_attempts: u32,
}

impl Retry {
    /// One attempt: the caller sees every answer as it came (the timed runs, which count
    /// a 429 as an error instead of hiding it behind a retry).
    pub const NEVER: Self = Self { max_attempts: 1 };

    /// Up to `max_attempts` attempts (at least one).
    pub fn up_to(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
        }
    }

    /// Attempts per request, the first included.
    pub fn max_attempts(self) -> u32 {
        self.max_attempts
    }
}

/// 429 and 503: the server asks to come back later.
pub fn is_retriable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// The wait before sending a retriable answer's request again.
pub fn delay_after(retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or(DEFAULT_RETRY_AFTER)
        .min(MAX_RETRY_AFTER)
}

/// `Retry-After` in seconds (fractions tolerated). The HTTP-date form is not used by
/// ingest and falls back to the default delay.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// 100 ms, doubling per attempt, at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert!(backoff(2) > backoff(1));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }
}
