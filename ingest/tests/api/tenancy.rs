//! Tenants are walled off: another tenant's session reads as not found, never forbidden;
//! and only the devices registered in a tenant start sessions there.

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{Scope, batch, buffered_entries, spawn_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tenant_cannot_read_stop_or_post_to_the_session() {
    let scope = Scope::new().await;
    // API only: whatever a refused request wrote would still be in Redis to be seen.
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let owner = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&owner).await;
    // Same device id, other tenant (registered there): the tenant is the wall, not the
    // device name.
    let intruder = scope.device_token("globex", "phone-1").await;

    let get = app.get(&intruder, &format!("/v1/sessions/{id}")).await;
    assert_eq!(get.status(), 404);
    assert_eq!(
        get.json::<Value>().await.unwrap()["error"],
        "session_not_found"
    );
    let stop = app.stop_session(&intruder, &id).await;
    assert_eq!(stop.status(), 404);
    let post = app.post_fixes(&intruder, &id, &batch("evil", 3)).await;
    assert_eq!(post.status(), 404);
    let list: Value = app
        .get(&intruder, "/v1/sessions")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"], serde_json::json!([]));

    // Another device of the same tenant does not see it either.
    let sibling = scope.device_token("acme", "phone-2").await;
    let get = app.get(&sibling, &format!("/v1/sessions/{id}")).await;
    assert_eq!(get.status(), 404);
    // The owner's session is untouched and holds nothing but its start event.
    let own: Value = app
        .get(&owner, &format!("/v1/sessions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(own["status"], "active");
    let entries = buffered_entries(&scope, 4).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["type"], "session_event");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_is_not_registered_cannot_start_a_session() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    // The same device id is registered in another tenant only: the registry is per tenant.
    scope.device_token("acme", "phone-1").await;
    // A valid token of its tenant (it names the device), but no registration behind it.
    let stranger = kit::device_token("globex", "phone-1");
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&stranger)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "device_not_registered", "{body}");
    assert!(
        !body["message"].as_str().unwrap_or("").is_empty(),
        "the answer says how to register: {body}"
    );

    // Nothing was written: the token did not create its tenant or device (as it once did),
    // no session, nothing buffered.
    let pool = sqlx::PgPool::connect(&scope.owner_url).await.unwrap();
    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenants WHERE id = 'globex'), \
                (SELECT count(*) FROM devices WHERE tenant_id = 'globex'), \
                (SELECT count(*) FROM sessions)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(rows, (0, 0, 0), "(tenants, devices, sessions) written");
    assert_eq!(buffered_entries(&scope, 4).await, Vec::<Value>::new());

    // Registered, the same token starts its session: the registration was all it lacked.
    kit::register_device(&scope.owner_url, "globex", "phone-1").await;
    let started = app.start_session(&stranger).await;
    assert_eq!(started["status"], "active");
    app.stop().await;
}
