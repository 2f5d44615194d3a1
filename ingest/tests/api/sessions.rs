//! Session lifecycle: start, one active session per device, stop, expiry.

use std::time::Duration;

use locus_testkit as kit;
use serde_json::{Value, json};

use crate::helpers::{batch, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_has_at_most_one_active_session() {
    let (app, _scope) = spawn_app().await;
    let token = app.device_token("acme", "solo").await;
    let first = app.start_session(&token).await;
    assert_eq!(first["status"], "active");
    assert_eq!(first["fix_count"], 0);
    let second = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 409);
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["error"], "session_already_active");
    assert_eq!(body["session_id"], first["session_id"]);

    let id = first["session_id"].as_str().unwrap();
    let stop = |path: String| {
        let c = app.client.clone();
        let t = token.clone();
        async move { c.post(path).bearer_auth(t).send().await.unwrap() }
    };
    assert_eq!(
        stop(app.url(&format!("/v1/sessions/{id}/stop")))
            .await
            .status(),
        200
    );
    let again = stop(app.url(&format!("/v1/sessions/{id}/stop"))).await;
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "session_stopped"
    );

    let posted = app.post_fixes(&token, id, &batch("late", 1)).await;
    assert_eq!(posted.status(), 409);
    assert_eq!(
        posted.json::<Value>().await.unwrap()["error"],
        "session_stopped"
    );

    let list: Value = app.get(&token, "/v1/sessions").await.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    // After a stop, a new session may start.
    app.start_session(&token).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_past_its_maximum_duration_expires_and_refuses_batches_with_409() {
    let (app, scope) = spawn_app().await;
    let token = scope.device_token("acme", "short-lived").await;
    let r = app
        .client
        .post(app.url("/v1/sessions"))
        .bearer_auth(&token)
        .json(&json!({ "max_duration_secs": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let posted = app.post_fixes(&token, &id, &batch("too-late", 2)).await;
    assert_eq!(posted.status(), 409);
    let body: Value = posted.json().await.unwrap();
    assert_eq!(body["error"], "session_expired");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("start a new session")
    );

    let s: Value = app
        .get(&token, &format!("/v1/sessions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(s["status"], "stopped");
    assert_eq!(s["stop_reason"], "expired");

    let events = kit::read_topic(&scope.events_topic(), 2, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 2, "started and stopped, once each");
    assert_eq!(events[1].value["kind"], "stopped");
    assert_eq!(events[1].value["reason"], "expired");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let (app, _scope) = spawn_app().await;
    let h = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(body["checks"]["kafka"], "ok");
    let m = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(m.status(), 200);
    let text = m.text().await.unwrap();
    assert!(text.contains("locus_http_requests_total"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_stored_batch_after_the_stop_still_hears_it_was_stored() {
    let (app, _scope) = spawn_app().await;
    let token = app.device_token("acme", "retrier").await;
    let id = app.session_id(&token).await;
    let body = batch("last-batch", 3);
    assert_eq!(app.post_fixes(&token, &id, &body).await.status(), 202);
    let stop = app.stop_session(&token, &id).await;
    assert_eq!(stop.status(), 200);
    // The device never saw the first 202 (a timeout) and retries after stopping.
    let retry = app.post_fixes(&token, &id, &body).await;
    assert_eq!(retry.status(), 202);
    let answer: Value = retry.json().await.unwrap();
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["accepted"], 3);
    // A new batch is refused.
    assert_eq!(
        app.post_fixes(&token, &id, &batch("new", 1)).await.status(),
        409
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_batch_is_buffered_after_its_sessions_stop_event_even_when_they_race() {
    let scope = crate::helpers::Scope::new().await;
    let app = crate::helpers::spawn_in(&scope, &[locus_ingest::config::Role::Api], |c| {
        c.rates.device_fixes_per_sec = 1_000_000;
        c.rates.device_burst = 1_000_000;
    })
    .await;
    let token = scope.device_token("acme", "racer").await;
    let id = app.session_id(&token).await;
    // Posters that do not pause, so that some batch is between its session read and its
    // append when the stop lands.
    let mut posters = Vec::new();
    for t in 0..8 {
        let (client, url, token) = (
            app.client.clone(),
            app.url(&format!("/v1/sessions/{id}/locations")),
            token.clone(),
        );
        posters.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for n in 0.. {
                let batch_id = format!("p{t}-{n}");
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(&batch_id, 1))
                    .send()
                    .await
                    .unwrap();
                match r.status().as_u16() {
                    202 => accepted.push(batch_id),
                    409 => return accepted,
                    other => panic!("unexpected {other}"),
                }
            }
            accepted
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = app.stop_session(&token, &id).await;
    assert_eq!(stopped.status(), 200);
    let mut accepted = Vec::new();
    for p in posters {
        accepted.extend(p.await.unwrap());
    }
    assert!(!accepted.is_empty());

    let entries: Vec<Value> = crate::helpers::buffered_entries(&scope, 4)
        .await
        .into_iter()
        .filter(|e| e["session_id"] == id.as_str())
        .collect();
    let stop_at = entries
        .iter()
        .position(|e| e["type"] == "session_event" && e["kind"] == "stopped")
        .expect("the stop event is buffered");
    let late: Vec<&Value> = entries[stop_at..]
        .iter()
        .filter(|e| e["type"] == "fixes")
        .collect();
    assert!(
        late.is_empty(),
        "{} batches were buffered after the stop event, e.g. {}",
        late.len(),
        late[0]["batch_id"]
    );
    let buffered = entries.iter().filter(|e| e["type"] == "fixes").count();
    assert_eq!(buffered, accepted.len(), "every 202 is in the buffer, once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stopped_through_another_replica_refuses_the_next_batch_on_a_replica_that_cached_it()
 {
    let scope = crate::helpers::Scope::new().await;
    // A cache bound far longer than the test: only the buffer's closed mark can refuse.
    let replica = |c: &mut locus_ingest::Config| c.cache.session_secs = 600;
    let a = crate::helpers::spawn_in(&scope, &[locus_ingest::config::Role::Api], replica).await;
    let b = crate::helpers::spawn_in(&scope, &[locus_ingest::config::Role::Api], replica).await;
    let token = scope.device_token("acme", "two-replicas").await;
    let id = a.session_id(&token).await;
    // B reads the active row and keeps it.
    let stored = batch("on-b", 1);
    let r = b.post_fixes(&token, &id, &stored).await;
    assert_eq!(r.status(), 202);
    let r = a.stop_session(&token, &id).await;
    assert_eq!(r.status(), 200);
    let r = b.post_fixes(&token, &id, &batch("after-stop", 1)).await;
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap());
    // A retry of the batch stored before the stop still hears that it was stored.
    let r = b.post_fixes(&token, &id, &stored).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["duplicate"], true, "{body}");
}
