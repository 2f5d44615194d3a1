//! POST /v1/sessions/{id}/stop: the device (or a tenant admin) ends a session.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::StopReason;

use crate::access::visible_session;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::AppState;

/// 200 with the stopped session (also while Redis is down: PostgreSQL holds the stop and
/// its event); 409 if it was already stopped; 404 if not visible.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = visible_session(&state.store, &caller, &id).await?;
    let stopped = state
        .store
        .stop(&caller.tenant, session.id, StopReason::Requested)
        .await?;
    // The stop and its event committed together; the answer waits for the event to be
    // buffered, but not for Redis to come back: a relay publishes it then.
    state.session_events.flush(&[stopped.id]).await;
    tracing::info!("Session stopped.");
    Ok(axum::Json(stopped.view()))
}
