//! POST /v1/clients/overland: Overland (iOS) batches, `{"locations": [GeoJSON Point
//! Features]}`. The app deletes a batch only when the answer is `{"result":"ok"}`, so
//! that is answered once the batch is stored, and nothing else is.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use locus_wire::api::{ErrorBody, RejectedBatch};
use locus_wire::clients::overland;
use serde_json::json;

use crate::auth::Caller;
use crate::clients::{self, auth::ClientCaller};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Post a batch of Overland locations.
///
/// 200 `{"result":"ok"}` once stored (a retry: the same). The app's access token setting
/// takes the device credential (sent as `Authorization: Bearer`).
#[utoipa::path(
    post,
    path = "/v1/clients/overland",
    operation_id = "post_client_overland",
    tag = "clients",
    params(
        ("token" = Option<String>, Query, description = "The device credential (`lcd_...`), when the access token setting is not used."),
    ),
    request_body(content = Object, description = "`{\"locations\": [{\"type\": \"Feature\", \"geometry\": {\"type\": \"Point\", \"coordinates\": [lon, lat]}, \"properties\": {\"timestamp\", \"horizontal_accuracy\", \"speed\", \"course\", \"altitude\", \"battery_level\", ...}}]}`.", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored: `{\"result\":\"ok\"}`."),
        (status = 400, description = "`malformed_json`, `invalid_body`, `json_too_deep`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential or token) or `invalid_credential`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (not a device), `device_mismatch`, `device_not_registered` or `device_revoked`.", body = ErrorBody),
        (status = 409, description = "`too_many_active_sessions` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `too_many_fixes` (lower the app's points per batch), `string_too_long` or `batch_over_burst`.", body = ErrorBody),
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
    caller: &Caller,
    headers: &HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    let limits = &state.config.limits;
    let text = clients::body_text(headers, request, limits).await?;
    let size = text.len();
    let batch = overland::decode(&text, &clients::bounds(limits)).map_err(clients::refused)?;
    if batch.fixes.is_empty() {
        return Err(clients::refused(locus_wire::clients::ClientError::Shape(
            "`locations` is empty; send at least one location".into(),
        )));
    }
    match clients::store(state, caller, batch, None, headers, size, meter).await? {
        Ok(stored) => {
            let ok = (StatusCode::OK, axum::Json(json!({"result": "ok"}))).into_response();
            Ok(stored.respond(ok))
        }
        Err(refused) => Ok(refused),
    }
}
