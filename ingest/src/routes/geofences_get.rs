//! GET /v1/geofences/{geofence_id}: a tenant admin reads one of its fences, area included.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::geofences_shared::{self, GeofenceView};

/// Read a geofence of the caller's tenant.
#[utoipa::path(
    get,
    path = "/v1/geofences/{geofence_id}",
    operation_id = "get_geofence",
    tag = "geofences",
    params(("geofence_id" = String, Path, description = "The fence's id.")),
    responses(
        (status = 200, description = "The fence, with its geometry or circle.", body = GeofenceView),
        (status = 400, description = "`invalid_id`: not a valid geofence id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins read geofences.", body = ErrorBody),
        (status = 404, description = "`geofence_not_found` (also for another tenant's fence).", body = ErrorBody),
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
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let id = geofences_shared::geofence_id(geofence_id)?;
    let fence = locus_session::geofences::get(state.store.pool(), tenant, &id).await?;
    Ok(axum::Json(GeofenceView::from(fence)))
}
