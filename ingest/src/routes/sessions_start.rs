//! POST /v1/sessions: a device starts a tracking session.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use locus_wire::api::{ErrorBody, SessionView, StartSessionRequest};

use crate::auth::Caller;
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Start a tracking session for the calling device.
///
/// 201 with the session and its URL in `Location`; 409 if the device already has an active
/// session (the body's `session_id` names it). The body is optional.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "start_session",
    tag = "sessions",
    request_body(
        content = Option<StartSessionRequest>,
        description = "Optional: an empty body takes the server's default duration.",
        content_type = "application/json"
    ),
    responses(
        (status = 201, description = "The session started.", body = SessionView,
            headers(("Location" = String, description = "The session's URL."))),
        (status = 400, description = "`invalid_max_duration`, `malformed_json`, `invalid_body`, `malformed_gzip` or `body_unreadable`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not start sessions.", body = ErrorBody),
        (status = 409, description = "`session_already_active`: the device has an active session, named by `session_id`; `too_many_active_sessions`: the tenant has its most sessions active at once (`max_active_sessions`).", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over the caller's request rate.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 503, description = "`buffer_full` (the buffer holds its bound: Kafka is behind) or `database_unavailable`: nothing was started; retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device"]))
)]
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
    check_active_cap(&state, &caller).await?;
    // Refused before the session row is written while the buffer is at its bound (Kafka
    // behind): the start's event would be appended past it (events ignore the bound, so
    // that one committed in PostgreSQL always reaches Kafka), and the device could not send
    // a batch to the new session anyway. A 503 here writes nothing; the device retries.
    check_buffer_room(&state, None).await?;
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

/// Refuses the start when the tenant has its most sessions active at once. Counted in
/// PostgreSQL (every replica's sessions), but not locked: starts racing on several
/// replicas (or one) may each see room for one more, so the cap can be passed by the
/// number of starts in flight at that moment, never more.
pub(crate) async fn check_active_cap(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let cap = state
        .admission
        .limits()
        .of(Some(&caller.tenant))
        .max_active_sessions;
    let active = locus_session::limits::active_sessions(state.store.pool(), &caller.tenant)
        .await
        .map_err(locus_session::SessionError::Database)?;
    if (active.max(0) as u64) < cap {
        return Ok(());
    }
    crate::events::SessionCapReached.emit();
    Err(ApiError::coded(
        ErrorCode::TooManyActiveSessions,
        format!(
            "tenant {} has {active} sessions active, its most at once (max_active_sessions) is {cap}: stop a session (POST /v1/sessions/{{id}}/stop), or ask a platform admin to raise the limit",
            caller.tenant
        ),
    ))
}

/// Refuses a session start (`session` none) or stop with 503 `buffer_full` while the
/// buffer is at its bound, before anything is written. Redis away or past its deadline
/// does not refuse the change: PostgreSQL holds it with its event in the outbox, and the
/// relay buffers the event once Redis is back, as before this check (a device's stop is
/// answered while Redis is down); only a full buffer is a reason to write nothing.
pub(crate) async fn check_buffer_room(
    state: &AppState,
    session: Option<locus_wire::SessionId>,
) -> Result<(), ApiError> {
    match state.buffer.room_for_session_change(session).await {
        Ok(()) => Ok(()),
        Err(e @ crate::buffer::BufferError::Full(..)) => {
            crate::events::SessionChangeRefused {
                reason: "buffer_full",
            }
            .emit();
            Err(e.into())
        }
        Err(e) => {
            tracing::warn!(error = %e, "Could not check the buffer's bound; the session change goes ahead (its event waits in the outbox).");
            Ok(())
        }
    }
}
