//! Geofences through the admin API: a tenant admin puts (creates or replaces), reads, lists
//! and deletes its own fences; each change is audited; an area locus-geo cannot use is
//! refused saying where and why; another tenant's fence reads like one that does not exist.

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, TestApp, spawn_in};

/// A tenant admin's token for `tenant`, which is registered first.
async fn admin(scope: &Scope, tenant: &str) -> String {
    kit::register_device(&scope.owner_url, tenant, "phone-1").await;
    kit::token(
        kit::JWT_SECRET,
        tenant,
        &format!("admin@{tenant}"),
        "tenant_admin",
        600,
    )
}

fn square() -> Value {
    json!({"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.42, 52.51], [13.42, 52.53], [13.40, 52.53], [13.40, 52.51]]]})
}

async fn api_app() -> (TestApp, Scope) {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    (app, scope)
}

async fn put(app: &TestApp, token: &str, id: &str, body: &Value) -> (u16, Value) {
    let r = app
        .client
        .put(app.url(&format!("/v1/geofences/{id}")))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let r = app.get(token, path).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn delete(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    let r = app
        .client
        .delete(app.url(&format!("/v1/geofences/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_creates_reads_replaces_and_deletes_a_fence() {
    let (app, scope) = api_app().await;
    let token = admin(&scope, "acme").await;

    let (status, created) = put(
        &app,
        &token,
        "depot",
        &json!({"name": "Depot", "geometry": square()}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["geofence_id"], "depot");
    assert_eq!(created["name"], "Depot");
    assert_eq!(created["geometry"], square());
    assert!(created.get("circle").is_none(), "{created}");

    let (status, read) = get(&app, &token, "/v1/geofences/depot").await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read, created);

    // Replaced by a circle: 200, the same creation time.
    let circle = json!({"lat": 52.52, "lon": 13.405, "radius_m": 250.0});
    let (status, replaced) = put(
        &app,
        &token,
        "depot",
        &json!({"name": "Depot (yard)", "circle": circle}),
    )
    .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["circle"], circle);
    assert!(replaced.get("geometry").is_none(), "{replaced}");
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_ne!(replaced["updated_at"], created["updated_at"]);

    let (status, list) = get(&app, &token, "/v1/geofences").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["geofences"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["geofences"][0]["kind"], "circle");
    assert_eq!(list["geofences"][0]["name"], "Depot (yard)");
    assert!(list["geofences"][0].get("circle").is_none(), "{list}");
    assert!(list.get("next_cursor").is_none(), "{list}");

    let (status, body) = delete(&app, &token, "depot").await;
    assert_eq!(status, 204, "{body}");
    let (status, gone) = get(&app, &token, "/v1/geofences/depot").await;
    assert_eq!(status, 404);
    assert_eq!(gone["error"], "geofence_not_found");
    let (status, again) = delete(&app, &token, "depot").await;
    assert_eq!(
        (status, &again["error"]),
        (404, &json!("geofence_not_found"))
    );

    // Each change in the audit log, by who made it.
    let owner = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, target_id, actor FROM audit_log \
         WHERE tenant_id = 'acme' AND target_kind = 'geofence' ORDER BY id",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    let actor = "admin@acme".to_owned();
    assert_eq!(
        audit,
        [
            ("geofence.set".into(), "depot".into(), actor.clone()),
            ("geofence.set".into(), "depot".into(), actor.clone()),
            ("geofence.deleted".into(), "depot".into(), actor),
        ]
    );
    owner.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_area_is_refused_saying_what_is_wrong_and_nothing_is_stored() {
    let (app, scope) = api_app().await;
    let token = admin(&scope, "acme").await;
    let open_ring = json!({"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.42, 52.51], [13.42, 52.53], [13.40, 52.53]]]});
    let swapped = json!({"type": "Polygon", "coordinates": [[[52.51, 113.40], [52.51, 113.42], [52.53, 113.42], [52.51, 113.40]]]});
    let cases = [
        (
            json!({"geometry": open_ring}),
            422,
            "invalid_geofence",
            "not closed",
        ),
        (
            json!({"geometry": swapped}),
            422,
            "invalid_geofence",
            "longitude",
        ),
        (
            json!({"geometry": {"type": "Point", "coordinates": [13.4, 52.5]}}),
            422,
            "invalid_geofence",
            "Point",
        ),
        (
            json!({"geometry": {"type": "Polygon", "coordinates": []}}),
            422,
            "invalid_geofence",
            "coordinates",
        ),
        (
            json!({"circle": {"lat": 52.5, "lon": 13.4, "radius_m": 0}}),
            422,
            "invalid_geofence",
            "radius",
        ),
        (
            json!({"circle": {"lat": 95.0, "lon": 13.4, "radius_m": 10}}),
            422,
            "invalid_geofence",
            "out of range",
        ),
        (
            json!({"geometry": square(), "circle": {"lat": 52.5, "lon": 13.4, "radius_m": 10}}),
            400,
            "invalid_body",
            "both",
        ),
        (json!({"name": "x"}), 400, "invalid_body", "neither"),
        (
            json!({"name": "", "geometry": square()}),
            400,
            "invalid_body",
            "name",
        ),
        (
            json!({"geometry": square(), "colour": "red"}),
            400,
            "invalid_body",
            "colour",
        ),
        (
            json!({"circle": {"lat": 52.5, "lon": 13.4}}),
            400,
            "invalid_body",
            "radius_m",
        ),
    ];
    for (body, status, code, says) in cases {
        let (got, answer) = put(&app, &token, "depot", &body).await;
        assert_eq!(
            (got, &answer["error"]),
            (status, &json!(code)),
            "{body}: {answer}"
        );
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let long = "x".repeat(129);
    for bad_id in ["a%20b", long.as_str(), "caf%C3%A9"] {
        let (got, answer) = put(&app, &token, bad_id, &json!({"geometry": square()})).await;
        assert_eq!(
            (got, &answer["error"]),
            (400, &json!("invalid_id")),
            "{bad_id}: {answer}"
        );
        let (got, answer) = get(&app, &token, &format!("/v1/geofences/{bad_id}")).await;
        assert_eq!(
            (got, &answer["error"]),
            (400, &json!("invalid_id")),
            "{bad_id}: {answer}"
        );
    }
    let (status, list) = get(&app, &token, "/v1/geofences").await;
    assert_eq!(status, 200);
    assert_eq!(list["geofences"], json!([]), "a refused fence was stored");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_fence_reads_like_one_that_does_not_exist() {
    let (app, scope) = api_app().await;
    let acme = admin(&scope, "acme").await;
    let globex = admin(&scope, "globex").await;
    let (status, _) = put(
        &app,
        &acme,
        "depot",
        &json!({"name": "Acme depot", "geometry": square()}),
    )
    .await;
    assert_eq!(status, 201);

    let foreign = get(&app, &globex, "/v1/geofences/depot").await;
    let missing = get(&app, &globex, "/v1/geofences/nothing").await;
    assert_eq!(foreign, missing);
    assert_eq!(foreign.0, 404);
    assert_eq!(
        delete(&app, &globex, "depot").await,
        delete(&app, &globex, "nothing").await
    );
    let (_, list) = get(&app, &globex, "/v1/geofences").await;
    assert_eq!(list["geofences"], json!([]));

    // Globex's own fence of the same id is its own: acme's is untouched.
    let circle = json!({"lat": 1.0, "lon": 2.0, "radius_m": 5.0});
    let (status, own) = put(&app, &globex, "depot", &json!({"circle": circle})).await;
    assert_eq!(status, 201, "{own}");
    let (_, acme_depot) = get(&app, &acme, "/v1/geofences/depot").await;
    assert_eq!(acme_depot["name"], "Acme depot");
    assert_eq!(acme_depot["geometry"], square());
    let (_, globex_depot) = get(&app, &globex, "/v1/geofences/depot").await;
    assert_eq!(globex_depot["circle"], circle);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fence_list_pages_by_id_and_only_tenant_admins_manage_fences() {
    let (app, scope) = api_app().await;
    let token = admin(&scope, "acme").await;
    for id in ["c-yard", "a-depot", "b:gate.2"] {
        let (status, body) = put(
            &app,
            &token,
            id,
            &json!({"circle": {"lat": 52.5, "lon": 13.4, "radius_m": 100}}),
        )
        .await;
        assert_eq!(status, 201, "{id}: {body}");
    }
    let (status, first) = get(&app, &token, "/v1/geofences?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let ids = |page: &Value| -> Vec<String> {
        page["geofences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["geofence_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["a-depot", "b:gate.2"]);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = get(
        &app,
        &token,
        &format!("/v1/geofences?limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&second), ["c-yard"]);
    assert!(second.get("next_cursor").is_none());
    let (status, bad) = get(&app, &token, "/v1/geofences?cursor=zz").await;
    assert_eq!((status, &bad["error"]), (400, &json!("invalid_cursor")));

    let device = app.device_token("acme", "phone-1").await;
    let partner = kit::token(kit::JWT_SECRET, "-", "p-1", "partner", 600);
    let platform = kit::token(kit::JWT_SECRET, "-", "ops@platform", "platform_admin", 600);
    for other in [&device, &partner, &platform] {
        let (status, body) = put(&app, other, "x", &json!({"geometry": square()})).await;
        assert_eq!(
            (status, &body["error"]),
            (403, &json!("forbidden")),
            "{body}"
        );
        assert_eq!(get(&app, other, "/v1/geofences").await.0, 403);
        assert_eq!(get(&app, other, "/v1/geofences/a-depot").await.0, 403);
        assert_eq!(delete(&app, other, "a-depot").await.0, 403);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_fence_forgets_where_devices_stood_with_it() {
    let (app, scope) = api_app().await;
    let token = admin(&scope, "acme").await;
    for id in ["depot", "yard"] {
        let (status, _) = put(&app, &token, id, &json!({"geometry": square()})).await;
        assert_eq!(status, 201);
    }
    // As the tracker leaves them: the device is inside both.
    let owner = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    sqlx::query(
        "INSERT INTO geofence_states (tenant_id, device_id, geofence_id, inside, at, record_id) \
         VALUES ('acme', 'phone-1', 'depot', true, now(), gen_random_uuid()), \
                ('acme', 'phone-1', 'yard', true, now(), gen_random_uuid())",
    )
    .execute(&owner)
    .await
    .unwrap();
    assert_eq!(delete(&app, &token, "depot").await.0, 204);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT geofence_id FROM geofence_states WHERE tenant_id = 'acme'")
            .fetch_all(&owner)
            .await
            .unwrap();
    assert_eq!(left, ["yard"]);
    owner.close().await;
    app.stop().await;
}
