//! The read side of the tracker's tables through the real app: `GET /v1/sessions/{id}/track`
//! (GeoJSON, simplification bound, thinning of long sessions), the statistics in
//! `GET /v1/sessions/{id}`, and `GET /v1/devices/{device_id}/position`; each behind the
//! tenant wall. The rows are written as the tracker writes them (segments and statistics
//! from locus-geo), straight into PostgreSQL, so these tests do not depend on the tracker's
//! pace.

use chrono::{DateTime, Duration, Utc};
use locus_geo::{Stats, TrackPoint};
use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{Scope, TestApp, spawn_in};

const MAX_MPS: f64 = 100.0;

fn admin(tenant: &str) -> String {
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    )
}

/// A zig-zag walk of `n` fixes a second apart, with one implausible jump in the middle.
fn zigzag(n: usize, start: DateTime<Utc>) -> Vec<TrackPoint> {
    (0..n)
        .map(|i| {
            let lat = 52.5 + i as f64 * 0.00005;
            let mut lon = 13.4 + if i % 2 == 0 { 0.0 } else { 0.0003 };
            if i == n / 2 {
                lon += 1.0; // ~68 km in a second
            }
            TrackPoint::new(start + Duration::seconds(i as i64), lat, lon)
        })
        .collect()
}

/// Writes `points` of `session` as the tracker does: track points with their segments, the
/// session's statistics row, and the device's position (the latest fix).
async fn write_track(
    scope: &Scope,
    tenant: &str,
    device: &str,
    session: &str,
    points: &[TrackPoint],
) -> Stats {
    let pool = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let session = Uuid::parse_str(session).unwrap();
    let mut stats = Stats::new(MAX_MPS);
    for (i, p) in points.iter().enumerate() {
        let segment = stats.push(p);
        sqlx::query(
            "INSERT INTO track_points (tenant_id, session_id, recorded_at, record_id, device_id, lat, lon, \
             accuracy, speed, segment_m, segment_mps, jump) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(tenant)
        .bind(session)
        .bind(p.recorded_at)
        .bind(Uuid::new_v4())
        .bind(device)
        .bind(p.lat)
        .bind(p.lon)
        .bind(5.0 + i as f64)
        .bind(1.5)
        .bind(segment.map_or(0.0, |s| s.metres))
        .bind(segment.and_then(|s| s.mps))
        .bind(segment.is_some_and(|s| s.jump))
        .execute(&pool)
        .await
        .unwrap();
    }
    let (first, last, bbox) = (
        stats.first.unwrap(),
        stats.last.unwrap(),
        stats.bbox.unwrap(),
    );
    sqlx::query(
        "INSERT INTO session_stats (tenant_id, session_id, fix_count, distance_m, jumps, first_fix_at, last_fix_at, \
         first_lat, first_lon, last_lat, last_lon, min_lat, min_lon, max_lat, max_lon, max_speed_mps) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(tenant)
    .bind(session)
    .bind(stats.fix_count as i64)
    .bind(stats.distance_m)
    .bind(stats.jumps as i64)
    .bind(first.recorded_at)
    .bind(last.recorded_at)
    .bind(first.lat)
    .bind(first.lon)
    .bind(last.lat)
    .bind(last.lon)
    .bind(bbox.min_lat)
    .bind(bbox.min_lon)
    .bind(bbox.max_lat)
    .bind(bbox.max_lon)
    .bind(stats.max_speed_mps)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO device_positions (tenant_id, device_id, session_id, record_id, recorded_at, lat, lon, accuracy) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 4.0)",
    )
    .bind(tenant)
    .bind(device)
    .bind(session)
    .bind(Uuid::new_v4())
    .bind(last.recorded_at)
    .bind(last.lat)
    .bind(last.lon)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    stats
}

async fn get_json(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let r = app.get(token, path).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An app running the API and a session of `tenant`'s `device`.
async fn app_with_session(
    change: impl FnOnce(&mut locus_ingest::Config),
) -> (TestApp, Scope, String, String) {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], change).await;
    let device = app.device_token("acme", "acme-phone").await;
    let session = app.session_id(&device).await;
    (app, scope, device, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_track_is_a_geojson_line_of_every_point_in_time_order() {
    let (app, scope, device, session) = app_with_session(|_| {}).await;
    let points = zigzag(200, Utc::now() - Duration::minutes(10));
    write_track(&scope, "acme", "acme-phone", &session, &points).await;

    let (status, v) = get_json(&app, &device, &format!("/v1/sessions/{session}/track")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "Feature");
    assert_eq!(v["geometry"]["type"], "LineString");
    let coords = v["geometry"]["coordinates"].as_array().unwrap();
    assert_eq!(coords.len(), 200, "tolerance 0 by default: every point");
    for (c, p) in coords.iter().zip(&points) {
        assert_eq!(
            c,
            &serde_json::json!([p.lon, p.lat]),
            "GeoJSON order is lon, lat"
        );
    }
    assert_eq!(v["properties"]["fix_count"], 200);
    assert_eq!(v["properties"]["points"], 200);
    assert_eq!(v["properties"]["stride"], 1);
    assert_eq!(v["properties"]["session_id"], session);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_track_is_simplified_to_the_tolerance_and_within_the_point_bound() {
    let (app, scope, _device, session) = app_with_session(|c| c.track.max_points = 40).await;
    let points = zigzag(500, Utc::now() - Duration::minutes(20));
    write_track(&scope, "acme", "acme-phone", &session, &points).await;
    let admin = admin("acme");
    let path = |q: &str| format!("/v1/sessions/{session}/track?{q}");

    // The zig-zag is ~20 m wide: a 30 m tolerance leaves the line and the jump's corners.
    let (status, v) = get_json(&app, &admin, &path("tolerance_m=30&max_points=40")).await;
    assert_eq!(status, 200, "{v}");
    let coords = v["geometry"]["coordinates"].as_array().unwrap();
    assert!(
        coords.len() >= 2 && coords.len() <= 8,
        "{} points",
        coords.len()
    );
    assert_eq!(coords[0], serde_json::json!([points[0].lon, points[0].lat]));
    assert_eq!(
        coords.last().unwrap(),
        &serde_json::json!([points[499].lon, points[499].lat])
    );
    assert_eq!(v["properties"]["tolerance_m"], 30.0);

    // No tolerance but the server's bound of 40: the tolerance is raised to fit, and says so.
    let (status, v) = get_json(&app, &admin, &path("max_points=1000")).await;
    assert_eq!(status, 200, "{v}");
    let coords = v["geometry"]["coordinates"].as_array().unwrap();
    assert!(coords.len() <= 40, "{} points over the bound", coords.len());
    assert_eq!(v["properties"]["max_points"], 40);
    assert!(
        v["properties"]["tolerance_m"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(v["properties"]["requested_tolerance_m"], 0.0);

    // Points: one Feature per kept fix with its properties; the jump is flagged.
    let (status, v) = get_json(&app, &admin, &path("format=points&max_points=500")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "FeatureCollection");
    let features = v["features"].as_array().unwrap();
    assert!(features.len() <= 40);
    for f in features {
        assert_eq!(f["type"], "Feature");
        assert_eq!(f["geometry"]["type"], "Point");
        assert!(f["properties"]["recorded_at"].is_string(), "{f}");
        assert!(f["properties"]["accuracy"].is_number(), "{f}");
        assert!(f["properties"]["jump"].is_boolean(), "{f}");
    }
    let (_, all) = get_json(&app, &admin, &path("format=points&tolerance_m=0.5")).await;
    let jumps: Vec<&Value> = all["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["properties"]["jump"] == true)
        .collect();
    assert!(
        !jumps.is_empty(),
        "the jump's points are kept at a small tolerance and flagged"
    );

    for (q, what) in [
        ("tolerance_m=-1", "tolerance_m"),
        ("tolerance_m=abc", "tolerance_m"),
        ("max_points=1", "max_points"),
        ("format=kml", "format"),
    ] {
        let (status, v) = get_json(&app, &admin, &path(q)).await;
        assert_eq!(status, 400, "{q}: {v}");
        assert_eq!(v["error"], "invalid_query", "{q}: {v}");
        assert!(v["message"].as_str().unwrap().contains(what), "{q}: {v}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_longer_than_the_read_bound_is_read_thinned_with_its_last_point() {
    let (app, scope, device, session) = app_with_session(|c| c.track.max_read_points = 100).await;
    let points = zigzag(1000, Utc::now() - Duration::minutes(30));
    write_track(&scope, "acme", "acme-phone", &session, &points).await;
    let (status, v) = get_json(&app, &device, &format!("/v1/sessions/{session}/track")).await;
    assert_eq!(status, 200, "{v}");
    let coords = v["geometry"]["coordinates"].as_array().unwrap();
    assert!(coords.len() <= 100, "{}", coords.len());
    assert!(v["properties"]["stride"].as_i64().unwrap() > 1, "{v}");
    assert_eq!(v["properties"]["fix_count"], 1000);
    assert_eq!(coords[0], serde_json::json!([points[0].lon, points[0].lat]));
    assert_eq!(
        coords.last().unwrap(),
        &serde_json::json!([points[999].lon, points[999].lat])
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_session_has_the_statistics_of_its_track() {
    let (app, scope, device, session) = app_with_session(|_| {}).await;
    let (_, before) = get_json(&app, &device, &format!("/v1/sessions/{session}")).await;
    assert!(
        before.get("stats").is_none(),
        "no stats before the tracker saw a fix: {before}"
    );
    let (_, v) = get_json(&app, &device, &format!("/v1/sessions/{session}/track")).await;
    assert!(
        v["geometry"].is_null(),
        "an empty track has no geometry: {v}"
    );
    assert_eq!(v["properties"]["points"], 0);

    let points = zigzag(101, Utc::now() - Duration::minutes(5));
    let stats = write_track(&scope, "acme", "acme-phone", &session, &points).await;
    let (status, v) = get_json(&app, &device, &format!("/v1/sessions/{session}")).await;
    assert_eq!(status, 200, "{v}");
    let s = &v["stats"];
    assert_eq!(s["fix_count"], 101);
    assert_eq!(s["jumps"], 2, "into the jump and back: {s}");
    assert!((s["distance_m"].as_f64().unwrap() - stats.distance_m).abs() < 1e-6);
    assert_eq!(s["duration_secs"], 100.0);
    assert!((s["avg_speed_mps"].as_f64().unwrap() - stats.distance_m / 100.0).abs() < 1e-9);
    assert!(
        s["max_speed_mps"].as_f64().unwrap() < MAX_MPS,
        "a jump is not the max: {s}"
    );
    assert_eq!(s["first_fix"]["lat"], points[0].lat);
    assert_eq!(s["last_fix"]["lon"], points[100].lon);
    assert_eq!(s["bbox"]["max_lon"], 13.4 + 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_position_is_not_found_until_tracked_then_the_latest_fix() {
    let (app, scope, device, session) = app_with_session(|_| {}).await;
    let admin = admin("acme");
    let (status, v) = get_json(&app, &admin, "/v1/devices/acme-phone/position").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("position_not_found")),
        "{v}"
    );
    let (status, v) = get_json(&app, &admin, "/v1/devices/no-such-phone/position").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("device_not_found")),
        "{v}"
    );
    let (status, v) = get_json(&app, &admin, "/v1/devices/bad%20id/position").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("invalid_id")),
        "{v}"
    );

    let points = zigzag(10, Utc::now() - Duration::minutes(1));
    write_track(&scope, "acme", "acme-phone", &session, &points).await;
    for token in [&admin, &device] {
        let (status, v) = get_json(&app, token, "/v1/devices/acme-phone/position").await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["device_id"], "acme-phone");
        assert_eq!(v["session_id"], session);
        assert_eq!(v["lat"], points[9].lat);
        assert_eq!(v["lon"], points[9].lon);
        assert_eq!(v["accuracy"], 4.0);
    }
    // Another device of the tenant reads it as a device that does not exist.
    let other = app.device_token("acme", "acme-tablet").await;
    let (status, v) = get_json(&app, &other, "/v1/devices/acme-phone/position").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (404, Some("device_not_found")),
        "{v}"
    );
    let (status, v2) = get_json(&app, &other, "/v1/devices/no-such-phone/position").await;
    assert_eq!((status, &v2), (404, &v));
    // A partner has no tenant to read a device in.
    let partner = kit::token(kit::JWT_SECRET, "-", "acme-partner", "partner", 600);
    let r = app.get(&partner, "/v1/devices/acme-phone/position").await;
    assert_eq!(r.status(), 403);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_track_stats_and_positions_read_like_unknown_ids() {
    let (app, scope, _device, session) = app_with_session(|_| {}).await;
    write_track(
        &scope,
        "acme",
        "acme-phone",
        &session,
        &zigzag(20, Utc::now() - Duration::minutes(1)),
    )
    .await;
    let globex_device = app.device_token("globex", "globex-phone").await;
    let globex_session = app.session_id(&globex_device).await;
    let globex = admin("globex");
    let unknown = Uuid::new_v4().to_string();
    for token in [&globex, &globex_device] {
        for path in [
            "/v1/sessions/{}/track",
            "/v1/sessions/{}/track?format=points&tolerance_m=1",
            "/v1/sessions/{}",
        ] {
            let foreign = get_json(&app, token, &path.replace("{}", &session)).await;
            let missing = get_json(&app, token, &path.replace("{}", &unknown)).await;
            assert_eq!(foreign.0, 404, "{path}: {}", foreign.1);
            assert_eq!(foreign, missing, "{path}");
            assert!(!foreign.1.to_string().contains("acme"), "{}", foreign.1);
        }
    }
    let foreign = get_json(&app, &globex, "/v1/devices/acme-phone/position").await;
    let missing = get_json(&app, &globex, "/v1/devices/nodevice-x/position").await;
    assert_eq!(foreign, missing);
    assert_eq!(foreign.1["error"], "device_not_found");
    // globex's own session has an empty track: acme's rows never show through.
    let (status, v) = get_json(
        &app,
        &globex,
        &format!("/v1/sessions/{globex_session}/track"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["properties"]["fix_count"], 0);
    app.stop().await;
}
