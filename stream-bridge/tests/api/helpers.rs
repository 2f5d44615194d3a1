//! Test harness: a real local webhook receiver, a real bridge on port 0, and records
//! produced to a fresh topic on the local broker.
//!
//! About 400 lines: the receiver, the bridge starter and the record producers of every
//! test of this binary, each small.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use locus_stream_bridge::{Application, BridgeError, Config};
use locus_wire::headers::{self, RecordType};
use locus_wire::record::{LocationRecord, SCHEMA_VERSION, record_id};
use locus_wire::topics::Topics;
use locus_wire::webhook::WebhookDelivery;
use locus_wire::{DeviceId, SessionId, TenantId};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something the bridge should do. Generous: joining a group on
/// the local broker takes a few seconds, and the machine is shared with other builds.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// What the receiver answers for one tenant.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// 200 to everything.
    Accept,
    /// `status` to the next `remaining` requests, then 200.
    FailFirst { remaining: usize, status: u16 },
    /// `status` to everything.
    Always(u16),
    /// Holds every request open, answering nothing, until the behaviour is changed; the
    /// request is then answered per the new behaviour.
    Hang,
    /// 200 to everything, each after this many milliseconds.
    Slow(u64),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The tenant in the path.
    pub tenant: String,
    /// What the receiver answered.
    pub status: u16,
    /// The request headers (lowercase names).
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Bytes,
    /// When the receiver got it.
    pub started: Instant,
    /// When the receiver answered it.
    pub at: Instant,
}

impl Received {
    /// The body as a webhook delivery.
    pub fn delivery(&self) -> WebhookDelivery {
        serde_json::from_slice(&self.body).expect("the body is a WebhookDelivery")
    }

    /// A header value.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing"))
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    behaviours: Mutex<HashMap<String, Behaviour>>,
}

/// A webhook receiver on 127.0.0.1: `POST /hooks/{tenant}`, recording every request.
#[derive(Clone)]
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    /// Starts a receiver that accepts everything.
    pub async fn spawn() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .route("/hooks/{tenant}", post(receive))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// The webhook URL of `tenant`.
    pub fn url(&self, tenant: &str) -> String {
        format!("http://{}/hooks/{tenant}", self.addr)
    }

    /// Sets what the receiver answers for `tenant`.
    pub fn set(&self, tenant: &str, behaviour: Behaviour) {
        self.state
            .behaviours
            .lock()
            .unwrap()
            .insert(tenant.to_owned(), behaviour);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The requests for `tenant`, in arrival order.
    pub fn requests_for(&self, tenant: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.tenant == tenant)
            .collect()
    }

    /// The records of `tenant` in the requests answered 200, in arrival order.
    pub fn delivered(&self, tenant: &str) -> Vec<LocationRecord> {
        self.requests_for(tenant)
            .iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| r.delivery().records)
            .collect()
    }

    /// Waits until `tenant` has at least `n` delivered records, and returns them.
    pub async fn wait_for(&self, tenant: &str, n: usize) -> Vec<LocationRecord> {
        locus_testkit::eventually(PATIENCE, || {
            let got = self.delivered(tenant);
            async move { (got.len() >= n).then_some(got) }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{tenant} received {} of {n} records in {PATIENCE:?}",
                self.delivered(tenant).len()
            )
        })
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let started = Instant::now();
    let slow = match state.behaviours.lock().unwrap().get(&tenant) {
        Some(Behaviour::Slow(ms)) => Some(Duration::from_millis(*ms)),
        _ => None,
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    // A hanging webhook: the connection stays open without an answer for as long as the
    // test keeps the behaviour.
    while matches!(
        state.behaviours.lock().unwrap().get(&tenant),
        Some(Behaviour::Hang)
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = {
        let mut behaviours = state.behaviours.lock().unwrap();
        match behaviours.get_mut(&tenant).copied() {
            None | Some(Behaviour::Accept | Behaviour::Hang | Behaviour::Slow(_)) => 200,
            Some(Behaviour::Always(status)) => status,
            Some(Behaviour::FailFirst { remaining, status }) => {
                let next = if remaining <= 1 {
                    Behaviour::Accept
                } else {
                    Behaviour::FailFirst {
                        remaining: remaining - 1,
                        status,
                    }
                };
                behaviours.insert(tenant.clone(), next);
                if remaining == 0 { 200 } else { status }
            }
        }
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.requests.lock().unwrap().push(Received {
        tenant,
        status,
        headers,
        body,
        started,
        at: Instant::now(),
    });
    StatusCode::from_u16(status).unwrap()
}

/// Panics unless the local broker accepts connections: a test without it must fail.
pub async fn require_kafka() -> String {
    let brokers = locus_testkit::kafka_brokers();
    let first = brokers.split(',').next().unwrap().to_owned();
    tokio::net::TcpStream::connect(&first)
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka is not reachable at {first} ({e}); run `./locus services` first")
        });
    brokers
}

/// A fresh topic prefix with its location topic (`partitions` partitions) and dead-letter
/// topic created.
pub async fn fresh_topics(partitions: i32) -> String {
    let brokers = require_kafka().await;
    let prefix = locus_testkit::unique("locus_bridge_test_") + ".";
    let admin: AdminClient<DefaultClientContext> = locus_testkit::kafka_config_for(&brokers)
        .create()
        .expect("create the admin client");
    let topics = Topics::new(&prefix);
    let (locations, dead_letter) = (topics.locations(), topics.dead_letter());
    let results = admin
        .create_topics(
            &[
                NewTopic::new(locations, partitions, TopicReplication::Fixed(1)),
                NewTopic::new(dead_letter, 1, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(topic, e)| panic!("create topic {topic}: {e}"));
    }
    prefix
}

/// A bridge configuration for `prefix` with a fresh group.
pub fn config(prefix: &str) -> Config {
    let mut c = Config::for_tests(
        &locus_testkit::kafka_brokers(),
        prefix,
        &locus_testkit::unique("locus-bridge-test-"),
    );
    c.kafka = locus_testkit::kafka_settings(prefix);
    c
}

/// A running bridge.
pub struct TestBridge {
    /// Its HTTP address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), BridgeError>>,
    /// Stops the bridge when a failed assertion drops it: its polling thread runs on the
    /// blocking pool, and the test's runtime waits for that pool forever when it ends.
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl TestBridge {
    /// Builds and starts the bridge.
    pub async fn spawn(config: Config) -> Self {
        locus_service::init_tracing();
        let app = Application::build(config).await.expect("build the bridge");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            _stop_on_drop: shutdown.clone().drop_guard(),
            shutdown,
            task,
        }
    }

    /// A URL on the bridge's listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The `locus_bridge_consumer_lag_records` gauge of each partition of `topic`, as
    /// `/metrics` shows it now (empty until the bridge owns a partition of it). The recorder
    /// is shared by every bridge of the test binary; the topic tells them apart.
    pub async fn consumer_lag(&self, topic: &str) -> BTreeMap<i32, i64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("a metrics body");
        let mut lags = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("locus_bridge_consumer_lag_records{") else {
                continue;
            };
            let (labels, value) = rest.split_once("} ").expect("labels, then the value");
            let labels: HashMap<&str, &str> = labels
                .split(',')
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            if labels.get("topic") == Some(&topic) {
                let partition = labels["partition"].parse().expect("a partition number");
                let records: f64 = value.trim().parse().expect("a number");
                lags.insert(partition, records as i64);
            }
        }
        lags
    }

    /// Waits until the lag of `topic` reads `expected` (partition, records) for every
    /// partition, and panics with the last reading if it does not within the patience.
    pub async fn wait_for_lag(&self, topic: &str, expected: &[(i32, i64)]) {
        let expected: BTreeMap<i32, i64> = expected.iter().copied().collect();
        let reached = locus_testkit::eventually(PATIENCE, || async {
            (self.consumer_lag(topic).await == expected).then_some(())
        })
        .await;
        if reached.is_none() {
            panic!(
                "the lag of {topic} did not reach {expected:?} in {PATIENCE:?}; it reads {:?}",
                self.consumer_lag(topic).await
            );
        }
    }

    /// Stops the bridge gracefully and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the bridge stops within the patience")
            .expect("the bridge task does not panic")
            .expect("the bridge stops cleanly");
    }
}

/// `n` records of one new session of `tenant`, batch indices 0..n.
pub fn session_records(tenant: &str, n: u32) -> Vec<LocationRecord> {
    let session = SessionId::new();
    let batch_id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    (0..n)
        .map(|i| LocationRecord {
            schema_version: SCHEMA_VERSION,
            record_id: record_id(session, &batch_id, i),
            tenant_id: TenantId::parse(tenant).unwrap(),
            session_id: session,
            device_id: DeviceId::parse("phone-1").unwrap(),
            batch_id: batch_id.clone(),
            batch_index: i,
            recorded_at: now,
            received_at: now,
            lat: 52.5 + f64::from(i) * 0.0001,
            lon: 13.4,
            accuracy: Some(5.0),
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
            fix_key: None,
            attributes: None,
        })
        .collect()
}

/// A producer to the local broker.
pub fn producer() -> FutureProducer {
    locus_testkit::kafka_config()
        .set("acks", "all")
        .create()
        .expect("create the producer")
}

/// The headers ingest's forwarder puts on a location record (the wire crate's builder, so
/// the tests read records shaped exactly as production writes them).
pub fn record_headers(record: &LocationRecord) -> OwnedHeaders {
    let pairs = headers::record_headers(RecordType::Location, &record.tenant_id, record.session_id);
    locus_service::kafka::headers(&pairs)
}

/// Produces `records` to the location topic of `prefix`, in order, keyed by session.
pub async fn produce(prefix: &str, records: &[LocationRecord]) {
    produce_to(prefix, None, records).await;
}

/// Like [`produce`], into `partition` if given (else the key picks it).
pub async fn produce_to(prefix: &str, partition: Option<i32>, records: &[LocationRecord]) {
    let producer = producer();
    let topic = Topics::new(prefix).locations().to_owned();
    for record in records {
        let key = record.session_id.to_string();
        let value = serde_json::to_vec(record).unwrap();
        let mut kafka_record = FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(record_headers(record));
        if let Some(partition) = partition {
            kafka_record = kafka_record.partition(partition);
        }
        producer
            .send(kafka_record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

/// Produces one raw value to the location topic of `prefix`.
pub async fn produce_raw(prefix: &str, key: &str, value: &[u8]) {
    let topic = Topics::new(prefix).locations().to_owned();
    producer()
        .send(
            FutureRecord::to(&topic).key(key).payload(value),
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
}
