//! Ceilings: what the hardware and the dependencies allow for each stage, measured with the
//! same data as the Locus run. Each ceiling does the stage's I/O and nothing else:
//! - HTTP: a no-op axum handler that reads the body and answers 202;
//! - Redis: XADD of the same buffer entries, as many in flight as ingest has requests;
//! - Kafka produce: the same records, key and headers, same producer settings as ingest;
//! - Kafka consume: reading those records back, counted as they arrive (a consumer's
//!   throughput is records read and handed to the application, which watermarks do not
//!   show).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    fn new(fixes: u64, elapsed: Duration) -> Self {
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

/// A no-op HTTP server on `127.0.0.1:0`: reads the whole body, answers 202. Stops when
/// `stop` is cancelled.
pub async fn start_noop_server(stop: CancellationToken) -> anyhow::Result<String> {
    async fn noop(body: Bytes) -> (StatusCode, &'static str) {
        // The body is read in full (axum buffers it into `body`) and then dropped.
        std::hint::black_box(body.len());
        (StatusCode::ACCEPTED, r#"{"accepted":0}"#)
    }
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the no-op server")?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .fallback(noop)
        .layer(DefaultBodyLimit::max(64 * 1024 * 1024));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "The no-op server failed.");
        }
    });
    Ok(format!("http://{addr}"))
}

/// XADDs `entries` (JSON buffer entries, one per batch, each worth `fixes_per_entry`) to a
/// scratch stream with `in_flight` commands outstanding on one multiplexed connection (as
/// ingest's connection manager does), cycling through them for `duration`, then deletes it.
pub async fn redis_xadd(
    redis_url: &str,
    scratch_key: &str,
    entries: Arc<Vec<(Bytes, u64)>>,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    anyhow::ensure!(!entries.is_empty(), "no entries to write");
    let client = redis::Client::open(redis_url).context("bad Redis URL")?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to Redis at {redis_url}"))?;
    let fixes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for w in 0..in_flight.max(1) {
        let mut conn = conn.clone();
        let entries = Arc::clone(&entries);
        let fixes = Arc::clone(&fixes);
        let key = scratch_key.to_owned();
        tasks.spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let (entry, n) = &entries[i % entries.len()];
                let _: String = redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg(locus_wire::buffer::ENTRY_FIELD)
                    .arg(entry.as_ref())
                    .query_async(&mut conn)
                    .await?;
                fixes.fetch_add(*n, Ordering::Relaxed);
                i += in_flight;
            }
            Ok::<(), redis::RedisError>(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            first_error.get_or_insert(e);
        }
    }
    let elapsed = started.elapsed();
    let mut conn = conn;
    // UNLINK frees the scratch stream in the background: a DEL of millions of entries
    // would block Redis for seconds and show up as ingest latency in the next leg.
    let _: Result<i64, _> = redis::cmd("UNLINK")
        .arg(scratch_key)
        .query_async(&mut conn)
        .await;
    if let Some(e) = first_error {
        return Err(e).context("XADD failed");
    }
    Ok(Ceiling::new(fixes.load(Ordering::Relaxed), elapsed))
}

/// The producer ingest's forwarder uses (see ingest/src/kafka.rs): idempotent, acks=all,
/// lz4, linger 5 ms.
pub fn producer(brokers: &str) -> Result<FutureProducer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "500000")
        .create()
}

/// Creates a scratch topic with `partitions` partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &options).await? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Deletes a scratch topic; a broker that cannot is only logged.
pub async fn delete_topic(brokers: &str, topic: &str) {
    let admin: Result<AdminClient<DefaultClientContext>, _> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create();
    let Ok(admin) = admin else { return };
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = admin.delete_topics(&[topic], &options).await {
        tracing::warn!(topic, error = %e, "Could not delete the scratch topic.");
    }
}

/// One record to produce: key (session id), tenant, JSON value.
#[derive(Debug, Clone)]
pub struct ScratchRecord {
    /// Kafka key: the session id.
    pub key: String,
    /// Tenant header value.
    pub tenant: String,
    /// JSON `LocationRecord`.
    pub value: Bytes,
}

/// Produces `records` to `topic` as fast as the producer takes them; the time runs until
/// the last delivery report.
pub async fn kafka_produce(
    brokers: &str,
    topic: &str,
    records: &[ScratchRecord],
) -> anyhow::Result<Ceiling> {
    let producer = producer(brokers).context("cannot create the producer")?;
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: locus_wire::record::HEADER_TENANT,
                value: Some(r.tenant.as_str()),
            })
            .insert(Header {
                key: locus_wire::record::HEADER_SESSION,
                value: Some(r.key.as_str()),
            })
            .insert(Header {
                key: locus_wire::record::HEADER_SCHEMA_VERSION,
                value: Some("1"),
            })
            .insert(Header {
                key: locus_wire::record::HEADER_RECORD_TYPE,
                value: Some("location"),
            })
            .insert(Header {
                key: locus_wire::record::HEADER_CONTENT_TYPE,
                value: Some(locus_wire::record::CONTENT_TYPE_JSON),
            });
        let mut record = FutureRecord::to(topic)
            .key(r.key.as_str())
            .payload(r.value.as_ref())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(d) => {
                    deliveries.push(d);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(e).context("produce failed"),
            }
        }
    }
    let mut delivered = 0u64;
    for d in deliveries {
        if matches!(d.await, Ok(Ok(_))) {
            delivered += 1;
        }
    }
    Ok(Ceiling::new(delivered, started.elapsed()))
}

/// Reads `topic` from the start with a fresh group until `expected` records were read or
/// `timeout` passed. Time runs from the first record read (the group join is not the
/// consumer's throughput) to the last.
pub async fn kafka_consume(
    brokers: &str,
    topic: &str,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<Ceiling> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("locus-bench-ceiling-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "2000")
        .create()
        .context("cannot create the consumer")?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut read = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    while read < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(_)) => {
                read += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => break,
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| last - f);
    Ok(Ceiling::new(read, elapsed))
}
