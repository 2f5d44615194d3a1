//! GET /v1/sink: the tenant's webhook sink, without its secret.

use axum::extract::State;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared::SinkView;

/// The tenant's webhook sink (its URL; the secret is never returned).
#[utoipa::path(
    get,
    path = "/v1/sink",
    operation_id = "get_sink",
    tag = "sinks",
    responses(
        (status = 200, description = "The sink, without its secret.", body = SinkView),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins read sinks.", body = ErrorBody),
        (status = 404, description = "`sink_not_found`: the tenant has no sink.", body = ErrorBody),
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
    let sink = state.store.get_sink(tenant).await?;
    Ok(axum::Json(SinkView::from(sink)))
}
