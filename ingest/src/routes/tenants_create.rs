//! POST /v1/tenants: a platform admin creates a tenant.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, REGISTRY_BODY_LIMIT, TenantView};

/// Body of `POST /v1/tenants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// The new tenant's id: 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:`. It names
    /// the tenant in tokens (`tenant` claim), topics and URLs, and never changes.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._:-]+$")]
    pub tenant_id: String,
    /// A display name (1 to 200 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

/// Create a tenant.
///
/// 201 with the tenant and its URL in `Location`; 409 if the id is taken.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    operation_id = "create_tenant",
    tag = "tenants",
    request_body(content = CreateTenantRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The tenant was created.", body = TenantView,
            headers(("Location" = String, description = "The tenant's URL."))),
        (status = 400, description = "`invalid_id` (the rule it broke is in `message`), `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins create tenants.", body = ErrorBody),
        (status = 409, description = "`tenant_exists`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let bytes = body::json_bytes(&headers, request, REGISTRY_BODY_LIMIT, false).await?;
    let req: CreateTenantRequest = body::parse(&bytes)?;
    let id = registry::tenant_id(req.tenant_id)?;
    tracing::Span::current().record("tenant", id.as_str());
    let name = registry::display_name(req.name)?;
    let tenant = registry::registry(&state)
        .create_tenant(registry::actor(&identity), &id, name.as_deref())
        .await?;
    tracing::info!(actor = %identity.subject, "Tenant created.");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/v1/tenants/{id}"))],
        axum::Json(TenantView::from(tenant)),
    ))
}
