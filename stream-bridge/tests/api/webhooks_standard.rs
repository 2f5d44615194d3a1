//! Standard Webhooks deliveries against the real stack: a sink set through the admin API
//! (a real ingest on its own PostgreSQL database), the real bridge reading it, the local
//! Kafka broker, and a scripted receiver. Signatures are checked by an independent
//! implementation: a few lines of Python's hmac, hashlib and base64, run with `python3`.
//! Endpoint health is read back through `GET /v1/sink/health`.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use locus_testkit as kit;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::helpers::{PATIENCE, TestBridge, config, fresh_topics, produce, session_records};

/// How often the bridge reads the sink table in these tests.
const REFRESH_MS: u64 = 200;

/// Verifies a Standard Webhooks request with the standard library only: the same few
/// lines a partner would write (docs/partners.md), no Locus code. Reads
/// `{"secrets": [...], "id", "timestamp", "signature", "body_b64"}` on stdin and prints,
/// per secret, whether one of the `v1,` signatures is its HMAC.
const PYTHON_VERIFIER: &str = r#"
import base64, hashlib, hmac, json, sys
req = json.load(sys.stdin)
body = base64.b64decode(req["body_b64"])
signed = req["id"].encode() + b"." + req["timestamp"].encode() + b"." + body
given = [s.split(",", 1)[1] for s in req["signature"].split(" ") if s.startswith("v1,")]
out = []
for secret in req["secrets"]:
    key = base64.b64decode(secret[len("whsec_"):])
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    out.append(any(hmac.compare_digest(expected, g) for g in given))
print(json.dumps(out))
"#;

/// One request the scripted receiver got.
#[derive(Debug, Clone)]
struct Arrival {
    /// When it arrived.
    at: Instant,
    /// When it was answered.
    answered: Instant,
    /// What it was answered.
    status: u16,
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

impl Arrival {
    fn records(&self) -> Vec<Value> {
        let body: Value = serde_json::from_slice(&self.body).expect("a JSON body");
        body["records"].as_array().expect("records").clone()
    }
}

#[derive(Default)]
struct Script {
    /// Answers still to give, in order: status and Retry-After; then `then`.
    next: VecDeque<(u16, Option<&'static str>)>,
    /// The answer once `next` is used up.
    then: u16,
    arrivals: Vec<Arrival>,
}

/// A webhook receiver on 127.0.0.1 answering from a script.
#[derive(Clone)]
struct ScriptedReceiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl ScriptedReceiver {
    async fn spawn() -> Self {
        let script = Arc::new(Mutex::new(Script {
            then: 200,
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(answer))
            .with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, script }
    }

    /// Answers these first, then `then` to everything.
    fn script(&self, next: &[(u16, Option<&'static str>)], then: u16) {
        let mut script = self.script.lock().unwrap();
        script.next = next.iter().copied().collect();
        script.then = then;
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.script.lock().unwrap().arrivals.clone()
    }

    /// The records of the requests answered 2xx, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        self.arrivals()
            .iter()
            .filter(|a| a.status == 200)
            .flat_map(Arrival::records)
            .collect()
    }

    /// Waits until at least `n` records were delivered and returns the arrivals.
    async fn wait_delivered(&self, n: usize) -> Vec<Arrival> {
        kit::eventually(PATIENCE, || {
            let done = self.delivered().len() >= n;
            async move { done.then(|| self.arrivals()) }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} of {n} records delivered in {PATIENCE:?}; arrivals: {:?}",
                self.delivered().len(),
                self.arrivals().iter().map(|a| a.status).collect::<Vec<_>>()
            )
        })
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut script = script.lock().unwrap();
    let (status, retry_after) = script.next.pop_front().unwrap_or((script.then, None));
    script.arrivals.push(Arrival {
        at,
        answered: Instant::now(),
        status,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    let mut response = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(value) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static(value));
    }
    response
}

/// Which of `secrets` verify `arrival`, as Python computes it.
async fn python_verifies(secrets: &[&str], arrival: &Arrival) -> Vec<bool> {
    let input = json!({
        "secrets": secrets,
        "id": arrival.id,
        "timestamp": arrival.timestamp,
        "signature": arrival.signature,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&arrival.body),
    });
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_VERIFIER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (`./locus deps`)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints a JSON list")
}

/// A tenant with a sink set through the admin API, and a bridge reading it.
struct Stack {
    prefix: String,
    ingest: String,
    http: reqwest::Client,
    admin: String,
    bridge: TestBridge,
    _ingest_stop: tokio_util::sync::DropGuard,
}

impl Stack {
    /// A fresh database and topics, ingest's admin API on them, the tenant `acme` with
    /// its sink at `receiver` (its secret generated by the PUT; returned), and a bridge
    /// reading sinks from PostgreSQL. `change` adjusts the bridge's configuration.
    async fn start(
        receiver: &ScriptedReceiver,
        change: impl FnOnce(&mut locus_stream_bridge::Config),
    ) -> (Self, String) {
        let prefix = fresh_topics(1).await;
        let db = kit::test_database().await;
        let owner = sqlx::PgPool::connect(&db.owner_url).await.unwrap();
        sqlx::query("INSERT INTO tenants (id) VALUES ('acme')")
            .execute(&owner)
            .await
            .unwrap();
        owner.close().await;
        let ingest_config = locus_ingest::Config::for_tests(kit::JWT_SECRET).with(|c| {
            c.database.url = db.url.clone();
            c.redis.url = kit::redis_url();
            c.redis.prefix = kit::unique("locus-webhooks-test-");
            c.kafka = kit::kafka_settings(&format!("{}.", kit::unique("webhooks_ingest")));
            // The receiver is plain http on 127.0.0.1.
            c.sink_targets = locus_service::net::SinkTargetSettings::permissive();
        });
        let app = locus_ingest::Application::build(ingest_config)
            .await
            .expect("ingest starts");
        let ingest = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        tokio::spawn(app.run_until_stopped(stop.clone()));
        let admin = kit::token(kit::JWT_SECRET, "acme", "admin@acme", "tenant_admin", 3600);
        let http = reqwest::Client::new();
        let put: Value = http
            .put(format!("{ingest}/v1/sink"))
            .bearer_auth(&admin)
            .json(&json!({ "url": receiver.url }))
            .send()
            .await
            .expect("ingest answers")
            .json()
            .await
            .unwrap();
        let secret = put["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("a generated secret in {put}"))
            .to_owned();
        let mut bridge_config = config(&prefix).with_database(&db.url, REFRESH_MS);
        change(&mut bridge_config);
        let bridge = TestBridge::spawn(bridge_config).await;
        (
            Self {
                prefix,
                ingest,
                http,
                admin,
                bridge,
                _ingest_stop: stop.drop_guard(),
            },
            secret,
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.ingest))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("ingest answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    async fn health(&self) -> Value {
        self.call(reqwest::Method::GET, "/v1/sink/health", None)
            .await
    }

    /// Polls the health route until it satisfies `check` (within the patience), and
    /// returns it.
    async fn health_until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = self.health().await;
            if check(&health) {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "health never showed {what} in {PATIENCE:?}; it reads {health}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Produces one record and waits until it is delivered; returns its request.
async fn one_delivery(stack: &Stack, receiver: &ScriptedReceiver) -> Arrival {
    let before = receiver.delivered().len();
    produce(&stack.prefix, &session_records("acme", 1)).await;
    let arrivals = receiver.wait_delivered(before + 1).await;
    arrivals
        .into_iter()
        .rev()
        .find(|a| a.status == 200)
        .expect("a delivered request")
}

#[tokio::test]
async fn deliveries_verify_in_python_with_both_signatures_during_a_rollover_and_only_the_new_one_after()
 {
    let receiver = ScriptedReceiver::spawn().await;
    let (stack, first) = Stack::start(&receiver, |_| {}).await;
    assert!(first.starts_with("whsec_"), "{first}");

    // A secret of the old Locus format is refused, with how to convert it.
    let refused = stack
        .http
        .put(format!("{}/v1/sink", stack.ingest))
        .bearer_auth(&stack.admin)
        .json(&json!({ "url": receiver.url, "secret": "an-old-locus-secret-of-32-chars!" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "invalid_sink", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("whsec_"),
        "{refused}"
    );

    let plain = one_delivery(&stack, &receiver).await;
    assert_eq!(plain.signature.split(' ').count(), 1, "{}", plain.signature);
    assert_eq!(python_verifies(&[&first], &plain).await, [true]);
    let body: Value = serde_json::from_slice(&plain.body).unwrap();
    assert_eq!(
        body["delivery_id"], plain.id,
        "webhook-id is the delivery id"
    );

    // Rotate: the new secret is shown once; the old one signs too for an hour.
    let rotated = stack
        .call(
            reqwest::Method::POST,
            "/v1/sink/rotate-secret",
            Some(json!({ "rollover_secs": 3600 })),
        )
        .await;
    let second = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    // Deliveries until the bridge's refresh picked the rotation up: then two signatures,
    // each verified by its own secret.
    let during = kit::eventually(PATIENCE, || async {
        let a = one_delivery(&stack, &receiver).await;
        (a.signature.split(' ').count() == 2).then_some(a)
    })
    .await
    .expect("a delivery signed by both secrets");
    assert!(during.signature.split(' ').all(|s| s.starts_with("v1,")));
    assert_eq!(
        python_verifies(&[&second, &first, &kit_secret()], &during).await,
        [true, true, false]
    );

    // Rotate again with a chosen secret and no rollover: only the newest signs.
    let third = locus_wire::webhook::SigningKey::from_bytes(&[42; 32]).to_secret();
    let rotated = stack
        .call(
            reqwest::Method::POST,
            "/v1/sink/rotate-secret",
            Some(json!({ "secret": third, "rollover_secs": 0 })),
        )
        .await;
    assert_eq!(rotated["secret"], third.as_str());
    let after = kit::eventually(PATIENCE, || async {
        let a = one_delivery(&stack, &receiver).await;
        let ok = python_verifies(&[&third], &a).await == [true];
        ok.then_some(a)
    })
    .await
    .expect("a delivery signed by the newest secret");
    assert_eq!(after.signature.split(' ').count(), 1, "{}", after.signature);
    assert_eq!(
        python_verifies(&[&third, &second, &first], &after).await,
        [true, false, false]
    );
    // The secrets never show in the audit log or the sink's GET.
    let audit = stack.call(reqwest::Method::GET, "/v1/audit", None).await;
    let sink = stack.call(reqwest::Method::GET, "/v1/sink", None).await;
    for secret in [&first, &second, &third] {
        let key = secret.trim_start_matches("whsec_");
        assert!(!audit.to_string().contains(key), "{audit}");
        assert!(!sink.to_string().contains(key), "{sink}");
    }
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "sink.secret_rotated")
            .count(),
        2,
        "{actions:?}"
    );
    stack.bridge.stop().await;
}

/// A secret nobody uses, to show the verifier does refuse.
fn kit_secret() -> String {
    locus_wire::webhook::SigningKey::from_bytes(&[7; 32]).to_secret()
}

#[tokio::test]
async fn a_410_disables_the_endpoint_its_records_wait_and_a_put_turns_it_back_on() {
    let receiver = ScriptedReceiver::spawn().await;
    receiver.script(&[], 410);
    let (stack, _) = Stack::start(&receiver, |_| {}).await;
    let records = session_records("acme", 3);
    produce(&stack.prefix, &records).await;

    let health = stack
        .health_until("the endpoint disabled", |h| h["disabled"].is_object())
        .await;
    assert!(
        health["disabled"]["reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{health}"
    );
    assert_eq!(health["paused"], true, "{health}");
    assert_eq!(health["last_failure"]["status"], 410, "{health}");
    // More records wait behind it; the endpoint is not tried again while disabled.
    produce(&stack.prefix, &session_records("acme", 2)).await;
    let gone_attempts = receiver.arrivals().len();
    assert_eq!(gone_attempts, 1, "one attempt, then nothing while disabled");

    // The partner is back; setting the sink again turns it on.
    receiver.script(&[], 200);
    let put = stack
        .call(
            reqwest::Method::PUT,
            "/v1/sink",
            Some(json!({ "url": receiver.url })),
        )
        .await;
    assert!(put["secret"].is_string());
    let arrivals = receiver.wait_delivered(5).await;
    let delivered: Vec<Value> = receiver.delivered();
    assert_eq!(delivered.len(), 5, "nothing skipped, nothing twice");
    let first_three: Vec<String> = delivered[..3]
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_owned())
        .collect();
    let sent: Vec<String> = records.iter().map(|r| r.record_id.to_string()).collect();
    assert_eq!(
        first_three, sent,
        "the waiting records come first, in order"
    );
    // The retry of the delivery the 410 stopped carries the same webhook-id.
    assert_eq!(arrivals[0].id, arrivals[1].id);

    let health = stack
        .health_until("the endpoint healthy again", |h| {
            h["disabled"].is_null() && h["last_success_at"].is_string()
        })
        .await;
    assert_eq!(health["failure_streak"], 0, "{health}");
    assert_eq!(health["paused"], false, "{health}");
    assert_eq!(
        health["last_failure"]["status"], 410,
        "the last failure stays visible: {health}"
    );
    stack.bridge.stop().await;
}

#[tokio::test]
async fn retry_after_of_a_429_and_a_503_is_honoured_before_the_next_attempt() {
    let receiver = ScriptedReceiver::spawn().await;
    // The test bridge backs off 20 ms to 500 ms: the waits below are the headers' alone.
    receiver.script(&[(429, Some("2")), (503, Some("1"))], 200);
    let (stack, _) = Stack::start(&receiver, |_| {}).await;
    produce(&stack.prefix, &session_records("acme", 2)).await;
    let arrivals = receiver.wait_delivered(2).await;
    assert_eq!(
        arrivals.iter().map(|a| a.status).collect::<Vec<_>>(),
        [429, 503, 200]
    );
    // Each wait counts from when the bridge read the answer, which is after the receiver
    // sent it: the gap from answer to next arrival is at least the header's seconds (a
    // millisecond of headroom for the clocks' granularity).
    let gap = |i: usize| arrivals[i + 1].at - arrivals[i].answered;
    assert!(gap(0) >= Duration::from_millis(1999), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(999), "{:?}", gap(1));
    assert!(
        arrivals.iter().all(|a| a.id == arrivals[0].id),
        "one delivery"
    );
    stack.bridge.stop().await;
}

#[tokio::test]
async fn the_circuit_opens_after_n_failures_probes_once_per_interval_and_closes_when_a_probe_succeeds()
 {
    let receiver = ScriptedReceiver::spawn().await;
    receiver.script(&[], 500);
    let probe = Duration::from_millis(1500);
    let (stack, _) = Stack::start(&receiver, |c| {
        c.circuit_open_after = 3;
        c.circuit_probe_ms = probe.as_millis() as u64;
    })
    .await;
    produce(&stack.prefix, &session_records("acme", 1)).await;

    let open = stack
        .health_until("the circuit open", |h| h["circuit"] == "open")
        .await;
    assert!(open["failure_streak"].as_i64().unwrap() >= 3, "{open}");
    assert_eq!(open["paused"], true);
    assert_eq!(open["last_failure"]["status"], 500, "{open}");
    assert!(open["last_success_at"].is_null(), "{open}");
    // Let two probes fail, then answer the next one.
    kit::eventually(PATIENCE, || async {
        (receiver.arrivals().len() >= 5).then_some(())
    })
    .await
    .expect("probes keep coming");
    receiver.script(&[], 200);
    let arrivals = receiver.wait_delivered(1).await;
    // The first three attempts follow the backoff (20 to 80 ms); from the third failure on,
    // the circuit is open and the attempts are probes, one per interval.
    for i in 2..arrivals.len() - 1 {
        let gap = arrivals[i + 1].at - arrivals[i].answered;
        assert!(gap >= probe, "attempt {}: {gap:?} after the last", i + 2);
    }
    for i in 0..2 {
        let gap = arrivals[i + 1].at - arrivals[i].answered;
        assert!(gap < probe, "attempt {} was a backoff: {gap:?}", i + 2);
    }
    let closed = stack
        .health_until("the circuit closed", |h| h["circuit"] == "closed")
        .await;
    assert_eq!(closed["failure_streak"], 0, "{closed}");
    assert_eq!(closed["paused"], false, "{closed}");
    assert!(closed["last_success_at"].is_string(), "{closed}");
    assert_eq!(closed["last_failure"]["status"], 500, "{closed}");
    stack.bridge.stop().await;
}

#[tokio::test]
async fn batches_close_by_bytes_before_the_record_that_would_pass_the_limit() {
    let receiver = ScriptedReceiver::spawn().await;
    let records = session_records("acme", 8);
    let one = serde_json::to_vec(&records[0]).unwrap().len();
    // Room for two records (and their commas), not three.
    let limit = 2 * (one + 1) + one / 2;
    let (stack, _) = Stack::start(&receiver, |c| {
        c.batch_max_bytes = limit;
        // Long enough that every batch is closed by its size, not by time.
        c.batch_linger_ms = 2_000;
    })
    .await;
    produce(&stack.prefix, &records).await;
    let arrivals = receiver.wait_delivered(8).await;
    for a in &arrivals {
        let bytes: usize = a
            .records()
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len() + 1)
            .sum();
        assert!(bytes <= limit, "{bytes} bytes of records in one delivery");
    }
    assert_eq!(
        arrivals
            .iter()
            .map(|a| a.records().len())
            .collect::<Vec<_>>(),
        [2, 2, 2, 2]
    );
    let ids: Vec<String> = receiver
        .delivered()
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_owned())
        .collect();
    let sent: Vec<String> = records.iter().map(|r| r.record_id.to_string()).collect();
    assert_eq!(ids, sent, "in order, none lost");
    stack.bridge.stop().await;
}

#[tokio::test]
async fn the_migration_rewrites_an_old_secret_as_whsec_with_the_same_key_bytes() {
    // The expression of 20261206000001_webhooks.sql, on the longest old secret (PostgreSQL's
    // base64 breaks lines every 76 characters) and a short one.
    let db = kit::test_database().await;
    let owner = sqlx::PgPool::connect(&db.owner_url).await.unwrap();
    for old in [
        "x".repeat(32),
        "~".repeat(512),
        "0123456789abcdef".repeat(4),
    ] {
        let converted: String = sqlx::query_scalar(
            "SELECT 'whsec_' || replace(encode(convert_to($1, 'UTF8'), 'base64'), E'\\n', '')",
        )
        .bind(&old)
        .fetch_one(&owner)
        .await
        .unwrap();
        assert_eq!(
            locus_wire::webhook::SigningKey::from_stored(&converted),
            locus_wire::webhook::SigningKey::from_stored(&old),
            "{converted}"
        );
    }
    owner.close().await;
}

#[tokio::test]
async fn a_stored_sink_whose_name_resolves_to_loopback_is_never_connected_to_and_its_records_wait()
{
    let receiver = ScriptedReceiver::spawn().await;
    // The row was taken by an ingest whose operator allowed private targets (or written to
    // the table by hand); this bridge's operator allows plain http, not private addresses.
    let (stack, _) = Stack::start(&receiver, |c| {
        c.sink_targets = locus_service::net::SinkTargetSettings {
            allow_http: true,
            allow_private: false,
        };
        c.allow_private_sinks = false; // the older name of the switch, on in for_tests
    })
    .await;
    // A name, not a literal address: only the bridge's resolver stands between it and the
    // receiver on 127.0.0.1.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    stack
        .call(
            reqwest::Method::PUT,
            "/v1/sink",
            Some(json!({ "url": by_name })),
        )
        .await;
    let records = session_records("acme", 3);
    produce(&stack.prefix, &records).await;

    let health = stack
        .health_until("the refusal of the resolved address", |h| {
            h["last_failure"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("resolves only to special addresses"))
        })
        .await;
    assert_eq!(health["paused"], true, "the tenant waits: {health}");
    let reason = health["last_failure"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("is loopback") && reason.contains("LOCUS_SINK_ALLOW_PRIVATE"),
        "the reason names the address and the switch: {reason}"
    );
    assert!(
        receiver.arrivals().is_empty(),
        "no request reached the receiver: {:?}",
        receiver.arrivals().len()
    );
    // Waiting, not skipped: nothing of acme's went to the dead-letter topic.
    let dead = kit::read_topic_to_end(
        &format!("{}dead-letter", stack.prefix),
        0,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        dead.iter().all(|r| r.value["tenant_id"] != "acme"),
        "acme's records were dead-lettered: {dead:?}"
    );
    stack.bridge.stop().await;
}
