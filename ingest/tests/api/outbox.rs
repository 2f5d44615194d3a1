//! Session events survive a Redis outage, a crash of their publisher and a second replica:
//! they are written to PostgreSQL's outbox with the session change and reach the buffer
//! once, in order, after the session's batches.

use std::time::Duration;

use locus_ingest::buffer::{Buffer, Keys};
use locus_ingest::config::Role;
use locus_ingest::session_events::SessionEventPublisher;
use locus_session::SessionStore;
use locus_testkit as kit;
use locus_wire::record::{SCHEMA_VERSION, SessionEvent, SessionEventKind};
use locus_wire::{DeviceId, SessionId, TenantId};
use serde_json::{Value, json};

use crate::helpers::{
    Scope, StoppableRedis, TestApp, batch, buffered_entries, buffered_entries_on, spawn_in,
};

/// The buffered entries of `session` on `redis`, in stream order, as short labels:
/// `started`, `stopped:<reason>` or the batch id.
async fn timeline(scope: &Scope, redis: &StoppableRedis, session: &str) -> Vec<String> {
    entries_on(scope, &redis.url())
        .await
        .into_iter()
        .filter(|e| e["session_id"] == session)
        .map(|e| match (e["type"].as_str(), e["kind"].as_str()) {
            (Some("session_event"), Some("stopped")) => {
                format!("stopped:{}", e["reason"].as_str().unwrap_or(""))
            }
            (Some("session_event"), Some(kind)) => kind.to_owned(),
            _ => e["batch_id"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Every buffered entry of `scope` on the Redis at `url`.
async fn entries_on(scope: &Scope, url: &str) -> Vec<Value> {
    buffered_entries_on(url, scope, 4).await
}

async fn start_short_session(app: &TestApp, token: &str, secs: u64) -> String {
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(token)
        .json(&json!({ "max_duration_secs": secs }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_and_an_expiry_during_a_long_redis_outage_reach_the_buffer_once_after_the_batches() {
    let mut redis = StoppableRedis::start(true).await;
    let scope = Scope::new().await;
    let url = redis.url();
    // The API alone: nothing leaves the buffer, so it shows the whole story of each session.
    let app = spawn_in(&scope, &[Role::Api], |c| c.redis.url = url).await;
    let stopper = scope.device_token("acme", "stopper").await;
    let stopped = app.session_id(&stopper).await;
    for b in ["b1", "b2"] {
        let r = app.post_fixes(&stopper, &stopped, &batch(b, 2)).await;
        assert_eq!(r.status(), 202);
    }
    let expirer = scope.device_token("acme", "expirer").await;
    let expiring = start_short_session(&app, &expirer, 2).await;
    assert_eq!(
        app.post_fixes(&expirer, &expiring, &batch("e1", 1))
            .await
            .status(),
        202
    );

    redis.stop("TERM");
    // PostgreSQL holds the stop, so the device hears what it always heard.
    let r = app.stop_session(&stopper, &stopped).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "stopped");
    // Longer than the old retries (about a second), and long enough for the sweeper to
    // expire the short session while Redis is away.
    tokio::time::sleep(Duration::from_secs(4)).await;
    redis.up().await;

    let both_stopped = kit::eventually(Duration::from_secs(20), || async {
        let a = timeline(&scope, &redis, &stopped).await;
        let b = timeline(&scope, &redis, &expiring).await;
        (a.iter().any(|e| e.starts_with("stopped")) && b.iter().any(|e| e.starts_with("stopped")))
            .then_some((a, b))
    })
    .await;
    let (a, b) = both_stopped.expect("both stop events reach the buffer once Redis is back");
    // Give a second publish (a replica, a rescan) the chance to show up before judging once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a_now = timeline(&scope, &redis, &stopped).await;
    let b_now = timeline(&scope, &redis, &expiring).await;
    assert_eq!(a, a_now);
    assert_eq!(b, b_now);
    assert_eq!(a, ["started", "b1", "b2", "stopped:requested"]);
    assert_eq!(b, ["started", "e1", "stopped:expired"]);
    app.stop().await;
}

fn stop_event(session: SessionId) -> SessionEvent {
    SessionEvent {
        schema_version: SCHEMA_VERSION,
        event_id: uuid::Uuid::now_v7(),
        kind: SessionEventKind::Stopped,
        tenant_id: TenantId::parse("acme").unwrap(),
        session_id: session,
        device_id: DeviceId::parse("crashy").unwrap(),
        at: chrono::Utc::now(),
        reason: Some(locus_wire::api::StopReason::Requested),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_again_after_a_publisher_crash_is_buffered_once() {
    let scope = Scope::new().await;
    let buffer = Buffer::new(
        kit::require_redis().await,
        Keys::new(&scope.redis_prefix, 4),
        100_000,
        86_400,
    );
    let session = SessionId::new();
    let event = stop_event(session);
    buffer.append_event(&event).await.unwrap();
    // The publisher crashed after Redis confirmed but before the outbox row was deleted: the
    // row is published again, with the same event id.
    buffer.append_event(&event).await.unwrap();
    let entries: Vec<Value> = buffered_entries(&scope, 4)
        .await
        .into_iter()
        .filter(|e| e["session_id"] == session.to_string())
        .collect();
    assert_eq!(entries.len(), 1, "buffered once: {entries:?}");

    // The same through the outbox: a publisher claims a start's row, appends it and
    // crashes before deleting it (its claim is dropped, as a dead process's transaction is
    // rolled back); the next claim publishes the row again.
    // The store as the services run it: the service role, on a registered device.
    kit::register_device(&scope.owner_url, "acme", "crashy").await;
    let pool = sqlx::PgPool::connect(&scope.database_url).await.unwrap();
    let store = SessionStore::new(pool);
    let started = store
        .start(
            &TenantId::parse("acme").unwrap(),
            &DeviceId::parse("crashy").unwrap(),
            chrono::Duration::minutes(5),
        )
        .await
        .unwrap()
        .session;
    let claim = store.claim_events(10).await.unwrap();
    assert_eq!(claim.events().len(), 1);
    for queued in claim.events() {
        assert!(buffer.append_event(&queued.event).await.unwrap());
    }
    drop(claim);
    let publisher = SessionEventPublisher::new(store.clone(), buffer.clone());
    assert_eq!(
        publisher.publish_waiting().await.unwrap(),
        1,
        "published again"
    );
    assert_eq!(store.outbox_backlog().await.unwrap().rows, 0, "and deleted");
    let kinds: Vec<Value> = buffered_entries(&scope, 4)
        .await
        .into_iter()
        .filter(|e| e["session_id"] == started.id.to_string())
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["started"], "buffered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_publish_a_backlog_of_session_events_once_each_and_in_order() {
    let mut redis = StoppableRedis::start(false).await;
    let scope = Scope::new().await;
    let url = redis.url();
    let first = spawn_in(&scope, &[Role::Api], |c| c.redis.url = url.clone()).await;
    let second = spawn_in(&scope, &[Role::Api], |c| c.redis.url = url).await;
    redis.stop("TERM");
    // Every start and stop happens while Redis is away, half on each replica.
    let mut sessions = Vec::new();
    for n in 0..6 {
        let app = if n % 2 == 0 { &first } else { &second };
        let token = scope.device_token("acme", &format!("backlog-{n}")).await;
        let id = app.session_id(&token).await;
        assert_eq!(app.stop_session(&token, &id).await.status(), 200);
        sessions.push(id);
    }
    // An empty Redis comes back; both replicas' publishers find the backlog.
    redis.up().await;
    let all = kit::eventually(Duration::from_secs(20), || async {
        let mut out = Vec::new();
        for id in &sessions {
            let t = timeline(&scope, &redis, id).await;
            if !t.iter().any(|e| e.starts_with("stopped")) {
                return None;
            }
            out.push(t);
        }
        Some(out)
    })
    .await
    .expect("every session's events reach the buffer once Redis is back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (id, t) in sessions.iter().zip(&all) {
        assert_eq!(
            timeline(&scope, &redis, id).await,
            *t,
            "nothing more came later"
        );
        assert_eq!(t, &["started", "stopped:requested"], "session {id}");
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_right_after_redis_returns_is_buffered_after_the_start_that_redis_missed() {
    let mut redis = StoppableRedis::start(false).await;
    let scope = Scope::new().await;
    let url = redis.url();
    // The relay's scan is far off and its retries back off while Redis is away, so only the
    // batch's own path can put the start ahead of it.
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.redis.url = url;
        c.sessions.events_scan_ms = 60_000;
    })
    .await;
    let device = scope.device_token("acme", "early-bird").await;
    redis.stop("TERM");
    // PostgreSQL holds the session and its `started`: the device gets its 201.
    let session = app.session_id(&device).await;
    // Another replica's relay has claimed the start's row and not appended it yet (this
    // process's relay skips it): held here by a transaction of the test's own, as the
    // owner (a relay works in the system scope; the service role alone sees no rows).
    let pool = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let mut relay = pool.begin().await.unwrap();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM session_event_outbox WHERE session_id = $1::uuid FOR UPDATE",
    )
    .bind(&session)
    .fetch_all(&mut *relay)
    .await
    .unwrap();
    assert_eq!(held.len(), 1, "the start waits in the outbox");
    redis.up().await;

    // The client's reconnect may take a moment: a 503 there is retried with the same batch.
    let post = {
        let (client, url, device) = (
            app.client.clone(),
            app.url(&format!("/v1/sessions/{session}/locations")),
            device.clone(),
        );
        tokio::spawn(async move {
            kit::eventually(Duration::from_secs(20), || async {
                let r = client
                    .post(&url)
                    .bearer_auth(&device)
                    .json(&batch("first", 2))
                    .send()
                    .await
                    .unwrap();
                (r.status() == 202).then_some(())
            })
            .await
            .is_some()
        })
    };
    // The other relay goes on (it may have failed: the row is released either way). Not a
    // timing assertion: the batch must come after the start however the two interleave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.rollback().await.unwrap();
    assert!(post.await.unwrap(), "the batch is taken once Redis is back");
    assert_eq!(
        timeline(&scope, &redis, &session).await,
        ["started", "first"],
        "the start is buffered before the batch, once each"
    );
    // The batch's path published the outbox row, so no later relay scan adds a second start.
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM session_event_outbox WHERE session_id = $1::uuid")
            .bind(&session)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(waiting, 0, "the outbox row is published and gone");
    assert_eq!(
        app.post_fixes(&device, &session, &batch("second", 1))
            .await
            .status(),
        202
    );
    assert_eq!(
        timeline(&scope, &redis, &session).await,
        ["started", "first", "second"]
    );
    app.stop().await;
}
