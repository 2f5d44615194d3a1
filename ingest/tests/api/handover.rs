//! Shards change hands under load, and no session loses its order or a fix.

use std::sync::Arc;
use std::time::Duration;

use locus_ingest::config::Role;
use locus_testkit as kit;

use crate::helpers::{PacedLoad, Scope, buffered_entries, session_order, spawn_in};

/// The owner named in each shard's lease (`None` for a free shard).
async fn owners(scope: &Scope) -> Vec<Option<String>> {
    let mut conn = kit::require_redis().await;
    let keys = locus_ingest::buffer::Keys::new(&scope.redis_prefix, 4);
    let mut owners = Vec::new();
    for shard in 0..4 {
        let owner: Option<String> = redis::cmd("GET")
            .arg(keys.lease(shard))
            .query_async(&mut conn)
            .await
            .unwrap();
        owners.push(owner.map(|o| o.split('/').next().unwrap().to_owned()));
    }
    owners
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shards_handed_over_by_a_stopping_forwarder_under_load_keep_every_session_in_order() {
    let scope = Scope::new().await;
    let api = Arc::new(spawn_in(&scope, &[Role::Api], |_| {}).await);
    let one = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.consumer = "one".into();
    })
    .await;
    // `one` takes every shard before `two` exists, so everything `two` forwards it got
    // from `one`.
    kit::eventually(Duration::from_secs(10), || async {
        let o = owners(&scope).await;
        o.iter().all(|o| o.as_deref() == Some("one")).then_some(())
    })
    .await
    .expect("the first forwarder owns every shard");
    let two = spawn_in(&scope, &[Role::Forwarder], |c| {
        c.forwarder.consumer = "two".into();
    })
    .await;

    let mut sessions = Vec::new();
    for d in 0..6 {
        let token = scope.device_token("acme", &format!("handover-{d}")).await;
        let id = api.session_id(&token).await;
        sessions.push((token, id));
    }
    const BATCHES: usize = 60;
    const FIXES: usize = 5;
    let load = PacedLoad::start(&api, &sessions, BATCHES, FIXES);

    // Hand over in the middle of the load, with entries waiting in the buffer, so that the
    // shards change owner while there is work on them.
    kit::eventually(Duration::from_secs(30), || async {
        (load.rounds_posted() >= BATCHES / 3).then_some(())
    })
    .await
    .expect("a third of the load is posted");
    let waiting = kit::eventually(Duration::from_secs(10), || async {
        let n = buffered_entries(&scope, 4).await.len();
        (n > 0).then_some(n)
    })
    .await
    .expect("entries wait in the buffer when the first forwarder stops");
    println!("{waiting} entries in the buffer when `one` stops");
    one.stop().await;
    assert!(
        load.rounds_posted() < BATCHES,
        "the load is still running after the handover began"
    );

    load.task.await.unwrap();
    let owners = kit::eventually(Duration::from_secs(15), || async {
        let o = owners(&scope).await;
        o.iter().all(|o| o.as_deref() == Some("two")).then_some(o)
    })
    .await;
    assert!(owners.is_some(), "the second forwarder took every shard");

    let total = sessions.len() * BATCHES * FIXES;
    let records =
        kit::read_topic_to_end(&scope.locations_topic(), total, Duration::from_secs(60)).await;
    let expected = PacedLoad::expected(BATCHES, FIXES);
    for (_, id) in &sessions {
        // A graceful handover acknowledges before it releases: not even a copy.
        assert_eq!(
            session_order(&records, id, false),
            expected,
            "session {id}: every fix once, in order"
        );
    }
    assert_eq!(records.len(), total);
    two.stop().await;
    Arc::try_unwrap(api)
        .ok()
        .expect("the load task is done")
        .stop()
        .await;
}
