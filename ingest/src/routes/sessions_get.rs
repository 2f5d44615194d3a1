//! GET /v1/sessions/{id}: a session's state and counts.

use crate::access::{Reader, readable_session};
use crate::error::ApiError;
use crate::routes::AppState;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use locus_wire::api::{ErrorBody, SessionView};

/// A session's state and counts, and the statistics of its track (`stats`, once the
/// tracker has seen a fix of it).
///
/// 200 with the session; 404 for an id the caller may not see (another tenant's, for a
/// device another device's, for a partner one of a tenant that has not granted it).
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    operation_id = "get_session",
    tag = "sessions",
    params(("id" = String, Path, description = "The session id (a UUID); any other value reads as not found.")),
    responses(
        (status = 200, description = "The session.", body = SessionView),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not read sessions.", body = ErrorBody),
        (status = 404, description = "`session_not_found`.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin", "partner"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %reader.tenant_label(), session = %id))]
pub async fn handler(
    State(state): State<AppState>,
    reader: Reader,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let session = readable_session(&state.store, &reader, &id).await?;
    let mut view = session.view();
    // In the session's own tenant: the reader may see the session, so its statistics.
    view.stats = state
        .store
        .session_stats(&session.tenant_id, session.id)
        .await?
        .as_ref()
        .map(super::sessions_track::stats_view);
    Ok(axum::Json(view))
}
