//! The shard lease is a fence: an owner that stalls (its renewals hang, or its whole network
//! does) stops reading its shard before another forwarder takes it over, so it cannot put
//! a session out of order or leave entries in a pending list nobody reads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;
use locus_testkit::proxy::FreezableProxy;

use crate::helpers::{Scope, TestApp, batch, spawn_in};

/// One shard, so every session is on the shard that changes hands.
const SHARDS: u32 = 1;

/// The forwarder's connections through the proxy, in the order it opens them: the
/// buffer's (readiness), the shard's reads, the shard's lease keeper.
const KEEPER: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_owner_stops_reading_before_another_forwarder_takes_its_shard() {
    // The renewals hang while reads still work: the owner's lease lapses without it
    // hearing so, and another forwarder takes the shard.
    stalled_owner_hands_over_in_order(|p| p.freeze(KEEPER), |p| p.thaw(KEEPER)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_whose_whole_network_stalls_does_nothing_late_after_the_takeover() {
    // Everything hangs, reads included; what it sent meanwhile reaches Redis after the
    // takeover, when the proxy lets it through, and must do nothing.
    stalled_owner_hands_over_in_order(FreezableProxy::freeze_all, FreezableProxy::thaw_all).await;
}

/// A forwarder behind a proxy owns the only shard under load; `freeze` stalls it, another
/// forwarder takes over, `thaw` lets the first hear back. Every accepted fix must reach
/// Kafka, each session in order after dropping copies, and nothing may stay pending with
/// the stalled consumer.
async fn stalled_owner_hands_over_in_order(
    freeze: impl Fn(&FreezableProxy),
    thaw: impl Fn(&FreezableProxy),
) {
    let scope = Scope::new().await;
    let api = spawn_in(&scope, &[Role::Api], |c| c.redis.shards = SHARDS).await;
    let proxy = FreezableProxy::start(&redis_address()).await;
    let stalled = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.redis.shards = SHARDS;
        c.redis.url = format!("redis://127.0.0.1:{}", proxy.port());
        c.forwarder.consumer = "stalled".into();
    })
    .await;
    owner_becomes(&scope, "stalled").await;
    assert_eq!(proxy.connection_count(), 3, "one shard: three connections");

    let stop_load = Arc::new(AtomicBool::new(false));
    let load = start_load(&api, 4, &stop_load).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    freeze(&proxy);
    let other = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.redis.shards = SHARDS;
        c.forwarder.consumer = "other".into();
    })
    .await;
    owner_becomes(&scope, "other").await;
    // Both run for a while under load: an owner that kept reading would split the
    // sessions' entries with the new one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Then the stalled owner hears back, late, as a hung connection does when it recovers.
    thaw(&proxy);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_load.store(true, Ordering::SeqCst);

    let mut expected = HashSet::new();
    for task in load {
        for (session, batch_id) in task.await.unwrap() {
            let sid = locus_wire::SessionId::parse(&session).unwrap();
            for i in 0..FIXES {
                expected.insert(locus_wire::record::record_id(sid, &batch_id, i).to_string());
            }
        }
    }
    let mut seen = HashSet::new();
    let records = kit::read_topic_until(
        &scope.locations_topic(),
        Duration::from_secs(60),
        |records| {
            if let Some(r) = records.last() {
                seen.insert(r.value["record_id"].as_str().unwrap().to_owned());
            }
            seen.len() >= expected.len()
        },
    )
    .await;
    let missing = expected.difference(&seen).count();
    assert_eq!(missing, 0, "{missing} accepted fixes never reached Kafka");

    // After dropping copies by record id, each session is in the order it was posted.
    let mut first_seen = HashSet::new();
    let mut order: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for r in &records {
        if !first_seen.insert(r.value["record_id"].as_str().unwrap().to_owned()) {
            continue;
        }
        let seq: u64 = r.value["batch_id"].as_str().unwrap()[1..].parse().unwrap();
        order
            .entry(r.key.clone())
            .or_default()
            .push((seq, r.value["batch_index"].as_u64().unwrap()));
    }
    let out_of_order: Vec<&String> = order
        .iter()
        .filter(|(_, seen)| seen.windows(2).any(|w| w[0] > w[1]))
        .map(|(session, _)| session)
        .collect();
    assert!(
        out_of_order.is_empty(),
        "sessions out of order on Kafka after dedupe: {out_of_order:?}"
    );
    // Nothing stays in the stalled consumer's pending list.
    let stuck = kit::eventually(Duration::from_secs(15), || async {
        (pending_of(&scope, "stalled").await == 0).then_some(())
    })
    .await;
    assert!(
        stuck.is_some(),
        "{} entries are stuck with the stalled consumer",
        pending_of(&scope, "stalled").await
    );
    other.stop().await;
    stalled.stop().await;
    api.stop().await;
}

/// Fixes per batch of the load.
const FIXES: u32 = 3;

/// Posts batches `b0`, `b1`, ... to `sessions` sessions until `stop`; each task returns
/// the (session, batch id) pairs that got a 202.
async fn start_load(
    api: &TestApp,
    sessions: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, String)>>> {
    let mut tasks = Vec::new();
    for d in 0..sessions {
        let token = api.device_token("acme", &format!("fence-{d}")).await;
        let id = api.session_id(&token).await;
        let client = api.client.clone();
        let url = api.url(&format!("/v1/sessions/{id}/locations"));
        let stop = Arc::clone(stop);
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut b = 0;
            while !stop.load(Ordering::SeqCst) {
                let batch_id = format!("b{b}");
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(&batch_id, FIXES as usize))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 202 {
                    accepted.push((id.clone(), batch_id));
                }
                b += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            accepted
        }));
    }
    tasks
}

/// `host:port` of the test Redis.
fn redis_address() -> String {
    let url = kit::redis_url();
    let rest = url.strip_prefix("redis://").unwrap_or(&url);
    rest.split('/').next().unwrap().to_owned()
}

/// Waits until the forwarder named `consumer` holds the shard's lease.
async fn owner_becomes(scope: &Scope, consumer: &str) {
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, SHARDS);
    let owner = kit::eventually(Duration::from_secs(20), || async {
        let mut conn = kit::require_redis().await;
        let owner: Option<String> = redis::cmd("GET")
            .arg(keys.lease(0))
            .query_async(&mut conn)
            .await
            .unwrap();
        owner.filter(|o| o.split('/').next() == Some(consumer))
    })
    .await;
    assert!(owner.is_some(), "{consumer} takes the shard");
}

/// Entries read but not acknowledged by `consumer`.
async fn pending_of(scope: &Scope, consumer: &str) -> u64 {
    let mut conn = kit::require_redis().await;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, SHARDS);
    let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(keys.stream(0))
        .arg(locus_ingest::forwarder::GROUP)
        .arg("-")
        .arg("+")
        .arg(10_000)
        .arg(consumer)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.ids.len() as u64
}
