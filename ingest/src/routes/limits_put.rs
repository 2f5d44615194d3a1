//! PUT /v1/tenants/{tenant_id}/limits: a platform admin sets a tenant's limits (audited).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use locus_session::limits::TenantLimits;
use locus_wire::api::ErrorBody;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::limits_get::{LimitsView, visible_tenant};
use crate::routes::registry::{self, REGISTRY_BODY_LIMIT};

/// Body of `PUT /v1/tenants/{tenant_id}/limits`: the tenant's own limits, all of them. A
/// limit left out (or `null`) is the configured default. Each is at least 1.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetLimitsRequest {
    /// Sustained fixes per second of the whole tenant, across replicas.
    #[schema(minimum = 1)]
    pub fixes_per_sec: Option<u32>,
    /// Fixes the tenant may post at once.
    #[schema(minimum = 1)]
    pub fixes_burst: Option<u32>,
    /// Sustained fixes per second of one device, across replicas.
    #[schema(minimum = 1)]
    pub device_fixes_per_sec: Option<u32>,
    /// Fixes one device may post at once (a batch over it is refused 413).
    #[schema(minimum = 1)]
    pub device_fixes_burst: Option<u32>,
    /// Most fixes in one batch, at most the service's `LOCUS_MAX_FIXES_PER_BATCH`.
    #[schema(minimum = 1)]
    pub max_fixes_per_batch: Option<u32>,
    /// Most sessions active at once in the tenant.
    #[schema(minimum = 1)]
    pub max_active_sessions: Option<u32>,
    /// Requests per second of the whole tenant on every route (per replica).
    #[schema(minimum = 1)]
    pub requests_per_sec: Option<u32>,
    /// Requests the tenant may make at once (per replica).
    #[schema(minimum = 1)]
    pub requests_burst: Option<u32>,
    /// Requests per second of one device or admin on every route (per replica).
    #[schema(minimum = 1)]
    pub device_requests_per_sec: Option<u32>,
    /// Requests one device or admin may make at once (per replica).
    #[schema(minimum = 1)]
    pub device_requests_burst: Option<u32>,
}

impl SetLimitsRequest {
    /// The row to store, or what is wrong with the request.
    fn row(&self, global_max_batch: usize) -> Result<TenantLimits, String> {
        let values = [
            ("fixes_per_sec", self.fixes_per_sec),
            ("fixes_burst", self.fixes_burst),
            ("device_fixes_per_sec", self.device_fixes_per_sec),
            ("device_fixes_burst", self.device_fixes_burst),
            ("max_fixes_per_batch", self.max_fixes_per_batch),
            ("max_active_sessions", self.max_active_sessions),
            ("requests_per_sec", self.requests_per_sec),
            ("requests_burst", self.requests_burst),
            ("device_requests_per_sec", self.device_requests_per_sec),
            ("device_requests_burst", self.device_requests_burst),
        ];
        if let Some((name, _)) = values.iter().find(|(_, v)| *v == Some(0)) {
            return Err(format!(
                "`{name}` is 0; every limit is at least 1 (leave it out for the default)"
            ));
        }
        if let Some(max) = self.max_fixes_per_batch
            && max as usize > global_max_batch
        {
            return Err(format!(
                "`max_fixes_per_batch` is {max}; this service takes at most {global_max_batch} fixes per batch (LOCUS_MAX_FIXES_PER_BATCH)"
            ));
        }
        let v = |x: Option<u32>| x.map(i64::from);
        Ok(TenantLimits {
            fixes_per_sec: v(self.fixes_per_sec),
            fixes_burst: v(self.fixes_burst),
            device_fixes_per_sec: v(self.device_fixes_per_sec),
            device_fixes_burst: v(self.device_fixes_burst),
            max_fixes_per_batch: v(self.max_fixes_per_batch),
            max_active_sessions: v(self.max_active_sessions),
            requests_per_sec: v(self.requests_per_sec),
            requests_burst: v(self.requests_burst),
            device_requests_per_sec: v(self.device_requests_per_sec),
            device_requests_burst: v(self.device_requests_burst),
        })
    }
}

/// Set a tenant's limits.
///
/// Replaces the tenant's own limits with the body (a limit left out is the default) and
/// answers the limits now in force. Every replica applies them within
/// `LOCUS_LIMITS_REFRESH_MS`; the one that answered, at once.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant_id}/limits",
    operation_id = "put_tenant_limits",
    tag = "tenants",
    params(("tenant_id" = String, Path, description = "The tenant's id.")),
    request_body(content = SetLimitsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The tenant's limits as now set.", body = LimitsView),
        (status = 400, description = "`invalid_limits` (which limit and why in `message`), `invalid_id`, `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins set limits.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's request rate.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
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
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let tenant = visible_tenant(&identity, tenant_id)?;
    let bytes = body::json_bytes(&headers, request, REGISTRY_BODY_LIMIT, false).await?;
    let req: SetLimitsRequest = body::parse(&bytes)?;
    let row = req
        .row(state.config.limits.max_fixes_per_batch)
        .map_err(|m| ApiError::invalid(ErrorCode::InvalidLimits, m))?;
    let pool = state.store.pool();
    let own = locus_session::limits::put(pool, registry::actor(&identity), &tenant, &row).await?;
    tracing::info!(actor = %identity.subject, ?own, "Tenant limits set.");
    // In force on this replica at once; the others reload within their refresh.
    if let Ok(rows) = locus_session::limits::all(pool).await {
        state.admission.limits().replace(rows);
    }
    Ok(axum::Json(LimitsView::new(&state, &tenant, &own)))
}
