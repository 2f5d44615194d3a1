//! POST /v1/devices: a tenant admin registers a device and gets its first credential.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, DeviceView, REGISTRY_BODY_LIMIT};

/// Body of `POST /v1/devices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceRequest {
    /// The device's id in the tenant: 1 to 128 ASCII letters, digits, `-`, `_`, `.` or
    /// `:`. It is the `sub` of the device's tokens and never changes.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub device_id: String,
    /// A display name (1 to 200 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

/// Answer of `POST /v1/devices`: the device, and its first credential, shown this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisteredDevice {
    /// The device.
    #[serde(flatten)]
    pub device: DeviceView,
    /// The credential's id.
    #[schema(value_type = String, format = "uuid")]
    pub credential_id: Uuid,
    /// The secret the device exchanges for tokens at `POST /v1/auth/token`. Shown only in
    /// this answer (only its hash is kept): put it on the device now. Lost: issue another
    /// with `POST /v1/devices/{device_id}/credentials`.
    #[schema(min_length = 47, max_length = 47, pattern = "^lcd_[A-Za-z0-9_-]{43}$")]
    pub credential: String,
}

/// Register a device.
///
/// 201 with the device, its first credential (shown this once) and its URL in `Location`;
/// 409 if the tenant has a device with this id.
#[utoipa::path(
    post,
    path = "/v1/devices",
    operation_id = "register_device",
    tag = "devices",
    request_body(content = RegisterDeviceRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The device was registered; `credential` is shown this once.", body = RegisteredDevice,
            headers(("Location" = String, description = "The device's URL."))),
        (status = 400, description = "`invalid_id` (the rule it broke is in `message`), `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins register devices.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`: the token's tenant was never created.", body = ErrorBody),
        (status = 409, description = "`device_exists`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant, device))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    let bytes = body::json_bytes(&headers, request, REGISTRY_BODY_LIMIT, false).await?;
    let req: RegisterDeviceRequest = body::parse(&bytes)?;
    let device = registry::device_id(req.device_id)?;
    let span = tracing::Span::current();
    span.record("tenant", tenant.as_str());
    span.record("device", device.as_str());
    let name = registry::display_name(req.name)?;
    // The secret exists only here and in the answer; the registry gets its hash.
    let (plain, hash) = locus_identity::credential::generate();
    let (registered, credential) = registry::registry(&state)
        .register_device(
            registry::actor(&identity),
            tenant,
            &device,
            name.as_deref(),
            &hash,
        )
        .await?;
    tracing::info!(actor = %identity.subject, "Device registered.");
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, format!("/v1/devices/{device}")),
            // The answer holds a secret: no cache keeps it.
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        axum::Json(RegisteredDevice {
            device: DeviceView::from(registered),
            credential_id: credential.credential_id,
            credential: plain,
        }),
    ))
}
