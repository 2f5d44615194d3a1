//! The client-app routes through the real app: each format's body as the app sends it,
//! authenticated by the device credential (no token exchange), stored in the device's
//! implicit session and read back from Kafka in native units; retries, refusals,
//! heartbeats, revocation, rollover, gzip, and the seed system's aliases.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, spawn_in};

/// A platform admin's dev token.
fn platform_admin() -> String {
    kit::token(kit::JWT_SECRET, "-", "ops@platform", "platform_admin", 600)
}

fn tenant_admin(tenant: &str) -> String {
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    )
}

/// Creates `tenant` (once) and registers `device` through the admin API; returns the
/// device's credential.
async fn credential(app: &TestApp, tenant: &str, device: &str) -> String {
    let r = app
        .client
        .post(app.url("/v1/tenants"))
        .bearer_auth(platform_admin())
        .json(&json!({"tenant_id": tenant}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 201 || r.status() == 409,
        "create tenant: {}",
        r.text().await.unwrap()
    );
    let r = app
        .client
        .post(app.url("/v1/devices"))
        .bearer_auth(tenant_admin(tenant))
        .json(&json!({"device_id": device}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "register: {}", r.text().await.unwrap());
    let body: Value = r.json().await.unwrap();
    body["credential"]
        .as_str()
        .expect("a credential")
        .to_owned()
}

fn ago(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::seconds(secs)
}

/// A location as the background-geolocation SDK posts it (its docs' example, with -1
/// for an unknown speed).
fn transistor_location(uuid: &str, secs_ago: i64) -> Value {
    json!({
        "coords": {
            "latitude": 45.5192, "longitude": -73.6169, "accuracy": 15.2,
            "speed": -1, "heading": 90.5, "altitude": 42.0,
            "altitude_accuracy": 2.1, "heading_accuracy": -1, "speed_accuracy": -1
        },
        "extras": {"route": "north"},
        "is_moving": true,
        "event": "motionchange",
        "odometer": 1234.5,
        "uuid": uuid,
        "activity": {"type": "walking", "confidence": 100},
        "battery": {"is_charging": true, "level": 0.55},
        "timestamp": ago(secs_ago).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    })
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

/// The location records of `device` on the topic, read until `done` holds of them.
async fn records_of(
    scope: &Scope,
    device: &str,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let of_device = |r: &[kit::KafkaRecord]| -> Vec<Value> {
        r.iter()
            .filter(|r| r.value["device_id"] == device)
            .map(|r| r.value.clone())
            .collect()
    };
    let records = kit::read_topic_until(&scope.locations_topic(), Duration::from_secs(20), |r| {
        done(&of_device(r))
    })
    .await;
    of_device(&records)
}

fn with_key<'a>(records: &'a [Value], key: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["fix_key"] == key).collect()
}

async fn post_transistor(app: &TestApp, credential: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/v1/clients/transistor"))
        .bearer_auth(credential)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn osmand(app: &TestApp, query: &str) -> (u16, String) {
    let r = app
        .client
        .get(app.url(&format!("/v1/clients/osmand?{query}")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn metric(app: &TestApp, line_prefix: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transistor_locations_arrive_on_kafka_in_native_units_and_a_retry_is_one_record() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    let credential = credential(&app, "acme", "sdk-phone").await;

    let one = json!({"location": transistor_location("uuid-1", 30), "device_id": "sdk-phone"});
    let (status, answer) = post_transistor(&app, &credential, &one).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), &answer["duplicate"]),
        (Some(1), &json!(false))
    );
    // The SDK retries a location whose answer it lost: recognised, not stored again.
    let (status, answer) = post_transistor(&app, &credential, &one).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], true, "{answer}");

    // A batch sync, gzip-compressed, with the first location in it again.
    let sync = json!({"location": [
        transistor_location("uuid-1", 30),
        transistor_location("uuid-2", 20),
        transistor_location("uuid-3", 10),
    ]});
    let r = app
        .client
        .post(app.url("/v1/clients/transistor"))
        .bearer_auth(&credential)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(sync.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let records = records_of(&scope, "sdk-phone", |r| {
        !with_key(r, "uuid-2").is_empty() && !with_key(r, "uuid-3").is_empty()
    })
    .await;
    let first = with_key(&records, "uuid-1");
    // The batch sync carried uuid-1 again in another batch: the same record id (from the
    // uuid), so a consumer that keys on it sees one fix.
    let ids: std::collections::BTreeSet<_> =
        first.iter().map(|r| r["record_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one record id for one uuid: {first:?}");
    let r = first[0];
    assert_eq!(
        (r["lat"].as_f64(), r["lon"].as_f64()),
        (Some(45.5192), Some(-73.6169))
    );
    let battery = r["battery"].as_f64().unwrap();
    assert!((battery - 55.0).abs() < 1e-9, "level 0.55 is 55 %: {r}");
    assert!(r["speed"].is_null(), "-1 is unknown: {r}");
    assert_eq!(r["heading"].as_f64(), Some(90.5));
    assert_eq!(r["accuracy"].as_f64(), Some(15.2));
    assert_eq!(r["tenant_id"], "acme");
    let attributes = &r["attributes"];
    assert_eq!(attributes["odometer"].as_f64(), Some(1234.5), "{r}");
    assert_eq!(attributes["is_moving"], true, "{r}");
    let sessions: std::collections::BTreeSet<_> = records
        .iter()
        .map(|r| r["session_id"].to_string())
        .collect();
    assert_eq!(sessions.len(), 1, "one implicit session: {sessions:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmand_positions_from_the_url_arrive_in_metres_per_second_and_a_retried_get_is_one_record()
{
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    let credential = credential(&app, "acme", "tracker-7").await;
    let t = ago(20).timestamp();
    let query = format!(
        "token={credential}&id=tracker-7&lat=52.5200&lon=13.4050&timestamp={t}&speed=10&bearing=270&altitude=34&accuracy=8&batt=77&hdop=0.9&charge=true"
    );
    let (status, body) = osmand(&app, &query).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = osmand(&app, &query).await;
    assert_eq!(status, 200, "the retry: {body}");

    // A heartbeat: no position, counted, not forwarded.
    let before = metric(&app, "locus_client_heartbeats_total{format=\"osmand\"}").await;
    let (status, body) = osmand(&app, &format!("token={credential}&id=tracker-7")).await;
    assert_eq!(status, 200, "heartbeat: {body}");
    let after = metric(&app, "locus_client_heartbeats_total{format=\"osmand\"}").await;
    assert!(
        after >= before + 1.0,
        "heartbeat counted: {before} -> {after}"
    );

    // POST with a form body and the `location=lat,lon` form, millisecond timestamp.
    let r = app
        .client
        .post(app.url(&format!("/v1/clients/osmand?token={credential}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "deviceid=tracker-7&location=52.53,13.41&timestamp={}",
            ago(10).timestamp_millis()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let records = records_of(&scope, "tracker-7", |r| {
        r.iter().any(|r| r["lat"].as_f64() == Some(52.53))
    })
    .await;
    let first: Vec<&Value> = records
        .iter()
        .filter(|r| r["lat"].as_f64() == Some(52.52))
        .collect();
    assert_eq!(first.len(), 1, "a retried GET is one record: {records:?}");
    let r = first[0];
    let speed = r["speed"].as_f64().unwrap();
    assert!((speed - 5.14444).abs() < 1e-6, "10 knots in m/s: {speed}");
    assert_eq!(r["heading"].as_f64(), Some(270.0));
    assert_eq!(r["battery"].as_f64(), Some(77.0));
    assert_eq!(
        r["recorded_at"].as_str().map(|s| s.starts_with(
            &chrono::DateTime::from_timestamp(t, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string()
        )),
        Some(true),
        "{r}"
    );
    assert_eq!(r["attributes"]["hdop"].as_f64(), Some(0.9), "{r}");
    assert!(
        !r.to_string().contains(&credential),
        "the credential in the URL is no attribute: {r}"
    );
    assert_eq!(
        records.len(),
        2,
        "the heartbeat was not forwarded: {records:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmand_requests_without_their_device_or_for_another_device_are_refused() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let credential = credential(&app, "acme", "tracker-8").await;
    let t = ago(5).timestamp();
    let (status, body) = osmand(
        &app,
        &format!("token={credential}&lat=1&lon=2&timestamp={t}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("missing_device") && body.contains("`id`"),
        "{body}"
    );
    let (status, body) = osmand(
        &app,
        &format!("token={credential}&id=someone-else&lat=1&lon=2&timestamp={t}"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("device_mismatch"), "{body}");
    // No credential at all, and one that is not valid.
    let (status, body) = osmand(&app, &format!("id=tracker-8&lat=1&lon=2&timestamp={t}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("?token="),
        "says where the credential goes: {body}"
    );
    let forged = format!("lcd_{}", "A".repeat(43));
    let (status, body) = osmand(&app, &format!("token={forged}&id=tracker-8&lat=1&lon=2")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_credential"), "{body}");
    // The device identifier may be the credential itself (apps with one setting).
    let (status, body) = osmand(&app, &format!("id={credential}&lat=1&lon=2&timestamp={t}")).await;
    assert_eq!(status, 200, "{body}");
    // A position that is not one: the batch answer names why.
    let (status, body) = osmand(
        &app,
        &format!("token={credential}&id=tracker-8&lat=91&lon=2&timestamp={t}"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("latitude_out_of_range"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owntracks_locations_are_stored_and_other_messages_answered_with_an_empty_list() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    let credential = credential(&app, "acme", "ot-phone").await;
    let post = |user: &'static str, body: Value| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{credential}"));
        app.client
            .post(app.url("/v1/clients/owntracks"))
            .header("authorization", format!("Basic {auth}"))
            .header("x-limit-u", user)
            .header("x-limit-d", "phone")
            .json(&body)
            .send()
    };
    let location = json!({
        "_type": "location", "tid": "op", "lat": 48.8566, "lon": 2.3522,
        "tst": ago(15).timestamp(), "acc": 12, "alt": 35, "vel": 36, "cog": 180,
        "batt": 64, "bs": 1, "conn": "w", "t": "u", "m": 1
    });
    let r = post("ot-phone", location.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    for other in [
        json!({"_type": "transition", "event": "enter", "desc": "home", "tst": ago(5).timestamp(), "wtst": 1, "lat": 1, "lon": 2, "acc": 5, "t": "c"}),
        json!({"_type": "lwt", "tst": ago(5).timestamp()}),
        json!({"_type": "waypoints", "waypoints": []}),
    ] {
        let r = post("ot-phone", other.clone()).await.unwrap();
        assert_eq!(r.status(), 200, "{other}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!([]), "{other}");
    }
    let r = post("someone-else", location.clone()).await.unwrap();
    assert_eq!(r.status(), 403, "the basic-auth user must be the device");
    let r = app
        .client
        .post(app.url("/v1/clients/owntracks"))
        .header(
            "authorization",
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("ot-phone:wrong")
            ),
        )
        .json(&location)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let records = records_of(&scope, "ot-phone", |r| !r.is_empty()).await;
    let r = &records[0];
    assert_eq!(r["speed"].as_f64(), Some(10.0), "36 km/h is 10 m/s: {r}");
    assert_eq!(r["heading"].as_f64(), Some(180.0));
    assert_eq!(r["battery"].as_f64(), Some(64.0));
    assert_eq!(r["attributes"]["tid"], "op", "{r}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overland_batches_are_stored_and_answered_ok_gzip_included() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api, Role::Forwarder], |_| {}).await;
    let credential = credential(&app, "acme", "overland-1").await;
    let feature = |lon: f64, lat: f64, secs: i64| {
        json!({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {
                "timestamp": (ago(secs) + chrono::Duration::hours(1)).naive_utc().format("%Y-%m-%dT%H:%M:%S+0100").to_string(),
                "altitude": 80, "speed": 4, "horizontal_accuracy": 5, "vertical_accuracy": -1,
                "motion": ["driving", "stationary"], "battery_state": "unplugged", "battery_level": 0.8,
                "device_id": "overland-1", "wifi": ""
            }
        })
    };
    let body = json!({"locations": [feature(-122.03, 37.33, 20), feature(-122.04, 37.34, 10)]});
    let r = app
        .client
        .post(app.url("/v1/clients/overland"))
        .bearer_auth(&credential)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"result": "ok"}));
    // Not JSON: a clear 400, never `ok`.
    let r = app
        .client
        .post(app.url("/v1/clients/overland"))
        .bearer_auth(&credential)
        .body("{\"locations\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "malformed_json");
    let records = records_of(&scope, "overland-1", |r| r.len() >= 2).await;
    let r = records
        .iter()
        .find(|r| r["lon"].as_f64() == Some(-122.03))
        .expect("lon, lat order");
    assert_eq!(r["lat"].as_f64(), Some(37.33));
    assert_eq!(r["battery"].as_f64(), Some(80.0));
    let recorded: chrono::DateTime<chrono::Utc> =
        r["recorded_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (recorded - ago(20)).num_seconds().abs() <= 3,
        "the +0100 offset is read: {r}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_routes_refuse_bad_bodies_other_roles_and_a_revoked_device_at_once() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let credential = credential(&app, "acme", "sdk-2").await;
    let r = app
        .client
        .post(app.url("/v1/clients/transistor"))
        .bearer_auth(&credential)
        .body("{\"location\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "malformed_json");
    let (status, answer) = post_transistor(&app, &credential, &json!({"hello": 1})).await;
    assert_eq!(
        (status, &answer["error"]),
        (400, &json!("invalid_body")),
        "{answer}"
    );
    let (status, answer) = post_transistor(
        &app,
        &tenant_admin("acme"),
        &json!({"location": transistor_location("u", 1)}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]),
        (403, &json!("forbidden")),
        "{answer}"
    );
    // A device token works as well as the credential.
    let token = kit::device_token("acme", "sdk-2");
    let (status, answer) = post_transistor(
        &app,
        &token,
        &json!({"location": transistor_location("u-jwt", 3)}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Cached now; the device's revocation refuses it on the next request.
    let (status, answer) = post_transistor(
        &app,
        &credential,
        &json!({"location": transistor_location("u-1", 2)}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let r = app
        .client
        .post(app.url("/v1/devices/sdk-2/revoke"))
        .bearer_auth(tenant_admin("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (status, answer) = post_transistor(
        &app,
        &credential,
        &json!({"location": transistor_location("u-2", 1)}),
    )
    .await;
    assert_eq!(
        (status, &answer["error"]),
        (401, &json!("invalid_credential")),
        "{answer}"
    );
    app.stop().await;
}

/// The sessions of `device`, newest first, as its tenant admin lists them.
async fn sessions_of(app: &TestApp, tenant: &str, device: &str) -> Vec<Value> {
    let r = app
        .get(
            &tenant_admin(tenant),
            &format!("/v1/sessions?device_id={device}"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["sessions"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_implicit_session_rolls_over_after_the_idle_time_and_after_a_stop() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| c.clients.session_idle_secs = 1).await;
    let credential = credential(&app, "acme", "idle-phone").await;
    let owned = app;
    let app = &owned;
    let credential = &credential;
    let send = |secs: i64| {
        let query = format!(
            "token={credential}&id=idle-phone&lat=52.5&lon=13.4&timestamp={}",
            ago(secs).timestamp()
        );
        async move { osmand(app, &query).await }
    };
    assert_eq!(send(30).await.0, 200);
    assert_eq!(send(29).await.0, 200);
    let sessions = sessions_of(app, "acme", "idle-phone").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let first = sessions[0]["session_id"].clone();
    // The idle time passing is the condition itself, not a wait for something else.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(send(20).await.0, 200);
    let sessions = sessions_of(app, "acme", "idle-phone").await;
    assert_eq!(sessions.len(), 2, "rolled over: {sessions:?}");
    let old = sessions.iter().find(|s| s["session_id"] == first).unwrap();
    assert_eq!(
        (&old["status"], &old["stop_reason"]),
        (&json!("stopped"), &json!("expired")),
        "{old}"
    );
    let second = sessions.iter().find(|s| s["session_id"] != first).unwrap();
    assert_eq!(second["status"], "active");

    // A stop by the tenant admin: the next fix starts a new session.
    let id = second["session_id"].as_str().unwrap();
    let r = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/stop")))
        .bearer_auth(tenant_admin("acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(send(10).await.0, 200, "after a stop");
    let sessions = sessions_of(app, "acme", "idle-phone").await;
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert_eq!(
        sessions.iter().filter(|s| s["status"] == "active").count(),
        1,
        "{sessions:?}"
    );
    owned.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_devices_first_fixes_at_once_share_one_implicit_session() {
    let scope = Scope::new().await;
    // Two replicas on one database: each resolves the device's first fix itself.
    let a = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let b = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let credential = credential(&a, "acme", "race-phone").await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let app = if i % 2 == 0 {
            a.address.clone()
        } else {
            b.address.clone()
        };
        let client = a.client.clone();
        let url = format!(
            "{app}/v1/clients/osmand?token={credential}&id=race-phone&lat=52.5&lon=13.{i}&timestamp={}",
            ago(30 - i).timestamp()
        );
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let sessions = sessions_of(&a, "acme", "race-phone").await;
    assert_eq!(sessions.len(), 1, "one implicit session: {sessions:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_routes_answer_as_the_native_ones() {
    let (app, _scope) = crate::helpers::spawn_app().await;
    let token = app.device_token("acme", "seed-phone").await;
    let r = app
        .client
        .post(app.url("/location/session/start"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let session: Value = r.json().await.unwrap();
    let id = session["session_id"].as_str().unwrap().to_owned();
    let update = |body: Value| {
        app.client
            .post(app.url("/location/update"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let one = json!({"session_id": id, "lat": 52.5, "lon": 13.4, "recorded_at": ago(5).to_rfc3339(), "accuracy": 5});
    let r = update(one.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let r = update(one).await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["duplicate"],
        true,
        "a retried point is one"
    );
    let batch = json!({"session_id": id, "batch_id": "b-1", "fixes": [
        {"lat": 52.51, "lon": 13.41, "recorded_at": ago(4).to_rfc3339()},
        {"lat": 95.0, "lon": 13.42, "recorded_at": ago(3).to_rfc3339()}
    ]});
    let r = update(batch).await.unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        (
            answer["accepted"].as_u64(),
            answer["rejected"][0]["reason"].as_str()
        ),
        (Some(1), Some("latitude_out_of_range")),
        "{answer}"
    );
    let r = update(json!({"lat": 1, "lon": 2})).await.unwrap();
    assert_eq!(r.status(), 400, "no session id");
    let r = app.get(&token, &format!("/location/session/{id}")).await;
    assert_eq!(r.status(), 200);
    let other = app.device_token("globex", "seed-phone").await;
    let r = app.get(&other, &format!("/location/session/{id}")).await;
    assert_eq!(
        r.status(),
        404,
        "another tenant's session reads as not found"
    );
    let r = app
        .client
        .post(app.url(&format!("/location/session/{id}/stop")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = update(
        json!({"session_id": id, "lat": 52.5, "lon": 13.4, "recorded_at": ago(1).to_rfc3339()}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "session_stopped");
    app.stop().await;
}
