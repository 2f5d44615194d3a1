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
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use locus_wire::api::{BatchResponse, ErrorBody, Fix, FixLimits, LocationBatch, RejectedBatch};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::{BatchId, SessionId, fingerprint};

use crate::auth::Caller;
use crate::buffer::{Append, BufferError, Forwarded, Previous};
use crate::config::{RedisSettings, RequestLimits};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::usage::BatchMeter;
use crate::{body, events};

/// Header a client may use instead of `batch_id` in the body.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Header that chooses what the 202 waits for (see [`Durability`]); the 202 carries the
/// level it was given under.
const DURABILITY: &str = "locus-durability";

/// What a 202 waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The batch is appended to the Redis buffer (the default).
    Buffered,
    /// Kafka confirmed every record of the batch.
    Kafka,
}

impl Durability {
    /// The level as the header spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffered => "buffered",
            Self::Kafka => "kafka",
        }
    }
}

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
    let mut meter = BatchMeter::new(state.usage.clone(), caller.tenant.clone());
    let answer = post(state, caller, path, headers, request, &mut meter).await;
    meter.settle(&answer);
    answer
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
    let durability = durability(&headers, &caller, &state.config.redis)?;
    let limits = &state.config.limits;
    let bytes = body::json_bytes(&headers, request, limits.max_body_bytes, false).await?;
    let mut batch = body::batch(&bytes, limits)?;
    check_size(&batch, limits)?;
    meter.decoded(batch.fixes.len());
    let given_id = batch_id(batch.batch_id.take(), &headers)?;
    let fingerprint = fingerprint::of_fixes(&batch.fixes);
    // The tenant's batch maximum and the fixes budgets (device and tenant, shared by the
    // replicas): a refusal charges neither budget.
    let admitted = match state
        .admission
        .admit_fixes(&caller.tenant, &caller.subject, batch.fixes.len())
        .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => {
            if refusal.is_rate() {
                state
                    .usage
                    .rate_limited(&caller.tenant, batch.fixes.len() as u64);
            }
            return refusal.into_result();
        }
    };

    // PostgreSQL first; while it is away, this replica's read of the session within
    // LOCUS_SESSION_CACHE_SECS (crate::cache), then 503.
    let (session, source) = crate::cache::batch_session(&state, &caller, &id).await?;
    let session_id = session.id;
    let batch_id =
        given_id.unwrap_or_else(|| fingerprint::derived_batch_id(session_id, &fingerprint));
    let session = match crate::cache::ensure_open(&state, session, source).await {
        Ok(s) => s,
        Err((e, expired_now)) => {
            if let Some(expired) = expired_now {
                state.session_events.flush(&[expired.id]).await;
            }
            // A retry of a batch stored before the session stopped must hear that it was
            // stored, not that the session is closed.
            let previous = state
                .buffer
                .previous_answer(session_id, &batch_id, &fingerprint)
                .await;
            match previous {
                Ok(Some(Previous::Same(answer))) => {
                    confirm(&state, durability, session_id, None).await?;
                    return Ok(admitted.with_headers(duplicate(answer, durability)));
                }
                Ok(Some(Previous::Other)) => return Err(ApiError::BatchIdReused(batch_id)),
                // Nothing stored under this id, or Redis cannot tell: the session's state
                // is the answer.
                Ok(None) | Err(_) => {}
            }
            return Err(e.into());
        }
    };

    let now = Utc::now();
    let (accepted, answer) = validate(&batch, &batch_id, now, &state.limits);
    meter.validated(&answer);
    if accepted.is_empty() {
        return Err(ApiError::AllRejected(answer));
    }
    let n = accepted.len();
    let entry = BufferEntry::Fixes(BufferedBatch {
        tenant_id: session.tenant_id,
        session_id: session.id,
        device_id: session.device_id,
        batch_id: batch_id.clone(),
        received_at: now,
        fixes: accepted,
    });
    let mut appended = state
        .buffer
        .append_batch(&entry, &batch_id, &fingerprint, &answer, false)
        .await;
    if let Ok(Append::Unopened) = appended {
        // The buffer has no mark of the session's start: its publication failed (Redis was
        // away) and the relay has not retried yet, or the session began before the mark
        // existed or sat idle past its lifetime. Publishing the session's outbox rows here
        // puts the start ahead of this batch; the second append then sets the mark, so
        // this costs one PostgreSQL query once per session, not per batch.
        if state.session_events.try_flush(&[session.id]).await.is_err() {
            return Err(ApiError::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: "the buffer could not take the session's start event, so the batch was not stored: retry the same batch later".into(),
                retry_after_secs: 2,
            });
        }
        appended = state
            .buffer
            .append_batch(&entry, &batch_id, &fingerprint, &answer, true)
            .await;
    }
    match appended {
        Ok(Append::Stored { entry_id }) => {
            events::FixesAccepted { count: n }.emit();
            meter.stored(n, bytes.len());
            confirm(&state, durability, session.id, Some(&entry_id)).await?;
            Ok(admitted.with_headers(answered(answer, durability)))
        }
        Ok(Append::Duplicate(previous)) => {
            // The first post may still be waiting for Kafka, or may have been answered
            // 503 unconfirmed: this retry waits for the same confirmation.
            confirm(&state, durability, session.id, None).await?;
            Ok(admitted.with_headers(duplicate(previous, durability)))
        }
        Ok(Append::Reused) => Err(ApiError::BatchIdReused(batch_id)),
        // The session stopped between its read above and this append.
        Ok(Append::Closed(reason)) => Err(ApiError::SessionStopped(reason)),
        // The second append skips the check that answers this.
        Ok(Append::Unopened) => Err(ApiError::Internal(
            "the buffer refused a batch after its session's start was published".into(),
        )),
        Err(e) => {
            match &e {
                BufferError::Full(..) => events::AdmissionRefused {
                    reason: "buffer_full",
                }
                .emit(),
                _ => events::BufferWriteFailed { error: &e }.emit(),
            }
            Err(e.into())
        }
    }
}

/// The level the request asks for in [`DURABILITY`], else its tenant's default.
fn durability(
    headers: &HeaderMap,
    caller: &Caller,
    settings: &RedisSettings,
) -> Result<Durability, ApiError> {
    let Some(value) = headers.get(DURABILITY) else {
        let tenant = caller.tenant.as_str();
        return Ok(
            if settings
                .durability_kafka_tenants
                .iter()
                .any(|t| t == tenant)
            {
                Durability::Kafka
            } else {
                Durability::Buffered
            },
        );
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value.eq_ignore_ascii_case("buffered") {
        Ok(Durability::Buffered)
    } else if value.eq_ignore_ascii_case("kafka") {
        Ok(Durability::Kafka)
    } else {
        Err(ApiError::invalid(
            ErrorCode::InvalidDurability,
            format!(
                "Locus-Durability is {value:?}; it takes `buffered` (the 202 once the batch is in the buffer, the default) or `kafka` (the 202 once Kafka confirmed it)"
            ),
        ))
    }
}

/// Waits for Kafka's confirmation of the batch when `durability` asks for it. `entry_id`
/// is the batch's stream entry when it was stored now (see [`Buffer::wait_forwarded`]).
///
/// [`Buffer::wait_forwarded`]: crate::buffer::Buffer::wait_forwarded
async fn confirm(
    state: &AppState,
    durability: Durability,
    session: SessionId,
    entry_id: Option<&str>,
) -> Result<(), ApiError> {
    if durability == Durability::Buffered {
        return Ok(());
    }
    let timeout_ms = state.config.redis.durability_kafka_timeout_ms;
    let waited = state
        .buffer
        .wait_forwarded(
            session,
            entry_id,
            std::time::Duration::from_millis(timeout_ms),
        )
        .await;
    match waited {
        Ok(Forwarded::Confirmed) => return Ok(()),
        Ok(Forwarded::NotYet) => {}
        Err(e) => events::BufferWriteFailed { error: &e }.emit(),
    }
    Err(ApiError::Unavailable {
        code: ErrorCode::KafkaUnconfirmed,
        message: format!(
            "the batch is stored in the buffer, but Kafka has not confirmed it within {timeout_ms} ms: retry the same batch (same batch id, same Locus-Durability) later; the retry is not stored again, and its answer waits for the confirmation"
        ),
        retry_after_secs: 1,
    })
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

/// Splits the fixes into the valid ones and the answer that lists the rejected ones.
fn validate(
    batch: &LocationBatch,
    batch_id: &BatchId,
    now: DateTime<Utc>,
    limits: &FixLimits,
) -> (Vec<Fix>, BatchResponse) {
    let mut accepted = Vec::with_capacity(batch.fixes.len());
    let mut rejected = Vec::new();
    for (index, raw) in batch.fixes.iter().enumerate() {
        match Fix::parse(index as u32, raw, now, limits) {
            Ok(fix) => accepted.push(fix),
            Err(r) => rejected.push(r),
        }
    }
    for r in &rejected {
        events::FixesRejected {
            reason: r.reason.as_str(),
            count: 1,
        }
        .emit();
    }
    let answer = BatchResponse {
        batch_id: batch_id.to_string(),
        accepted: accepted.len() as u32,
        rejected,
        duplicate: false,
    };
    (accepted, answer)
}

/// The 202 with `answer`, saying the level it was given under.
fn answered(answer: BatchResponse, durability: Durability) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(answer)).into_response();
    response
        .headers_mut()
        .insert(DURABILITY, HeaderValue::from_static(durability.as_str()));
    response
}

/// The answer to a batch stored before: what it got then, marked as a duplicate.
fn duplicate(previous: BatchResponse, durability: Durability) -> Response {
    events::BatchDuplicate.emit();
    answered(
        BatchResponse {
            duplicate: true,
            ..previous
        },
        durability,
    )
}
