//! GET /v1/grants: the partners the tenant granted.

use axum::extract::State;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared::GrantView;

/// Answer of `GET /v1/grants`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    /// The tenant's grants, by partner id.
    pub grants: Vec<GrantView>,
}

/// List the tenant's grants.
#[utoipa::path(
    get,
    path = "/v1/grants",
    operation_id = "list_grants",
    tag = "partners",
    responses(
        (status = 200, description = "The tenant's grants, by partner id.", body = GrantList),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins list grants.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let grants = state.store.list_grants(tenant).await?;
    Ok(axum::Json(GrantList {
        grants: grants.into_iter().map(GrantView::from).collect(),
    }))
}
