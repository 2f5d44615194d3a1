//! The Locus processes a fault runs: ingest replicas (API, forwarders) and stream-bridge
//! replicas, started from the release binaries with an environment of their own (nothing
//! inherited from `scripts/env.sh`, so the stack's sinks or ports never leak in), each with
//! its log in the run's directory. A process can be killed with SIGKILL, stopped with
//! SIGTERM, and started again under another name.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// A free loopback port (bound, read, released: another process could take it in between,
/// which on a test machine is rare enough).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `kill -<sig> <pid>`.
pub async fn signal(sig: &str, pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -{sig} {pid} failed");
    Ok(())
}

/// What to run and with which environment.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Name in the harness's messages and of the log file (`<name>.log`).
    pub name: String,
    /// The executable.
    pub exe: PathBuf,
    /// Its whole `LOCUS_*` environment.
    pub env: Vec<(String, String)>,
    /// Where its `/readyz` is.
    pub listen_port: u16,
}

/// One running (or stopped) Locus process.
#[derive(Debug)]
pub struct App {
    spec: AppSpec,
    log_dir: PathBuf,
    child: Option<Child>,
}

impl App {
    /// Starts `spec` and waits until its `/readyz` answers 200 (60 s at most).
    pub async fn start(
        spec: AppSpec,
        log_dir: &Path,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let mut app = Self {
            spec,
            log_dir: log_dir.to_path_buf(),
            child: None,
        };
        app.launch(http).await?;
        Ok(app)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The value of `key` in its environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.spec
            .env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL, then waits for the exit; returns the pid killed.
    pub async fn kill9(&mut self) -> anyhow::Result<u32> {
        let mut child = self.child.take().context("not running")?;
        let pid = child.id().context("already exited")?;
        signal("KILL", pid).await?;
        child.wait().await?;
        Ok(pid)
    }

    /// SIGTERM (a graceful stop: ingest drains its forwarder, the bridge leaves its group),
    /// then waits up to 60 s, then SIGKILL.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            signal("TERM", pid).await?;
        }
        if tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again under `name`, with `env` set over its environment.
    pub async fn restart_as(
        &mut self,
        name: &str,
        env: &[(&str, String)],
        http: &reqwest::Client,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "stop {} first", self.spec.name);
        name.clone_into(&mut self.spec.name);
        for (k, v) in env {
            self.spec.env.retain(|(key, _)| key != k);
            self.spec.env.push(((*k).to_owned(), v.clone()));
        }
        self.launch(http).await
    }

    async fn launch(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let log_path = self.log_dir.join(format!("{}.log", self.spec.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&self.spec.exe);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("LOCUS_FAULTS_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.spec.exe.display()))?;
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.spec.listen_port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                anyhow::bail!(
                    "{} exited ({status}) before it was ready; log: {}",
                    self.spec.name,
                    log_path.display()
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready within 60 s; log: {}",
                self.spec.name,
                log_path.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
