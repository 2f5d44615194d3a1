//! The session store against a real, fresh PostgreSQL database.

use chrono::{Duration, Utc};
use locus_session::{SessionError, SessionProgress, SessionStore};
use locus_wire::api::{Position, SessionStatus, StopReason};
use locus_wire::{DeviceId, TenantId};

async fn store() -> SessionStore {
    let url = locus_testkit::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    locus_session::migrate(&pool).await.expect("migrations run");
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
