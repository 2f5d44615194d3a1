//! The one error type of the HTTP edge, and every stable error code it can answer with.
//!
//! Policy: every answer that is not a success carries a JSON body `{error, message}` where
//! `error` is a stable code ([`ErrorCode`]: clients switch on it, so a code is never renamed)
//! and `message` says what was wrong and how to fix it. Internal failures are logged with
//! their cause and reach the client as a generic 500, or as 503 with Retry-After when
//! retrying will help; internals never leak.
//!
//! Library code (admission, the buffer, the session store) returns its own typed errors;
//! the `From` conversions at the bottom decide what each means to a client.
//!
//! Over 400 lines on purpose: every code, its status and its message in one place is the
//! point of this file.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use locus_session::SessionError;
use locus_wire::api::{BatchResponse, ErrorBody, StopReason};
use locus_wire::{BatchId, SessionId};
use serde_json::json;

use crate::buffer::BufferError;

/// Every stable code of an error answer, with the status it comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 401: no token, a malformed one, a bad signature, expired, wrong issuer or audience.
    Unauthorized,
    /// 403: the token is valid but its role may not do this.
    Forbidden,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint exists but not with this method.
    MethodNotAllowed,
    /// 404: no such session in the caller's tenant (also for another tenant's session).
    SessionNotFound,
    /// 409: the session ran past its maximum duration.
    SessionExpired,
    /// 409: the session was stopped.
    SessionStopped,
    /// 409: the device already has an active session.
    SessionAlreadyActive,
    /// 409: the tenant has its most sessions active at once (`max_active_sessions`).
    TooManyActiveSessions,
    /// 400: `max_duration_secs` out of range.
    InvalidMaxDuration,
    /// 400: a query parameter is not what the endpoint takes.
    InvalidQuery,
    /// 400: the batch id is not 1 to 128 printable ASCII characters.
    InvalidBatchId,
    /// 409: the batch id was used before in this session for other fixes.
    BatchIdReused,
    /// 400: the `Locus-Durability` header is not a level ingest knows.
    InvalidDurability,
    /// 503: the batch is stored in the buffer, but Kafka did not confirm it in time (asked
    /// for with `Locus-Durability: kafka`).
    KafkaUnconfirmed,
    /// 400: the batch has no fixes.
    EmptyBatch,
    /// 400: the body is not JSON (or not UTF-8).
    MalformedJson,
    /// 400: the body is JSON of the wrong shape.
    InvalidBody,
    /// 400: the body says gzip but is not.
    MalformedGzip,
    /// 400: the body could not be read to its end.
    BodyUnreadable,
    /// 413: the body is over the size bound (after decompression).
    BodyTooLarge,
    /// 413: the batch has more fixes than one batch may.
    TooManyFixes,
    /// 400: the JSON nests deeper than `LOCUS_MAX_JSON_DEPTH`.
    JsonTooDeep,
    /// 413: a string of the body is longer than `LOCUS_MAX_STRING_BYTES`.
    StringTooLong,
    /// 413: the batch has more fixes than a rate-limit burst allows.
    BatchOverBurst,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: every fix of the batch was rejected; nothing was stored.
    AllFixesRejected,
    /// 429: over the rate limit.
    RateLimited,
    /// 503: a buffer shard is full (delivery to Kafka is behind).
    BufferFull,
    /// 503: Redis did not take the write.
    BufferUnavailable,
    /// 503: PostgreSQL failed.
    DatabaseUnavailable,
    /// 403: the device is not in its tenant's registry.
    DeviceNotRegistered,
    /// 403: the device was revoked.
    DeviceRevoked,
    /// 401: the device credential is unknown or revoked.
    InvalidCredential,
    /// 400: an id in the body or path is not a valid identifier.
    InvalidId,
    /// 400: a sink's URL or secret is not acceptable.
    InvalidSink,
    /// 400: a tenant limit is out of range.
    InvalidLimits,
    /// 400: the pagination cursor is not one this API gave out.
    InvalidCursor,
    /// 404: no such tenant (or not visible to the caller).
    TenantNotFound,
    /// 404: no such device in the caller's tenant.
    DeviceNotFound,
    /// 404: no such partner.
    PartnerNotFound,
    /// 404: the partner has no grant from this tenant.
    GrantNotFound,
    /// 404: the tenant has no sink.
    SinkNotFound,
    /// 409: a tenant with this id exists.
    TenantExists,
    /// 409: a device with this id exists in the tenant.
    DeviceExists,
    /// 409: a partner with this id exists.
    PartnerExists,
    /// 503: the replica serves its most requests at once (`LOCUS_HTTP_MAX_IN_FLIGHT`).
    Overloaded,
    /// 408: the request body did not arrive within `LOCUS_HTTP_BODY_TIMEOUT_MS`.
    RequestTimeout,
    /// 503: the request was not answered within `LOCUS_HTTP_REQUEST_TIMEOUT_MS`.
    DeadlineExceeded,
    /// 404: no such geofence in the caller's tenant (also for another tenant's fence).
    GeofenceNotFound,
    /// 422: a geofence's geometry or circle is not an area Locus can check fixes against.
    InvalidGeofence,
    /// 403: a client request names another device than its credential's (docs/clients.md).
    DeviceMismatch,
    /// 400: a client request (OsmAnd) names no device.
    MissingDevice,
    /// 404: the device has no known position yet (no fix of it reached the tracker), or is
    /// not the caller's to see.
    PositionNotFound,
    /// 500: a bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    /// The code as it appears in the body's `error` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::SessionNotFound => "session_not_found",
            Self::SessionExpired => "session_expired",
            Self::SessionStopped => "session_stopped",
            Self::SessionAlreadyActive => "session_already_active",
            Self::TooManyActiveSessions => "too_many_active_sessions",
            Self::InvalidMaxDuration => "invalid_max_duration",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidBatchId => "invalid_batch_id",
            Self::BatchIdReused => "batch_id_reused",
            Self::InvalidDurability => "invalid_durability",
            Self::KafkaUnconfirmed => "kafka_unconfirmed",
            Self::EmptyBatch => "empty_batch",
            Self::MalformedJson => "malformed_json",
            Self::InvalidBody => "invalid_body",
            Self::MalformedGzip => "malformed_gzip",
            Self::BodyUnreadable => "body_unreadable",
            Self::BodyTooLarge => "body_too_large",
            Self::TooManyFixes => "too_many_fixes",
            Self::JsonTooDeep => "json_too_deep",
            Self::StringTooLong => "string_too_long",
            Self::BatchOverBurst => "batch_over_burst",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::AllFixesRejected => "all_fixes_rejected",
            Self::RateLimited => "rate_limited",
            Self::BufferFull => "buffer_full",
            Self::BufferUnavailable => "buffer_unavailable",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::DeviceNotRegistered => "device_not_registered",
            Self::DeviceRevoked => "device_revoked",
            Self::InvalidCredential => "invalid_credential",
            Self::InvalidId => "invalid_id",
            Self::InvalidSink => "invalid_sink",
            Self::InvalidLimits => "invalid_limits",
            Self::InvalidCursor => "invalid_cursor",
            Self::TenantNotFound => "tenant_not_found",
            Self::DeviceNotFound => "device_not_found",
            Self::PartnerNotFound => "partner_not_found",
            Self::GrantNotFound => "grant_not_found",
            Self::SinkNotFound => "sink_not_found",
            Self::TenantExists => "tenant_exists",
            Self::DeviceExists => "device_exists",
            Self::PartnerExists => "partner_exists",
            Self::Overloaded => "overloaded",
            Self::RequestTimeout => "request_timeout",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::GeofenceNotFound => "geofence_not_found",
            Self::InvalidGeofence => "invalid_geofence",
            Self::DeviceMismatch => "device_mismatch",
            Self::MissingDevice => "missing_device",
            Self::PositionNotFound => "position_not_found",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status of an answer with this code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::InvalidCredential => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::DeviceNotRegistered | Self::DeviceRevoked => {
                StatusCode::FORBIDDEN
            }
            Self::NotFound
            | Self::SessionNotFound
            | Self::TenantNotFound
            | Self::DeviceNotFound
            | Self::PartnerNotFound
            | Self::GrantNotFound
            | Self::SinkNotFound => StatusCode::NOT_FOUND,
            Self::TenantExists | Self::DeviceExists | Self::PartnerExists => StatusCode::CONFLICT,
            Self::InvalidId | Self::InvalidSink | Self::InvalidCursor | Self::InvalidLimits => {
                StatusCode::BAD_REQUEST
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::SessionExpired
            | Self::SessionStopped
            | Self::SessionAlreadyActive
            | Self::TooManyActiveSessions
            | Self::BatchIdReused => StatusCode::CONFLICT,
            Self::InvalidMaxDuration
            | Self::InvalidQuery
            | Self::InvalidBatchId
            | Self::InvalidDurability
            | Self::EmptyBatch
            | Self::MalformedJson
            | Self::InvalidBody
            | Self::MalformedGzip
            | Self::BodyUnreadable
            | Self::JsonTooDeep => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge
            | Self::TooManyFixes
            | Self::StringTooLong
            | Self::BatchOverBurst => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::AllFixesRejected => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::BufferFull
            | Self::BufferUnavailable
            | Self::DatabaseUnavailable
            | Self::KafkaUnconfirmed
            | Self::Overloaded
            | Self::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::GeofenceNotFound => StatusCode::NOT_FOUND,
            Self::InvalidGeofence => StatusCode::UNPROCESSABLE_ENTITY,
            Self::DeviceMismatch => StatusCode::FORBIDDEN,
            Self::MissingDevice => StatusCode::BAD_REQUEST,
            Self::PositionNotFound => StatusCode::NOT_FOUND,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An HTTP error answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token is not valid (why, in words: logged, never sent).
    #[error("{0}")]
    Unauthorized(String),
    /// The request carries no bearer token (what is missing: sent).
    #[error("{0}")]
    MissingToken(&'static str),
    /// The token's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such endpoint.
    #[error("{0}")]
    NotFound(String),
    /// The endpoint exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No such session in the caller's tenant (also for another tenant's session).
    #[error("session not found")]
    SessionNotFound,
    /// The session is stopped or expired.
    #[error("session is stopped")]
    SessionStopped(StopReason),
    /// The device already has an active session.
    #[error("device already has an active session")]
    SessionAlreadyActive(SessionId),
    /// The request is not what the endpoint takes (a 400 or 413 code).
    #[error("{message}")]
    Invalid {
        /// Which rule it broke.
        code: ErrorCode,
        /// What was wrong and how to fix it.
        message: String,
    },
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The batch id was used before in this session for other fixes; nothing was stored.
    #[error("batch id reused")]
    BatchIdReused(BatchId),
    /// Every fix of the batch was rejected; nothing was stored.
    #[error("every fix was rejected")]
    AllRejected(BatchResponse),
    /// A dependency cannot take the write now; retry later.
    #[error("{message}")]
    Unavailable {
        /// Which dependency.
        code: ErrorCode,
        /// What to do.
        message: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A bug or an unexpected failure; the cause is logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An answer with `code` (and its status) and `message`: what was wrong, how to fix it.
    pub fn coded(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::invalid(code, message)
    }

    /// A 400 or 413 answer with `code`.
    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    /// The stable code of this answer.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized(_) | Self::MissingToken(_) => ErrorCode::Unauthorized,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            Self::SessionNotFound => ErrorCode::SessionNotFound,
            Self::SessionStopped(StopReason::Expired) => ErrorCode::SessionExpired,
            Self::SessionStopped(StopReason::Requested) => ErrorCode::SessionStopped,
            Self::SessionAlreadyActive(_) => ErrorCode::SessionAlreadyActive,
            Self::Invalid { code, .. } | Self::Unavailable { code, .. } => *code,
            Self::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            Self::BatchIdReused(_) => ErrorCode::BatchIdReused,
            Self::AllRejected(_) => ErrorCode::AllFixesRejected,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// What the client reads in `message`.
    fn message(&self) -> String {
        match self {
            // Which check failed is logged, not sent: it would only help someone forging tokens.
            Self::Unauthorized(_) => "the bearer token is malformed, expired, not yet valid, or not issued for this service; devices get a new one with POST /v1/auth/token, admins from their identity provider".into(),
            Self::MissingToken(m) => {
                format!("{m}; send `Authorization: Bearer <token>` (devices get one with POST /v1/auth/token)")
            }
            Self::Forbidden(m) | Self::NotFound(m) | Self::UnsupportedMediaType(m) => m.clone(),
            Self::MethodNotAllowed => {
                "this endpoint does not take this method; see docs/devices.md".into()
            }
            Self::SessionNotFound => {
                "no such session for this tenant; start one with POST /v1/sessions".into()
            }
            Self::SessionStopped(StopReason::Expired) => "the session ran past its maximum duration and takes no more fixes; start a new session".into(),
            Self::SessionStopped(StopReason::Requested) => {
                "the session was stopped and takes no more fixes; start a new session".into()
            }
            Self::SessionAlreadyActive(id) => format!(
                "this device already has an active session {id}; stop it or keep posting to it"
            ),
            Self::Invalid { message, .. } | Self::Unavailable { message, .. } => message.clone(),
            Self::BatchIdReused(id) => format!(
                "batch id {id} was already used in this session for other fixes, so this batch was not stored; give every batch its own id and reuse an id only to retry the very same fixes"
            ),
            Self::AllRejected(_) => {
                "every fix of the batch was rejected (see `rejected`); nothing was stored".into()
            }
            Self::Internal(_) => "an internal error occurred; retry later".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "Request failed with an internal error.");
        }
        let message = self.message();
        let mut value = match &self {
            // The batch answer itself, so the client sees why each fix was rejected.
            Self::AllRejected(batch) => {
                serde_json::to_value(batch).expect("BatchResponse serializes")
            }
            _ => serde_json::to_value(ErrorBody {
                error: code.as_str().to_owned(),
                message: message.clone(),
            })
            .expect("ErrorBody serializes"),
        };
        value["error"] = json!(code.as_str());
        value["message"] = json!(message);
        if let Self::SessionAlreadyActive(id) = &self {
            value["session_id"] = json!(id);
        }
        let retry_after = match &self {
            Self::Unavailable {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let status = code.status();
        let mut response = (status, axum::Json(value)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        // RFC 6750 §3: no error attribute when the request had no token at all.
        let challenge = match &self {
            Self::Unauthorized(_) => Some("Bearer realm=\"locus\", error=\"invalid_token\""),
            Self::MissingToken(_) => Some("Bearer realm=\"locus\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound => Self::SessionNotFound,
            SessionError::Stopped(r) => Self::SessionStopped(r),
            SessionError::AlreadyActive(id) => Self::SessionAlreadyActive(id),
            SessionError::DeviceNotRegistered => Self::coded(
                ErrorCode::DeviceNotRegistered,
                "this device is not registered in its tenant; a tenant admin registers it with POST /v1/devices",
            ),
            SessionError::DeviceRevoked => Self::coded(
                ErrorCode::DeviceRevoked,
                "this device was revoked by a tenant admin; register a new device to record again",
            ),
            SessionError::Database(e) => {
                tracing::warn!(error = %e, "PostgreSQL failed during a request.");
                Self::Unavailable {
                    code: ErrorCode::DatabaseUnavailable,
                    message: "session metadata is unavailable; retry later".into(),
                    retry_after_secs: 1,
                }
            }
        }
    }
}

impl From<locus_session::usage::UsageError> for ApiError {
    fn from(e: locus_session::usage::UsageError) -> Self {
        use locus_session::usage::UsageError;
        match e {
            UsageError::InvalidRange { max_days } => Self::invalid(
                ErrorCode::InvalidQuery,
                format!(
                    "`from` must be before `to`, and the range at most {max_days} days long: ask for a month at a time"
                ),
            ),
            UsageError::Database(e) => {
                tracing::warn!(error = %e, "PostgreSQL failed reading usage.");
                Self::Unavailable {
                    code: ErrorCode::DatabaseUnavailable,
                    message: "usage is unavailable; retry later".into(),
                    retry_after_secs: 1,
                }
            }
        }
    }
}

impl From<BufferError> for ApiError {
    fn from(e: BufferError) -> Self {
        match e {
            BufferError::Full(shard, max_entries) => Self::Unavailable {
                code: ErrorCode::BufferFull,
                message: format!(
                    "the ingest buffer (shard {shard}) holds its bound of {max_entries} entries (LOCUS_BUFFER_MAX_ENTRIES) because delivery to Kafka is behind; nothing was stored: retry the same request after Retry-After seconds"
                ),
                retry_after_secs: 5,
            },
            BufferError::Deadline(deadline) => Self::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: format!(
                    "the buffer (Redis) did not answer within {} ms (LOCUS_REDIS_DEADLINE_MS), so the request may or may not have been stored: retry the same request (same batch id) after Retry-After seconds; a retry is never stored twice",
                    deadline.as_millis()
                ),
                retry_after_secs: 1,
            },
            BufferError::Redis(_) | BufferError::Encoding(_) => Self::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: "the buffer did not confirm the batch, so it may or may not have been stored: retry the same batch (same batch id) later; a retry is never stored twice"
                    .into(),
                retry_after_secs: 2,
            },
            // A bug (or a foreign writer): retrying gets the same unreadable value.
            BufferError::Remembered(_) => Self::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_keeps_its_name_and_status() {
        let cases = [
            (ErrorCode::SessionExpired, "session_expired", 409),
            (ErrorCode::InvalidBatchId, "invalid_batch_id", 400),
            (ErrorCode::BatchIdReused, "batch_id_reused", 409),
            (ErrorCode::InvalidDurability, "invalid_durability", 400),
            (ErrorCode::KafkaUnconfirmed, "kafka_unconfirmed", 503),
            (ErrorCode::TooManyFixes, "too_many_fixes", 413),
            (ErrorCode::BatchOverBurst, "batch_over_burst", 413),
            (ErrorCode::AllFixesRejected, "all_fixes_rejected", 422),
            (ErrorCode::RateLimited, "rate_limited", 429),
            (ErrorCode::BufferFull, "buffer_full", 503),
            (ErrorCode::Internal, "internal", 500),
        ];
        for (code, name, status) in cases {
            assert_eq!((code.as_str(), code.status().as_u16()), (name, status));
        }
    }

    #[test]
    fn a_full_buffer_is_a_503_that_says_to_retry_the_same_batch() {
        let e = ApiError::from(BufferError::Full(2, 10));
        assert_eq!(e.code(), ErrorCode::BufferFull);
        let response = e.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
