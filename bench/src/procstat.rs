//! CPU time and peak memory of the processes of the stack, read from `/proc`.
//!
//! Processes are found by name (`/proc/<pid>/comm`, else the first word of the command
//! line; for a JVM, its main class), so the bench needs no pid files. CPU time is `utime + stime` of
//! `/proc/<pid>/stat` in clock ticks; peak RSS is `VmHWM` of `/proc/<pid>/status`.

use std::collections::BTreeMap;
use std::fs;

use serde::{Deserialize, Serialize};

/// The processes the bench watches, as (label, names to match).
pub const WATCHED: &[(&str, &[&str])] = &[
    ("ingest", &["locus-ingest"]),
    ("stream-bridge", &["locus-stream-bridge", "locus-stream-br"]),
    ("redis", &["redis-server"]),
    // Apache Kafka runs as `java ... kafka.Kafka`: the JVM counts under its main class.
    ("broker", &["kafka.Kafka"]),
];

/// Linux's `USER_HZ`: 100 on every mainstream architecture. `unsafe` is forbidden in the
/// workspace, so `sysconf(_SC_CLK_TCK)` is not called.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time and peak RSS of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// The pid.
    pub pid: u32,
    /// User + system CPU time, seconds.
    pub cpu_secs: f64,
    /// Peak resident set size so far, KiB.
    pub peak_rss_kib: u64,
}

/// A sample of every watched process that runs, by label.
pub type Snapshot = BTreeMap<String, ProcSample>;

/// CPU used between two snapshots and the peak RSS at the second, per process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcUsage {
    /// The pid.
    pub pid: u32,
    /// CPU seconds used between the snapshots.
    pub cpu_secs: f64,
    /// CPU microseconds per accepted fix.
    pub cpu_us_per_fix: f64,
    /// Peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// Samples every watched process found now.
pub fn snapshot() -> Snapshot {
    snapshot_pinned(None)
}

/// [`snapshot`], with the `ingest` label pinned to the process `ingest_pid` when given
/// (`--ingest-pid`): when several ingests run (the stack's, a test's, one built from
/// another commit), the one under load is named, not guessed as the busiest.
pub fn snapshot_pinned(ingest_pid: Option<u32>) -> Snapshot {
    let mut out = Snapshot::new();
    if let Some(pid) = ingest_pid
        && let Some(sample) = sample(pid)
    {
        out.insert("ingest".to_owned(), sample);
    }
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(name) = process_name(pid) else {
            continue;
        };
        let Some((label, _)) = WATCHED
            .iter()
            .find(|(_, names)| names.iter().any(|n| *n == name))
        else {
            continue;
        };
        if *label == "ingest" && ingest_pid.is_some() {
            continue;
        }
        if let Some(sample) = sample(pid) {
            // Several matches (e.g. a test's own ingest): keep the busiest.
            let keep = out
                .get(*label)
                .is_none_or(|old: &ProcSample| sample.cpu_secs > old.cpu_secs);
            if keep {
                out.insert((*label).to_owned(), sample);
            }
        }
    }
    out
}

fn process_name(pid: u32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    name_of(comm.trim(), &cmdline)
}

/// The name a process is watched under: its `comm` if that is watched, else the program
/// of its command line (`comm` is cut at 15 bytes), or for a JVM its main class (the first
/// argument after the options, the class path's value aside).
fn name_of(comm: &str, cmdline: &[u8]) -> Option<String> {
    if WATCHED.iter().any(|(_, names)| names.contains(&comm)) {
        return Some(comm.to_owned());
    }
    let mut args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy);
    let prog = args.next()?.rsplit('/').next()?.to_owned();
    if prog != "java" {
        return Some(prog);
    }
    let mut class_path_value = false;
    for arg in args {
        if std::mem::take(&mut class_path_value) {
            continue;
        }
        match arg.as_ref() {
            "-cp" | "-classpath" | "--class-path" => class_path_value = true,
            option if option.starts_with('-') => {}
            class => return Some(class.to_owned()),
        }
    }
    Some(prog)
}

/// One process's CPU time and peak RSS.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        pid,
        cpu_secs: (utime + stime) as f64 / CLOCK_TICKS_PER_SEC,
        peak_rss_kib,
    })
}

/// Usage between `before` and `after`, per process present in both, over `fixes` fixes.
pub fn usage(before: &Snapshot, after: &Snapshot, fixes: u64) -> BTreeMap<String, ProcUsage> {
    after
        .iter()
        .filter_map(|(label, a)| {
            let b = before.get(label).filter(|b| b.pid == a.pid)?;
            let cpu_secs = (a.cpu_secs - b.cpu_secs).max(0.0);
            Some((
                label.clone(),
                ProcUsage {
                    pid: a.pid,
                    cpu_secs,
                    cpu_us_per_fix: if fixes > 0 {
                        cpu_secs * 1e6 / fixes as f64
                    } else {
                        0.0
                    },
                    peak_rss_mib: a.peak_rss_kib as f64 / 1024.0,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jvm_is_named_by_its_main_class() {
        let kafka = b"java\0-Xmx1g\0-cp\0/x/libs/*\0kafka.Kafka\0server.properties\0";
        assert_eq!(name_of("java", kafka).as_deref(), Some("kafka.Kafka"));
        let bare = b"/usr/bin/java\0-version\0";
        assert_eq!(name_of("java", bare).as_deref(), Some("java"));
    }

    #[test]
    fn a_long_program_name_comes_from_the_command_line() {
        let bridge = b"/w/target/release/locus-stream-bridge\0--listen\0x\0";
        assert_eq!(
            name_of("locus-stream-br", bridge).as_deref(),
            Some("locus-stream-br"),
            "a watched comm wins"
        );
        assert_eq!(
            name_of("redis-server", b"redis-server *:6379\0").as_deref(),
            Some("redis-server")
        );
        assert_eq!(
            name_of("locus-ingest-x", b"/w/locus-ingest-xyz\0").as_deref(),
            Some("locus-ingest-xyz")
        );
    }

    #[test]
    fn a_pinned_ingest_is_the_process_named_whatever_its_name() {
        let own = std::process::id();
        let snap = snapshot_pinned(Some(own));
        assert_eq!(snap.get("ingest").map(|s| s.pid), Some(own));
    }

    #[test]
    fn the_own_process_can_be_sampled() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.peak_rss_kib > 0);
        assert!(s.cpu_secs >= 0.0);
    }
}
