//! GET /v1/sessions: the newest sessions visible to the caller.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::startup::AppState;

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
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let sessions = state.store.list(&caller.tenant, limit).await?;
    let views: Vec<_> = sessions
        .iter()
        .filter(|s| caller.role != Role::Device || s.device_id == caller.subject)
        .map(|s| s.view())
        .collect();
    Ok(axum::Json(json!({ "sessions": views })))
}
