//! GET /v1/sessions: the newest sessions visible to the caller.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// At most this many sessions (1 to 500, default 50).
    #[serde(default)]
    limit: Option<i64>,
}

/// 200 with `{ "sessions": [...] }`, newest first; a device sees only its own.
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
    let views: Vec<_> = sessions.iter().map(|s| s.view()).collect();
    Ok(axum::Json(json!({ "sessions": views })))
}
