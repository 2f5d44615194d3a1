//! GET /v1/sessions: the newest sessions visible to the caller.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use locus_wire::api::{ErrorBody, SessionList};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many sessions (1 to 500, default 50; values outside are clamped).
    #[serde(default)]
    limit: Option<i64>,
}

/// The newest sessions visible to the caller.
///
/// 200 with `{ "sessions": [...] }`, newest first; a device sees only its own.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "The sessions, newest first.", body = SessionList),
        (status = 400, description = "`invalid_query`: `limit` is not a number.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not list sessions.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin", "partner"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!("{e}; `limit` is a number from 1 to 500"),
        )
    })?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let device = (caller.role == Role::Device).then_some(&caller.subject);
    let sessions = state.store.list(&caller.tenant, device, limit).await?;
    Ok(axum::Json(SessionList {
        sessions: sessions.iter().map(|s| s.view()).collect(),
    }))
}
