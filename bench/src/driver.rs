//! Load drivers: one per load mode.
//!
//! - [`plan`]: the demo's load. A fixed plan: each simulated device starts a session,
//!   posts its batches one after another (it is one phone), honouring `Retry-After`, and
//!   stops; the run ends when the plan is done.
//! - [`closed_loop`] and [`open_loop`]: the timed runs of `run` and `sweep`. The bodies are
//!   prepared before the clock starts ([`crate::workload`]) and each request carries a
//!   fresh `Idempotency-Key`, so the client spends its CPU on HTTP, not on JSON. The closed
//!   loop keeps `concurrency` requests in flight; the open loop starts requests at a fixed
//!   rate whatever the answers do, and its latency runs from the *intended* start, so a
//!   stalled server is not hidden by a stalled client (coordinated omission).

pub mod closed_loop;
pub mod open_loop;
pub mod plan;
mod tally;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::{IngestClient, Post};
use crate::report::LatencyMs;
use tally::Tally;

/// The load shape of a timed run: closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Mode {
    /// `concurrency` requests always in flight.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// Requests start at a fixed rate.
    Open {
        /// Offered requests per second.
        requests_per_sec: f64,
    },
}

/// One device's request in a timed run: where, as whom, and the prepared body.
#[derive(Debug, Clone)]
pub struct Target {
    /// Path of the batch POST.
    pub path: String,
    /// `Bearer <token>`.
    pub authorization: String,
    /// Body, gzipped when `gzip` is set.
    pub body: Bytes,
    /// The body is gzipped (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Fixes in the body.
    pub fixes: u64,
}

impl Target {
    /// The POST of this target's batch with the idempotency key `key`.
    fn post<'a>(&'a self, key: &'a str) -> Post<'a> {
        Post {
            path: &self.path,
            authorization: &self.authorization,
            body: self.body.clone(),
            idempotency_key: Some(key),
            gzip: self.gzip,
        }
    }
}

/// What a load leg of a timed run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadFigures {
    /// Requests answered 202.
    pub ok_requests: u64,
    /// Fixes in 202 answers (all the bench's fixes are valid).
    pub accepted_fixes: u64,
    /// Requests answered otherwise, by status (`transport` for no answer).
    pub errors: BTreeMap<String, u64>,
    /// Open loop: requests not sent because too many were in flight.
    pub dropped: u64,
    /// Accepted fixes per second.
    pub fixes_per_sec: f64,
    /// Offered fixes per second (open loop) or 0.
    pub offered_fixes_per_sec: f64,
    /// Latency of the answered requests (from the intended start in open loop).
    pub http_ms: LatencyMs,
    /// Seconds of load.
    pub secs: f64,
}

impl LoadFigures {
    /// Requests that failed, dropped ones included.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.dropped
    }
}

/// Drives `targets` through `client` in `mode` for `duration`. Idempotency keys are
/// `<run_id>-<n>`. `client` should send once ([`crate::client::Retry::NEVER`]): a retry
/// would hide the answer the figures are about.
pub async fn drive(
    client: Arc<IngestClient>,
    targets: Arc<Vec<Target>>,
    mode: Mode,
    duration: Duration,
    run_id: &str,
) -> LoadFigures {
    let started = Instant::now();
    let leg = Leg {
        client,
        targets,
        deadline: started + duration,
        run_id: run_id.to_owned(),
        tally: Arc::new(Tally::new()),
    };
    let tally = Arc::clone(&leg.tally);
    let offered = match mode {
        Mode::Closed { concurrency } => {
            closed_loop::drive(leg, concurrency).await;
            // A closed loop offers what the server lets through.
            0.0
        }
        Mode::Open { requests_per_sec } => open_loop::drive(leg, requests_per_sec).await,
    };
    tally.figures(started, offered)
}

/// What a timed driver works with: where to send, what, until when, and where to count.
struct Leg {
    client: Arc<IngestClient>,
    targets: Arc<Vec<Target>>,
    deadline: Instant,
    /// Prefix of the idempotency keys (`<run_id>-<n>`), unique per leg.
    run_id: String,
    tally: Arc<Tally>,
}
