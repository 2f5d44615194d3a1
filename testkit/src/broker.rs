//! A test's own Apache Kafka node, for tests that stop and start the broker.
//!
//! Most tests share the broker that `./locus services` runs; a test that kills the broker
//! must not take that one down under every other test, so it starts a node of its own: the
//! same jars (`.locus/kafka/libs`, installed by `./locus deps`) and the same settings
//! (`scripts/kafka/server.properties.in`) as the local stack, on free loopback ports, with a
//! log directory of its own that outlives [`KafkaNode::stop`] and is deleted on drop.
//!
//! A node is plaintext without an authorizer (`scripts/kafka/plaintext.properties.in`
//! appended), so a test's clients and spawned binaries need no credentials, unless it is
//! started with [`KafkaNode::start_secured`]: then it runs the local stack's security exactly
//! (SASL/SCRAM-SHA-512, the standard authorizer, `locus-admin` the super user), and
//! [`KafkaNode::provision`] gives it the principals and ACLs of `scripts/kafka/acls.txt`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use locus_service::kafka::{KafkaSecurity, SaslMechanism, SecurityProtocol};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// How a test stops its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a controlled shutdown (logs flushed and closed, clean-shutdown marker).
    Term,
    /// SIGKILL: a crash; the next start recovers the log from what reached the page cache.
    Kill,
}

/// Where a node listens and which quorum it belongs to.
pub(crate) struct Settings<'a> {
    pub node_id: u32,
    pub port: u16,
    pub controller_port: u16,
    /// `controller.quorum.voters`.
    pub voters: String,
    /// One cluster id for every node of a cluster; `None` for a fresh one.
    pub cluster_id: Option<&'a str>,
    /// Properties appended to the local stack's settings.
    pub overrides: &'a str,
    /// The local stack's security (SASL, ACLs) instead of plaintext.
    pub secured: bool,
}

/// One KRaft node (broker and controller in one JVM) run by a test.
#[derive(Debug)]
pub struct KafkaNode {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// `locus-admin`'s password on a secured node.
    admin_password: Option<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// The installed Kafka jars (`LOCUS_KAFKA_LIBS`, default `.locus/kafka/libs`).
fn kafka_libs() -> PathBuf {
    std::env::var_os("LOCUS_KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".locus/kafka/libs"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl KafkaNode {
    /// Formats a fresh log directory and starts the node; returns once a client's
    /// metadata request is answered. Panics (the test fails) when Kafka is not installed
    /// or does not come up within 90 s.
    pub fn start() -> Self {
        Self::start_single(false)
    }

    /// Like [`KafkaNode::start`], with the local stack's security: a SASL/SCRAM-SHA-512
    /// client port, the standard authorizer, no access without an ACL, and `locus-admin`
    /// (password in [`KafkaNode::credentials_dir`]) the super user.
    pub fn start_secured() -> Self {
        Self::start_single(true)
    }

    fn start_single(secured: bool) -> Self {
        let port = free_port();
        let controller_port = free_port();
        let mut node = Self::format(Settings {
            node_id: 1,
            port,
            voters: format!("1@127.0.0.1:{controller_port}"),
            controller_port,
            cluster_id: None,
            overrides: "",
            secured,
        });
        node.launch();
        node
    }

    /// A node with its log directory formatted, not started.
    pub(crate) fn format(settings: Settings<'_>) -> Self {
        let libs = kafka_libs();
        assert!(
            libs.is_dir(),
            "Apache Kafka is not installed at {}; run `./locus deps` first",
            libs.display()
        );
        let dir = std::env::temp_dir().join(crate::unique("locus-test-kafka-"));
        std::fs::create_dir_all(dir.join("data")).expect("create the node's directory");
        let read = |name: &str| {
            std::fs::read_to_string(workspace_root().join("scripts/kafka").join(name))
                .unwrap_or_else(|e| panic!("read scripts/kafka/{name}: {e}"))
        };
        let mut template = read("server.properties.in");
        let admin_password = settings
            .secured
            .then(|| crate::unique("").chars().take(24).collect::<String>());
        if !settings.secured {
            template = template + "\n" + &read("plaintext.properties.in");
        }
        // Later keys win in a Java properties file, so overrides are appended.
        let config = template
            .replace("@PORT@", &settings.port.to_string())
            .replace("@CONTROLLER_PORT@", &settings.controller_port.to_string())
            .replace("@DATA_DIR@", &dir.join("data").display().to_string())
            .replace("@RETENTION_HOURS@", "1")
            .replace(
                "@ADMIN_PASSWORD@",
                admin_password.as_deref().unwrap_or("unused-plaintext"),
            )
            + &format!(
                "\nnode.id={}\ncontroller.quorum.voters={}\n{}",
                settings.node_id, settings.voters, settings.overrides
            );
        std::fs::write(dir.join("server.properties"), config).expect("write server.properties");

        let node = KafkaNode {
            dir,
            port: settings.port,
            child: None,
            admin_password,
        };
        let id = match settings.cluster_id {
            Some(id) => id.to_owned(),
            None => node.tool(&["kafka.tools.StorageTool", "random-uuid"]),
        };
        let config = node.config_path();
        let mut format = vec![
            "kafka.tools.StorageTool".to_owned(),
            "format".to_owned(),
            "--cluster-id".to_owned(),
            id.trim().to_owned(),
            "--config".to_owned(),
            config,
        ];
        if let Some(password) = &node.admin_password {
            // The super user's credential is in the metadata from the first start, as
            // ./locus formats the local broker.
            std::fs::create_dir_all(node.credentials_dir()).expect("create the credentials");
            std::fs::write(node.credentials_dir().join(crate::KAFKA_ADMIN), password)
                .expect("write the admin password");
            format.push("--add-scram".to_owned());
            format.push(format!(
                "SCRAM-SHA-512=[name={},password={password}]",
                crate::KAFKA_ADMIN
            ));
        }
        let format: Vec<&str> = format.iter().map(String::as_str).collect();
        node.tool(&format);
        node
    }

    /// The directory with each principal's password (`<dir>/<principal>`): `locus-admin`'s
    /// from the start, the others' after [`KafkaNode::provision`].
    pub fn credentials_dir(&self) -> PathBuf {
        self.dir.join("credentials")
    }

    /// How a client logs in to this node as `principal`: plaintext on a plain node; SASL
    /// with the password in [`KafkaNode::credentials_dir`] on a secured one.
    pub fn security_of(&self, principal: &str) -> KafkaSecurity {
        if self.admin_password.is_none() {
            return KafkaSecurity::default();
        }
        let file = self.credentials_dir().join(principal);
        let password = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{} ({e}): provision the node first", file.display()));
        KafkaSecurity::sasl(
            SecurityProtocol::SaslPlaintext,
            SaslMechanism::ScramSha512,
            principal,
            password.trim().into(),
        )
    }

    /// A client config for this node, logged in as `principal` (see [`KafkaNode::security_of`]).
    pub fn client_config_as(&self, principal: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        self.security_of(principal).apply(&mut c);
        c
    }

    /// The super user's client settings as a Kafka tools properties file.
    fn admin_properties(&self) -> PathBuf {
        let path = self.dir.join("admin.properties");
        let password = self.admin_password.as_deref().expect("a secured node");
        let body = format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \
             username=\"{}\" password=\"{password}\";\n",
            crate::KAFKA_ADMIN
        );
        std::fs::write(&path, body).expect("write admin.properties");
        path
    }

    /// Creates the principals of `scripts/kafka/acls.txt` with their ACLs for the topics
    /// under `topic_prefix`, with the same script ./locus runs (`scripts/kafka/principals.sh`);
    /// their passwords land in [`KafkaNode::credentials_dir`]. A secured node only.
    pub fn provision(&self, topic_prefix: &str) {
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/kafka/principals.sh"))
            .arg(self.bootstrap())
            .arg(self.admin_properties())
            .arg(self.credentials_dir())
            .arg(topic_prefix)
            .env("KAFKA_LIBS", kafka_libs())
            .env("KAFKA_TOOLS_LOG", self.dir.join("tools.log"))
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "scripts/kafka/principals.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("tools.log")).unwrap_or_default()
        );
    }

    /// A cluster id for [`KafkaNode::format`], from Kafka's own tool.
    pub(crate) fn random_cluster_id() -> String {
        // A node that never starts, only for its tool runner; its directory (the tool's
        // log directory) is deleted on drop.
        let probe = KafkaNode {
            dir: std::env::temp_dir().join(crate::unique("locus-test-kafka-id-")),
            port: 0,
            child: None,
            admin_password: None,
        };
        std::fs::create_dir_all(&probe.dir).expect("create a scratch directory");
        probe
            .tool(&["kafka.tools.StorageTool", "random-uuid"])
            .trim()
            .to_owned()
    }

    /// The bootstrap servers of this node.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The JVM's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the node with `how` and waits for the process to exit (up to 60 s, then
    /// SIGKILL). The log directory stays for the next [`KafkaNode::restart`].
    pub fn stop(&mut self, how: Stop) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signal = match how {
            Stop::Term => "-TERM",
            Stop::Kill => "-KILL",
        };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} the broker");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if child.try_wait().expect("wait for the broker").is_some() {
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the broker did not exit within 60 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the node again on the same ports and log directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker before restarting it");
        self.launch();
    }

    /// The last lines of the node's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn config_path(&self) -> String {
        self.dir.join("server.properties").display().to_string()
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                workspace_root().join("scripts/kafka/log4j2.yaml").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", kafka_libs().display()));
        java
    }

    /// Runs one of Kafka's tools to completion and returns its standard output.
    fn tool(&self, args: &[&str]) -> String {
        let out = self
            .java()
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("java is installed (./locus deps)");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("tool output is UTF-8")
    }

    /// Starts the JVM without waiting for it.
    pub(crate) fn spawn(&mut self) {
        let jvm_log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("jvm.log"))
            .expect("open the JVM log");
        let child = self
            .java()
            .args(["-Xms512m", "-Xmx512m", "-XX:+UseG1GC"])
            .arg("kafka.Kafka")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(jvm_log.try_clone().expect("clone the log handle"))
            .stderr(jvm_log)
            .spawn()
            .expect("start the broker (java)");
        self.child = Some(child);
    }

    fn launch(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Waits until a client gets metadata that lists this broker.
    pub(crate) fn wait_ready(&mut self) {
        let producer: BaseProducer = self
            .client_config_as(crate::KAFKA_ADMIN)
            .create()
            .expect("create a probe client");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().expect("poll the broker")
            {
                panic!(
                    "the broker exited ({status}) while starting:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(md) = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                && !md.brokers().is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not answer within 90 s:\n{}",
                self.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a JVM behind: kill it and delete its
        // log directory (nothing in it matters once the test is over).
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
