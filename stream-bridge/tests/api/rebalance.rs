//! Replicas joining and leaving the group hand partitions over without two of them
//! delivering one session at the same time, and without losing or reordering a record: a
//! revocation waits for the deliveries in flight before it commits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use locus_wire::SessionId;

use crate::helpers::{
    Behaviour, PATIENCE, Receiver, TestBridge, config, fresh_topics, produce, session_records,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_joining_and_leaving_never_overlaps_a_session_at_the_webhook_and_loses_nothing() {
    let prefix = fresh_topics(3).await;
    let receiver = Receiver::spawn().await;
    // Slow answers keep a delivery in flight whenever a rebalance comes.
    receiver.set("acme", Behaviour::Slow(150));
    let config = config(&prefix).with_sink("acme", &receiver.url("acme"), "s");
    let first = TestBridge::spawn(config.clone()).await;

    let sessions: Vec<_> = (0..6).map(|_| session_records("acme", 30)).collect();
    let producing = tokio::spawn({
        let prefix = prefix.clone();
        let sessions = sessions.clone();
        async move {
            for i in 0..30 {
                for s in &sessions {
                    produce(&prefix, &s[i..=i]).await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = TestBridge::spawn(config).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    second.stop().await;
    producing.await.unwrap();

    let total = sessions.iter().map(Vec::len).sum();
    let done = locus_testkit::eventually(PATIENCE, || {
        let seen: HashSet<_> = receiver
            .delivered("acme")
            .iter()
            .map(|r| r.record_id)
            .collect();
        async move { (seen.len() >= total).then_some(()) }
    })
    .await;
    assert!(done.is_some(), "every record is delivered");
    first.stop().await;

    // Each session: every record, in order, once copies are dropped.
    let delivered = receiver.delivered("acme");
    let mut seen = HashSet::new();
    let mut order: HashMap<SessionId, Vec<u32>> = HashMap::new();
    for r in &delivered {
        if seen.insert(r.record_id) {
            order.entry(r.session_id).or_default().push(r.batch_index);
        }
    }
    for s in &sessions {
        assert_eq!(
            order.get(&s[0].session_id),
            Some(&(0..30).collect::<Vec<_>>()),
            "session {} complete and in order",
            s[0].session_id
        );
    }
    assert_eq!(seen.len(), total, "nothing else was delivered");

    // No two requests in flight at once carried the same session.
    let requests = receiver.requests_for("acme");
    for (i, a) in requests.iter().enumerate() {
        let a_sessions: HashSet<_> = a.delivery().records.iter().map(|r| r.session_id).collect();
        for b in &requests[i + 1..] {
            let overlap = a.started < b.at && b.started < a.at;
            if overlap {
                let shared = b
                    .delivery()
                    .records
                    .iter()
                    .any(|r| a_sessions.contains(&r.session_id));
                assert!(
                    !shared,
                    "two deliveries of one session overlapped at the webhook"
                );
            }
        }
    }
}
