//! A failing or hanging webhook holds back its own tenant only: the tenant's records wait,
//! in order, until the webhook takes them (none to the dead-letter topic), and another
//! tenant's records keep flowing meanwhile. The whole path is real: fixes are posted to
//! ingest, travel through Redis and Kafka, and reach a webhook over HTTP.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use locus_stream_bridge::Config;
use locus_testkit as kit;
use locus_wire::record::LocationRecord;
use locus_wire::topics::Topics;
use serde_json::{Value, json};

use crate::helpers::{Behaviour, PATIENCE, Receiver, TestBridge, config};
use crate::support::{self, Ingest};

/// Ingest, the bridge and a receiver with the sinks of `alpha` and `beta`.
struct Pipeline {
    prefix: String,
    ingest: Ingest,
    bridge: TestBridge,
    receiver: Receiver,
    client: reqwest::Client,
}

impl Pipeline {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Self {
        kit::require_redis().await;
        let prefix = format!("{}.", kit::unique("locus_bridge_isolation"));
        let ingest = support::spawn_ingest(&kit::kafka_brokers(), &prefix).await;
        let receiver = Receiver::spawn().await;
        let mut config = config(&prefix)
            .with_sink("alpha", &receiver.url("alpha"), "sa")
            .with_sink("beta", &receiver.url("beta"), "sb");
        tweak(&mut config);
        let bridge = TestBridge::spawn(config).await;
        Self {
            prefix,
            ingest,
            bridge,
            receiver,
            client: reqwest::Client::new(),
        }
    }

    /// Waits until `tenant` got `n` distinct records (copies by record id not counted).
    async fn wait_for_distinct(&self, tenant: &str, n: usize) {
        let reached = kit::eventually(PATIENCE, || {
            let got = distinct(&self.receiver.delivered(tenant)).len();
            async move { (got >= n).then_some(()) }
        })
        .await;
        assert!(
            reached.is_some(),
            "{tenant} received {} of {n} distinct records in {PATIENCE:?}",
            distinct(&self.receiver.delivered(tenant)).len()
        );
    }

    /// Stops the bridge and ingest: every delivery the bridge would make is made.
    async fn stop(self) -> (Receiver, String) {
        self.bridge.stop().await;
        self.ingest.stop.cancel();
        self.ingest
            .task
            .await
            .unwrap()
            .expect("ingest stops cleanly");
        (self.receiver, self.prefix)
    }
}

/// One device of one tenant posting batches to one session, remembering what got a 202.
struct Device {
    token: String,
    session: String,
    tag: String,
    batches: u32,
    /// (batch id, index) of every fix that got a 202, in posting order.
    acknowledged: Vec<(String, u32)>,
    /// When each batch got its 202.
    acked_at: HashMap<String, Instant>,
}

impl Device {
    async fn start(p: &Pipeline, tenant: &str) -> Self {
        let token = p
            .ingest
            .device_token(tenant, &format!("{tenant}-phone"))
            .await;
        let session = support::start_session(&p.client, &p.ingest.url, &token, json!({})).await;
        Self {
            token,
            session,
            tag: tenant.to_owned(),
            batches: 0,
            acknowledged: Vec::new(),
            acked_at: HashMap::new(),
        }
    }

    /// Posts one batch of `fixes` (at most 10) and expects a 202.
    async fn post(&mut self, p: &Pipeline, fixes: u32) {
        let batch_id = format!("{}-{}", self.tag, self.batches);
        let start = chrono::Utc::now() - chrono::Duration::seconds(600);
        let body: Vec<Value> = (0..fixes)
            .map(|i| {
                let n = i64::from(self.batches * 10 + i);
                json!({
                    "lat": 48.85 + n as f64 * 1e-5,
                    "lon": 2.35,
                    "recorded_at": (start + chrono::Duration::milliseconds(n * 100)).to_rfc3339(),
                })
            })
            .collect();
        let response = p
            .client
            .post(format!(
                "{}/v1/sessions/{}/locations",
                p.ingest.url, self.session
            ))
            .bearer_auth(&self.token)
            .json(&json!({ "batch_id": batch_id, "fixes": body }))
            .send()
            .await
            .expect("ingest answers");
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        self.acked_at.insert(batch_id.clone(), Instant::now());
        self.acknowledged
            .extend((0..fixes).map(|i| (batch_id.clone(), i)));
        self.batches += 1;
    }
}

/// The first copy of every record, in arrival order.
fn distinct(records: &[LocationRecord]) -> Vec<&LocationRecord> {
    let mut seen = HashSet::new();
    records
        .iter()
        .filter(|r| seen.insert(r.record_id))
        .collect()
}

/// Every record `device` got a 202 for reached the webhook, in posting order once copies
/// are dropped, and nothing else did.
fn assert_complete_and_in_order(receiver: &Receiver, tenant: &str, device: &Device) {
    let delivered = receiver.delivered(tenant);
    let order: Vec<(String, u32)> = distinct(&delivered)
        .iter()
        .map(|r| {
            assert_eq!(
                r.session_id.to_string(),
                device.session,
                "{tenant}'s session"
            );
            (r.batch_id.clone(), r.batch_index)
        })
        .collect();
    assert_eq!(
        order, device.acknowledged,
        "{tenant}: every acknowledged fix, in order, no gap, nothing else"
    );
}

/// No record of `tenant` went to the dead-letter topic.
async fn assert_nothing_dead_lettered(prefix: &str, tenant: &str) {
    let dead = kit::read_topic_to_end(
        Topics::new(prefix).dead_letter(),
        0,
        Duration::from_secs(10),
    )
    .await;
    let theirs: Vec<_> = dead
        .iter()
        .filter(|r| r.value["tenant_id"] == tenant)
        .collect();
    assert!(
        theirs.is_empty(),
        "{tenant} in the dead letters: {theirs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_failing_with_5xx_then_4xx_gets_everything_in_order_once_it_recovers_while_another_tenant_flows()
 {
    let p = Pipeline::start(|_| {}).await;
    let mut alpha = Device::start(&p, "alpha").await;
    let mut beta = Device::start(&p, "beta").await;

    // A partner's deploy: a server error, then its auth, routing and size limits in turn.
    for status in [500u16, 401, 404, 413] {
        p.receiver.set("alpha", Behaviour::Always(status));
        alpha.post(&p, 5).await;
        beta.post(&p, 5).await;
        // The failing sink is tried again and again: paused, not skipped.
        let retried = kit::eventually(PATIENCE, || {
            let n = p
                .receiver
                .requests_for("alpha")
                .iter()
                .filter(|r| r.status == status)
                .count();
            async move { (n >= 3).then_some(()) }
        })
        .await;
        assert!(
            retried.is_some(),
            "alpha's webhook was not retried after {status}"
        );
        // Meanwhile the other tenant's records arrive.
        p.wait_for_distinct("beta", beta.acknowledged.len()).await;
        assert!(
            p.receiver.delivered("alpha").is_empty(),
            "alpha's webhook took nothing yet"
        );
    }

    p.receiver.set("alpha", Behaviour::Accept);
    alpha.post(&p, 5).await;
    beta.post(&p, 5).await;
    p.wait_for_distinct("alpha", alpha.acknowledged.len()).await;
    p.wait_for_distinct("beta", beta.acknowledged.len()).await;

    let (receiver, prefix) = p.stop().await;
    assert_complete_and_in_order(&receiver, "alpha", &alpha);
    assert_complete_and_in_order(&receiver, "beta", &beta);
    assert_nothing_dead_lettered(&prefix, "alpha").await;
}

/// Posts batches for `alpha` and `beta` while alpha's webhook hangs (if `hang`), checks
/// that beta's all arrive meanwhile and that both tenants end complete and in order, and
/// returns beta's latencies from the 202 to the webhook, in milliseconds.
async fn beta_latencies(hang: bool) -> Vec<f64> {
    // Long enough that a hanging request is still open when the test is done.
    let p = Pipeline::start(|c| c.request_timeout_ms = 600_000).await;
    let mut alpha = Device::start(&p, "alpha").await;
    let mut beta = Device::start(&p, "beta").await;
    if hang {
        p.receiver.set("alpha", Behaviour::Hang);
    }
    for i in 0..40 {
        if i % 4 == 0 {
            alpha.post(&p, 5).await;
        }
        beta.post(&p, 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.wait_for_distinct("beta", beta.acknowledged.len()).await;
    if hang {
        assert!(
            p.receiver.requests_for("alpha").is_empty(),
            "alpha's webhook answered nothing: every one of beta's records arrived while it hung"
        );
        p.receiver.set("alpha", Behaviour::Accept);
    }
    p.wait_for_distinct("alpha", alpha.acknowledged.len()).await;

    let (receiver, prefix) = p.stop().await;
    assert_complete_and_in_order(&receiver, "alpha", &alpha);
    assert_complete_and_in_order(&receiver, "beta", &beta);
    assert_nothing_dead_lettered(&prefix, "alpha").await;

    let mut seen = HashSet::new();
    let mut latencies = Vec::new();
    for request in receiver.requests_for("beta") {
        if request.status != 200 {
            continue;
        }
        for r in request.delivery().records {
            if seen.insert(r.record_id) {
                let acked = beta.acked_at[&r.batch_id];
                latencies.push(request.at.saturating_duration_since(acked).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_webhook_does_not_hold_back_another_tenants_deliveries() {
    let latencies = beta_latencies(true).await;
    println!(
        "beta while alpha's webhook hangs: {} records, 202 -> webhook p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baseline_a_tenants_latency_when_no_webhook_hangs() {
    let latencies = beta_latencies(false).await;
    println!(
        "beta, no webhook hanging (baseline): {} records, 202 -> webhook p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
}
