//! Input bounds on the locations route: a gzip bomb costs bounded memory, a long string is
//! neither echoed nor kept in Redis, JSON depth and string length have their settings, and
//! a body of the wrong type or encoding is refused from its headers, before it is read.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use locus_ingest::config::Role;
use locus_testkit as kit;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{Scope, batch, spawn_in};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `{"fixes":[0,0,…]}`: exactly `size` bytes of JSON, about half a million fixes at 1 MiB.
fn bomb(size: usize) -> Vec<u8> {
    let mut text = String::with_capacity(size);
    text.push_str("{\"fixes\":[0");
    while text.len() + 2 + 2 <= size {
        text.push_str(",0");
    }
    text.push_str("]}");
    while text.len() < size {
        text.insert(text.len() - 2, ' ');
    }
    assert_eq!(text.len(), size);
    text.into_bytes()
}

/// The real binary in its own process, so that its memory is its own.
struct Binary {
    child: Child,
    address: String,
}

impl Binary {
    async fn start(scope: &Scope) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut args = scope.args("api");
        let at = args.iter().position(|a| a == "--listen").unwrap();
        args[at + 1] = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_locus-ingest"));
        // Its flags alone configure it (see forwarding.rs).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LOCUS_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .args(args)
            .args(["--redis-url", &kit::redis_url()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn locus-ingest");
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let up = client.get(format!("{address}/healthz")).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "the binary did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, address }
    }

    /// A field of /proc/<pid>/status, in kB.
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Each request may hold one body of at most `LOCUS_MAX_BODY_BYTES` (1 MiB) after
/// decompression, so 32 at once may take 32 MiB; the bound leaves 32 MiB of slack for the
/// allocator. Before the bounded decode the peak grew by 261-311 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_gzip_bombs_are_refused_413_and_peak_memory_grows_under_64_mb() {
    let scope = Scope::new().await;
    let binary = Binary::start(&scope).await;
    let token = scope.device_token("acme", "bomber").await;
    let client = reqwest::Client::new();
    let session: Value = client
        .post(format!("{}/v1/sessions", binary.address))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/v1/sessions/{}/locations",
        binary.address,
        session["session_id"].as_str().unwrap()
    );
    // Warm up: allocator arenas and connection pools exist before the baseline is read.
    for i in 0..20 {
        let r = client
            .post(&url)
            .bearer_auth(&token)
            .json(&batch(&format!("warm-{i}"), 100))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let bomb = gzip(&bomb(1024 * 1024));
    assert!(
        bomb.len() < 2048,
        "the bomb is {} bytes gzipped",
        bomb.len()
    );
    let rss_before = binary.status_kb("VmRSS");
    let hwm_before = binary.status_kb("VmHWM");

    let mut posts = Vec::new();
    for _ in 0..32 {
        let request = client
            .post(&url)
            .bearer_auth(&token)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, "gzip")
            .body(bomb.clone());
        posts.push(tokio::spawn(async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for post in posts {
        answers.push(post.await.unwrap());
    }
    let hwm_after = binary.status_kb("VmHWM");
    let rss_after = binary.status_kb("VmRSS");
    eprintln!(
        "gzip bombs: VmRSS {rss_before} kB -> {rss_after} kB, VmHWM {hwm_before} kB -> {hwm_after} kB (peak growth {} kB over the RSS before)",
        hwm_after.saturating_sub(rss_before)
    );
    assert!(
        hwm_after.saturating_sub(rss_before) < 64 * 1024,
        "peak RSS grew from {rss_before} kB to {hwm_after} kB"
    );
    for (status, body) in answers {
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"], "too_many_fixes", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("1000") && message.contains("LOCUS_MAX_FIXES_PER_BATCH"),
            "the message names the limit and its value: {message}"
        );
    }
}

/// `MEMORY USAGE` of the dedupe state of `session` (0 when there is none).
async fn dedupe_memory(scope: &Scope, session: &str) -> (String, u64) {
    let mut redis = kit::require_redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*dedupe:{session}", scope.redis_prefix))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(keys.len() <= 1, "{keys:?}");
    let Some(key) = keys.into_iter().next() else {
        return (String::new(), 0);
    };
    let bytes: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    (key, bytes.unwrap_or(0))
}

fn indexes_and_reasons(answer: &Value) -> Vec<(u64, String)> {
    answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_900_000_character_timestamp_is_echoed_short_and_its_dedupe_state_stays_under_4_kb() {
    let scope = Scope::new().await;
    // The string bound would refuse this batch whole (the next test): raised here, so the
    // echo and the dedupe value are bounded on their own.
    let app = spawn_in(&scope, &[Role::Api], |c| {
        c.limits.max_string_bytes = 2 * 1024 * 1024;
    })
    .await;
    let token = scope.device_token("acme", "long-stamp").await;
    let id = app.session_id(&token).await;
    let mut body = batch("long-stamp", 2);
    body["fixes"][0]["recorded_at"] = json!("9".repeat(900_000));
    let r = app.post_fixes(&token, &id, &body).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["accepted"], 1);
    assert_eq!(indexes_and_reasons(&first), [(0, "invalid_fix".to_owned())]);
    let (key, bytes) = dedupe_memory(&scope, &id).await;
    eprintln!("dedupe state {key}: MEMORY USAGE {bytes} bytes");
    let message = first["rejected"][0]["message"].as_str().unwrap();
    let head: String = message.chars().take(200).collect();
    assert!(
        message.len() < 200 && message.contains("900000"),
        "a short prefix and the length ({} bytes): {head}",
        message.len()
    );
    assert!(bytes > 0, "the batch is remembered");
    assert!(bytes < 4096, "MEMORY USAGE of {key} is {bytes} bytes");

    let again = app.post_fixes(&token, &id, &body).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["accepted"], 1);
    assert_eq!(indexes_and_reasons(&again), indexes_and_reasons(&first));
    assert!(!again["rejected"][0]["message"].as_str().unwrap().is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_string_over_the_bound_or_json_over_the_depth_is_refused_naming_the_limit() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let token = scope.device_token("acme", "bounds").await;
    let id = app.session_id(&token).await;

    let mut long = batch("long", 2);
    long["fixes"][0]["recorded_at"] = json!("9".repeat(900_000));
    let mut long_unknown = batch("long-unknown", 1);
    long_unknown["fixes"][0]["note"] = json!("x".repeat(1025));
    let mut at_bound = batch("at-bound", 1);
    at_bound["fixes"][0]["note"] = json!("x".repeat(1024));
    let nested = |depth: usize| {
        let mut value = json!(1);
        for _ in 0..depth {
            value = json!([value]);
        }
        value
    };
    // The batch, its list and a fix are three levels: 29 more make 32, the default.
    let mut deep_ok = batch("deep-ok", 1);
    deep_ok["fixes"][0]["x"] = nested(29);
    let mut deep = batch("deep", 1);
    deep["fixes"][0]["x"] = nested(30);

    for (name, body, status, code, names) in [
        (
            "900,000-character timestamp",
            &long,
            413,
            "string_too_long",
            "LOCUS_MAX_STRING_BYTES",
        ),
        (
            "1,025-character unknown field",
            &long_unknown,
            413,
            "string_too_long",
            "LOCUS_MAX_STRING_BYTES",
        ),
        (
            "33 levels deep",
            &deep,
            400,
            "json_too_deep",
            "LOCUS_MAX_JSON_DEPTH",
        ),
    ] {
        let r = app.post_fixes(&token, &id, body).await;
        assert_eq!(r.status(), status, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{name}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(names), "{name}: {message}");
        let value = if code == "json_too_deep" {
            "32"
        } else {
            "1024"
        };
        assert!(message.contains(value), "{name}: {message}");
        assert!(message.len() < 400, "{name}: {message}");
    }
    assert_eq!(
        dedupe_memory(&scope, &id).await.1,
        0,
        "nothing is remembered"
    );
    for (name, body) in [("at the string bound", &at_bound), ("32 levels", &deep_ok)] {
        let r = app.post_fixes(&token, &id, body).await;
        assert_eq!(r.status(), 202, "{name}: {}", r.text().await.unwrap());
    }
    app.stop().await;
}

/// Sends the head of a POST with a body of `declared` bytes, then only a few of them, and
/// returns the status line and what followed within `wait` (empty when nothing came).
async fn answer_before_the_body(
    address: &str,
    path: &str,
    token: &str,
    headers: &str,
    wait: Duration,
) -> String {
    let host = address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n{headers}Content-Length: 1000000\r\n\r\n{{\"fixes\":["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0; 4096];
    match tokio::time::timeout(wait, stream.read(&mut got)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&got[..n]).into_owned(),
        Ok(Err(e)) => format!("read failed: {e}"),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_content_type_or_encoding_is_refused_415_before_the_body_is_sent() {
    let scope = Scope::new().await;
    let app = spawn_in(&scope, &[Role::Api], |_| {}).await;
    let token = scope.device_token("acme", "headers-first").await;
    let id = app.session_id(&token).await;
    let path = format!("/v1/sessions/{id}/locations");
    for (name, headers, says) in [
        (
            "text/plain",
            "Content-Type: text/plain\r\n",
            "Content-Type: application/json",
        ),
        (
            "brotli",
            "Content-Type: application/json\r\nContent-Encoding: br\r\n",
            "gzip",
        ),
    ] {
        let answer =
            answer_before_the_body(&app.address, &path, &token, headers, Duration::from_secs(3))
                .await;
        assert!(
            answer.starts_with("HTTP/1.1 415"),
            "{name}: the answer comes before the body: {answer:?}"
        );
        assert!(
            answer.contains("unsupported_media_type"),
            "{name}: {answer}"
        );
        assert!(answer.contains(says), "{name}: {answer}");
    }
    app.stop().await;
}
