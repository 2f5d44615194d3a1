//! POST /v1/clients/owntracks: OwnTracks in HTTP mode, one JSON message per request.
//!
//! `location` messages are stored as one fix; every other type (transition, waypoint,
//! lwt, card, status, ...) is answered and dropped. The answer is a JSON array, which
//! the app reads as messages for it: `[]`, none.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use locus_wire::api::{ErrorBody, RejectedBatch};
use locus_wire::clients::owntracks;
use serde_json::json;

use crate::auth::Caller;
use crate::clients::{self, auth::ClientCaller};
use crate::error::ApiError;
use crate::events;
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Post one OwnTracks message (HTTP mode).
///
/// 200 `[]` once a location is stored, or at once for a message of another type. Basic
/// auth: the user is the device id (or empty), the password its credential.
#[utoipa::path(
    post,
    path = "/v1/clients/owntracks",
    operation_id = "post_client_owntracks",
    tag = "clients",
    params(
        ("token" = Option<String>, Query, description = "The device credential (`lcd_...`), when basic auth is not used."),
    ),
    request_body(content = Object, description = "An OwnTracks message: `{\"_type\": \"location\", \"lat\", \"lon\", \"tst\" (epoch s), \"acc\", \"alt\", \"vel\" (km/h), \"cog\", \"batt\", \"tid\", ...}`; other `_type`s are ignored.", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored, or a message of another type ignored: `[]`."),
        (status = 400, description = "`malformed_json`, `invalid_body`, `json_too_deep`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential or token) or `invalid_credential`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (not a device), `device_mismatch`, `device_not_registered` or `device_revoked`.", body = ErrorBody),
        (status = 409, description = "`too_many_active_sessions` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `string_too_long` or `batch_over_burst`.", body = ErrorBody),
        (status = 422, description = "`all_fixes_rejected`: the location was not valid; nothing was stored.", body = RejectedBatch),
        (status = 429, description = "`rate_limited`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`internal`: a bug; the cause is logged.", body = ErrorBody),
        (status = 503, description = "`buffer_full`, `buffer_unavailable`, `kafka_unconfirmed` or `database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device"]))
)]
pub async fn handler(
    State(state): State<AppState>,
    client: ClientCaller,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let caller = client.caller;
    BatchMeter::new(state.usage.clone(), caller.tenant.clone())
        .measure(async |meter| post(&state, &caller, &headers, request, meter).await)
        .await
}

#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device = %caller.subject))]
async fn post(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let text = clients::body_text(headers, request, limits).await?;
    let size = text.len();
    let message = owntracks::decode(&text, &clients::bounds(limits)).map_err(clients::refused)?;
    let empty = || (StatusCode::OK, axum::Json(json!([]))).into_response();
    if message.batch.fixes.is_empty() {
        events::ClientMessageIgnored {
            format: "owntracks",
        }
        .emit();
        return Ok(empty());
    }
    match clients::store(state, caller, message.batch, None, headers, size, meter).await? {
        Ok(stored) => Ok(stored.respond(empty())),
        Err(refused) => Ok(refused),
    }
}
