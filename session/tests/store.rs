//! The session store against a real, fresh PostgreSQL database.

use chrono::{Duration, Utc};
use locus_session::{SessionError, SessionProgress, SessionStore};
use locus_wire::api::{Position, SessionStatus, StopReason};
use locus_wire::record::SessionEventKind;
use locus_wire::{DeviceId, TenantId};

/// A store on a fresh database (as the service role), with devices p1 to p8 of acme.
async fn store() -> SessionStore {
    let db = locus_testkit::test_database().await;
    for n in 1..=8 {
        locus_testkit::register_device(&db.owner_url, "acme", &format!("p{n}")).await;
    }
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .expect("connect to the test database");
    SessionStore::new(pool)
}

fn ids(tenant: &str, device: &str) -> (TenantId, DeviceId) {
    (
        TenantId::parse(tenant).unwrap(),
        DeviceId::parse(device).unwrap(),
    )
}

#[tokio::test]
async fn progress_adds_counts_and_never_moves_the_last_fix_back_in_time() {
    let store = store().await;
    let (t, d) = ids("acme", "p1");
    let s = store
        .start(&t, &d, Duration::minutes(10))
        .await
        .unwrap()
        .session;
    let now = Utc::now();
    let at = |secs, lat| SessionProgress {
        session_id: s.id,
        fixes: 10,
        last_fix_at: now + Duration::seconds(secs),
        last_position: Position { lat, lon: 1.0 },
    };
    store.record_progress(&[at(10, 10.0)]).await.unwrap();
    // A late, older batch (reclaimed after a crash) adds its count but not its position.
    store.record_progress(&[at(5, 5.0)]).await.unwrap();
    let got = store.get(&t, s.id).await.unwrap();
    assert_eq!(got.fix_count, 20);
    assert_eq!(got.last_position.unwrap().lat, 10.0);
}

#[tokio::test]
async fn a_stop_racing_the_expiry_sweep_has_exactly_one_winner() {
    let store = store().await;
    let (t, d) = ids("acme", "p2");
    let s = store
        .start(&t, &d, Duration::milliseconds(1))
        .await
        .unwrap()
        .session;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let (swept, stopped) = tokio::join!(
        store.expire_due(10),
        store.stop(&t, s.id, StopReason::Requested)
    );
    let swept = swept.unwrap();
    match stopped {
        Ok(_) => assert!(swept.is_empty()),
        Err(SessionError::Stopped(StopReason::Expired)) => assert_eq!(swept.len(), 1),
        other => panic!("unexpected: {other:?}"),
    }
    assert_eq!(
        store.get(&t, s.id).await.unwrap().status,
        SessionStatus::Stopped
    );
}

#[tokio::test]
async fn an_expired_session_does_not_block_the_next_one_and_is_reported() {
    let store = store().await;
    let (t, d) = ids("acme", "p3");
    let first = store
        .start(&t, &d, Duration::milliseconds(1))
        .await
        .unwrap()
        .session;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let next = store.start(&t, &d, Duration::minutes(1)).await.unwrap();
    let expired = next
        .expired
        .expect("the stale session is expired on the spot");
    assert_eq!(expired.id, first.id);
    assert_eq!(expired.stop_reason, Some(StopReason::Expired));
    assert_ne!(next.session.id, first.id);
}

#[tokio::test]
async fn a_session_of_one_tenant_is_not_found_from_another() {
    let store = store().await;
    let (t, d) = ids("acme", "p4");
    let s = store
        .start(&t, &d, Duration::minutes(1))
        .await
        .unwrap()
        .session;
    let other = TenantId::parse("globex").unwrap();
    assert!(matches!(
        store.get(&other, s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        store.stop(&other, s.id, StopReason::Requested).await,
        Err(SessionError::NotFound)
    ));
}

/// The outbox rows of `store` as (session, kind), oldest first (every tenant's: the
/// system scope).
async fn outbox(store: &SessionStore) -> Vec<(uuid::Uuid, String)> {
    let mut tx = locus_session::begin(store.pool(), locus_session::Scope::System)
        .await
        .unwrap();
    sqlx::query_as("SELECT session_id, kind FROM session_event_outbox ORDER BY id")
        .fetch_all(&mut *tx)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_start_stop_and_expiry_queues_its_event_with_the_change() {
    let store = store().await;
    let (t, d) = ids("acme", "p5");
    let first = store
        .start(&t, &d, Duration::milliseconds(1))
        .await
        .unwrap()
        .session;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // The stale session is expired by the next start, in the start's transaction.
    let second = store
        .start(&t, &d, Duration::minutes(1))
        .await
        .unwrap()
        .session;
    store
        .stop(&t, second.id, StopReason::Requested)
        .await
        .unwrap();
    let (_, d2) = ids("acme", "p6");
    let third = store
        .start(&t, &d2, Duration::milliseconds(1))
        .await
        .unwrap()
        .session;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(store.expire_due(10).await.unwrap().len(), 1);
    // A refused change queues nothing.
    assert!(
        store
            .stop(&t, second.id, StopReason::Requested)
            .await
            .is_err()
    );

    let started = |s: &locus_session::Session| (s.id.0, "started".to_owned());
    let stopped = |s: &locus_session::Session| (s.id.0, "stopped".to_owned());
    assert_eq!(
        outbox(&store).await,
        [
            started(&first),
            stopped(&first),
            started(&second),
            stopped(&second),
            started(&third),
            stopped(&third),
        ]
    );
    let claim = store.claim_events_of(&[second.id]).await.unwrap();
    let events = claim.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event.reason, Some(StopReason::Requested));
    assert!(events[0].id < events[1].id);
    claim.finish(&[]).await.unwrap();
}

#[tokio::test]
async fn a_sessions_stop_is_not_handed_out_while_its_start_is_held_by_another_publisher() {
    let store = store().await;
    let (t, d) = ids("acme", "p7");
    let s = store
        .start(&t, &d, Duration::minutes(1))
        .await
        .unwrap()
        .session;
    store.stop(&t, s.id, StopReason::Requested).await.unwrap();
    let (_, other) = ids("acme", "p8");
    let o = store
        .start(&t, &other, Duration::minutes(1))
        .await
        .unwrap()
        .session;

    // One publisher holds the start of `s`; a second one may take the other session's start,
    // but not the stop of `s`.
    let first = store.claim_events(1).await.unwrap();
    assert_eq!(first.events()[0].event.session_id, s.id);
    let second = store.claim_events(10).await.unwrap();
    let seen: Vec<_> = second
        .events()
        .iter()
        .map(|e| (e.event.session_id, e.event.kind))
        .collect();
    assert_eq!(seen, [(o.id, SessionEventKind::Started)]);
    second.finish(&[]).await.unwrap();

    // The first publisher crashes before deleting: its row is handed out again, then, once
    // it is published, the stop.
    drop(first);
    // A dropped claim's rollback reaches PostgreSQL when its connection is next used, not
    // at the drop: until then the row stays locked and a claim may skip past it to the
    // other session's start, which is handed back unpublished.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (again, start) = loop {
        let claim = store.claim_events(1).await.unwrap();
        let event = claim.events()[0].clone();
        if event.event.session_id == s.id {
            break (claim, event);
        }
        assert_eq!(
            (event.event.session_id, event.event.kind),
            (o.id, SessionEventKind::Started)
        );
        claim.finish(&[]).await.unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "the crashed publisher's row was never handed out again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (start.event.session_id, start.event.kind),
        (s.id, SessionEventKind::Started)
    );
    again.finish(&[start.id]).await.unwrap();
    let next = store.claim_events(10).await.unwrap();
    let kinds: Vec<_> = next
        .events()
        .iter()
        .map(|e| (e.event.session_id, e.event.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            (s.id, SessionEventKind::Stopped),
            (o.id, SessionEventKind::Started)
        ]
    );
    let all: Vec<i64> = next.events().iter().map(|e| e.id).collect();
    next.finish(&all).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap().rows, 0);
}
