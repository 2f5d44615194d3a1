//! GET /v1/geofences: a tenant admin lists its fences, by id, a page at a time.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use locus_wire::GeofenceId;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::geofences_shared::GeofenceSummaryView;
use crate::routes::registry::{self, PageQuery};

/// Answer of `GET /v1/geofences`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GeofenceList {
    /// The fences, by id, without their areas (read one for its area).
    pub geofences: Vec<GeofenceSummaryView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// List the caller's tenant's geofences by id.
#[utoipa::path(
    get,
    path = "/v1/geofences",
    operation_id = "list_geofences",
    tag = "geofences",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of fences, by id.", body = GeofenceList),
        (status = 400, description = "`invalid_query` or `invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins list geofences.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's request rate.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `limit` is a number from 1 to 500, `cursor` the previous page's `next_cursor`"
            ),
        )
    })?;
    let after = registry::cursor_after(query.cursor.as_deref(), GeofenceId::parse)?;
    let page =
        locus_session::geofences::list(state.store.pool(), tenant, after.as_ref(), query.limit())
            .await?;
    Ok(axum::Json(GeofenceList {
        geofences: page
            .items
            .into_iter()
            .map(GeofenceSummaryView::from)
            .collect(),
        next_cursor: page.next_after.as_deref().map(registry::encode_cursor),
    }))
}
