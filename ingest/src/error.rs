//! The one error type of the HTTP edge.
//!
//! Policy: every answer that is not a success carries a JSON body `{error, message}` where
//! `error` is a stable code and `message` says what was wrong and how to fix it. Internal
//! failures are logged with their cause and reach the client as a generic 500 or as 503
//! with Retry-After when retrying will help; internals never leak.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use locus_session::SessionError;
use locus_wire::SessionId;
use locus_wire::api::{BatchResponse, ErrorBody, StopReason};
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no token, a malformed one, a bad signature, expired, wrong issuer or audience.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is valid but its role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// 405: the endpoint exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 404: no such session in the caller's tenant (also for another tenant's session).
    #[error("session not found")]
    SessionNotFound,
    /// 409: the session is stopped or expired.
    #[error("session is stopped")]
    SessionStopped(StopReason),
    /// 409: the device already has an active session.
    #[error("device already has an active session")]
    SessionAlreadyActive(SessionId),
    /// 400: the request is not what the endpoint takes.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// 413: body or batch too large.
    #[error("{message}")]
    TooLarge {
        /// Stable code.
        code: &'static str,
        /// Human explanation.
        message: String,
    },
    /// 415: not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: every fix of the batch was rejected; nothing was stored.
    #[error("every fix was rejected")]
    AllRejected(BatchResponse),
    /// 429: over the rate limit.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until the request would pass.
        retry_after_secs: u64,
        /// Whose limit: `device` or `tenant`.
        scope: &'static str,
    },
    /// 503: a dependency cannot take the write now; retry later.
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: &'static str,
        /// Human explanation.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 500: a bug or an unexpected failure; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => Self::SessionNotFound,
            SessionError::Stopped(r) => Self::SessionStopped(r),
            SessionError::AlreadyActive(id) => Self::SessionAlreadyActive(id),
            SessionError::Database(e) => {
                tracing::warn!(error = %e, "PostgreSQL failed during a request.");
                Self::Unavailable {
                    code: "database_unavailable",
                    message: "session metadata is unavailable; retry later".into(),
                    retry_after_secs: 1,
                }
            }
        }
    }
}

fn body(code: &str, message: impl Into<String>) -> serde_json::Value {
    serde_json::to_value(ErrorBody {
        error: code.to_owned(),
        message: message.into(),
    })
    .expect("ErrorBody serializes")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, value) = match self {
            Self::Unauthorized(m) => (
                StatusCode::UNAUTHORIZED,
                body(
                    "unauthorized",
                    format!(
                        "{m}; send `Authorization: Bearer <token>` with a valid, unexpired token"
                    ),
                ),
            ),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, body("forbidden", m)),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, body("not_found", m)),
            Self::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                body(
                    "method_not_allowed",
                    "this endpoint does not take this method; see docs/devices.md",
                ),
            ),
            Self::SessionNotFound => (
                StatusCode::NOT_FOUND,
                body(
                    "session_not_found",
                    "no such session for this tenant; start one with POST /v1/sessions",
                ),
            ),
            Self::SessionStopped(reason) => {
                let (code, message) = match reason {
                    StopReason::Expired => (
                        "session_expired",
                        "the session ran past its maximum duration and takes no more fixes; start a new session",
                    ),
                    StopReason::Requested => (
                        "session_stopped",
                        "the session was stopped and takes no more fixes; start a new session",
                    ),
                };
                (StatusCode::CONFLICT, body(code, message))
            }
            Self::SessionAlreadyActive(id) => {
                let mut v = body(
                    "session_already_active",
                    format!(
                        "this device already has an active session {id}; stop it or keep posting to it"
                    ),
                );
                v["session_id"] = json!(id);
                (StatusCode::CONFLICT, v)
            }
            Self::BadRequest { code, message } => (StatusCode::BAD_REQUEST, body(code, message)),
            Self::TooLarge { code, message } => {
                (StatusCode::PAYLOAD_TOO_LARGE, body(code, message))
            }
            Self::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body("unsupported_media_type", m),
            ),
            Self::AllRejected(batch) => {
                let mut v = serde_json::to_value(&batch).expect("BatchResponse serializes");
                v["error"] = json!("all_fixes_rejected");
                v["message"] = json!(
                    "every fix of the batch was rejected (see `rejected`); nothing was stored"
                );
                (StatusCode::UNPROCESSABLE_ENTITY, v)
            }
            Self::RateLimited {
                retry_after_secs,
                scope,
            } => {
                retry_after = Some(retry_after_secs);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    body(
                        "rate_limited",
                        format!(
                            "the {scope} is over its rate of fixes; retry the same batch after {retry_after_secs} s"
                        ),
                    ),
                )
            }
            Self::Unavailable {
                code,
                message,
                retry_after_secs,
            } => {
                retry_after = Some(retry_after_secs);
                (StatusCode::SERVICE_UNAVAILABLE, body(code, message))
            }
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "Request failed with an internal error.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    body("internal", "an internal error occurred; retry later"),
                )
            }
        };
        let mut response = (status, axum::Json(value)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"locus\""),
            );
        }
        response
    }
}
