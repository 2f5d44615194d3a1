//! Against a replicated cluster: the partition leader dies under load, and every accepted
//! fix is still on Kafka, in order, once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use locus_ingest::config::Role;
use locus_testkit as kit;
use locus_testkit::broker::Stop;
use locus_testkit::cluster::KafkaCluster;

use crate::helpers::{PacedLoad, Scope, buffered_entries, session_order, spawn_in};

// Three JVMs take about a minute to form a quorum on this machine, so this long fault runs
// with the others (docs/guarantees.md, "Long faults"), not in every `./locus test`.
#[ignore = "long fault: cargo test -p locus-ingest --test api -- --ignored cluster"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_partition_leader_of_a_three_broker_cluster_loses_and_reorders_nothing() {
    let mut cluster = tokio::task::spawn_blocking(KafkaCluster::start)
        .await
        .unwrap();
    let bootstrap = cluster.bootstrap();
    let scope = Scope::new().await;
    let app = Arc::new(
        spawn_in(&scope, &[Role::Api, Role::Forwarder], |c| {
            c.kafka = kit::kafka_settings_for(&bootstrap, &c.kafka.topic_prefix);
            // Production's replication: ingest adds min.insync.replicas=2 from 3 replicas on.
            c.topics.replication_factor = 3;
        })
        .await,
    );
    let topic = scope.locations_topic();

    let mut sessions = Vec::new();
    for d in 0..6 {
        let token = scope.device_token("acme", &format!("cluster-{d}")).await;
        let id = app.session_id(&token).await;
        sessions.push((token, id));
    }
    const BATCHES: usize = 40;
    const FIXES: usize = 5;
    // The buffer takes the load while the cluster elects a new leader: every post is 202.
    let load = PacedLoad::start(&app, &sessions, BATCHES, FIXES);

    kit::eventually(Duration::from_secs(60), || async {
        (load.rounds_posted() >= BATCHES / 3).then_some(())
    })
    .await
    .expect("a third of the load is posted");
    let leader = {
        let topic = topic.clone();
        let cluster = &cluster;
        tokio::task::block_in_place(|| cluster.leader_of(&topic, 0))
    }
    .expect("partition 0 has a leader");
    // Work in flight at the kill: batches accepted and not all of them on Kafka yet.
    let waiting = buffered_entries(&scope, 4).await.len();
    let sent = load.rounds_posted();
    println!(
        "killing node {leader} (leader of {topic}/0): {waiting} entries buffered, {sent} of {BATCHES} rounds posted"
    );
    assert!(sent < BATCHES, "the load still runs when the leader dies");
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop(leader, Stop::Kill));

    load.task.await.unwrap();
    let total = sessions.len() * BATCHES * FIXES;
    let deadline = Duration::from_secs(120);
    let records = kit::read_topic_on(&bootstrap, &topic, deadline, |r| {
        r.iter()
            .map(|r| r.value["record_id"].as_str().unwrap_or_default())
            .collect::<HashSet<_>>()
            .len()
            >= total
    })
    .await;
    println!(
        "all {total} fixes readable {:.1} s after the kill; {} records read ({} copies)",
        killed_at.elapsed().as_secs_f64(),
        records.len(),
        records.len().saturating_sub(total)
    );
    let new_leader =
        tokio::task::block_in_place(|| cluster.leader_of(&topic, 0)).expect("a new leader");
    assert_ne!(new_leader, leader, "another node leads partition 0 now");

    let expected = PacedLoad::expected(BATCHES, FIXES);
    for (_, id) in &sessions {
        assert_eq!(
            session_order(&records, id, true),
            expected,
            "session {id}: every fix, in order, after dropping copies"
        );
    }
    Arc::try_unwrap(app)
        .ok()
        .expect("the load task is done")
        .stop()
        .await;
}
