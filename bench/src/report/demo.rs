//! What `locus-bench demo` found: the figures `--json` prints, and the text block printed
//! at the end of `./locus up`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{LatencyMs, thousands};
use crate::register::Registration;

/// Everything `locus-bench demo` found, in the shape `--json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoFigures {
    /// Id of this run; device ids are `bench-<run_id>-<n>`.
    pub run_id: String,
    /// Tenants the simulated devices belong to.
    pub tenants: Vec<String>,
    /// Simulated devices (one session each).
    pub devices: u64,
    /// Batches planned.
    pub batches: u64,
    /// Fixes planned.
    pub fixes: u64,
    /// The registration of the tenants and devices through the admin API, before the
    /// sessions.
    #[serde(default)]
    pub registration: Registration,
    /// Fixes ingest accepted (202).
    pub accepted: u64,
    /// Fixes ingest rejected (per-fix reasons in the 202 or 422 answer).
    pub rejected: u64,
    /// Batches that got no usable answer after retries.
    pub failed_batches: u64,
    /// Requests retried after 429/503 or a transport error.
    pub retries: u64,
    /// Distinct location records of this run's sessions read from Kafka.
    pub on_kafka: u64,
    /// Distinct location records of this run's sessions the demo webhook received, signed.
    pub delivered: u64,
    /// Latency of the batch POSTs.
    pub http_latency_ms: LatencyMs,
    /// Accepted fixes per second over the batch phase.
    pub throughput_fixes_per_sec: f64,
    /// Duration of the batch phase in seconds.
    pub load_secs: f64,
    /// From ingest's `received_at` (just before the 202) to the webhook receiving the record.
    pub e2e_ms: LatencyMs,
    /// How long the demo waited for Kafka and the webhook to catch up, in seconds.
    pub waited_secs: f64,
    /// Tenants whose sink was the hanging webhook for this run (`--hang-tenants`); the
    /// delivery and end-to-end figures are the other tenants'.
    #[serde(default)]
    pub hung_tenants: Vec<String>,
    /// Requests the hanging webhook held.
    #[serde(default)]
    pub hung_requests: u64,
    /// What went wrong; empty when the run is good.
    pub problems: Vec<String>,
}

impl DemoFigures {
    /// True when every accepted fix reached Kafka and the webhook, and nothing else failed.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The figures block printed at the end of `./locus up`.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Locus demo: {} tenants, {} devices, {} fixes in {} batches",
            self.tenants.len(),
            self.devices,
            self.fixes,
            self.batches
        );
        let row = |s: &mut String, label: &str, value: String| {
            let _ = writeln!(s, "  {label:<22}{value}");
        };
        let reg = &self.registration;
        row(
            &mut s,
            "devices registered",
            format!(
                "{:<7}({} new, tenants {} new; {:.2} s, admin API)",
                reg.devices(),
                reg.devices_created,
                reg.tenants_created,
                reg.secs
            ),
        );
        row(
            &mut s,
            "fixes accepted",
            format!("{:<7}(rejected {})", self.accepted, self.rejected),
        );
        row(&mut s, "fixes on Kafka", self.on_kafka.to_string());
        row(
            &mut s,
            "fixes delivered",
            format!(
                "{:<7}(to the demo webhook, signatures verified)",
                self.delivered
            ),
        );
        row(&mut s, "HTTP latency", self.http_latency_ms.render());
        row(
            &mut s,
            "throughput",
            format!(
                "{} fixes/s over {:.1} s",
                thousands(self.throughput_fixes_per_sec.round() as u64),
                self.load_secs
            ),
        );
        row(
            &mut s,
            "end to end",
            format!("{}   (202 -> webhook)", self.e2e_ms.render()),
        );
        if !self.hung_tenants.is_empty() {
            row(
                &mut s,
                "hung webhook",
                format!(
                    "{:<7}(requests held for {}; the figures above are the other tenants')",
                    self.hung_requests,
                    self.hung_tenants.join(", ")
                ),
            );
        }
        if self.ok() {
            row(&mut s, "result", "OK".to_owned());
        } else {
            for p in &self.problems {
                row(&mut s, "PROBLEM", p.clone());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures() -> DemoFigures {
        DemoFigures {
            run_id: "abc".into(),
            tenants: vec!["acme".into(), "globex".into()],
            devices: 8,
            batches: 80,
            fixes: 4000,
            registration: Registration {
                tenants_created: 0,
                tenants_existing: 2,
                devices_created: 8,
                devices_existing: 0,
                secs: 0.046,
            },
            accepted: 4000,
            rejected: 0,
            failed_batches: 0,
            retries: 0,
            on_kafka: 4000,
            delivered: 4000,
            http_latency_ms: LatencyMs {
                count: 80,
                p50: 1.23,
                p99: 4.8,
                p999: 5.0,
                max: 9.1,
            },
            throughput_fixes_per_sec: 3950.4,
            load_secs: 1.01,
            e2e_ms: LatencyMs {
                count: 4000,
                p50: 35.0,
                p99: 120.0,
                p999: 130.0,
                max: 140.2,
            },
            waited_secs: 0.5,
            hung_tenants: vec![],
            hung_requests: 0,
            problems: vec![],
        }
    }

    #[test]
    fn a_run_with_a_hung_tenant_says_so_and_only_then() {
        assert!(!figures().render_text().contains("hung webhook"));
        let mut f = figures();
        f.hung_tenants = vec!["globex".into()];
        f.hung_requests = 3;
        let text = f.render_text();
        assert!(
            text.contains("  hung webhook          3      (requests held for globex; the figures above are the other tenants')\n"),
            "{text}"
        );
    }

    #[test]
    fn the_text_block_shows_every_figure() {
        let text = figures().render_text();
        assert!(text.starts_with("Locus demo: 2 tenants, 8 devices, 4000 fixes in 80 batches\n"));
        assert!(
            text.contains("  fixes accepted        4000   (rejected 0)\n"),
            "{text}"
        );
        assert!(text.contains("  fixes on Kafka        4000\n"), "{text}");
        assert!(
            text.contains(
                "  devices registered    8      (8 new, tenants 0 new; 0.05 s, admin API)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("p50 1.2 ms   p99 4.8 ms   max 9.1 ms"),
            "{text}"
        );
        assert!(text.contains("3,950 fixes/s over 1.0 s"), "{text}");
        assert!(
            text.contains("p50 35.0 ms   p99 120 ms   max 140 ms"),
            "{text}"
        );
        assert!(text.contains("result                OK"), "{text}");
    }

    #[test]
    fn problems_replace_the_ok_line() {
        let mut f = figures();
        f.problems
            .push("only 3999 of 4000 accepted fixes reached Kafka".into());
        let text = f.render_text();
        assert!(!f.ok());
        assert!(!text.contains(" OK"));
        assert!(text.contains("PROBLEM               only 3999"), "{text}");
    }
}
