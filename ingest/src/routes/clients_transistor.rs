//! POST /v1/clients/transistor: the JSON of Transistorsoft's background-geolocation SDKs
//! (react-native, flutter, cordova, capacitor) and of Traccar Client 9+.
//!
//! The SDK deletes its local copy of a location on any 2xx, so the answer is 200 only once
//! the batch is stored (or was, for a retry); every refusal is a 4xx or 5xx and the SDK
//! keeps the location and retries. A location's `uuid` is its dedupe key: a batch of one
//! location takes its uuid as batch id, and every record's id comes from the uuid, so a
//! location sent again in another batch is still one record.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use locus_wire::BatchId;
use locus_wire::api::{BatchResponse, ErrorBody, RejectedBatch};
use locus_wire::clients::transistor;

use crate::clients::{self, auth::ClientCaller};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Post locations as a background-geolocation SDK (or Traccar Client 9+) sends them.
///
/// 200 with the batch answer once stored (a retry: `duplicate`); the device's implicit
/// session is started on its first location and rolls over after
/// `LOCUS_CLIENT_SESSION_IDLE_SECS` without one. The device credential goes in
/// `Authorization: Bearer`, basic auth or `?token=`; a device token works too. gzip
/// bodies are read (`Content-Encoding: gzip`).
#[utoipa::path(
    post,
    path = "/v1/clients/transistor",
    operation_id = "post_client_transistor",
    tag = "clients",
    params(
        ("token" = Option<String>, Query, description = "The device credential (`lcd_...`), for apps that can only set a URL."),
    ),
    request_body(content = Object, description = "`{\"location\": {...} | [...], ...params}`, or a list of such envelopes: `coords` (latitude, longitude, accuracy, speed, heading, altitude), `timestamp` (ISO 8601), `uuid`, `is_moving`, `odometer`, `battery` {level 0..1, is_charging}, `activity`, `extras`. docs/clients.md.", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or already stored: `duplicate`); `rejected` lists the locations refused.", body = BatchResponse),
        (status = 400, description = "`malformed_json`, `invalid_body`, `json_too_deep`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential or token) or `invalid_credential`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (not a device), `device_mismatch`, `device_not_registered` or `device_revoked`.", body = ErrorBody),
        (status = 409, description = "`too_many_active_sessions` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_fixes`, `string_too_long` or `batch_over_burst`.", body = ErrorBody),
        (status = 422, description = "`all_fixes_rejected`: no location was valid; nothing was stored.", body = RejectedBatch),
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
    caller: &crate::auth::Caller,
    headers: &HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let text = clients::body_text(headers, request, limits).await?;
    let size = text.len();
    let batch = transistor::decode(&text, &clients::bounds(limits)).map_err(clients::refused)?;
    // One location: its uuid names the batch, so a retry is recognised in the session
    // whatever else changed in the body (the SDK adds fields on a retry, e.g. `extras`).
    let batch_id = match batch.fixes.as_slice() {
        [one] => one.key.clone().and_then(|k| BatchId::parse(k).ok()),
        _ => None,
    };
    match clients::store(state, caller, batch, batch_id, headers, size, meter).await? {
        Ok(stored) => {
            let response = (StatusCode::OK, axum::Json(&stored.answer)).into_response();
            Ok(stored.respond(response))
        }
        Err(refused) => Ok(refused),
    }
}
