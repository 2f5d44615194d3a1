//! The harness's own Redis and PostgreSQL, for faults that stop them.
//!
//! The local stack's services are shared with everyone running tests on this machine: a
//! fault that stops them would fail those tests and measure their load with ours. So each
//! run starts its own instances with the arguments `./locus services` uses (Redis with AOF
//! fsynced every second and `noeviction`; a PostgreSQL cluster from the same binaries) on
//! free loopback ports, and stops them at the end. The broker is locus-testkit's
//! [`KafkaNode`](locus_testkit::broker::KafkaNode), which does the same for Apache Kafka.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use super::procs::{free_port, signal};

/// A redis-server run by the harness: AOF `everysec`, `noeviction`, its data in `dir`.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port, its AOF under `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut redis = Self {
            port: free_port()?,
            dir: dir.to_path_buf(),
            child: None,
        };
        redis.launch().await?;
        Ok(redis)
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// `redis-cli shutdown`: the server appends and fsyncs what it has, then exits (what
    /// SIGTERM does).
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        self.wait_exit().await
    }

    /// SIGKILL: what the AOF has reached the page cache is all that survives.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.pid() {
            signal("KILL", pid).await?;
        }
        self.wait_exit().await
    }

    /// Starts it again with the same arguments and directory (the AOF is replayed).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "stop Redis before restarting it");
        self.launch().await
    }

    async fn wait_exit(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .context("redis-server did not exit within 30 s")??;
        }
        Ok(())
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        // The same arguments as `./locus services` (ensure_redis), in the foreground so the
        // harness holds the process.
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--maxmemory-policy", "noeviction"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server (./locus deps installs it)")?;
        self.child = Some(child);
        let client = redis::Client::open(self.url())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                // Loading the AOF answers LOADING until done: wait for a real answer.
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A PostgreSQL cluster run by the harness with `pg_ctl`, owned by the `postgres` user.
#[derive(Debug)]
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` into `dir` (trust authentication, loopback only) and starts it.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        std::fs::create_dir_all(dir)?;
        if is_root() {
            run(Command::new("chown").arg("postgres:postgres").arg(dir)).await?;
        }
        let mut pg = Self {
            bin,
            dir: dir.to_path_buf(),
            port: free_port()?,
            running: false,
        };
        let initdb = pg.bin.join("initdb");
        let mut cmd = as_postgres(&initdb);
        cmd.arg("-D")
            .arg(pg.data())
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run(&mut cmd).await.context("initdb")?;
        pg.start_again().await?;
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// URL of its `postgres` database as the superuser `postgres`: the owner URL
    /// `locus-ingest migrate` runs with.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// URL of the same database as the service role `locus_app` (created by the migration;
    /// trust authentication, so no password), what ingest and the bridges connect with.
    pub fn app_url(&self) -> String {
        format!("postgres://locus_app@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .arg("-o")
            .arg(opts)
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"]);
        run(&mut cmd).await.context("pg_ctl start")?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl stop -m fast`: sessions are cut, the server exits.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let mut cmd = as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        run(&mut cmd).await.context("pg_ctl stop")?;
        self.running = false;
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let mut cmd = std::process::Command::new(self.bin.join("pg_ctl"));
            if is_root() {
                cmd = std::process::Command::new("runuser");
                cmd.args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"));
            }
            let _ = cmd
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
        })
}

/// PostgreSQL refuses to run as root: as root, its tools run as the `postgres` user.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql (./locus deps installs PostgreSQL)")?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .context("no PostgreSQL version under /usr/lib/postgresql")
}

async fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed: {}{}",
        cmd.as_std().get_program(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
