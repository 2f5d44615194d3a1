//! The seed system's routes as aliases of the native API (registered in routes.rs, out of
//! the OpenAPI document, which lists each operation once under its native path):
//! `POST /location/session/start` is `POST /v1/sessions`, `GET /location/session/{id}` is
//! `GET /v1/sessions/{id}`, `POST /location/session/{id}/stop` is
//! `POST /v1/sessions/{id}/stop`, the same handlers; and `POST /location/update`, here, is
//! `POST /v1/sessions/{id}/locations` with the session id in the body, one point or a
//! batch. Same auth (a device token), same checks, same answers.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use locus_wire::BatchId;
use locus_wire::clients::seed;

use crate::auth::Caller;
use crate::body;
use crate::clients;
use crate::error::{ApiError, ErrorCode};
use crate::pipeline::{self, Durability, Submission};
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// `POST /location/update`: `{"session_id", "lat", "lon", "recorded_at", ...}` or
/// `{"session_id", "batch_id"?, "fixes": [...]}`; answered as the native batch route.
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    BatchMeter::new(state.usage.clone(), caller.tenant.clone())
        .measure(async |meter| post(&state, &caller, &headers, request, meter).await)
        .await
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
async fn post(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    caller.require_device()?;
    let durability = Durability::of_request(headers, caller, &state.config.redis)?;
    let limits = &state.config.limits;
    let bytes = body::json_bytes(headers, request, limits.max_body_bytes, false).await?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::invalid(
            ErrorCode::MalformedJson,
            format!("the body is not UTF-8 text: {e}"),
        )
    })?;
    let update = seed::decode_update(text, &clients::bounds(limits)).map_err(clients::refused)?;
    let mut batch = update.batch;
    match batch.fixes.len() {
        0 => {
            return Err(ApiError::invalid(
                ErrorCode::EmptyBatch,
                "the update has no fixes; send one point or at least one fix in `fixes`",
            ));
        }
        n if n > limits.max_fixes_per_batch => {
            return Err(ApiError::invalid(
                ErrorCode::TooManyFixes,
                format!(
                    "the update has {n} fixes; the most is {}: split it",
                    limits.max_fixes_per_batch
                ),
            ));
        }
        _ => {}
    }
    let given = batch.batch_id.take().or_else(|| {
        headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    });
    let batch_id = given
        .map(BatchId::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(ErrorCode::InvalidBatchId, e.to_string()))?;
    let submission = Submission {
        fixes: batch.fixes,
        extras: Vec::new(),
        batch_id,
        durability,
        body_bytes: bytes.len(),
    };
    match pipeline::store(state, caller, &update.session_id, submission, meter).await? {
        Ok(stored) => {
            let response = (StatusCode::ACCEPTED, axum::Json(&stored.answer)).into_response();
            Ok(stored.respond(response))
        }
        Err(refused) => Ok(refused),
    }
}
