//! PUT /v1/geofences/{geofence_id}: a tenant admin creates or replaces one of its fences.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::geofences_shared::{self, CircleView, GEOFENCE_BODY_LIMIT, GeofenceView};
use crate::routes::registry;

/// Body of `PUT /v1/geofences/{geofence_id}`: a name and exactly one of `geometry` and
/// `circle`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Depot",
    "geometry": {"type": "Polygon", "coordinates": [[[13.40, 52.51], [13.42, 52.51], [13.42, 52.53], [13.40, 52.53], [13.40, 52.51]]]}
}))]
pub struct PutGeofenceRequest {
    /// Display name: 1 to 200 characters without control characters; leave it out for none.
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// A GeoJSON Polygon or MultiPolygon: positions `[longitude, latitude]`, each ring
    /// closed (its last position repeats its first) with at least 4 positions, holes
    /// allowed, at most 10,000 positions in all. A point on the boundary is inside.
    #[schema(value_type = Option<Object>)]
    pub geometry: Option<Value>,
    /// A circle instead of a geometry.
    pub circle: Option<CircleView>,
}

/// Create or replace a geofence of the caller's tenant.
///
/// 201 when the tenant had no fence with this id, 200 when it replaced it. Devices get
/// `enter` and `exit` events on the geofence-events topic as their fixes cross it; the
/// tracker checks the new area within `LOCUS_TRACKER_FENCE_REFRESH_MS`. Replacing a fence
/// keeps where each device stands with it: the device's next fix decides whether it is
/// still inside.
#[utoipa::path(
    put,
    path = "/v1/geofences/{geofence_id}",
    operation_id = "put_geofence",
    tag = "geofences",
    params(("geofence_id" = String, Path, description = "The fence's id: 1 to 128 ASCII letters, digits, '-', '_', '.' and ':'.")),
    request_body(content = PutGeofenceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The fence was created.", body = GeofenceView),
        (status = 200, description = "The fence was replaced.", body = GeofenceView),
        (status = 400, description = "`invalid_body` (neither or both of `geometry` and `circle`, a bad `name`, unknown fields), `malformed_json` or `invalid_id`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins put geofences.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`: the token's tenant is not registered.", body = ErrorBody),
        (status = 413, description = "`body_too_large`: over 1 MiB.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 422, description = "`invalid_geofence`: the geometry or circle is not a usable area (where and why in `message`).", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's request rate.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant, geofence = %geofence_id))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(geofence_id): Path<String>,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let id = geofences_shared::geofence_id(geofence_id)?;
    let bytes = body::json_bytes(&headers, request, GEOFENCE_BODY_LIMIT, false).await?;
    let req: PutGeofenceRequest = body::parse(&bytes)?;
    let name = registry::display_name(req.name)?;
    let area = geofences_shared::area(req.geometry, req.circle)?;
    let outcome = locus_session::geofences::put(
        state.store.pool(),
        registry::actor(&identity),
        tenant,
        &id,
        name.as_deref(),
        &area,
    )
    .await?;
    tracing::info!(actor = %identity.subject, created = outcome.created, "Geofence set.");
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(GeofenceView::from(outcome.geofence))))
}
