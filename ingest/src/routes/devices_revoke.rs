//! POST /v1/devices/{device_id}/revoke: a tenant admin revokes a device: its credentials
//! stop being exchanged at once, and its tokens stop being accepted on every replica
//! within the revocation refresh (`LOCUS_REVOCATION_REFRESH_MS`), on this one at once.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, DeviceView};

/// Revoke a device and every credential of it. No body. Revoking a revoked device changes
/// nothing and answers the same.
#[utoipa::path(
    post,
    path = "/v1/devices/{device_id}/revoke",
    operation_id = "revoke_device",
    tag = "devices",
    params(("device_id" = String, Path, description = "The device's id.")),
    responses(
        (status = 200, description = "The device, revoked (`revoked_at` says since when).", body = DeviceView),
        (status = 400, description = "`invalid_id`: not a valid device id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins revoke devices.", body = ErrorBody),
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
    let revoked = registry::registry(&state)
        .revoke_device(registry::actor(&identity), tenant, &device)
        .await?;
    if let Some(at) = revoked.revoked_at {
        // This replica refuses the device's tokens from now on; the others when they next
        // reload the revocations.
        state
            .auth
            .revocations()
            .revoke(tenant, &device, at.timestamp());
    }
    tracing::info!(actor = %identity.subject, "Device revoked.");
    Ok(axum::Json(DeviceView::from(revoked)))
}
