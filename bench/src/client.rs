//! The one HTTP client of ingest's device API that the bench uses: batch posts, session
//! start and stop, for the demo's planned load and for the timed runs alike.
//!
//! What differs between its users is an option, not a second client:
//! - [`Retry`]: the demo retries 429/503 after `Retry-After` and transport errors after a
//!   backoff ([`retry`]); the timed runs send once and count what came back;
//! - a cap on requests in flight, held only while a request is on the wire, so a device
//!   waiting out a `Retry-After` does not block the others (the demo); the timed runs
//!   bound their concurrency in the driver instead;
//! - a `Locus-Durability` level sent with every request (`run --durability`), to measure
//!   what each level costs.
//!
//! Every answer's body is read: a client that does not is not what devices do.

pub mod retry;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use locus_wire::SessionId;
use locus_wire::api::{ErrorBody, SessionView, StartSessionRequest};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::Semaphore;

pub use retry::Retry;

/// Path of `POST /v1/sessions`.
pub const SESSIONS_PATH: &str = "/v1/sessions";

/// Path of the batch POST of `session`.
pub fn locations_path(session: SessionId) -> String {
    format!("/v1/sessions/{session}/locations")
}

/// Path of the stop POST of `session`.
pub fn stop_path(session: SessionId) -> String {
    format!("/v1/sessions/{session}/stop")
}

/// `Bearer <token>`: the `Authorization` value of a device, built once per device.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The HTTP client under the bench's clients: one pool, `TCP_NODELAY`, and no timeout
/// shorter than a stall worth seeing.
pub fn http_client(timeout: Duration, max_idle_per_host: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(max_idle_per_host)
        .tcp_nodelay(true)
        .build()
        .context("cannot build the HTTP client")
}

/// One POST to ingest, as devices send it: JSON, with the device's token.
#[derive(Debug, Clone)]
pub struct Post<'a> {
    /// Path under the base URL.
    pub path: &'a str,
    /// `Authorization` header value ([`bearer`]).
    pub authorization: &'a str,
    /// The body, gzipped when `gzip` is set.
    pub body: Bytes,
    /// `Idempotency-Key`: the batch id when the body names none.
    pub idempotency_key: Option<&'a str>,
    /// Sends `Content-Encoding: gzip`.
    pub gzip: bool,
}

impl<'a> Post<'a> {
    /// A plain JSON POST of `body` to `path`.
    pub fn json(path: &'a str, authorization: &'a str, body: Bytes) -> Self {
        Self {
            path,
            authorization,
            body,
            idempotency_key: None,
            gzip: false,
        }
    }
}

/// An answer of ingest.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body, read in full.
    pub body: Bytes,
    /// `Retry-After`, when present and in seconds.
    pub retry_after: Option<Duration>,
}

/// What the client tells its caller about each attempt of a call, for the caller's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// An attempt got an answer (any status) after this long on the wire.
    Answered(Duration),
    /// The request will be sent again.
    Retrying,
}

/// A call that did not get the answer it needed. Displayed without the path: callers say
/// which request it was (`POST /v1/sessions: ...`).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Still 429/503 after the last attempt.
    #[error("still {status} after {attempts} attempts")]
    Exhausted {
        /// The last status.
        status: StatusCode,
        /// Attempts made.
        attempts: u32,
    },
    /// The request could not be sent or its answer read.
    #[error("no answer after {attempts} attempts: {source}")]
    Transport {
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Ingest answered, but not with the status the call expects.
    #[error("{}", refusal(*status, body))]
    Refused {
        /// The status.
        status: StatusCode,
        /// The answer's body (usually an [`ErrorBody`]).
        body: Bytes,
    },
    /// A 201 to a session start whose body is not a session.
    #[error("the 201 body is not a session: {0}")]
    NotASession(#[source] serde_json::Error),
}

impl CallError {
    /// The last status ingest answered, if any.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Exhausted { status, .. } | Self::Refused { status, .. } => Some(*status),
            Self::NotASession(_) => Some(StatusCode::CREATED),
            Self::Transport { .. } => None,
        }
    }
}

/// `"409 Conflict: session_already_active: ..."` from an unexpected answer.
pub fn refusal(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => format!("{status}: {}: {}", e.error, e.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(200).collect();
            format!("{status}: {text}")
        }
    }
}

/// The ingest API at one base URL.
#[derive(Debug)]
pub struct IngestClient {
    http: reqwest::Client,
    base: String,
    retry: Retry,
    in_flight: Option<Semaphore>,
    durability: Option<String>,
}

impl IngestClient {
    /// A client of the ingest at `base` that sends every request once.
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
            retry: Retry::NEVER,
            in_flight: None,
            durability: None,
        }
    }

    /// Sends `Locus-Durability: level` with every request (ingest reads it on batch posts
    /// only); `None` sends none, so ingest's default applies.
    #[must_use]
    pub fn with_durability(mut self, level: Option<String>) -> Self {
        self.durability = level;
        self
    }

    /// Retries retriable answers and transport errors as `retry` says.
    #[must_use]
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// At most `n` requests on the wire at once; more wait for a free slot.
    #[must_use]
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = Some(Semaphore::new(n));
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client under it (a clone shares its connection pool).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `post` and returns the first answer that is not retriable, retrying as the
    /// client's [`Retry`] says; `observe` hears about every attempt.
    pub async fn post(
        &self,
        post: &Post<'_>,
        mut observe: impl FnMut(Attempt),
    ) -> Result<Answer, CallError> {
        let url = format!("{}{}", self.base, post.path);
        let max_attempts = self.retry.max_attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let permit = match &self.in_flight {
                Some(slots) => Some(
                    slots
                        .acquire()
                        .await
                        .expect("the semaphore is never closed"),
                ),
                None => None,
            };
            let started = Instant::now();
            let result = self.send_once(&url, post).await;
            // The slot is given back before any wait: a device sitting out a Retry-After
            // does not hold up the others.
            drop(permit);
            let delay = match result {
                Ok(answer) => {
                    observe(Attempt::Answered(started.elapsed()));
                    if !retry::is_retriable(answer.status) {
                        return Ok(answer);
                    }
                    if attempt >= max_attempts {
                        return Err(CallError::Exhausted {
                            status: answer.status,
                            attempts: attempt,
                        });
                    }
                    retry::delay_after(answer.retry_after)
                }
                Err(source) => {
                    if attempt >= max_attempts {
                        return Err(CallError::Transport {
                            attempts: attempt,
                            source,
                        });
                    }
                    // The batch may have been stored before the connection broke; sending
                    // it again is safe because ingest recognises the batch id.
                    retry::backoff(attempt)
                }
            };
            observe(Attempt::Retrying);
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(&self, url: &str, post: &Post<'_>) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .http
            .post(url)
            .header(AUTHORIZATION, post.authorization)
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = post.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if post.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        if let Some(level) = &self.durability {
            request = request.header("locus-durability", level);
        }
        let response = request.body(post.body.clone()).send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        Ok(Answer {
            status,
            retry_after,
            body: response.bytes().await?,
        })
    }

    /// Starts a session for the device of `authorization`; `max_duration_secs` `None`
    /// sends `{}`, so the server default applies.
    pub async fn start_session(
        &self,
        authorization: &str,
        max_duration_secs: Option<u64>,
        observe: impl FnMut(Attempt),
    ) -> Result<SessionId, CallError> {
        let body = match max_duration_secs {
            None => Bytes::from_static(b"{}"),
            Some(_) => serde_json::to_vec(&StartSessionRequest { max_duration_secs })
                .expect("a start request serialises")
                .into(),
        };
        let answer = self
            .post(&Post::json(SESSIONS_PATH, authorization, body), observe)
            .await?;
        if answer.status != StatusCode::CREATED {
            return Err(CallError::Refused {
                status: answer.status,
                body: answer.body,
            });
        }
        let view: SessionView =
            serde_json::from_slice(&answer.body).map_err(CallError::NotASession)?;
        Ok(view.session_id)
    }

    /// Stops `session`; anything but 200 is an error.
    pub async fn stop_session(
        &self,
        authorization: &str,
        session: SessionId,
        observe: impl FnMut(Attempt),
    ) -> Result<(), CallError> {
        let path = stop_path(session);
        let post = Post::json(&path, authorization, Bytes::from_static(b"{}"));
        let answer = self.post(&post, observe).await?;
        if answer.status != StatusCode::OK {
            return Err(CallError::Refused {
                status: answer.status,
                body: answer.body,
            });
        }
        Ok(())
    }
}

/// Polls `url` until it answers 2xx or `timeout` passes; a zero timeout asks once.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("{url} answered {}", r.status()),
            Err(e) => format!("{url} is unreachable: {e}"),
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{last} (waited {} s)", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
