//! The HTTP serving loop and the connection-level protection that runs before any token is
//! read: a cap on open connections, a header read timeout (which is also the keep-alive
//! idle timeout), a cap on the request head's size, a cap on requests in flight (shed, not
//! queued), a per-client-address request rate, body and whole-request timeouts, and a
//! graceful shutdown that never waits on a slow client for longer than the grace period.
//!
//! The loop is the one of tokio's mini-redis: take a connection permit, accept, spawn one
//! task per connection that drives hyper's HTTP/1 connection over the axum router, and on
//! shutdown ask every connection to finish its request and close. HTTP/1 only, on purpose:
//! hyper's protocol detection for HTTP/2 waits for the client's first bytes with no timer,
//! so a silent connection would be held forever; no Locus client speaks h2c.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ServerSettings;
use crate::error::{ApiError, ErrorCode};
use crate::events;

/// Serves `app` on `listener` until `stop` is cancelled, then stops accepting, lets every
/// connection finish the request it is serving for at most `grace`, and drops the
/// connections still open after that (a slow client cannot hold the shutdown).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &ServerSettings,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer whenever the connection waits for a request head: on a new
    // connection and after each answer, so one timer bounds slow headers and idle
    // keep-alive connections alike.
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(settings.header_timeout_ms))
        .max_header_size(settings.max_header_bytes)
        .keep_alive(true);
    let connections = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let tracker = TaskTracker::new();
    // Cancelled when the grace period is over: every connection still open is dropped.
    let hard_stop = CancellationToken::new();
    loop {
        // A permit before accepting: at the cap, new connections wait in the kernel's
        // backlog instead of costing a task and buffers here (mini-redis does the same).
        let permit = if let Ok(permit) = connections.clone().try_acquire_owned() {
            permit
        } else {
            events::ConnectionCapReached.emit();
            tokio::select! {
                _ = stop.cancelled() => break,
                permit = connections.clone().acquire_owned() => {
                    permit.expect("the connection semaphore is never closed")
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Small answers go out at once rather than waiting for Nagle's timer.
        let _ = tcp.set_nodelay(true);
        // The peer address reaches the handlers (and the per-address limit) as axum's
        // ConnectInfo, as `into_make_service_with_connect_info` would give it.
        let service = app.clone().map_request(move |mut request: Request<_>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let connection =
            http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let (stop, hard_stop) = (stop.clone(), hard_stop.clone());
        tracker.spawn(async move {
            let _open = OpenConnection::new(permit);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stop.cancelled() => {
                    // Finish the request in progress (if any), then close.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        served = connection.as_mut() => served,
                        _ = hard_stop.cancelled() => {
                            events::ConnectionTimedOut { kind: "shutdown" }.emit();
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                connection_ended(&e);
            }
        });
    }
    // No more accepts from here: the listener is closed, new connections are refused.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            grace_secs = grace.as_secs_f64(),
            "Connections still open after the grace period; closing them."
        );
        hard_stop.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// An accept error: a connection that failed before it was accepted is the client's
/// problem; anything else (out of file descriptors) is logged and waited out, since
/// retrying at once would spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "Accepting a connection failed; retrying in 1 s.");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// How a connection ended in error: a header timeout is counted; the rest (a client that
/// went away, a malformed request, a head over the size cap) is the client's and logged at
/// debug only.
fn connection_ended(e: &hyper::Error) {
    if e.is_timeout() {
        events::ConnectionTimedOut { kind: "header" }.emit();
    } else {
        tracing::debug!(error = %e, "HTTP connection ended with an error.");
    }
}

/// An open connection: holds its permit and keeps the open-connections gauge right however
/// the task ends.
struct OpenConnection(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl OpenConnection {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        events::ConnectionsOpen { delta: 1 }.emit();
        Self(permit)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        events::ConnectionsOpen { delta: -1 }.emit();
    }
}

/// The request-level protection, shared by every request of a router: the in-flight cap,
/// the per-address limiter and the timeouts.
pub struct Protection {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Checks since the limiter last forgot idle addresses.
    checks: AtomicU64,
    address_header: Option<axum::http::HeaderName>,
    body_timeout: Duration,
    request_timeout: Duration,
    settings: ServerSettings,
}

/// Routes the platform probes and scrapes: never shed nor rate limited by address, so a
/// replica under load is still seen alive and measured (timeouts still apply).
const PLATFORM_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Every how many checks the per-address limiter drops addresses whose budget is full
/// again, so its memory follows the addresses seen lately, not every address ever seen.
const FORGET_EVERY: u64 = 4096;

impl Protection {
    /// The protection `settings` ask for.
    pub fn new(settings: &ServerSettings) -> Self {
        let per_address = NonZeroU32::new(settings.per_address_rps).map(|rps| {
            let burst = NonZeroU32::new(settings.per_address_burst).unwrap_or(rps);
            RateLimiter::keyed(Quota::per_second(rps).allow_burst(burst))
        });
        let address_header = settings.client_address_header.as_deref().map(|h| {
            h.parse()
                .expect("LOCUS_HTTP_CLIENT_ADDRESS_HEADER is a header name")
        });
        Self {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            max_in_flight: settings.max_in_flight.max(1),
            per_address,
            checks: AtomicU64::new(0),
            address_header,
            body_timeout: Duration::from_millis(settings.body_timeout_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            settings: settings.clone(),
        }
    }

    /// The client's address: the trusted header's last entry when one is configured and
    /// present, else the connection's peer. `None` when neither is known (a router served
    /// without [`serve`], as in unit tests).
    fn client_address(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if let Some(name) = &self.address_header {
            // The proxy appends the address it saw: the last entry is the one to trust.
            let from_header = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                // Only the last entry: the ones before it are the client's to write.
                .and_then(|a| a.trim().parse::<IpAddr>().ok());
            if from_header.is_some() {
                return from_header;
            }
        }
        peer.map(|p| p.ip())
    }

    /// Seconds until `address` may make a request, or `None` if it may now.
    fn address_wait(&self, address: IpAddr) -> Option<u64> {
        let limiter = self.per_address.as_ref()?;
        let address = address_key(address);
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&address).err().map(|not_until| {
            use governor::clock::Clock;
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The key of `address` in the per-address limiter: an IPv4 address (also one mapped into
/// IPv6 by a dual-stack listener) as itself, an IPv6 address by its /64, the block one
/// subscriber usually gets: keying by the whole address would let one client take a fresh
/// budget from each of its 2^64 addresses.
fn address_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// The request-level protection, as axum middleware (the outermost layer of
/// [`crate::routes::router`]), in the contract's order: shed over the in-flight cap, then
/// the per-address rate, then the body and whole-request timeouts around the rest.
pub async fn protect(
    State(protection): State<Arc<Protection>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let platform = PLATFORM_PATHS.contains(&path);
    let _permit = if platform {
        None
    } else {
        match protection.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Some(InFlight::new(permit)),
            Err(_) => {
                events::RequestShed {
                    reason: "overloaded",
                }
                .emit();
                return ApiError::Unavailable {
                    code: ErrorCode::Overloaded,
                    message: format!(
                        "this replica is serving its most requests at once (LOCUS_HTTP_MAX_IN_FLIGHT = {}); retry after the Retry-After seconds",
                        protection.max_in_flight
                    ),
                    retry_after_secs: 1,
                }
                .into_response();
            }
        }
    };
    if !platform {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let address = protection.client_address(request.headers(), peer);
        if let Some(wait) = address.and_then(|a| protection.address_wait(a)) {
            events::RequestShed {
                reason: "address_rate",
            }
            .emit();
            let s = &protection.settings;
            return ApiError::Unavailable {
                code: ErrorCode::RateLimited,
                message: format!(
                    "this client address is over its request rate (LOCUS_HTTP_PER_ADDRESS_RPS = {} per second, burst LOCUS_HTTP_PER_ADDRESS_BURST = {}); retry after {wait} s",
                    s.per_address_rps, s.per_address_burst
                ),
                retry_after_secs: wait,
            }
            .into_response();
        }
    }
    // The body is read through a deadline: past it the read fails, and whatever the handler
    // answers to that, the client gets 408 (the flag says the body was late).
    let late = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let body = deadline_body(body, protection.body_timeout, late.clone());
    let request = Request::from_parts(parts, body);
    let answered = tokio::time::timeout(protection.request_timeout, next.run(request)).await;
    if late.load(Ordering::Relaxed) {
        events::RequestTimedOut { kind: "body" }.emit();
        return ApiError::coded(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within LOCUS_HTTP_BODY_TIMEOUT_MS = {} ms; send it again, at once",
                protection.settings.body_timeout_ms
            ),
        )
        .into_response();
    }
    match answered {
        Ok(response) => response,
        Err(_) => {
            events::RequestTimedOut { kind: "request" }.emit();
            ApiError::Unavailable {
                code: ErrorCode::DeadlineExceeded,
                message: format!(
                    "the request was not answered within LOCUS_HTTP_REQUEST_TIMEOUT_MS = {} ms, so it may or may not have taken effect; retry the same request (a batch with the same batch id is never stored twice)",
                    protection.settings.request_timeout_ms
                ),
                retry_after_secs: 1,
            }
            .into_response()
        }
    }
}

/// A request counted in flight: holds its permit and keeps the in-flight gauge right.
struct InFlight(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl InFlight {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        events::RequestsInFlight { delta: 1 }.emit();
        Self(permit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        events::RequestsInFlight { delta: -1 }.emit();
    }
}

/// Why a body read failed: it did not arrive within the body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {0:?}")]
pub struct BodyTimedOut(Duration);

/// `body`, whose reads fail once `timeout` has passed since now (the headers' arrival),
/// setting `late`. Trailers are dropped: no Locus route reads them.
fn deadline_body(body: Body, timeout: Duration, late: Arc<AtomicBool>) -> Body {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = body.into_data_stream();
    let timed = futures::stream::unfold(Some(stream), move |stream| {
        let late = late.clone();
        async move {
            let mut stream = stream?;
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(chunk)) => Some((chunk.map_err(axum::BoxError::from), Some(stream))),
                Ok(None) => None,
                Err(_) => {
                    late.store(true, Ordering::Relaxed);
                    Some((Err(BodyTimedOut(timeout).into()), None))
                }
            }
        }
    });
    Body::from_stream(timed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protection(header: Option<&str>) -> Protection {
        let mut config = crate::Config::for_tests("test-secret");
        config.server.client_address_header = header.map(str::to_owned);
        Protection::new(&config.server)
    }

    #[test]
    fn the_client_address_is_the_peer_unless_a_trusted_header_is_configured() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        // Not configured: a client's header is ignored.
        let ip = protection(None).client_address(&headers, Some(peer));
        assert_eq!(ip, Some(peer.ip()));
        // Configured: the last entry, the one the proxy appended.
        let trusted = protection(Some("x-forwarded-for"));
        assert_eq!(
            trusted.client_address(&headers, Some(peer)),
            Some("5.6.7.8".parse().unwrap())
        );
        // A last entry that is not an address: the peer, never an earlier (client-written) entry.
        headers.insert("x-forwarded-for", "1.2.3.4, unknown".parse().unwrap());
        assert_eq!(
            trusted.client_address(&headers, Some(peer)),
            Some(peer.ip())
        );
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_64_block_and_mapped_ipv4_is_ipv4() {
        let key = |a: &str| address_key(a.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
    }
}
