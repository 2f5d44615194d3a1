//! Black-box tests of the demo webhook receiver, served in-process on port 0.

use std::net::SocketAddr;

use chrono::Utc;
use locus_bench::receiver::{self, Receiver, ReceiverConfig, ReceiverStats};
use locus_wire::record::{LocationRecord, SCHEMA_VERSION, record_id};
use locus_wire::webhook::{
    ID_HEADER, SIGNATURE_HEADER, SigningKey, TIMESTAMP_HEADER, WebhookDelivery,
};
use locus_wire::{DeviceId, SessionId, TenantId};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "test-webhook-secret";

/// A receiver on a free port, stopped when the returned guard is dropped.
struct TestReceiver {
    addr: SocketAddr,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
    _stop_on_drop: tokio_util::sync::DropGuard,
}

impl TestReceiver {
    async fn spawn() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::new(ReceiverConfig {
            secret: SecretString::from(SECRET),
            tolerance_secs: 300,
        });
        let stop = CancellationToken::new();
        let server = tokio::spawn(receiver::serve(
            listener,
            receiver,
            stop.clone().cancelled_owned(),
        ));
        Self {
            addr,
            http: reqwest::Client::new(),
            server,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// Stops the server and waits (at most 5 s) until it has.
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), self.server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn post_signed(&self, body: &[u8], secret: &str) -> reqwest::Response {
        let id = Uuid::new_v4().to_string();
        let t = Utc::now().timestamp();
        let signature = SigningKey::from_stored(secret).unwrap().sign(&id, t, body);
        self.http
            .post(self.url("/webhook"))
            .header(SIGNATURE_HEADER, signature)
            .header(ID_HEADER, id)
            .header(TIMESTAMP_HEADER, t.to_string())
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self) -> ReceiverStats {
        self.http
            .get(self.url("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn record(tenant: &str, session: SessionId, batch: &str, index: u32) -> LocationRecord {
    let now = Utc::now();
    LocationRecord {
        schema_version: SCHEMA_VERSION,
        record_id: record_id(session, batch, index),
        tenant_id: TenantId::parse(tenant).unwrap(),
        session_id: session,
        device_id: DeviceId::parse("bench-test-0").unwrap(),
        batch_id: batch.to_owned(),
        batch_index: index,
        recorded_at: now - chrono::Duration::seconds(1),
        received_at: now - chrono::Duration::milliseconds(20),
        lat: 52.5,
        lon: 13.4,
        accuracy: Some(5.0),
        altitude: None,
        speed: None,
        heading: None,
        battery: None,
        fix_key: None,
        attributes: None,
    }
}

fn delivery(tenant: &str, records: Vec<LocationRecord>) -> Vec<u8> {
    serde_json::to_vec(&WebhookDelivery {
        schema_version: SCHEMA_VERSION,
        delivery_id: Uuid::new_v4(),
        tenant_id: TenantId::parse(tenant).unwrap(),
        records,
    })
    .unwrap()
}

#[tokio::test]
async fn a_correctly_signed_delivery_is_accepted_and_counted() {
    let app = TestReceiver::spawn().await;
    let session = SessionId::new();
    let body = delivery(
        "acme",
        (0..3).map(|i| record("acme", session, "b1", i)).collect(),
    );

    let response = app.post_signed(&body, SECRET).await;

    assert_eq!(response.status(), 200);
    let stats = app.stats().await;
    assert_eq!(stats.deliveries, 1);
    assert_eq!(stats.records, 3);
    assert_eq!(stats.distinct_records, 3);
    assert_eq!(stats.duplicates, 0);
    assert_eq!(stats.signature_failures, 0);
    assert_eq!(stats.per_tenant["acme"].distinct_records, 3);
    assert_eq!(stats.e2e_ms.count, 3);
    assert!(stats.e2e_ms.p50 >= 20.0, "{:?}", stats.e2e_ms);
}

#[tokio::test]
async fn a_delivery_with_a_wrong_signature_is_refused_with_401_and_not_counted() {
    let app = TestReceiver::spawn().await;
    let body = delivery("acme", vec![record("acme", SessionId::new(), "b1", 0)]);

    let response = app.post_signed(&body, "not-the-secret").await;

    assert_eq!(response.status(), 401);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "invalid_signature");
    let stats = app.stats().await;
    assert_eq!(stats.signature_failures, 1);
    assert_eq!(stats.deliveries, 0);
    assert_eq!(stats.records, 0);
}

#[tokio::test]
async fn a_delivery_without_a_signature_is_refused_with_401() {
    let app = TestReceiver::spawn().await;
    let body = delivery("acme", vec![record("acme", SessionId::new(), "b1", 0)]);

    let response = app
        .http
        .post(app.url("/webhook"))
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(app.stats().await.signature_failures, 1);
}

#[tokio::test]
async fn a_body_tampered_with_after_signing_is_refused() {
    let app = TestReceiver::spawn().await;
    let body = delivery("acme", vec![record("acme", SessionId::new(), "b1", 0)]);
    let t = Utc::now().timestamp();
    let signature = SigningKey::from_stored(SECRET)
        .unwrap()
        .sign("d1", t, &body);
    let tampered = String::from_utf8(body).unwrap().replace("acme", "evil");

    let response = app
        .http
        .post(app.url("/webhook"))
        .header(SIGNATURE_HEADER, signature)
        .header(ID_HEADER, "d1")
        .header(TIMESTAMP_HEADER, t.to_string())
        .body(tampered)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert_eq!(app.stats().await.distinct_records, 0);
}

#[tokio::test]
async fn redelivered_records_are_counted_as_duplicates_not_as_new_records() {
    let app = TestReceiver::spawn().await;
    let session = SessionId::new();
    let first = delivery(
        "acme",
        (0..3).map(|i| record("acme", session, "b1", i)).collect(),
    );
    // A retry of the last two records plus one new record.
    let second = delivery(
        "acme",
        (1..4).map(|i| record("acme", session, "b1", i)).collect(),
    );

    assert_eq!(app.post_signed(&first, SECRET).await.status(), 200);
    assert_eq!(app.post_signed(&second, SECRET).await.status(), 200);

    let stats = app.stats().await;
    assert_eq!(stats.deliveries, 2);
    assert_eq!(stats.records, 6);
    assert_eq!(stats.distinct_records, 4);
    assert_eq!(stats.duplicates, 2);
    assert_eq!(stats.per_tenant["acme"].records, 6);
    assert_eq!(stats.per_tenant["acme"].distinct_records, 4);
    assert_eq!(
        stats.e2e_ms.count, 4,
        "latency is measured on first copies only"
    );
}

#[tokio::test]
async fn counts_are_kept_per_tenant_and_per_session() {
    let app = TestReceiver::spawn().await;
    let (s1, s2, s3) = (SessionId::new(), SessionId::new(), SessionId::new());
    let acme = delivery(
        "acme",
        vec![
            record("acme", s1, "b", 0),
            record("acme", s1, "b", 1),
            record("acme", s2, "b", 0),
        ],
    );
    let globex = delivery("globex", vec![record("globex", s3, "b", 0)]);
    app.post_signed(&acme, SECRET).await;
    app.post_signed(&globex, SECRET).await;

    let stats = app.stats().await;
    assert_eq!(stats.per_tenant["acme"].distinct_records, 3);
    assert_eq!(stats.per_tenant["globex"].distinct_records, 1);
    assert_eq!(stats.tenant_mismatches, 0);
    let count: serde_json::Value = app
        .http
        .post(app.url("/stats/sessions"))
        .json(&serde_json::json!({ "session_ids": [s1, s3] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count["distinct_records"], 3);
}

#[tokio::test]
async fn a_record_of_another_tenant_in_a_delivery_is_flagged() {
    let app = TestReceiver::spawn().await;
    let body = delivery("acme", vec![record("globex", SessionId::new(), "b", 0)]);

    app.post_signed(&body, SECRET).await;

    assert_eq!(app.stats().await.tenant_mismatches, 1);
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_delivery_is_refused_with_400() {
    let app = TestReceiver::spawn().await;

    let response = app.post_signed(b"{\"hello\":1}", SECRET).await;

    assert_eq!(response.status(), 400);
    let stats = app.stats().await;
    assert_eq!(stats.invalid_deliveries, 1);
    assert_eq!(stats.deliveries, 0);
}

#[tokio::test]
async fn reset_forgets_everything_counted() {
    let app = TestReceiver::spawn().await;
    let session = SessionId::new();
    let body = delivery("acme", vec![record("acme", session, "b", 0)]);
    app.post_signed(&body, SECRET).await;

    let reset = app.http.post(app.url("/reset")).send().await.unwrap();
    assert!(reset.status().is_success());
    assert_eq!(app.stats().await, ReceiverStats::default());

    // The same record is new again after a reset.
    app.post_signed(&body, SECRET).await;
    assert_eq!(app.stats().await.distinct_records, 1);
}

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let app = TestReceiver::spawn().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_hang_request_is_held_and_counted_until_the_receiver_stops() {
    let app = TestReceiver::spawn().await;
    let held = tokio::spawn(app.http.post(app.url("/hang")).send());
    // Held, not answered: still pending after a while, and counted.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the hang request was answered");
    assert_eq!(app.stats().await.hung_requests, 1);
    // Stopping releases it (graceful shutdown would otherwise wait for it forever).
    app.stop().await;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), held)
        .await
        .expect("released at stop")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 503);
}
