//! GET|POST /v1/clients/osmand: the OsmAnd protocol of OsmAnd, Traccar Client (before 9,
//! and 9's OsmAnd mode) and many hardware trackers: one position per request as URL
//! parameters, or a form body.
//!
//! A request names its device (`id` or `deviceid`, which must be the credential's device,
//! or be the credential itself); one without a position is a heartbeat, counted and
//! answered 200 without a fix. A position sent again (the app retries a GET whose answer
//! it lost) is one record: its timestamp and position are its key, hence its record id
//! and its batch id.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use locus_wire::BatchId;
use locus_wire::api::{ErrorBody, RejectedBatch};
use locus_wire::clients::osmand;

use crate::auth::Caller;
use crate::clients::auth::{ClientCaller, Source, device_mismatch};
use crate::clients::{self};
use crate::error::ApiError;
use crate::events;
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Post one position in the OsmAnd protocol, by GET.
///
/// 200 with an empty body once stored (or a heartbeat counted). `id`/`deviceid` names the
/// device; `lat`, `lon` (or `location=lat,lon`), `timestamp` (epoch s or ms, ISO 8601, or
/// `yyyy-MM-dd HH:mm:ss` UTC; the server clock when absent), `speed` (knots), `bearing`
/// or `heading`, `altitude`, `accuracy`, `batt`; other parameters are kept as attributes.
#[utoipa::path(
    get,
    path = "/v1/clients/osmand",
    operation_id = "get_client_osmand",
    tag = "clients",
    params(
        ("token" = Option<String>, Query, description = "The device credential (`lcd_...`): OsmAnd apps only set a URL."),
        ("id" = Option<String>, Query, description = "The device id (or `deviceid`): the credential's device, or the credential itself."),
        ("lat" = Option<f64>, Query, description = "Latitude in degrees; without a position the request is a heartbeat."),
        ("lon" = Option<f64>, Query, description = "Longitude in degrees."),
        ("timestamp" = Option<String>, Query, description = "When the fix was taken: epoch seconds or milliseconds, ISO 8601, or `yyyy-MM-dd HH:mm:ss` (UTC)."),
        ("speed" = Option<f64>, Query, description = "Speed in knots."),
    ),
    responses(
        (status = 200, description = "Stored (or already stored), or a heartbeat counted; empty body."),
        (status = 400, description = "`missing_device`, `invalid_query`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential or token) or `invalid_credential`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (not a device), `device_mismatch`, `device_not_registered` or `device_revoked`.", body = ErrorBody),
        (status = 409, description = "`too_many_active_sessions` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `string_too_long` or `batch_over_burst`.", body = ErrorBody),
        (status = 422, description = "`all_fixes_rejected`: the position was not valid; nothing was stored.", body = RejectedBatch),
        (status = 429, description = "`rate_limited`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`internal`: a bug; the cause is logged.", body = ErrorBody),
        (status = 503, description = "`buffer_full`, `buffer_unavailable`, `kafka_unconfirmed` or `database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device"]))
)]
pub async fn get_handler(
    state: State<AppState>,
    client: ClientCaller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    handle(state, client, method, uri, headers, request).await
}

/// Post one position in the OsmAnd protocol, by POST (parameters in the URL or a form body).
///
/// As the GET: the form body's parameters win over the URL's of the same name.
#[utoipa::path(
    post,
    path = "/v1/clients/osmand",
    operation_id = "post_client_osmand",
    tag = "clients",
    params(
        ("token" = Option<String>, Query, description = "The device credential (`lcd_...`)."),
    ),
    request_body(content = String, description = "Optional: the OsmAnd parameters as a form (`id=...&lat=...&lon=...`).", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Stored (or already stored), or a heartbeat counted; empty body."),
        (status = 400, description = "`missing_device`, `invalid_query`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential or token) or `invalid_credential`.", body = ErrorBody),
        (status = 403, description = "`forbidden` (not a device), `device_mismatch`, `device_not_registered` or `device_revoked`.", body = ErrorBody),
        (status = 409, description = "`too_many_active_sessions` or `batch_id_reused`; nothing was stored.", body = ErrorBody),
        (status = 413, description = "`body_too_large`, `string_too_long` or `batch_over_burst`.", body = ErrorBody),
        (status = 422, description = "`all_fixes_rejected`: the position was not valid; nothing was stored.", body = RejectedBatch),
        (status = 429, description = "`rate_limited`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`internal`: a bug; the cause is logged.", body = ErrorBody),
        (status = 503, description = "`buffer_full`, `buffer_unavailable`, `kafka_unconfirmed` or `database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device"]))
)]
pub async fn post_handler(
    state: State<AppState>,
    client: ClientCaller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    handle(state, client, method, uri, headers, request).await
}

async fn handle(
    State(state): State<AppState>,
    client: ClientCaller,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let caller = client.caller.clone();
    BatchMeter::new(state.usage.clone(), caller.tenant.clone())
        .measure(async |meter| post(&state, &client, method, uri, &headers, request, meter).await)
        .await
}

/// The query without the parameters that carry the credential: they are no attributes
/// of a fix (a secret must not reach Kafka).
fn without_secrets(query: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "token"))
        .finish()
}

#[tracing::instrument(skip_all, fields(tenant = %client.caller.tenant, device = %client.caller.subject))]
async fn post(
    state: &AppState,
    client: &ClientCaller,
    method: Method,
    uri: Uri,
    headers: &HeaderMap,
    request: Body,
    meter: &mut BatchMeter,
) -> Result<Response, ApiError> {
    let caller: &Caller = &client.caller;
    let limits = &state.config.limits;
    let query = without_secrets(uri.query().unwrap_or_default());
    let form = if method == Method::POST {
        Some(clients::body_text(headers, request, limits).await?)
    } else {
        None
    };
    let form = form
        .filter(|f| !f.trim().is_empty())
        .map(|f| without_secrets(&f));
    let now = Utc::now();
    let batch = osmand::decode(&query, form.as_deref(), now, &clients::bounds(limits))
        .map_err(clients::refused)?;
    if client.source != Source::DeviceId
        && let Some(named) = &batch.device
        && named != caller.subject.as_str()
    {
        return Err(device_mismatch(
            named,
            &caller.subject,
            "the request's `id`",
        ));
    }
    if batch.heartbeat {
        events::ClientHeartbeat { format: "osmand" }.emit();
        return Ok(StatusCode::OK.into_response());
    }
    let has_time = url::form_urlencoded::parse(query.as_bytes())
        .chain(url::form_urlencoded::parse(
            form.as_deref().unwrap_or_default().as_bytes(),
        ))
        .any(|(k, v)| k == "timestamp" && !v.trim().is_empty());
    let mut batch = batch;
    // The app's own time and position are the fix's identity: a retried request is the
    // same record (its id comes from the key) and the same batch. Without a timestamp the
    // server clock stands in, and a retry cannot be told from a new fix.
    let mut batch_id = None;
    if has_time
        && let [fix] = batch.fixes.as_mut_slice()
        && let Ok(input) = &fix.input
    {
        let key = format!(
            "osmand:{}:{}:{}",
            input.recorded_at.timestamp_millis(),
            input.lat,
            input.lon
        );
        batch_id = BatchId::parse(key.clone()).ok();
        fix.key = Some(key);
    }
    let size = form.as_ref().map_or(0, String::len) + query.len();
    match clients::store(state, caller, batch, batch_id, headers, size, meter).await? {
        Ok(stored) => Ok(stored.respond(StatusCode::OK.into_response())),
        Err(refused) => Ok(refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_no_attribute() {
        assert_eq!(
            without_secrets("id=phone&token=lcd_x&lat=1"),
            "id=phone&lat=1"
        );
    }
}
