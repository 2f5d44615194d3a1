//! POST /v1/sessions/{id}/locations: a device posts a batch of fixes.
//!
//! The order of checks is the order of cost: token, body, rate limit, session (one
//! PostgreSQL read), validation, then the one Redis round trip that stores the batch.
//! Nothing is written before the last step, so every refusal leaves no trace.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::Utc;
use locus_wire::api::{BatchResponse, Fix, LocationBatch};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::record::SessionEventKind;

use super::sessions_get::visible_session;
use crate::auth::Caller;
use crate::buffer::{Append, BufferError};
use crate::error::ApiError;
use crate::startup::AppState;
use crate::{body, events};

/// Header a client may use instead of `batch_id` in the body.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn batch_id(from_body: Option<String>, headers: &HeaderMap) -> Result<String, ApiError> {
    // A header that is not ASCII becomes "" and is refused below, rather than ignored:
    // ignoring it would store a retry twice.
    let given = from_body.or_else(|| {
        headers
            .get(IDEMPOTENCY_KEY)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    });
    match given {
        None => Ok(uuid::Uuid::new_v4().to_string()),
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(id)
        }
        Some(_) => Err(ApiError::BadRequest {
            code: "invalid_batch_id",
            message: "batch_id must be 1 to 128 printable ASCII characters without spaces".into(),
        }),
    }
}

/// 202 with counts and per-fix rejections once the batch is in Redis; 422 when no fix
/// was valid; 409 for a stopped session; 429 or 503 with Retry-After.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_device()?;
    let bytes = body::json_bytes(&headers, request, state.config.max_body_bytes, false).await?;
    let batch: LocationBatch = body::parse(&bytes)?;
    if batch.fixes.is_empty() {
        return Err(ApiError::BadRequest {
            code: "empty_batch",
            message: "the batch has no fixes; send at least one in `fixes`".into(),
        });
    }
    let max = state.config.max_fixes_per_batch;
    if batch.fixes.len() > max {
        return Err(ApiError::TooLarge {
            code: "too_many_fixes",
            message: format!(
                "the batch has {} fixes; the most is {max}: split it",
                batch.fixes.len()
            ),
        });
    }
    let batch_id = batch_id(batch.batch_id, &headers)?;
    state
        .admission
        .admit(&caller.tenant, &caller.subject, batch.fixes.len())?;

    let session = visible_session(&state, &caller, &id).await?;
    let session_id = session.id;
    let session = match state.store.ensure_open(session).await {
        Ok(s) => s,
        Err((e, expired_now)) => {
            if let Some(expired) = expired_now {
                state
                    .publish_session_event(SessionEventKind::Stopped, &expired)
                    .await;
            }
            // A retry of a batch stored before the session stopped must hear that it was
            // stored, not that the session is closed.
            if let Ok(Some(previous)) = state.buffer.previous_answer(session_id, &batch_id).await {
                events::batch_duplicate();
                return Ok((
                    StatusCode::ACCEPTED,
                    axum::Json(BatchResponse {
                        duplicate: true,
                        ..previous
                    }),
                ));
            }
            return Err(e.into());
        }
    };

    let now = Utc::now();
    let mut accepted = Vec::with_capacity(batch.fixes.len());
    let mut rejected = Vec::new();
    for (index, raw) in batch.fixes.iter().enumerate() {
        match Fix::parse(index as u32, raw, now, &state.limits) {
            Ok(fix) => accepted.push(fix),
            Err(r) => rejected.push(r),
        }
    }
    for r in &rejected {
        events::fixes_rejected(r.reason.as_str(), 1);
    }
    let answer = BatchResponse {
        batch_id: batch_id.clone(),
        accepted: accepted.len() as u32,
        rejected,
        duplicate: false,
    };
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
    match state.buffer.append_batch(&entry, &batch_id, &answer).await {
        Ok(Append::Stored) => {
            events::fixes_accepted(n);
            Ok((StatusCode::ACCEPTED, axum::Json(answer)))
        }
        Ok(Append::Duplicate(previous)) => {
            events::batch_duplicate();
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(BatchResponse {
                    duplicate: true,
                    ..previous
                }),
            ))
        }
        Err(BufferError::Full(shard)) => {
            events::admission_refused("buffer_full");
            Err(ApiError::Unavailable {
                code: "buffer_full",
                message: format!(
                    "the ingest buffer (shard {shard}) is full because delivery to Kafka is behind; retry the same batch later"
                ),
                retry_after_secs: 5,
            })
        }
        Err(e) => {
            events::buffer_unavailable(&e);
            Err(ApiError::Unavailable {
                code: "buffer_unavailable",
                message:
                    "the batch could not be stored; nothing was kept: retry the same batch later"
                        .into(),
                retry_after_secs: 2,
            })
        }
    }
}
