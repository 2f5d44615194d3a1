//! DELETE /v1/sink: a tenant admin removes the tenant's webhook sink.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared;

/// Remove the tenant's webhook sink.
///
/// 204; the bridge stops delivering to it at its next sink refresh.
#[utoipa::path(
    delete,
    path = "/v1/sink",
    operation_id = "delete_sink",
    tag = "sinks",
    responses(
        (status = 204, description = "The sink was removed."),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins remove sinks.", body = ErrorBody),
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
    state
        .store
        .delete_sink(partners_shared::actor(&identity), tenant)
        .await?;
    tracing::info!(actor = %identity.subject, "Sink removed.");
    Ok(StatusCode::NO_CONTENT)
}
