//! GET /v1/devices/{device_id}: a tenant admin reads one of its devices.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, DeviceView};

/// Read a device of the caller's tenant. It never shows a credential.
#[utoipa::path(
    get,
    path = "/v1/devices/{device_id}",
    operation_id = "get_device",
    tag = "devices",
    params(("device_id" = String, Path, description = "The device's id.")),
    responses(
        (status = 200, description = "The device.", body = DeviceView),
        (status = 400, description = "`invalid_id`: not a valid device id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins read devices.", body = ErrorBody),
        (status = 404, description = "`device_not_found` (also for another tenant's device).", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant, device = %device_id))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(device_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let device = registry::device_id(device_id)?;
    let found = registry::registry(&state)
        .get_device(tenant, &device)
        .await?;
    Ok(axum::Json(DeviceView::from(found)))
}
