//! POST /v1/sessions/{id}/locations: a device posts a batch of fixes.
//!
//! The order of checks is the order of cost: token, body, rate limit, session (one
//! PostgreSQL read), validation, then the one Redis round trip that stores the batch.
//! Nothing is written before the last step, so every refusal leaves no trace.
//!
//! The `Locus-Durability` header (or the tenant's default) says what the 202 waits for:
//! `buffered`, the Redis append (as durable as Redis' persistence), or `kafka`, the
//! forwarder's Kafka confirmation of the batch. docs/guarantees.md says what each loses.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use locus_wire::BatchId;
use locus_wire::api::{BatchResponse, ErrorBody, LocationBatch, RejectedBatch};

use crate::auth::Caller;
use crate::body;
use crate::config::RequestLimits;
use crate::error::{ApiError, ErrorCode};
use crate::pipeline::{self, Durability, Submission};
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Header a client may use instead of `batch_id` in the body.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Post a batch of location fixes to a session.
///
/// 202 with counts and per-fix rejections once the batch is in Redis (or on Kafka, with
/// `Locus-Durability: kafka`); 422 when no fix was valid; 409 for a stopped session or a
/// batch id reused for other fixes; 429 or 503 with Retry-After. A batch posted again with
/// the same batch id (body `batch_id` or `Idempotency-Key`) is answered, not stored twice.
/// The body may be gzip (`Content-Encoding: gzip`).
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/locations",
    operation_id = "post_locations",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "The session id (a UUID); any other value reads as not found."),
        ("Idempotency-Key" = Option<String>, Header, description = "The batch id, when the body has no `batch_id`: 1 to 128 printable ASCII characters.", min_length = 1, max_length = 128, pattern = "^[!-~]+$"),
        ("Locus-Durability" = Option<String>, Header, description = "What the 202 waits for: `buffered` (the batch is in the Redis buffer; the default, unless the tenant's default is `kafka`) or `kafka` (Kafka confirmed the batch). docs/guarantees.md says what each can lose."),
    ),
    request_body(content = LocationBatch, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored (or already stored: `duplicate`); `rejected` lists the fixes refused.", body = BatchResponse,
            headers(("Locus-Durability" = String, description = "The level the 202 was given under."))),
        (status = 400, description = "`invalid_batch_id`, `invalid_durability`, `empty_batch`, `malformed_json`, `invalid_body`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only device tokens post fixes.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 409, description = "`session_stopped`, `session_expired` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_fixes` or `batch_over_burst`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON, or its encoding is not gzip.", body = ErrorBody),
        (status = 422, description = "`all_fixes_rejected`: no fix was valid and nothing was stored; the body is the batch answer (see `rejected`) with `error` and `message`.", body = RejectedBatch),
        (status = 429, description = "`rate_limited`: retry the same batch after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`internal`: a bug; the cause is logged.", body = ErrorBody),
        (status = 503, description = "`buffer_full`, `buffer_unavailable`, `kafka_unconfirmed` or `database_unavailable`: retry the same batch after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device"]))
)]
pub async fn handler(
    state: State<AppState>,
    caller: Caller,
    path: Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    // Usage is counted by the answer, whichever check gave it.
    BatchMeter::new(state.usage.clone(), caller.tenant.clone())
        .measure(async |meter| post(state, caller, path, headers, request, meter).await)
        .await
}

/// The work of [`handler`]; `meter` learns what the request counts for usage.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
async fn post(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    caller.require_device()?;
    let durability = Durability::of_request(&headers, &caller, &state.config.redis)?;
    let limits = &state.config.limits;
    let bytes = body::json_bytes(&headers, request, limits.max_body_bytes, false).await?;
    let mut batch = body::batch(&bytes, limits)?;
    check_size(&batch, limits)?;
    let batch_id = batch_id(batch.batch_id.take(), &headers)?;
    let submission = Submission {
        fixes: batch.fixes,
        extras: Vec::new(),
        batch_id,
        durability,
        body_bytes: bytes.len(),
    };
    match pipeline::store(&state, &caller, &id, submission, meter).await? {
        Ok(stored) => {
            let response = (StatusCode::ACCEPTED, axum::Json(&stored.answer)).into_response();
            Ok(stored.respond(response))
        }
        Err(refused) => Ok(refused),
    }
}

/// Refuses an empty batch and one over the most fixes per batch.
fn check_size(batch: &LocationBatch, limits: &RequestLimits) -> Result<(), ApiError> {
    let max = limits.max_fixes_per_batch;
    match batch.fixes.len() {
        0 => Err(ApiError::invalid(
            ErrorCode::EmptyBatch,
            "the batch has no fixes; send at least one in `fixes`",
        )),
        n if n > max => Err(ApiError::invalid(
            ErrorCode::TooManyFixes,
            format!("the batch has {n} fixes; the most is {max}: split it"),
        )),
        _ => Ok(()),
    }
}

/// The batch id from the body, else the `Idempotency-Key` header; `None` when the client
/// gave none (the id is then derived from the session and the fixes).
fn batch_id(from_body: Option<String>, headers: &HeaderMap) -> Result<Option<BatchId>, ApiError> {
    // A header that is not ASCII becomes "" and is refused below, rather than ignored:
    // ignoring it would store a retry twice.
    let given = from_body.or_else(|| {
        headers
            .get(IDEMPOTENCY_KEY)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    });
    match given {
        None => Ok(None),
        Some(id) => BatchId::parse(id)
            .map(Some)
            .map_err(|e| ApiError::invalid(ErrorCode::InvalidBatchId, e.to_string())),
    }
}
