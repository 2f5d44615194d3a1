//! POST /v1/devices/{device_id}/credentials: a tenant admin issues a device another
//! credential (a lost one, or a rotation: the old ones keep working until the device is
//! revoked).

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, IssuedCredential};

/// Issue another credential for a device. No body.
///
/// 201 with the credential, shown this once.
#[utoipa::path(
    post,
    path = "/v1/devices/{device_id}/credentials",
    operation_id = "create_device_credential",
    tag = "devices",
    params(("device_id" = String, Path, description = "The device's id.")),
    responses(
        (status = 201, description = "The credential; `credential` is shown this once.", body = IssuedCredential),
        (status = 400, description = "`invalid_id`: not a valid device id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins issue credentials; `device_revoked`: a revoked device takes none.", body = ErrorBody),
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
    // The secret exists only here and in the answer; the registry gets its hash.
    let (plain, hash) = locus_identity::credential::generate();
    let stored = registry::registry(&state)
        .issue_credential(registry::actor(&identity), tenant, &device, &hash)
        .await?;
    tracing::info!(actor = %identity.subject, credential = %stored.credential_id, "Credential issued.");
    Ok((
        StatusCode::CREATED,
        // The answer holds a secret: no cache keeps it.
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(IssuedCredential::new(stored, plain)),
    ))
}
