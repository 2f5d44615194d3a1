//! The machine a report was made on, read from `/proc`: reports from different machines
//! are not comparable, so each one says where it ran.

use serde::{Deserialize, Serialize};

/// The machine a report was made on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// MemTotal, GiB.
    pub mem_gib: f64,
    /// 1-minute load average when the run started.
    pub load_avg_1m: f64,
}

impl Machine {
    /// Reads /proc.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let load_avg_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split(' ').next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            mem_gib: mem_kib / 1024.0 / 1024.0,
            load_avg_1m,
        }
    }
}
