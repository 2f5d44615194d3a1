//! GET /v1/tenants: a platform admin lists tenants, by id, a page at a time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use locus_wire::TenantId;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::registry::{self, PageQuery, TenantView};

/// Answer of `GET /v1/tenants`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    /// The tenants, by id.
    pub tenants: Vec<TenantView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List tenants by id.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    operation_id = "list_tenants",
    tag = "tenants",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of tenants, by id.", body = TenantList),
        (status = 400, description = "`invalid_query` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins list tenants.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all)]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `limit` is a number from 1 to 500, `cursor` the previous page's `next_cursor`"
            ),
        )
    })?;
    let after = registry::cursor_after(query.cursor.as_deref(), TenantId::parse)?;
    let page = registry::registry(&state)
        .list_tenants(after.as_ref(), query.limit())
        .await?;
    Ok(axum::Json(TenantList {
        tenants: page.items.into_iter().map(TenantView::from).collect(),
        next_cursor: page.next_after.as_deref().map(registry::encode_cursor),
    }))
}
