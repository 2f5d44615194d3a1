//! Tenants are walled off: another tenant's session reads as not found, never forbidden.

use locus_ingest::config::Role;
use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{Scope, batch, buffered_entries, spawn_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tenant_cannot_read_stop_or_post_to_the_session() {
    let scope = Scope::new().await;
    // API only: whatever a refused request wrote would still be in Redis to be seen.
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let owner = kit::device_token("acme", "phone-1");
    let id = app.session_id(&owner).await;
    // Same device id, other tenant: the tenant is the wall, not the device name.
    let intruder = kit::device_token("globex", "phone-1");

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
    let sibling = kit::device_token("acme", "phone-2");
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
