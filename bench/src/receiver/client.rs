//! The client of the demo receiver's counters, for the demo and the benchmark: they count
//! their own run's deliveries by session, so an earlier run's redeliveries that trickle
//! in are not counted.

use locus_wire::SessionId;

use super::{ReceiverStats, SessionCount, SessionCountRequest};

/// The demo receiver at one base URL.
#[derive(Debug, Clone)]
pub struct ReceiverClient {
    http: reqwest::Client,
    base: String,
}

impl ReceiverClient {
    /// A client of the receiver at `base` (no trailing slash).
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into(),
        }
    }

    /// The URL of `path` on the receiver (`""` for the base URL).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /reset`: forgets everything counted, so this run's counts start at zero.
    pub async fn reset(&self) -> reqwest::Result<()> {
        self.http
            .post(self.url("/reset"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Distinct records of `sessions` the receiver has.
    pub async fn delivered_for(&self, sessions: &[SessionId]) -> reqwest::Result<u64> {
        let count: SessionCount = self
            .http
            .post(self.url("/stats/sessions"))
            .json(&SessionCountRequest {
                session_ids: sessions.to_vec(),
            })
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(count.distinct_records)
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> reqwest::Result<ReceiverStats> {
        self.http
            .get(self.url("/stats"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}
