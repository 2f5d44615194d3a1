//! Connection-level protection against slow and abusive clients, on a real socket: the
//! header timeout against slowloris, the body timeout, the in-flight cap (shed at once),
//! the per-address limit before any token is read, and a shutdown that a slow connection
//! cannot hold past the grace period.

use std::time::{Duration, Instant};

use locus_ingest::config::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{Scope, TestApp, batch, spawn_in};

async fn app(change: impl FnOnce(&mut locus_ingest::Config)) -> TestApp {
    let scope = Scope::new().await;
    spawn_in(&scope, &[Role::Api, Role::Forwarder], change).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// The head of a POST of `length` body bytes to `path`.
fn post_head(path: &str, token: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Reads an answer's head and returns its status and the head's text (`None`: the
/// connection closed first).
async fn read_head(conn: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1)?.parse().ok()?;
            // The rest of the answer (its JSON body) for the caller to see in a failure.
            let rest = String::from_utf8_lossy(&buf[end..]).to_string();
            return Some((status, format!("{head}{rest}")));
        }
    }
}

/// Sends `head` one byte every `every` and returns how long the server kept the
/// connection open (`None`: still open after `give_up`).
async fn slowloris(
    mut conn: TcpStream,
    head: String,
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut bytes = head.into_bytes().into_iter().cycle();
    let mut buf = [0u8; 1024];
    while started.elapsed() < give_up {
        if conn.write_all(&[bytes.next().unwrap()]).await.is_err() {
            return Some(started.elapsed());
        }
        // Wait `every` for the server to close (a read of 0, or an error).
        match tokio::time::timeout(every, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // An answer (such as a 408) before the close: keep reading until it closes.
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn slowloris_connections_are_closed_after_the_header_timeout_and_other_clients_are_served_meanwhile()
 {
    let app = app(|c| c.server.header_timeout_ms = 2000).await;
    let head = "GET /v1/sessions HTTP/1.1\r\nhost: localhost\r\nx-slow: ".repeat(20);
    let loris: Vec<_> = (0..8)
        .map(|_| {
            let head = head.clone();
            let address = app.address.clone();
            tokio::spawn(async move {
                let conn = TcpStream::connect(address.trim_start_matches("http://"))
                    .await
                    .unwrap();
                slowloris(conn, head, Duration::from_secs(1), Duration::from_secs(8)).await
            })
        })
        .collect();
    // Meanwhile an ordinary client is answered, and promptly.
    for _ in 0..10 {
        let started = Instant::now();
        let r = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for l in loris {
        let held = l.await.unwrap();
        println!("slowloris connection held for {held:?}");
        let held =
            held.expect("the server closes a connection that sends its headers one byte a second");
        assert!(
            held < Duration::from_millis(2000 + 1500),
            "closed after {held:?}, header timeout 2 s"
        );
    }
}

#[tokio::test]
async fn a_body_that_trickles_is_answered_408_request_timeout_within_the_body_timeout() {
    let app = app(|c| c.server.body_timeout_ms = 1000).await;
    let token = app.device_token("acme", "trickle").await;
    let session = app.session_id(&token).await;
    let body = batch("b-1", 5).to_string();
    let mut conn = connect(&app).await;
    let path = format!("/v1/sessions/{session}/locations");
    conn.write_all(post_head(&path, &token, body.len()).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = body.clone().into_bytes();
    let (mut read, mut write) = conn.into_split();
    let writer = tokio::spawn(async move {
        for b in trickle.chunks(4) {
            if write.write_all(b).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let answer = tokio::time::timeout(Duration::from_secs(4), async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = read.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the connection closed without an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
        // The JSON body follows the head.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(n) = read.try_read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .expect("an answer within 4 s while the body trickles (body timeout 1 s)");
    let elapsed = started.elapsed();
    writer.abort();
    println!("answered after {elapsed:?}: {answer}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert!(answer.contains("LOCUS_HTTP_BODY_TIMEOUT_MS"), "{answer}");
    assert!(
        elapsed < Duration::from_millis(1000 + 1000),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn a_request_not_answered_within_the_request_timeout_is_a_503_deadline_exceeded_with_retry_after()
 {
    // The body is slower than the request timeout but within the body timeout: the request
    // timeout answers.
    let app = app(|c| {
        c.server.request_timeout_ms = 1000;
        c.server.body_timeout_ms = 10_000;
    })
    .await;
    let token = app.device_token("acme", "late").await;
    let session = app.session_id(&token).await;
    let body = batch("b-1", 3).to_string();
    let mut conn = connect(&app).await;
    let path = format!("/v1/sessions/{session}/locations");
    conn.write_all(post_head(&path, &token, body.len()).as_bytes())
        .await
        .unwrap();
    conn.write_all(&body.as_bytes()[..10]).await.unwrap();
    let started = Instant::now();
    let (status, answer) = tokio::time::timeout(Duration::from_secs(4), read_head(&mut conn))
        .await
        .expect("an answer within 4 s (request timeout 1 s)")
        .expect("an answer before the connection closes");
    let elapsed = started.elapsed();
    println!("answered after {elapsed:?}: {answer}");
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"deadline_exceeded\""), "{answer}");
    assert!(
        elapsed < Duration::from_millis(2000),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn over_the_in_flight_cap_a_request_is_answered_503_overloaded_at_once() {
    let app = app(|c| c.server.max_in_flight = 2).await;
    let token = app.device_token("acme", "busy").await;
    let session = app.session_id(&token).await;
    let path = format!("/v1/sessions/{session}/locations");
    // Two requests in flight for real: their heads are sent, their bodies are not yet.
    let mut slow = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..2 {
        let body = batch(&format!("slow-{i}"), 3).to_string();
        let mut conn = connect(&app).await;
        conn.write_all(post_head(&path, &token, body.len()).as_bytes())
            .await
            .unwrap();
        conn.write_all(&body.as_bytes()[..10]).await.unwrap();
        slow.push(conn);
        bodies.push(body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = app.get(&token, &format!("/v1/sessions/{session}")).await;
    let elapsed = started.elapsed();
    let status = r.status();
    let retry_after = r.headers().get("retry-after").cloned();
    let text = r.text().await.unwrap();
    println!("third request: {status} after {elapsed:?}: {text}");
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"overloaded\""), "{text}");
    assert!(text.contains("LOCUS_HTTP_MAX_IN_FLIGHT = 2"), "{text}");
    assert!(retry_after.is_some(), "a 503 carries Retry-After");
    assert!(
        elapsed < Duration::from_millis(500),
        "shed at once, not queued: {elapsed:?}"
    );
    // The two were being served all along: their bodies finish and they are accepted.
    for (conn, body) in slow.iter_mut().zip(&bodies) {
        conn.write_all(&body.as_bytes()[10..]).await.unwrap();
        let (status, head) = read_head(conn).await.expect("an answer");
        assert_eq!(status, 202, "{head}");
    }
    // And with them done, the next request is served again.
    let r = app.get(&token, &format!("/v1/sessions/{session}")).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn over_the_per_address_rate_a_request_gets_429_with_retry_after_before_any_token_is_checked()
{
    let app = app(|c| {
        c.server.per_address_rps = 1;
        c.server.per_address_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..5 {
        // No token at all: without the address limit every answer is 401.
        let r = app
            .client
            .get(app.url("/v1/sessions"))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        last = Some(r);
    }
    println!("statuses: {statuses:?}");
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let r = last.unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let text = r.text().await.unwrap();
    assert!(text.contains("\"rate_limited\""), "{text}");
    assert!(text.contains("LOCUS_HTTP_PER_ADDRESS_RPS = 1"), "{text}");
    // Health and metrics stay reachable for the platform.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn graceful_shutdown_with_a_slowloris_connection_open_finishes_the_request_in_flight_and_ends_within_the_grace_period()
 {
    let app = app(|c| {
        c.shutdown.grace_secs = 2;
        c.server.header_timeout_ms = 60_000;
        c.server.body_timeout_ms = 60_000;
    })
    .await;
    let token = app.device_token("acme", "last").await;
    let session = app.session_id(&token).await;
    // A slowloris connection that the header timeout would not close before a minute.
    let loris = connect(&app).await;
    let loris = tokio::spawn(slowloris(
        loris,
        "GET /v1/sessions HTTP/1.1\r\nx-slow: ".repeat(50),
        Duration::from_secs(1),
        Duration::from_secs(20),
    ));
    // A request in flight when the shutdown starts: its body comes 500 ms into it.
    let body = batch("last", 3).to_string();
    let mut conn = connect(&app).await;
    let path = format!("/v1/sessions/{session}/locations");
    conn.write_all(post_head(&path, &token, body.len()).as_bytes())
        .await
        .unwrap();
    conn.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(tokio::time::timeout(Duration::from_secs(2 + 4), app.stop()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    conn.write_all(&body.as_bytes()[10..]).await.unwrap();
    let (status, head) = read_head(&mut conn)
        .await
        .expect("the request in flight is answered");
    assert_eq!(status, 202, "{head}");
    stopping
        .await
        .unwrap()
        .expect("the shutdown ends within the grace period (2 s) and a margin, slowloris or not");
    println!("shutdown took {:?}", started.elapsed());
    let held = loris.await.unwrap();
    assert!(
        held.is_some(),
        "the slowloris connection is closed by the shutdown"
    );
}
