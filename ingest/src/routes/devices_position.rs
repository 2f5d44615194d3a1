//! GET /v1/devices/{device_id}/position: a device's last known position, as the tracker
//! keeps it (`device_positions`): the fix with the latest `recorded_at` it has seen, never
//! replaced by a late, older fix.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::SessionId;
use locus_wire::api::{DevicePosition, ErrorBody};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::registry;

/// The answer for a device the caller may not see, the same as for one that does not exist.
fn device_not_found() -> ApiError {
    ApiError::coded(
        ErrorCode::DeviceNotFound,
        "no such device in this tenant (a device reads only its own position; a tenant admin registers devices with POST /v1/devices)",
    )
}

/// The last known position of a device of the caller's tenant.
///
/// A device reads its own; a tenant admin any of its tenant's. 404 `position_not_found`
/// while no fix of the device has reached the tracker; 404 `device_not_found` for a device
/// that is not the caller's to see (another tenant's reads exactly as one that does not
/// exist).
#[utoipa::path(
    get,
    path = "/v1/devices/{device_id}/position",
    operation_id = "get_device_position",
    tag = "devices",
    params(("device_id" = String, Path, description = "The device's id.")),
    responses(
        (status = 200, description = "The device's last known position.", body = DevicePosition),
        (status = 400, description = "`invalid_id`: not a valid device id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not read positions.", body = ErrorBody),
        (status = 404, description = "`position_not_found`: no fix of the device has been tracked yet; `device_not_found`: no such device for the caller (also another tenant's, or for a device another device).", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant, device = %device_id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    tracing::Span::current().record("tenant", caller.tenant.as_str());
    let device = registry::device_id(device_id)?;
    if caller.role == Role::Device && device != caller.subject {
        return Err(device_not_found());
    }
    let Some(row) = state.store.device_position(&caller.tenant, &device).await? else {
        // Say which of the two it is: a registered device without a fix yet, or no device.
        return Err(
            match registry::registry(&state)
                .get_device(&caller.tenant, &device)
                .await
            {
                Ok(_) => ApiError::coded(
                    ErrorCode::PositionNotFound,
                    "the device has no known position yet: none of its fixes has reached the tracker (positions follow accepted fixes within a second or so)",
                ),
                Err(locus_session::RegistryError::DeviceNotFound) => device_not_found(),
                Err(e) => e.into(),
            },
        );
    };
    Ok(axum::Json(DevicePosition {
        device_id: device,
        session_id: SessionId(row.session_id),
        record_id: row.record_id,
        recorded_at: row.recorded_at,
        lat: row.lat,
        lon: row.lon,
        accuracy: row.accuracy,
        altitude: row.altitude,
        speed: row.speed,
        heading: row.heading,
        battery: row.battery,
        updated_at: row.updated_at,
    }))
}
