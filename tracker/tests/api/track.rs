//! Records in, tracks, statistics and positions out; redelivery and late batches.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use locus_tracker::fences::Fences;
use locus_tracker::store::{Consumed, GeoStore};
use locus_wire::SessionId;
use locus_wire::record::PositionRecord;
use sqlx::Row;

use crate::helpers::{MAX_MPS, PATIENCE, TestTracker, World, fix, walk};

#[tokio::test]
async fn records_become_a_track_with_statistics_segments_and_a_position() {
    let world = World::new(2).await;
    let tracker = TestTracker::spawn(world.config()).await;
    let session = SessionId::new();
    let records = walk("acme", "phone-1", session, 40, &[17]);
    world.produce(&records).await;
    world.wait_applied(40).await;
    world.assert_stats_from_scratch(session, &records).await;

    let s = sqlx::query("SELECT jumps, distance_m FROM session_stats WHERE session_id = $1")
        .bind(session.0)
        .fetch_one(&world.owner)
        .await
        .unwrap();
    // The glitch at 17: the steps into it and out of it are jumps and count no metres.
    assert_eq!(s.get::<i64, _>("jumps"), 2);
    let distance: f64 = s.get("distance_m");
    assert!((distance - 37.0 * 11.12).abs() < 2.0, "{distance}");

    let at: DateTime<Utc> = sqlx::query_scalar(
        "SELECT recorded_at FROM device_positions WHERE tenant_id = 'acme' AND device_id = 'phone-1'",
    )
    .fetch_one(&world.owner)
    .await
    .unwrap();
    assert_eq!(at, records[39].recorded_at);

    // The position reaches the compacted topic, keyed by tenant and device, with its seq.
    let published = locus_testkit::read_topic(world.topics.positions(), 1, PATIENCE).await;
    assert!(!published.is_empty(), "no position was published");
    let last = published.last().unwrap();
    assert_eq!(last.key, "acme/phone-1");
    assert!(last.headers.contains_key("locus-outbox-seq"));
    let position: PositionRecord = serde_json::from_value(last.value.clone()).unwrap();
    assert_eq!(position.recorded_at, records[39].recorded_at);
    assert_eq!(position.session_id, session);
    let drained = locus_testkit::eventually(PATIENCE, || async {
        (world.outbox_len().await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the outbox was not drained");
    tracker.stop().await;
}

#[tokio::test]
async fn redelivered_and_late_batches_leave_the_statistics_as_computed_from_scratch() {
    let world = World::new(3).await;
    let tracker = TestTracker::spawn(world.config()).await;
    let sessions = [SessionId::new(), SessionId::new()];
    let mut all = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        all.extend(walk("acme", &format!("phone-{i}"), *session, 30, &[9]));
    }
    // First the fixes with an even index; then the first ten again (a client's retry, new
    // offsets, same record ids); then the odd ones: late, each between two stored fixes.
    let (even, odd): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|r| r.batch_index % 2 == 0);
    world.produce(&even).await;
    world.wait_applied(even.len() as i64).await;
    world.produce(&all[..10]).await;
    world.produce(&odd).await;
    world.wait_applied(all.len() as i64).await;
    for session in sessions {
        world.assert_stats_from_scratch(session, &all).await;
    }
    // Late fixes never move a position back: each device sits at its newest fix.
    for (i, session) in sessions.iter().enumerate() {
        let (at, record): (DateTime<Utc>, uuid::Uuid) = sqlx::query_as(
            "SELECT recorded_at, record_id FROM device_positions WHERE device_id = $1",
        )
        .bind(format!("phone-{i}"))
        .fetch_one(&world.owner)
        .await
        .unwrap();
        let newest = all
            .iter()
            .filter(|r| r.session_id == *session)
            .max_by_key(|r| r.recorded_at)
            .unwrap();
        assert_eq!((at, record), (newest.recorded_at, newest.record_id));
    }
    tracker.stop().await;
    // And on the topic, each device's positions only ever go forward.
    let records = locus_testkit::read_topic_to_end(world.topics.positions(), 2, PATIENCE).await;
    for i in 0..2 {
        let key = format!("acme/phone-{i}");
        let mut times: Vec<(i32, i64, DateTime<Utc>)> = records
            .iter()
            .filter(|r| r.key == key)
            .map(|r| {
                let p: PositionRecord = serde_json::from_value(r.value.clone()).unwrap();
                (r.partition, r.offset, p.recorded_at)
            })
            .collect();
        assert!(!times.is_empty(), "no position of {key}");
        times.sort();
        assert!(
            times.windows(2).all(|w| w[0].2 < w[1].2),
            "a position of {key} moved back: {times:?}"
        );
    }
}

#[tokio::test]
async fn a_batch_applied_again_is_skipped_by_its_offsets_and_changes_nothing() {
    let world = World::new(1).await;
    let pool = sqlx::PgPool::connect(&world.url).await.unwrap();
    let fences = Arc::new(Fences::new(pool.clone(), Duration::from_millis(100)));
    let store = GeoStore::new(pool, world.topics.locations(), MAX_MPS, fences);
    let session = SessionId::new();
    let records = walk("acme", "phone-1", session, 10, &[]);
    let batch: Vec<Consumed> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Consumed {
            partition: 0,
            offset: i as i64,
            record: Some(r.clone()),
        })
        .collect();
    let first = store.apply(&batch).await.unwrap();
    assert_eq!(first.applied, 10);
    assert_eq!(first.positions, 1);
    let again = store.apply(&batch).await.unwrap();
    assert_eq!((again.applied, again.replayed, again.positions), (0, 10, 0));
    // The same fixes at new offsets (a redelivery through the topic) are duplicates.
    let moved: Vec<Consumed> = batch
        .iter()
        .map(|c| Consumed {
            offset: c.offset + 10,
            ..c.clone()
        })
        .collect();
    let dup = store.apply(&moved).await.unwrap();
    assert_eq!((dup.applied, dup.duplicates, dup.positions), (0, 10, 0));
    world.assert_stats_from_scratch(session, &records).await;
    // One position row for the first batch only: replays publish nothing.
    assert_eq!(world.outbox_len().await, 1);
    // An older fix of the same device, in a later batch: the track takes it, the
    // position stays.
    let old = fix(
        "acme",
        "phone-1",
        session,
        "late",
        0,
        records[0].recorded_at - chrono::Duration::seconds(5),
        52.0,
        13.0,
    );
    let late = store
        .apply(&[Consumed {
            partition: 0,
            offset: 20,
            record: Some(old.clone()),
        }])
        .await
        .unwrap();
    assert_eq!((late.applied, late.positions), (1, 0));
    let mut with_late = records.clone();
    with_late.push(old);
    world.assert_stats_from_scratch(session, &with_late).await;
    let next: i64 =
        sqlx::query_scalar("SELECT next_offset FROM tracker_offsets WHERE partition = 0")
            .fetch_one(&world.owner)
            .await
            .unwrap();
    assert_eq!(next, 21);
}

#[tokio::test]
async fn a_fence_crossed_by_redelivered_and_late_fixes_gives_one_enter_and_one_exit() {
    let world = World::new(2).await;
    // Fixes 10 to 20 of the walk (52.0010 to 52.0020) are within 60 m of 52.0015.
    world.add_circle("acme", "gate", 52.0015, 13.0, 60.0).await;
    let tracker = TestTracker::spawn(world.config()).await;
    let session = SessionId::new();
    let records = walk("acme", "phone-1", session, 40, &[]);
    world.produce(&records[..25]).await;
    world.wait_applied(25).await;
    // Again (a redelivery), then the rest, then one late fix inside the fence.
    world.produce(&records[..25]).await;
    world.produce(&records[25..]).await;
    let late = fix(
        "acme",
        "phone-1",
        session,
        "late",
        0,
        records[30].recorded_at + chrono::Duration::seconds(1),
        52.0015,
        13.0,
    );
    world.wait_applied(40).await;
    world.produce(std::slice::from_ref(&late)).await;
    world.wait_applied(41).await;
    let events = world.geofence_events(2).await;
    tracker.stop().await;
    let kinds: Vec<&str> = events.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(kinds, ["enter", "exit"], "{events:?}");
    assert_eq!(events[0].3, records[10].record_id);
    assert_eq!(events[1].3, records[21].record_id);
}
