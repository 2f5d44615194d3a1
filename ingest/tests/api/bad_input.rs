//! Every bad input gets a clear answer and writes nothing.

use std::io::Write;

use locus_ingest::config::Role;
use locus_testkit as kit;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::{Scope, batch, buffered_entries, spawn_in};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_status_and_a_json_reason_and_nothing_is_buffered() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.limits.max_body_bytes = 20_000;
        c.limits.max_fixes_per_batch = 50;
    })
    .await;
    let token = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&token).await;
    let url = app.url(&format!("/v1/sessions/{id}/locations"));
    let post = || app.client.post(&url).bearer_auth(&token);
    let old = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();

    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("malformed JSON", post().header(CONTENT_TYPE, "application/json").body("{\"fixes\": [ {"), 400, "malformed_json"),
        ("wrong content type", post().header(CONTENT_TYPE, "text/plain").body(batch("b", 1).to_string()), 415, "unsupported_media_type"),
        ("no content type", post().body(batch("b", 1).to_string()), 415, "unsupported_media_type"),
        ("unknown content encoding", post().header(CONTENT_TYPE, "application/json").header(CONTENT_ENCODING, "br").body(batch("b", 1).to_string()), 415, "unsupported_media_type"),
        ("fixes is not a list", post().json(&json!({"fixes": 3})), 400, "invalid_body"),
        ("empty batch", post().json(&json!({"fixes": []})), 400, "empty_batch"),
        ("oversized body", post().json(&json!({"fixes": [], "pad": "x".repeat(30_000)})), 413, "body_too_large"),
        ("gzip that inflates past the limit", post().header(CONTENT_TYPE, "application/json").header(CONTENT_ENCODING, "gzip").body(gzip(json!({"pad": "x".repeat(500_000)}).to_string().as_bytes())), 413, "body_too_large"),
        ("corrupt gzip", post().header(CONTENT_TYPE, "application/json").header(CONTENT_ENCODING, "gzip").body(vec![1, 2, 3, 4]), 400, "malformed_gzip"),
        ("too many fixes", post().json(&batch("big", 51)), 413, "too_many_fixes"),
        ("invalid batch id", post().json(&json!({"batch_id": "has space", "fixes": [{"lat": 1, "lon": 1, "recorded_at": chrono::Utc::now()}]})), 400, "invalid_batch_id"),
        ("every fix invalid", post().json(&json!({"fixes": [{"lat": 91, "lon": 0, "recorded_at": chrono::Utc::now()}, {"lat": 0, "lon": 0, "recorded_at": old}]})), 422, "all_fixes_rejected"),
        ("unknown session", app.client.post(app.url(&format!("/v1/sessions/{}/locations", uuid::Uuid::now_v7()))).bearer_auth(&token).json(&batch("b", 1)), 404, "session_not_found"),
        ("session id that is not a uuid", app.client.post(app.url("/v1/sessions/not-a-uuid/locations")).bearer_auth(&token).json(&batch("b", 1)), 404, "session_not_found"),
        ("missing token", app.client.post(&url).json(&batch("b", 1)), 401, "unauthorized"),
        ("expired token", app.client.post(&url).bearer_auth(kit::token(kit::JWT_SECRET, "acme", "phone-1", "device", -600)).json(&batch("b", 1)), 401, "unauthorized"),
        ("token signed with another secret", app.client.post(&url).bearer_auth(kit::token("not-the-secret", "acme", "phone-1", "device", 600)).json(&batch("b", 1)), 401, "unauthorized"),
        ("garbage token", app.client.post(&url).bearer_auth("abc.def.ghi").json(&batch("b", 1)), 401, "unauthorized"),
        ("unknown endpoint", app.client.get(app.url("/v1/nowhere")).bearer_auth(&token), 404, "not_found"),
        ("wrong method", app.client.delete(app.url("/v1/sessions")).bearer_auth(&token), 405, "method_not_allowed"),
        ("limit that is not a number", app.client.get(app.url("/v1/sessions?limit=abc")).bearer_auth(&token), 400, "invalid_query"),
        ("non-ASCII idempotency key", post().header("idempotency-key", reqwest::header::HeaderValue::from_bytes(b"caf\xe9").unwrap()).json(&json!({"fixes": [{"lat": 1, "lon": 1, "recorded_at": chrono::Utc::now()}]})), 400, "invalid_batch_id"),
        ("admin token posting fixes", app.client.post(&url).bearer_auth(kit::token(kit::JWT_SECRET, "acme", "alice", "tenant_admin", 600)).json(&batch("b", 1)), 403, "forbidden"),
    ];

    for (name, request, status, code) in cases {
        let r = request.send().await.unwrap();
        let got = r.status().as_u16();
        let www = r.headers().get("www-authenticate").cloned();
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: body is not JSON: {e}"));
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"], code, "{name}: {body}");
        assert!(
            !body["message"].as_str().unwrap_or("").is_empty(),
            "{name}: no message"
        );
        if status == 401 {
            assert!(www.is_some(), "{name}: 401 without WWW-Authenticate");
        }
        if status == 422 {
            let rejected = body["rejected"].as_array().unwrap();
            assert_eq!(rejected[0]["index"], 0);
            assert_eq!(rejected[0]["reason"], "latitude_out_of_range");
            assert_eq!(rejected[1]["reason"], "timestamp_too_old");
            assert_eq!(body["accepted"], 0);
        }
    }

    let entries = buffered_entries(&scope, 4).await;
    assert_eq!(
        entries.len(),
        1,
        "only the session's start event is buffered: {entries:?}"
    );
    assert_eq!(entries[0]["type"], "session_event");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_valid_batch_is_accepted_with_each_rejected_fix_named() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let token = scope.device_token("acme", "phone-1").await;
    let id = app.session_id(&token).await;
    let now = chrono::Utc::now();
    let body = json!({
        "batch_id": "mixed",
        "fixes": [
            {"lat": 10.0, "lon": 10.0, "recorded_at": now},
            {"lat": 10.0, "lon": 181.0, "recorded_at": now},
            {"lat": 10.0, "lon": 10.0, "recorded_at": now + chrono::Duration::hours(1)},
            {"lat": "north", "lon": 10.0, "recorded_at": now},
            {"lat": 10.0, "lon": 10.0, "recorded_at": now, "battery": 140},
            {"lat": 10.1, "lon": 10.1, "recorded_at": now}
        ]
    });
    let r = app
        .client
        .post(app.url(&format!("/v1/sessions/{id}/locations")))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(gzip(body.to_string().as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["batch_id"], "mixed");
    assert_eq!(answer["accepted"], 2);
    let reasons: Vec<(u64, &str)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            (1, "longitude_out_of_range"),
            (2, "timestamp_in_future"),
            (3, "invalid_fix"),
            (4, "field_out_of_range")
        ]
    );
    let entries = buffered_entries(&scope, 4).await;
    let fixes: Vec<&Value> = entries.iter().filter(|e| e["type"] == "fixes").collect();
    assert_eq!(fixes.len(), 1);
    let indexes: Vec<u64> = fixes[0]["fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["index"].as_u64().unwrap())
        .collect();
    assert_eq!(
        indexes,
        [0, 5],
        "accepted fixes keep their index in the posted batch"
    );
    app.stop().await;
}
