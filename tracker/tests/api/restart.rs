//! Crashes: the tracker's binary killed while records are in flight, then started again.

use locus_wire::SessionId;

use crate::helpers::{TrackerProcess, World, walk};

#[tokio::test]
async fn a_tracker_killed_mid_stream_applies_every_record_once_after_the_restart() {
    let world = World::new(3).await;
    let group = locus_testkit::unique("locus-tracker-test-");
    // Small batches, so the stream takes many transactions and the kill lands inside it.
    let settings = [("LOCUS_TRACKER_BATCH_MAX_RECORDS", "10")];
    let sessions: Vec<SessionId> = (0..8).map(|_| SessionId::new()).collect();
    let mut all = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        all.extend(walk(
            "acme",
            &format!("phone-{i}"),
            *session,
            500,
            &[100, 300],
        ));
    }
    // A fence around fixes 155 to 245 of every walk (about 52.0155 to 52.0245): each
    // device enters it once and leaves it once, across the kill.
    world.add_circle("acme", "depot", 52.02, 13.0, 500.0).await;
    let (first, second) = all.split_at(all.len() / 2);
    let first_len = first.len() as i64;

    world.produce(first).await;
    let tracker = TrackerProcess::start(&world, &group, &settings);
    let started = locus_testkit::eventually(crate::helpers::PATIENCE, || async {
        (world.applied().await >= 50).then_some(())
    })
    .await;
    assert!(started.is_some(), "the tracker applied nothing");
    tracker.kill();
    let at_kill = world.applied().await;
    eprintln!("killed with {at_kill} of {first_len} records of the first half applied");
    assert!(
        at_kill < first_len,
        "every record was applied before the kill ({at_kill} of {first_len}): none was in flight"
    );

    // The rest arrives while it is down; then it starts again in the same group.
    world.produce(second).await;
    let tracker = TrackerProcess::start(&world, &group, &settings);
    world.wait_applied(all.len() as i64).await;
    assert!(
        tracker.terminate(),
        "the tracker did not stop cleanly on SIGTERM"
    );

    let points: i64 = sqlx::query_scalar("SELECT count(*) FROM track_points")
        .fetch_one(&world.owner)
        .await
        .unwrap();
    assert_eq!(points, all.len() as i64, "every record is one track point");
    assert_eq!(world.applied().await, all.len() as i64);
    for session in &sessions {
        world.assert_stats_from_scratch(*session, &all).await;
    }
    // SIGTERM flushed the relay: nothing is left to publish.
    assert_eq!(world.outbox_len().await, 0);

    // One enter and one exit per device, each once, named by the fix that crossed.
    let mut events = world.geofence_events(2 * sessions.len()).await;
    events.sort();
    let mut expected = Vec::new();
    for i in 0..sessions.len() {
        let device = format!("phone-{i}");
        let walk: Vec<_> = all
            .iter()
            .filter(|r| r.device_id.as_str() == device)
            .collect();
        let inside = |r: &&locus_wire::record::LocationRecord| {
            locus_geo::haversine_m(
                locus_geo::Point::new(r.lat, r.lon),
                locus_geo::Point::new(52.02, 13.0),
            ) <= 500.0
        };
        let enter = walk.iter().find(|r| inside(r)).unwrap();
        let exit = walk
            .iter()
            .skip_while(|r| !inside(r))
            .find(|r| !inside(r))
            .unwrap();
        expected.push((
            device.clone(),
            "depot".to_owned(),
            "enter".to_owned(),
            enter.record_id,
        ));
        expected.push((
            device,
            "depot".to_owned(),
            "exit".to_owned(),
            exit.record_id,
        ));
    }
    expected.sort();
    assert_eq!(events, expected);
}

/// Commits `offset` for partition 0 of `topic` under `group`, as a consumer of that group
/// would have.
fn commit(group: &str, topic: &str, offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let consumer: BaseConsumer = locus_testkit::consumer_config(group).create().unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    list.add_partition_offset(topic, 0, rdkafka::Offset::Offset(offset))
        .unwrap();
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("commit an offset");
}

#[tokio::test]
async fn the_offsets_of_postgres_win_over_the_groups_on_assignment() {
    let world = World::new(1).await;
    let records = walk("acme", "phone-1", SessionId::new(), 20, &[]);
    world.produce(&records).await;
    // PostgreSQL says 5 records were applied; the group's offset says 15 (ahead: a
    // database restored from a backup, say). The tracker must start at 5.
    sqlx::query("INSERT INTO tracker_offsets (topic, partition, next_offset) VALUES ($1, 0, 5)")
        .bind(world.topics.locations())
        .execute(&world.owner)
        .await
        .unwrap();
    let config = world.config();
    let (group, topic) = (config.group.clone(), world.topics.locations().to_owned());
    tokio::task::spawn_blocking(move || commit(&group, &topic, 15))
        .await
        .unwrap();
    let tracker = crate::helpers::TestTracker::spawn(config).await;
    world.wait_applied(15).await;
    tracker.stop().await;
    assert_eq!(
        world.applied().await,
        15,
        "records 5 to 19 are applied, 0 to 4 are not"
    );
    let first: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT first_fix_at FROM session_stats")
            .fetch_one(&world.owner)
            .await
            .unwrap();
    assert_eq!(first, records[5].recorded_at);
}
