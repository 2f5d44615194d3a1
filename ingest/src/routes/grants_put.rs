//! PUT /v1/grants/{partner_id}: a tenant admin lets a partner read the tenant's sessions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared::{self, GrantView};

/// Grant a partner read access to the tenant's sessions.
///
/// 201 when the grant is new, 200 when it existed (granting twice changes nothing). The
/// partner then lists the tenant's sessions with `GET /v1/sessions?tenant=<id>` and reads
/// them by id, from its next request on.
#[utoipa::path(
    put,
    path = "/v1/grants/{partner_id}",
    operation_id = "put_grant",
    tag = "partners",
    params(("partner_id" = String, Path, description = "The partner's id.")),
    responses(
        (status = 201, description = "The grant was given.", body = GrantView),
        (status = 200, description = "The grant existed; nothing changed.", body = GrantView),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins grant.", body = ErrorBody),
        (status = 404, description = "`partner_not_found`, or `tenant_not_found` when the token's tenant is not registered.", body = ErrorBody),
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
    let outcome = state
        .store
        .grant(partners_shared::actor(&identity), tenant, &partner)
        .await?;
    let status = if outcome.created {
        tracing::info!(actor = %identity.subject, "Grant given.");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(GrantView::from(outcome.grant))))
}
