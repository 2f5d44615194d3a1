//! GET /v1/tenants/{tenant_id}/limits: a tenant's effective limits, and which of them are
//! the configured defaults. Also the answer body and error mapping PUT shares.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_session::limits::{LimitsError, TenantLimits};
use locus_wire::TenantId;
use locus_wire::api::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::limits::{Effective, defaulted};
use crate::routes::AppState;
use crate::routes::registry;

/// A tenant's limits as in force (each replica within `LOCUS_LIMITS_REFRESH_MS`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsView {
    /// The tenant.
    pub tenant_id: String,
    /// Every limit, the tenant's own value or the configured default. Fixes budgets hold
    /// across replicas; request rates and bursts are per replica.
    pub limits: Effective,
    /// The names of the limits that are the configured defaults (the tenant has no value
    /// of its own for them).
    pub defaults: Vec<&'static str>,
}

impl LimitsView {
    /// The view of `tenant`'s own limits `own`.
    pub fn new(state: &AppState, tenant: &TenantId, own: &TenantLimits) -> Self {
        Self {
            tenant_id: tenant.to_string(),
            limits: state.admission.limits().effective(own),
            defaults: defaulted(own),
        }
    }
}

/// The answer for a tenant that does not exist, or that the caller may not see.
pub fn tenant_not_found() -> ApiError {
    ApiError::coded(
        ErrorCode::TenantNotFound,
        "no such tenant; a platform admin creates it with POST /v1/tenants",
    )
}

impl From<LimitsError> for ApiError {
    fn from(e: LimitsError) -> Self {
        match e {
            LimitsError::TenantNotFound => tenant_not_found(),
            LimitsError::Database(e) => {
                tracing::warn!(error = %e, "PostgreSQL failed during a limits request.");
                Self::Unavailable {
                    code: ErrorCode::DatabaseUnavailable,
                    message: "tenant limits are unavailable; retry later".into(),
                    retry_after_secs: 1,
                }
            }
        }
    }
}

/// The tenant of the path, if `identity` may act on it: any for platform admins, its own
/// for tenant admins (another's answers as a missing tenant: 404).
pub fn visible_tenant(identity: &Identity, tenant_id: String) -> Result<TenantId, ApiError> {
    let id = registry::tenant_id(tenant_id)?;
    if identity.role == Role::PlatformAdmin || identity.tenant.as_ref() == Some(&id) {
        Ok(id)
    } else {
        Err(tenant_not_found())
    }
}

/// Read a tenant's limits.
///
/// The effective value of every limit (the tenant's own, else the configured default)
/// and the names of those that are defaults.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant_id}/limits",
    operation_id = "get_tenant_limits",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant's id.")),
    responses(
        (status = 200, description = "The tenant's limits.", body = LimitsView),
        (status = 400, description = "`invalid_id`: not a valid tenant id (the rule is in `message`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins and the tenant's admins read its limits.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found` (also another tenant, for a tenant admin).", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's request rate.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin", "tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %tenant_id))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(tenant_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin, Role::TenantAdmin])?;
    let tenant = visible_tenant(&identity, tenant_id)?;
    let own = locus_session::limits::get(state.store.pool(), &tenant).await?;
    Ok(axum::Json(LimitsView::new(&state, &tenant, &own)))
}
