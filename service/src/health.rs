//! The three endpoints every service serves, in one shape for all of them:
//!
//! - `GET /healthz`: liveness. Always `200 {"status":"ok"}` while the process serves HTTP;
//!   it depends on no other system, so an outage elsewhere does not get a healthy process
//!   restarted in a loop.
//! - `GET /readyz`: readiness. Each service supplies its dependencies as named checks
//!   ([`Readiness`]), each required or not; they run in parallel on every request. The body
//!   is `{"status": "ready" | "degraded" | "not_ready", "checks": {name: "ok" |
//!   "unreachable: <cause>"}}`: `ready` (200) when every check answered, `degraded` (200)
//!   when every required one did but another did not, `not_ready` (503) when a required one
//!   did not. A 503 also carries the error shape of every other error answer, `"error":
//!   "not_ready"` and a `"message"` naming what failed.
//! - `GET /metrics`: every metric of the process ([`crate::metrics::render`]).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::{BoxFuture, FutureExt, join_all};
use serde::Serialize;
use serde_json::json;

/// Whether the process can do its job without a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Without it the process is `not_ready` (503).
    Required,
    /// Its state is reported; without it the process is `degraded`, still ready (200).
    Optional,
}

/// A check's probe: `Ok` when the dependency answered, otherwise the cause in words.
type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One named dependency.
struct Check {
    name: &'static str,
    need: Need,
    probe: Probe,
}

/// The dependencies behind `/readyz`: named async checks that a service supplies. A probe
/// bounds its own time (see [`within`]): only it knows what a slow answer means.
#[derive(Default)]
pub struct Readiness {
    checks: Vec<Check>,
}

impl Readiness {
    /// No checks yet: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the check `name` (one per dependency), answered by `probe`.
    pub fn check<F, Fut>(mut self, name: &'static str, need: Need, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push(Check {
            name,
            need,
            probe: Box::new(move || probe().boxed()),
        });
        self
    }

    /// Runs every check, in parallel, and sums them up.
    pub async fn report(&self) -> Report {
        let results = join_all(self.checks.iter().map(|c| (c.probe)())).await;
        let mut report = Report {
            status: Status::Ready,
            checks: BTreeMap::new(),
            failed_required: Vec::new(),
        };
        for (check, result) in self.checks.iter().zip(results) {
            let state = match result {
                Ok(()) => "ok".to_owned(),
                Err(cause) => {
                    if check.need == Need::Required {
                        report.status = Status::NotReady;
                        report.failed_required.push(check.name);
                    } else if report.status == Status::Ready {
                        report.status = Status::Degraded;
                    }
                    format!("unreachable: {cause}")
                }
            };
            report.checks.insert(check.name, state);
        }
        report
    }
}

/// The overall state of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every check answered.
    Ready,
    /// Every required check answered, another did not.
    Degraded,
    /// A required check did not answer.
    NotReady,
}

/// The answer of `/readyz`.
#[derive(Debug)]
pub struct Report {
    /// Ready, degraded or not.
    pub status: Status,
    /// Each check's state: `ok` or `unreachable: <cause>`.
    pub checks: BTreeMap<&'static str, String>,
    failed_required: Vec<&'static str>,
}

impl Report {
    /// What keeps the process from being ready, in words (`None` when it is ready).
    pub fn message(&self) -> Option<String> {
        if self.failed_required.is_empty() {
            return None;
        }
        let failed: Vec<String> = self
            .failed_required
            .iter()
            .map(|name| format!("{name} is {}", self.checks[name]))
            .collect();
        // No closing period: a cause often ends with a name (a topic), kept as it is.
        Some(format!("Not ready: {}", failed.join("; ")))
    }
}

/// The JSON of a [`Report`], in the order a reader wants it: the status first.
#[derive(Serialize)]
struct Body<'a> {
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    checks: &'a BTreeMap<&'static str, String>,
}

impl IntoResponse for Report {
    fn into_response(self) -> Response {
        let message = self.message();
        let code = match message {
            None => StatusCode::OK,
            Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = Body {
            status: self.status,
            error: message.as_ref().map(|_| "not_ready"),
            message,
            checks: &self.checks,
        };
        (code, Json(body)).into_response()
    }
}

/// Runs a probe's request with a time limit: its error, or `timed out`, in words.
pub async fn within<T, E: Display>(
    limit: Duration,
    request: impl Future<Output = Result<T, E>>,
) -> Result<(), String> {
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// `/healthz`, `/readyz` (answered by `readiness`) and `/metrics`, to merge into a service's
/// router; it needs none of that router's state.
pub fn router<S>(readiness: Readiness) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(readiness))
}

/// Always 200 while the process serves requests.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Report {
    readiness.report().await
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(),
    )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn failing(cause: &'static str) -> Result<(), String> {
        Err(cause.to_owned())
    }

    async fn get_json(router: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn liveness_is_ok_whatever_the_checks_say() {
        let readiness = Readiness::new().check("kafka", Need::Required, || failing("down"));
        let (status, body) = get_json(router(readiness), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({ "status": "ok" }));
    }

    #[tokio::test]
    async fn every_check_answering_is_ready() {
        let readiness = Readiness::new()
            .check("postgres", Need::Required, || async { Ok(()) })
            .check("kafka", Need::Optional, || async { Ok(()) });
        let (status, body) = get_json(router(readiness), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({ "status": "ready", "checks": { "kafka": "ok", "postgres": "ok" } })
        );
    }

    #[tokio::test]
    async fn an_optional_check_failing_is_degraded_and_still_200() {
        let readiness = Readiness::new()
            .check("postgres", Need::Required, || async { Ok(()) })
            .check("kafka", Need::Optional, || failing("refused"));
        let (status, body) = get_json(router(readiness), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({
                "status": "degraded",
                "checks": { "kafka": "unreachable: refused", "postgres": "ok" }
            })
        );
    }

    #[tokio::test]
    async fn a_required_check_failing_is_503_with_a_message_naming_it() {
        let readiness = Readiness::new()
            .check("redis", Need::Required, || failing("timed out"))
            .check("kafka", Need::Optional, || failing("refused"));
        let (status, body) = get_json(router(readiness), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({
                "status": "not_ready",
                "error": "not_ready",
                "message": "Not ready: redis is unreachable: timed out",
                "checks": { "kafka": "unreachable: refused", "redis": "unreachable: timed out" }
            })
        );
    }

    #[tokio::test]
    async fn a_slow_request_times_out_in_words() {
        let slow = std::future::pending::<Result<(), String>>();
        let result = within(Duration::from_millis(10), slow).await;
        assert_eq!(result, Err("timed out".to_owned()));
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let request = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = router::<()>(Readiness::new())
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4"
        );
    }
}
