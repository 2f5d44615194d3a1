//! POST /v1/sessions/{id}/stop: the device (or a tenant admin) ends a session.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::{ErrorBody, SessionView, StopReason};

use crate::access::visible_session;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::routes::AppState;

/// Stop a session.
///
/// 200 with the stopped session (also while Redis is down: PostgreSQL holds the stop and
/// its event); 409 if it was already stopped; 404 if not visible.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/stop",
    operation_id = "stop_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id (a UUID); any other value reads as not found.")),
    responses(
        (status = 200, description = "The stopped session.", body = SessionView),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not stop sessions.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 409, description = "`session_stopped` or `session_expired`: it was already stopped.", body = ErrorBody),
        (status = 503, description = "`buffer_full` (the buffer holds its bound: Kafka is behind) or `database_unavailable`: nothing was stopped; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = visible_session(&state.store, &caller, &id).await?;
    // The same bound as a start, for the same reason (its event would go past it): refused
    // before the stop is written, so PostgreSQL and Kafka keep telling one story. The
    // session stays active meanwhile, but takes no batch either (its shard is full); the
    // device retries the stop, and a session never stopped still expires at its end.
    super::sessions_start::check_buffer_room(&state, Some(session.id)).await?;
    let stopped = state
        .store
        .stop(&caller.tenant, session.id, StopReason::Requested)
        .await?;
    // The stop and its event committed together; the answer waits for the event to be
    // buffered, but not for Redis to come back: a relay publishes it then.
    // The stopped row, so that this replica answers 409 at once even from its cache
    // while PostgreSQL is away.
    state.cache.session_read(&stopped);
    state.session_events.flush(&[stopped.id]).await;
    tracing::info!("Session stopped.");
    Ok(axum::Json(stopped.view()))
}
