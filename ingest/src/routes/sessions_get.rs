//! GET /v1/sessions/{id}: a session's state and counts.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_session::Session;
use locus_wire::SessionId;

use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::startup::AppState;

/// Loads a session the caller may see: its tenant's, and for a device only its own. Any
/// other id reads as not found, so ids of other tenants cannot be probed.
pub async fn visible_session(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Session, ApiError> {
    let id = SessionId::parse(id).map_err(|_| ApiError::SessionNotFound)?;
    let session = state.store.get(&caller.tenant, id).await?;
    if caller.role == Role::Device && session.device_id != caller.subject {
        return Err(ApiError::SessionNotFound);
    }
    Ok(session)
}

/// 200 with the session, or 404.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = visible_session(&state, &caller, &id).await?;
    Ok(axum::Json(session.view()))
}
