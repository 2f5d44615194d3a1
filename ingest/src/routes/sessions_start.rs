//! POST /v1/sessions: a device starts a tracking session.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use locus_wire::api::StartSessionRequest;

use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Starts a session for the calling device; 201 with the session, 409 if it has one.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant, device = %caller.subject))]
pub async fn handler(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_device()?;
    let bytes =
        body::json_bytes(&headers, request, state.config.limits.max_body_bytes, true).await?;
    let req: StartSessionRequest = if bytes.is_empty() {
        StartSessionRequest::default()
    } else {
        body::parse(&bytes)?
    };
    let secs = req
        .max_duration_secs
        .unwrap_or(state.config.sessions.default_duration_secs);
    if secs == 0 || secs > state.config.sessions.max_duration_secs {
        return Err(ApiError::invalid(
            ErrorCode::InvalidMaxDuration,
            format!(
                "max_duration_secs must be between 1 and {}",
                state.config.sessions.max_duration_secs
            ),
        ));
    }
    let outcome = state
        .store
        .start(
            &caller.tenant,
            &caller.subject,
            chrono::Duration::seconds(secs as i64),
        )
        .await?;
    let session = outcome.session;
    // The start (and the expiry of a stale session it made room with) committed with their
    // events. The 201 waits until they are buffered, so the device's first batch lands
    // after `started`; if Redis is down, a relay publishes them once it is back.
    let changed: Vec<_> = outcome
        .expired
        .iter()
        .map(|s| s.id)
        .chain([session.id])
        .collect();
    state.session_events.flush(&changed).await;
    tracing::info!(session = %session.id, "Session started.");
    let location = format!("/v1/sessions/{}", session.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(session.view()),
    ))
}
