//! GET /v1/sessions/{id}: a session's state and counts.

use crate::access::visible_session;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{Path, State};
use axum::response::IntoResponse;

/// 200 with the session, or 404.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = visible_session(&state.store, &caller, &id).await?;
    Ok(axum::Json(session.view()))
}
