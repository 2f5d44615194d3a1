//! DELETE /v1/grants/{partner_id}: a tenant admin withdraws a partner's grant.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared;

/// Withdraw a partner's grant.
///
/// 204; from the partner's next request on, the tenant's sessions read as not found.
#[utoipa::path(
    delete,
    path = "/v1/grants/{partner_id}",
    operation_id = "delete_grant",
    tag = "partners",
    params(("partner_id" = String, Path, description = "The partner's id.")),
    responses(
        (status = 204, description = "The grant was withdrawn."),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins withdraw grants.", body = ErrorBody),
        (status = 404, description = "`grant_not_found`: the tenant has not granted this partner.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant, partner = %partner_id))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(partner_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let partner = partners_shared::partner_id(partner_id)?;
    state
        .store
        .withdraw_grant(partners_shared::actor(&identity), tenant, &partner)
        .await?;
    tracing::info!(actor = %identity.subject, "Grant withdrawn.");
    Ok(StatusCode::NO_CONTENT)
}
