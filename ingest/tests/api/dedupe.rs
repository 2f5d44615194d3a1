//! A retry is never stored twice, and a batch id means one set of fixes.

use std::collections::HashSet;
use std::time::Duration;

use locus_testkit as kit;
use serde_json::Value;

use crate::helpers::{batch, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_batch_is_answered_again_but_stored_once() {
    let (app, scope) = spawn_app().await;
    let token = kit::device_token("acme", "phone-2");
    let id = app.session_id(&token).await;
    let body = batch("same-batch", 10);
    let first: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    let second = app.post_fixes(&token, &id, &body).await;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["accepted"], first["accepted"]);

    // A marker batch after the duplicate: once it is on Kafka, so would the duplicate be.
    app.post_fixes(&token, &id, &batch("marker", 1)).await;
    let records = kit::read_topic(&scope.locations_topic(), 12, Duration::from_secs(15)).await;
    assert_eq!(records.len(), 11, "10 fixes once, plus the marker");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_id_reused_for_other_fixes_is_refused_with_409_and_not_stored() {
    let (app, scope) = spawn_app().await;
    let token = kit::device_token("acme", "phone-reuse");
    let id = app.session_id(&token).await;
    let first = batch("reused", 2);
    assert_eq!(app.post_fixes(&token, &id, &first).await.status(), 202);
    // Other fixes under the same id: a client bug, not a retry.
    let other = batch("reused", 3);
    let r = app.post_fixes(&token, &id, &other).await;
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "batch_id_reused");
    assert!(
        body["message"].as_str().unwrap().contains("reused"),
        "{body}"
    );
    // The very same fixes again are still a retry.
    let again = app.post_fixes(&token, &id, &first).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);

    let records = app
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 3, "the first batch once, plus the marker");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_without_an_id_retried_after_a_lost_answer_is_stored_once() {
    let (app, scope) = spawn_app().await;
    let token = kit::device_token("acme", "phone-noid");
    let id = app.session_id(&token).await;
    let mut body = batch("unused", 4);
    body.as_object_mut().unwrap().remove("batch_id");
    let first: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    // The client never saw that answer and sends the batch again.
    let second: Value = app
        .post_fixes(&token, &id, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["batch_id"], first["batch_id"]);

    let records = app
        .records_through_marker(&token, &id, &scope.locations_topic())
        .await;
    assert_eq!(records.len(), 5, "4 fixes once, plus the marker");
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r.value["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    app.stop().await;
}
