//! GET /v1/tenants/{tenant_id}: a platform admin reads one tenant.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, TenantView};

/// Read a tenant.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant_id}",
    operation_id = "get_tenant",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "The tenant.", body = TenantView),
        (status = 400, description = "`invalid_id`: not a valid tenant id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins read tenants.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(tenant_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let id = registry::tenant_id(tenant_id)?;
    let tenant = registry::registry(&state).get_tenant(&id).await?;
    Ok(axum::Json(TenantView::from(tenant)))
}
