//! Ceilings: what the hardware and the dependencies allow for each stage, measured with the
//! same data as the Locus run. Each ceiling does the stage's I/O and nothing else:
//! - HTTP: a no-op axum handler that reads the body and answers 202;
//! - Redis: XADD of the same buffer entries, as many in flight as ingest has requests;
//! - Kafka produce: the same records, key and headers, same producer settings as ingest;
//! - Kafka consume: reading those records back, counted as they arrive (a consumer's
//!   throughput is records read and handed to the application, which watermarks do not
//!   show).
//!
//! Each ceiling has a file: [`noop_http`], [`redis`], [`kafka`]. The data they move is
//! prepared by [`crate::workload::Workload`] before the clock starts.

pub mod kafka;
pub mod noop_http;
pub mod redis;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Throughput of one ceiling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ceiling {
    /// Fixes (records) per second.
    pub fixes_per_sec: f64,
    /// Fixes moved.
    pub fixes: u64,
    /// Seconds measured.
    pub secs: f64,
    /// Why it could not be measured, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Ceiling {
    /// `fixes` moved in `elapsed`.
    pub fn new(fixes: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        Self {
            fixes_per_sec: if secs > 0.0 { fixes as f64 / secs } else { 0.0 },
            fixes,
            secs,
            skipped: None,
        }
    }

    /// A ceiling that was not measured, and why.
    pub fn skipped(why: impl Into<String>) -> Self {
        Self {
            skipped: Some(why.into()),
            ..Self::default()
        }
    }
}
