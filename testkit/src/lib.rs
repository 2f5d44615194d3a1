//! Test helpers against the real local services (PostgreSQL, Redis, Apache Kafka). Nothing
//! here mocks a service: when one is missing, the helper panics with what to start, so a
//! test run without services fails loudly instead of passing quietly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use locus_service::kafka::{KafkaSecurity, SaslMechanism, SecurityProtocol};
use locus_service::settings::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use uuid::Uuid;

pub mod broker;
pub mod cluster;
pub mod proxy;

/// Secret used to sign test tokens.
pub const JWT_SECRET: &str = "locus-test-secret";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// Redis URL of the test services (`LOCUS_REDIS_URL`).
pub fn redis_url() -> String {
    env_or("LOCUS_REDIS_URL", "redis://127.0.0.1:6379")
}

/// Kafka bootstrap servers of the test broker (`LOCUS_KAFKA_BROKERS`).
pub fn kafka_brokers() -> String {
    env_or("LOCUS_KAFKA_BROKERS", "127.0.0.1:9092")
}

/// The principal tests use on the shared broker: its super user.
pub const KAFKA_ADMIN: &str = "locus-admin";

/// The state directory of the local stack's broker (`LOCUS_TEST_KAFKA_DIR`, default
/// `.locus/kafka`): its running `config/server.properties` and its `credentials/`.
fn kafka_state_dir() -> PathBuf {
    std::env::var_os("LOCUS_TEST_KAFKA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.locus/kafka")
                .to_path_buf()
        })
}

/// How tests authenticate to the shared broker, decided once per test process:
///
/// 1. `LOCUS_KAFKA_SECURITY_PROTOCOL` set in the test's environment: the `LOCUS_KAFKA_*`
///    settings as a Locus binary reads them (a broker elsewhere).
/// 2. Otherwise, when the local stack's broker (its running config in
///    `.locus/kafka/config/server.properties`) has a SASL listener at the address tests
///    use: SCRAM-SHA-512 as `locus-admin`, with the password `./locus services` generated
///    into `.locus/kafka/credentials/locus-admin`.
/// 3. Otherwise plaintext (a broker without security).
///
/// The running config decides rather than the credentials file alone, so that a broker
/// started before SASL existed keeps being reached in plaintext until it is restarted.
pub fn kafka_security() -> KafkaSecurity {
    static SECURITY: OnceLock<KafkaSecurity> = OnceLock::new();
    SECURITY.get_or_init(detect_kafka_security).clone()
}

fn detect_kafka_security() -> KafkaSecurity {
    if std::env::var_os("LOCUS_KAFKA_SECURITY_PROTOCOL").is_some() {
        return KafkaSecurity::from_env()
            .unwrap_or_else(|e| panic!("the test's Kafka security settings: {e}"));
    }
    let dir = kafka_state_dir();
    let config = std::fs::read_to_string(dir.join("config/server.properties")).unwrap_or_default();
    let brokers = kafka_brokers();
    let sasl_here = config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("advertised.listeners="))
        .flat_map(|l| l.split(','))
        .filter_map(|l| l.trim().strip_prefix("SASL_PLAINTEXT://"))
        .any(|address| brokers.split(',').any(|b| b.trim() == address));
    if !sasl_here {
        return KafkaSecurity::default();
    }
    let file = dir.join("credentials").join(KAFKA_ADMIN);
    let password = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "the broker at {brokers} requires SASL but {} cannot be read ({e}); run `./locus services`",
            file.display()
        )
    });
    KafkaSecurity::sasl(
        SecurityProtocol::SaslPlaintext,
        SaslMechanism::ScramSha512,
        KAFKA_ADMIN,
        secrecy::SecretString::from(password.trim()),
    )
}

/// A client config for the shared test broker: its bootstrap servers and its security (a
/// super user once the broker runs SASL). Every test client of the shared broker starts
/// from this one.
pub fn kafka_config() -> ClientConfig {
    kafka_settings("locus.").client_config()
}

/// The shared broker as a service's Kafka settings, with `topic_prefix`.
pub fn kafka_settings(topic_prefix: &str) -> KafkaSettings {
    KafkaSettings::new(&kafka_brokers(), topic_prefix).with_security(kafka_security())
}

/// Kafka settings for the brokers `bootstrap` with `topic_prefix`: the shared broker's
/// security when `bootstrap` names it, plaintext for a test's own node or cluster.
pub fn kafka_settings_for(bootstrap: &str, topic_prefix: &str) -> KafkaSettings {
    if bootstrap == kafka_brokers() {
        kafka_settings(topic_prefix)
    } else {
        KafkaSettings::new(bootstrap, topic_prefix)
    }
}

/// The shared broker's security settings as command-line flags of a Locus binary
/// (`--kafka-security-protocol` ...), for tests that configure a spawned binary by flags
/// alone. The password is on the command line: fine for a test, not for production.
pub fn kafka_security_args() -> Vec<String> {
    kafka_security()
        .to_env()
        .into_iter()
        .flat_map(|(name, value)| {
            let flag = name
                .strip_prefix("LOCUS_")
                .expect("LOCUS_ variables")
                .to_ascii_lowercase()
                .replace('_', "-");
            [format!("--{flag}"), value]
        })
        .collect()
}

/// The `LOCUS_KAFKA_*` variables a spawned Locus binary needs to reach the shared broker:
/// `LOCUS_KAFKA_BROKERS` and the security settings (the admin's credentials when SASL is on).
/// Not for a test's own [`broker::KafkaNode`]: those are plaintext, see [`plaintext_kafka_env`].
pub fn kafka_env() -> Vec<(String, String)> {
    let mut env = vec![("LOCUS_KAFKA_BROKERS".to_owned(), kafka_brokers())];
    env.extend(kafka_security().to_env());
    env
}

/// The variables a spawned binary needs to reach a test's own plaintext broker at
/// `bootstrap`: explicitly plaintext, so nothing the test process inherited applies.
pub fn plaintext_kafka_env(bootstrap: &str) -> Vec<(String, String)> {
    vec![
        ("LOCUS_KAFKA_BROKERS".to_owned(), bootstrap.to_owned()),
        (
            "LOCUS_KAFKA_SECURITY_PROTOCOL".to_owned(),
            "PLAINTEXT".to_owned(),
        ),
    ]
}

/// A client config for the brokers `bootstrap`: the shared broker's (with its security)
/// when `bootstrap` names it, plaintext for a test's own node or cluster.
pub fn kafka_config_for(bootstrap: &str) -> ClientConfig {
    if bootstrap == kafka_brokers() {
        kafka_config()
    } else {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap);
        c
    }
}

/// A name unique to one test, for Redis prefixes, topic prefixes and consumer groups.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// A throwaway database of one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    /// URL of the service role (`locus_app`): what the services under test connect with.
    pub url: String,
    /// URL of the owner (the admin role): for set-up and checks that must see every row.
    pub owner_url: String,
}

/// Creates a fresh database for one test, with the service roles and every migration
/// applied (as `locus-ingest migrate` does), and returns the service role's URL.
///
/// The admin connection comes from `LOCUS_TEST_DATABASE_ADMIN_URL`
/// (default `postgres://postgres@127.0.0.1:5432/postgres`).
pub async fn fresh_database() -> String {
    test_database().await.url
}

/// Like [`fresh_database`], with the owner's URL too.
pub async fn test_database() -> TestDatabase {
    let admin = env_or(
        "LOCUS_TEST_DATABASE_ADMIN_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let name = unique("locus_test_");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {admin} ({e}); run `./locus services` first")
        });
    sqlx::Executor::execute(&mut conn, format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let owner_url = format!("{base}/{name}");
    let owner = sqlx::PgPool::connect(&owner_url)
        .await
        .expect("connect to the test database as its owner");
    locus_session::bootstrap(&owner)
        .await
        .expect("the service roles and migrations apply");
    owner.close().await;
    // The same server, as the service role (loopback is trusted locally; a password, if
    // the server asks for one, comes from LOCUS_TEST_APP_PASSWORD).
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let password = std::env::var("LOCUS_TEST_APP_PASSWORD")
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let url = format!(
        "{scheme}://{}{password}@{host}/{name}",
        locus_session::scope::APP_ROLE
    );
    TestDatabase { url, owner_url }
}

/// Registers `device` of `tenant` (and the tenant) directly in the database at
/// `owner_url`, as an operator's set-up would: for tests whose subject is not onboarding.
pub async fn register_device(owner_url: &str, tenant: &str, device: &str) {
    let pool = sqlx::PgPool::connect(owner_url)
        .await
        .expect("connect to the test database as its owner");
    sqlx::query("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(&pool)
        .await
        .expect("insert the tenant");
    sqlx::query("INSERT INTO devices (tenant_id, id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(tenant)
        .bind(device)
        .execute(&pool)
        .await
        .expect("insert the device");
    pool.close().await;
}

/// Panics unless Redis answers PING.
pub async fn require_redis() -> redis::aio::ConnectionManager {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).expect("valid Redis URL");
    let mut conn = redis::aio::ConnectionManager::new(client)
        .await
        .unwrap_or_else(|e| {
            panic!("Redis is not reachable at {url} ({e}); run `./locus services` first")
        });
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} does not answer PING ({e})"));
    conn
}

/// Mints an HS256 token like `locus-ingest token` does.
pub fn token(secret: &str, tenant: &str, subject: &str, role: &str, ttl_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = serde_json::json!({
        "iss": "locus",
        "aud": "locus",
        "sub": subject,
        "tenant": tenant,
        "role": role,
        "iat": now,
        "exp": now + ttl_secs,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// A device token signed with [`JWT_SECRET`], valid for an hour.
pub fn device_token(tenant: &str, device: &str) -> String {
    token(JWT_SECRET, tenant, device, "device", 3600)
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// Partition it was read from.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Key, as UTF-8.
    pub key: String,
    /// Headers, as UTF-8.
    pub headers: HashMap<String, String>,
    /// Value parsed as JSON.
    pub value: serde_json::Value,
}

/// Settings of a test reader: a group of its own, from the earliest record, committing
/// nothing. Everything else is librdkafka's default, as in production.
pub fn consumer_config(group: &str) -> ClientConfig {
    consumer_config_for(&kafka_brokers(), group)
}

/// [`consumer_config`] for the brokers `bootstrap` (see [`kafka_config_for`]).
pub fn consumer_config_for(bootstrap: &str, group: &str) -> ClientConfig {
    let mut c = kafka_config_for(bootstrap);
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    c
}

/// A client of the local stack's broker for metadata and watermark requests.
fn metadata_client() -> BaseConsumer {
    kafka_config().create().expect("create a Kafka client")
}

/// The replica count of each partition of `topic`, in partition order, as the broker
/// describes it; `None` if the topic does not exist.
pub async fn topic_replicas(topic: &str) -> Option<Vec<usize>> {
    let topic = topic.to_owned();
    // A metadata request blocks; keep it off the test's async threads.
    tokio::task::spawn_blocking(move || {
        let client = metadata_client();
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("Kafka metadata for {topic} failed: {e}"));
        let found = metadata.topics().iter().find(|t| t.name() == topic)?;
        if found.error().is_some() {
            return None;
        }
        let mut partitions: Vec<_> = found.partitions().iter().collect();
        partitions.sort_by_key(|p| p.id());
        Some(partitions.iter().map(|p| p.replicas().len()).collect())
    })
    .await
    .expect("the metadata request does not panic")
}

/// Reads `topic` from the beginning with a fresh consumer group until `expected` records
/// arrived or `timeout` passed, and returns what it read (maybe fewer: the caller asserts).
pub async fn read_topic(topic: &str, expected: usize, timeout: Duration) -> Vec<KafkaRecord> {
    read_topic_until(topic, timeout, |records| records.len() >= expected).await
}

/// Reads `topic` from the beginning with a fresh consumer group until `done` says so for
/// the records read so far, or `timeout` passed; returns what it read.
pub async fn read_topic_until(
    topic: &str,
    timeout: Duration,
    done: impl FnMut(&[KafkaRecord]) -> bool,
) -> Vec<KafkaRecord> {
    read_topic_on(&kafka_brokers(), topic, timeout, done).await
}

/// [`read_topic_until`] against the brokers `bootstrap` instead of the local stack's (a
/// test's own cluster).
pub async fn read_topic_on(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[KafkaRecord]) -> bool,
) -> Vec<KafkaRecord> {
    let consumer: StreamConsumer = consumer_config_for(bootstrap, &unique("locus-test-reader-"))
        .create()
        .expect("create Kafka consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) => break,
            // librdkafka reports a broker that went away (a test killed it) as an error
            // and carries on with the others; an error that lasts shows as missing records.
            Ok(Err(e)) => eprintln!("Kafka read from {topic}: {e}"),
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(KafkaRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    headers,
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("record value is JSON"),
                });
            }
        }
    }
    out
}

/// Reads `topic` until at least `expected` records arrived, then on to the end of every
/// partition as the broker reports it at that moment, so that a copy written after the
/// first `expected` records is read too and an exact count can fail. Gives up at `timeout`.
pub async fn read_topic_to_end(
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<KafkaRecord> {
    let deadline = Instant::now() + timeout;
    let first = read_topic(topic, expected, timeout).await;
    let ends = high_watermarks(topic).await;
    let left = deadline.saturating_duration_since(Instant::now());
    // A fresh reader from the beginning: simpler than resuming the first one, and the
    // topics of one test are small.
    let all = read_topic_until(topic, left.max(Duration::from_secs(5)), |records| {
        ends.iter().all(|(&partition, &end)| {
            end == 0
                || records
                    .iter()
                    .any(|r| r.partition == partition && r.offset + 1 >= end)
        })
    })
    .await;
    if all.len() < first.len() { first } else { all }
}

/// The high watermark (next offset to be written) of every partition of `topic`.
pub async fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    let topic = topic.to_owned();
    // Metadata and watermark requests block; keep them off the test's async threads.
    tokio::task::spawn_blocking(move || {
        let client = metadata_client();
        let metadata = client
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("Kafka metadata for {topic} failed: {e}"));
        let mut ends = HashMap::new();
        for t in metadata.topics().iter().filter(|t| t.name() == topic) {
            for p in t.partitions() {
                let (_, high) = client
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{} failed: {e}", p.id()));
                ends.insert(p.id(), high);
            }
        }
        ends
    })
    .await
    .expect("the watermark request does not panic")
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
