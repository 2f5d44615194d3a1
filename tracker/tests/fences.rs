//! Geofence transitions against the real PostgreSQL: each transition of a device is one
//! state change and one geo_outbox event, however often its fixes are applied, in whatever
//! order they arrive, by however many transactions at once, across restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use locus_session::geofences::{self, FenceArea};
use locus_session::registry::Actor;
use locus_session::{Scope, begin};
use locus_testkit as kit;
use locus_tracker::fences::{Fences, FixPoint, apply, decide};
use locus_wire::record::{GeofenceEvent, GeofenceEventKind, geofence_event_id};
use locus_wire::{DeviceId, GeofenceId, SessionId, TenantId};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The database of one test: the service role's pool (what the tracker uses) and the
/// owner's (for checks across tenants), with tenant `acme` and two fences near (0, 0):
/// `depot`, a circle of 200 m at (0, 0), and `yard`, a square around (0, 0.01).
struct Db {
    app: PgPool,
    app_url: String,
    owner: PgPool,
}

async fn db() -> Db {
    let database = kit::test_database().await;
    let owner = PgPool::connect(&database.owner_url).await.unwrap();
    sqlx::query("INSERT INTO tenants (id) VALUES ('acme'), ('globex')")
        .execute(&owner)
        .await
        .unwrap();
    let app = PgPool::connect(&database.url).await.unwrap();
    put(
        &app,
        "acme",
        "depot",
        FenceArea::Circle {
            lat: 0.0,
            lon: 0.0,
            radius_m: 200.0,
        },
    )
    .await;
    put(
        &app,
        "acme",
        "yard",
        FenceArea::Geometry(json!({"type": "Polygon", "coordinates": [[
            [0.009, -0.001], [0.011, -0.001], [0.011, 0.001], [0.009, 0.001], [0.009, -0.001]
        ]]})),
    )
    .await;
    Db {
        app,
        app_url: database.url,
        owner,
    }
}

async fn put(pool: &PgPool, tenant: &str, id: &str, area: FenceArea) {
    geofences::put(
        pool,
        Actor {
            subject: "admin@test",
            role: "tenant_admin",
        },
        &TenantId::parse(tenant).unwrap(),
        &GeofenceId::parse(id).unwrap(),
        None,
        &area,
    )
    .await
    .expect("put a fence");
}

fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn van() -> DeviceId {
    DeviceId::parse("van-1").unwrap()
}

fn session() -> SessionId {
    SessionId(Uuid::from_u128(0x5e55))
}

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + second, 0).unwrap()
}

/// The fix of `second` at longitude `lon` on the equator; its record id is derived from
/// both, so the same fix is the same record wherever a test builds it.
fn fix(second: i64, lon: f64) -> FixPoint {
    FixPoint {
        record_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{second}/{lon}").as_bytes()),
        session_id: session(),
        recorded_at: at(second),
        lat: 0.0,
        lon,
    }
}

const OUTSIDE: f64 = 0.005;
const DEPOT: f64 = 0.0;
const YARD: f64 = 0.01;

/// Applies `points` of acme's van in one transaction of its own, as the tracker does.
async fn apply_once(pool: &PgPool, fences: &Fences, points: &[FixPoint]) -> u64 {
    let index = fences.for_tenant(&acme()).await.unwrap();
    let mut tx = begin(pool, Scope::System).await.unwrap();
    let n = apply(&mut tx, &index, &acme(), &van(), points)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

/// Every geofence event in the outbox, in seq order: (key, event).
async fn events(db: &Db) -> Vec<(String, GeofenceEvent)> {
    let rows: Vec<(String, String, serde_json::Value)> =
        sqlx::query_as("SELECT topic, key, payload FROM geo_outbox ORDER BY seq")
            .fetch_all(&db.owner)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(topic, key, payload)| {
            assert_eq!(topic, "geofence_events");
            (
                key,
                serde_json::from_value(payload).expect("a GeofenceEvent"),
            )
        })
        .collect()
}

/// The events as (fence, kind, second of the fix that crossed).
fn summary(events: &[(String, GeofenceEvent)]) -> Vec<(String, GeofenceEventKind, i64)> {
    events
        .iter()
        .map(|(_, e)| {
            (
                e.geofence_id.to_string(),
                e.kind,
                e.recorded_at.timestamp() - 1_800_000_000,
            )
        })
        .collect()
}

fn expect(list: &[(&str, GeofenceEventKind, i64)]) -> Vec<(String, GeofenceEventKind, i64)> {
    list.iter()
        .map(|(f, k, s)| ((*f).to_owned(), *k, *s))
        .collect()
}

async fn states(db: &Db) -> Vec<(String, bool, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT geofence_id, inside, at FROM geofence_states \
         WHERE tenant_id = 'acme' AND device_id = 'van-1' ORDER BY geofence_id",
    )
    .fetch_all(&db.owner)
    .await
    .unwrap()
}

use GeofenceEventKind::{Enter, Exit};

#[tokio::test]
async fn each_transition_is_one_event_even_when_the_same_points_are_applied_twice() {
    let db = db().await;
    let fences = Fences::new(db.app.clone(), Duration::from_secs(60));
    let walk = [
        fix(0, OUTSIDE),
        fix(1, DEPOT),
        fix(2, DEPOT),
        fix(3, OUTSIDE),
        fix(4, YARD),
        fix(5, OUTSIDE),
        fix(6, DEPOT),
    ];
    assert_eq!(apply_once(&db.app, &fences, &walk).await, 5);
    let first = events(&db).await;
    assert_eq!(
        summary(&first),
        expect(&[
            ("depot", Enter, 1),
            ("depot", Exit, 3),
            ("yard", Enter, 4),
            ("yard", Exit, 5),
            ("depot", Enter, 6)
        ])
    );
    // The same fixes again (a replay), whole and in parts, in another order: nothing.
    assert_eq!(apply_once(&db.app, &fences, &walk).await, 0);
    let mut reversed = walk.to_vec();
    reversed.reverse();
    assert_eq!(apply_once(&db.app, &fences, &reversed).await, 0);
    assert_eq!(apply_once(&db.app, &fences, &walk[2..4]).await, 0);
    assert_eq!(events(&db).await, first, "a replay wrote events");

    // Each event names the fix that crossed, keyed by the device, with its stable id.
    for (key, e) in &first {
        assert_eq!(key, "van-1");
        let crossed = walk.iter().find(|p| p.record_id == e.record_id).unwrap();
        assert_eq!(
            (e.recorded_at, e.lat, e.lon),
            (crossed.recorded_at, crossed.lat, crossed.lon)
        );
        assert_eq!(e.session_id, session());
        assert_eq!((&e.tenant_id, &e.device_id), (&acme(), &van()));
        assert_eq!(
            e.event_id,
            geofence_event_id(&acme(), &van(), &e.geofence_id, e.record_id, e.kind)
        );
    }
    assert_eq!(
        states(&db).await,
        [
            ("depot".to_owned(), true, at(6)),
            ("yard".to_owned(), false, at(5))
        ]
    );
}

#[tokio::test]
async fn a_point_older_than_the_last_one_checked_moves_nothing() {
    let db = db().await;
    let fences = Fences::new(db.app.clone(), Duration::from_secs(60));
    assert_eq!(apply_once(&db.app, &fences, &[fix(10, DEPOT)]).await, 1);
    // Late fixes: outside the depot, inside the yard, at the same time as the last one.
    assert_eq!(apply_once(&db.app, &fences, &[fix(5, OUTSIDE)]).await, 0);
    assert_eq!(apply_once(&db.app, &fences, &[fix(7, YARD)]).await, 0);
    assert_eq!(apply_once(&db.app, &fences, &[fix(10, YARD)]).await, 0);
    // A batch of late and new fixes: only the new ones count.
    assert_eq!(
        apply_once(
            &db.app,
            &fences,
            &[fix(3, YARD), fix(11, OUTSIDE), fix(8, OUTSIDE)]
        )
        .await,
        1
    );
    assert_eq!(
        summary(&events(&db).await),
        expect(&[("depot", Enter, 10), ("depot", Exit, 11)])
    );
    let watermark: (Option<DateTime<Utc>>, Option<Uuid>) = sqlx::query_as(
        "SELECT at, record_id FROM geofence_devices WHERE tenant_id = 'acme' AND device_id = 'van-1'",
    )
    .fetch_one(&db.owner)
    .await
    .unwrap();
    assert_eq!(watermark, (Some(at(11)), Some(fix(11, OUTSIDE).record_id)));
}

/// Waits (with a deadline) until some session of the database waits for a lock.
async fn until_one_waits_for_a_lock(db: &Db) {
    let waiting = kit::eventually(Duration::from_secs(10), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.owner)
        .await
        .unwrap();
        (n > 0).then_some(())
    })
    .await;
    assert!(
        waiting.is_some(),
        "the second transaction never waited for the first"
    );
}

#[tokio::test]
async fn two_transactions_on_one_device_give_each_transition_once() {
    let db = db().await;
    let fences = Fences::new(db.app.clone(), Duration::from_secs(60));
    let index = fences.for_tenant(&acme()).await.unwrap();
    // Two connections of their own, as two tracker replicas would have.
    let other = PgPool::connect(&db.app_url).await.unwrap();
    let first = [fix(1, DEPOT)];
    let second = [fix(1, DEPOT), fix(2, OUTSIDE), fix(3, YARD)];

    let mut a = begin(&db.app, Scope::System).await.unwrap();
    assert_eq!(
        apply(&mut a, &index, &acme(), &van(), &first)
            .await
            .unwrap(),
        1
    );
    // B starts while A holds the device: it must wait, then see A's enter.
    let b = tokio::spawn({
        let index = index.clone();
        async move {
            let mut b = begin(&other, Scope::System).await.unwrap();
            let n = apply(&mut b, &index, &acme(), &van(), &second)
                .await
                .unwrap();
            b.commit().await.unwrap();
            n
        }
    });
    until_one_waits_for_a_lock(&db).await;
    a.commit().await.unwrap();
    // A's fix again moves nothing; B's newer ones exit the depot and enter the yard.
    assert_eq!(b.await.unwrap(), 2);
    assert_eq!(
        summary(&events(&db).await),
        expect(&[("depot", Enter, 1), ("depot", Exit, 2), ("yard", Enter, 3)])
    );
}

#[tokio::test]
async fn many_transactions_racing_on_one_device_give_each_transition_once() {
    let db = db().await;
    let fences = Fences::new(db.app.clone(), Duration::from_secs(60));
    let index = fences.for_tenant(&acme()).await.unwrap();
    let walk: Vec<FixPoint> = (0..12)
        .map(|s| fix(s, [OUTSIDE, DEPOT, YARD][(s % 3) as usize]))
        .collect();
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let pool = db.app.clone();
            let index = index.clone();
            // Each racer has a different prefix of the walk, applied all at once.
            let points = walk[..walk.len() - i].to_vec();
            tokio::spawn(async move {
                let mut tx = begin(&pool, Scope::System).await.unwrap();
                let n = apply(&mut tx, &index, &acme(), &van(), &points)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                n
            })
        })
        .collect();
    let mut total = 0;
    for r in racers {
        total += r.await.unwrap();
    }
    // Whatever the order they ran in, the walk's transitions, each once: the walk's first
    // fix is outside, then depot, yard, outside, ... (an exit and an enter per step).
    let events = events(&db).await;
    assert_eq!(total, events.len() as u64);
    let mut ids: Vec<Uuid> = events.iter().map(|(_, e)| e.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "an event was written twice");
    // The racers' prefixes, applied one after another in any order, are the whole walk
    // applied once: the transitions of the walk, each once, in its order.
    let once = decide(None, BTreeSet::new(), &walk, |p| {
        index.containing(p.lat, p.lon).collect()
    });
    let want: Vec<(String, GeofenceEventKind, i64)> = once
        .transitions
        .iter()
        .map(|t| {
            (
                t.fence.to_owned(),
                t.kind,
                t.point.recorded_at.timestamp() - 1_800_000_000,
            )
        })
        .collect();
    assert_eq!(want.len(), 15, "8 depot and 7 yard transitions in the walk");
    assert_eq!(summary(&events), want);
}

#[tokio::test]
async fn the_state_survives_a_restart() {
    let db = db().await;
    let fences = Fences::new(db.app.clone(), Duration::from_secs(60));
    assert_eq!(apply_once(&db.app, &fences, &[fix(1, DEPOT)]).await, 1);
    drop(fences);
    db.app.close().await;

    // A new process: a new pool, new fences read from PostgreSQL.
    let pool = PgPool::connect(&db.app_url).await.unwrap();
    let fences = Fences::new(pool.clone(), Duration::from_secs(60));
    assert_eq!(apply_once(&pool, &fences, &[fix(1, DEPOT)]).await, 0);
    assert_eq!(
        apply_once(&pool, &fences, &[fix(2, DEPOT)]).await,
        0,
        "still inside"
    );
    assert_eq!(apply_once(&pool, &fences, &[fix(3, OUTSIDE)]).await, 1);
    assert_eq!(
        summary(&events(&db).await),
        expect(&[("depot", Enter, 1), ("depot", Exit, 3)])
    );
}

#[tokio::test]
async fn fences_are_read_again_after_the_refresh_and_a_tenant_without_fences_costs_nothing() {
    let db = db().await;
    // Refresh 0: every call reads the fences again.
    let fences = Fences::new(db.app.clone(), Duration::ZERO);
    assert_eq!(fences.for_tenant(&acme()).await.unwrap().len(), 2);
    put(
        &db.app,
        "acme",
        "gate",
        FenceArea::Circle {
            lat: 0.0,
            lon: 0.02,
            radius_m: 50.0,
        },
    )
    .await;
    assert_eq!(fences.for_tenant(&acme()).await.unwrap().len(), 3);
    // A long refresh keeps what it read.
    let cached = Fences::new(db.app.clone(), Duration::from_secs(3600));
    assert_eq!(cached.for_tenant(&acme()).await.unwrap().len(), 3);
    put(
        &db.app,
        "acme",
        "dock",
        FenceArea::Circle {
            lat: 1.0,
            lon: 1.0,
            radius_m: 5.0,
        },
    )
    .await;
    assert_eq!(cached.for_tenant(&acme()).await.unwrap().len(), 3);

    let globex = TenantId::parse("globex").unwrap();
    let index = fences.for_tenant(&globex).await.unwrap();
    assert!(index.is_empty(), "globex sees acme's fences");
    let mut tx = begin(&db.app, Scope::System).await.unwrap();
    assert_eq!(
        apply(&mut tx, &index, &globex, &van(), &[fix(1, DEPOT)])
            .await
            .unwrap(),
        0
    );
    tx.commit().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM geofence_devices")
        .fetch_one(&db.owner)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}
