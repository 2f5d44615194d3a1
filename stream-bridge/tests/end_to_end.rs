//! The whole pipeline on real services: a device's POST to ingest, through Redis and
//! Kafka, to a partner's webhook, whose signature is checked by an independent tool
//! (the `openssl` command line), not by Locus' own code.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use base64::Engine;
use locus_testkit as kit;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod support;

/// (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and the raw body.
type Received = Arc<Mutex<Vec<((String, String, String), Bytes)>>>;

/// A partner's webhook endpoint that keeps every signature header and raw body.
async fn partner() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                let header = |name: &str| headers[name].to_str().unwrap().to_owned();
                let signed = (
                    header("webhook-id"),
                    header("webhook-timestamp"),
                    header("webhook-signature"),
                );
                store.lock().unwrap().push((signed, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Hex HMAC-SHA256 of `"<id>.<t>.<body>"` as the openssl command line computes it.
fn openssl_hmac(secret: &str, id: &str, t: &str, body: &[u8]) -> String {
    let mut message = format!("{id}.{t}.").into_bytes();
    message.extend_from_slice(body);
    let path = std::env::temp_dir().join(kit::unique("locus-e2e-body-"));
    std::fs::write(&path, &message).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret, "-r"])
        .arg(&path)
        .output()
        .expect("the openssl command line is installed");
    std::fs::remove_file(&path).ok();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fixes_posted_by_a_device_reach_the_partner_webhook_signed_and_in_order() {
    kit::require_redis().await;
    let topic_prefix = format!("{}.", kit::unique("e2e"));
    let ingest = support::spawn_ingest(&kit::kafka_brokers(), &topic_prefix).await;
    let ingest_url = ingest.url.clone();

    let (hook, received) = partner().await;
    let secret = "partner-secret";
    let mut bridge_config = locus_stream_bridge::Config::for_tests(
        &kit::kafka_brokers(),
        &topic_prefix,
        &kit::unique("e2e-bridge-"),
    )
    .with_sink("acme", &hook, secret);
    bridge_config.kafka = kit::kafka_settings(&topic_prefix);
    let bridge = locus_stream_bridge::Application::build(bridge_config)
        .await
        .expect("bridge starts");
    let stop_bridge = CancellationToken::new();
    let bridge_task = tokio::spawn(bridge.run_until_stopped(stop_bridge.clone()));
    // A failed assertion must stop the bridge too: its polling thread is on the blocking
    // pool, which the test's runtime waits for when it ends.
    let _stop_on_drop = stop_bridge.clone().drop_guard();

    let client = reqwest::Client::new();
    let token = ingest.device_token("acme", "phone-e2e").await;
    let id = support::start_session(&client, &ingest_url, &token, json!({})).await;
    let start = chrono::Utc::now() - chrono::Duration::seconds(60);
    for b in 0..5 {
        let fixes: Vec<Value> = (0..20)
            .map(|i| {
                let n = b * 20 + i;
                json!({
                    "lat": 48.85 + n as f64 * 1e-4,
                    "lon": 2.35,
                    "recorded_at": (start + chrono::Duration::seconds(n)).to_rfc3339(),
                })
            })
            .collect();
        let r = client
            .post(format!("{ingest_url}/v1/sessions/{id}/locations"))
            .bearer_auth(&token)
            .json(&json!({ "batch_id": format!("e2e-{b}"), "fixes": fixes }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }

    let delivered = kit::eventually(Duration::from_secs(60), || {
        let received = received.clone();
        async move {
            let n: usize = received
                .lock()
                .unwrap()
                .iter()
                .map(|(_, body)| {
                    serde_json::from_slice::<Value>(body).unwrap()["records"]
                        .as_array()
                        .unwrap()
                        .len()
                })
                .sum();
            (n >= 100).then_some(n)
        }
    })
    .await;
    assert_eq!(delivered, Some(100), "all 100 fixes reach the webhook");

    let deliveries = received.lock().unwrap().clone();
    let mut order = Vec::new();
    for ((delivery_id, t, signature), body) in &deliveries {
        let v1 = signature
            .strip_prefix("v1,")
            .expect("the signature is v1,<base64>");
        let v1 = base64::engine::general_purpose::STANDARD
            .decode(v1)
            .expect("base64");
        assert_eq!(
            openssl_hmac(secret, delivery_id, t, body),
            hex::encode(v1),
            "the signature verifies independently"
        );
        let delivery: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(delivery["tenant_id"], "acme");
        for r in delivery["records"].as_array().unwrap() {
            assert_eq!(r["session_id"], id.as_str());
            order.push((
                r["batch_id"].as_str().unwrap().to_owned(),
                r["batch_index"].as_u64().unwrap(),
            ));
        }
    }
    let expected: Vec<(String, u64)> = (0..5)
        .flat_map(|b| (0..20).map(move |i| (format!("e2e-{b}"), i)))
        .collect();
    assert_eq!(
        order, expected,
        "the session's fixes arrive in the order they were posted"
    );

    ingest.stop.cancel();
    stop_bridge.cancel();
    ingest.task.await.unwrap().expect("ingest stops cleanly");
    bridge_task.await.unwrap().expect("bridge stops cleanly");
}
