//! GET /v1/sink/health: how the tenant's webhook endpoint is doing, as the stream bridge
//! last reported it (within about a second of each change).

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use locus_session::sinks::SinkHealth;
use locus_wire::api::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;

/// The endpoint's last failed attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailureView {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The HTTP status it answered; absent for a timeout or a connection error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// What went wrong.
    pub reason: String,
}

/// Why the endpoint is disabled.
#[derive(Debug, Serialize, ToSchema)]
pub struct DisabledView {
    /// When it answered 410 Gone.
    pub at: DateTime<Utc>,
    /// What it answered. `PUT /v1/sink` turns it back on.
    pub reason: String,
}

/// A tenant's webhook endpoint health.
#[derive(Debug, Serialize, ToSchema)]
pub struct SinkHealthView {
    /// The sink's URL.
    pub url: String,
    /// When the endpoint last took a delivery (2xx).
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its last failed attempt (kept after a later success).
    pub last_failure: Option<FailureView>,
    /// Failed attempts since the last success.
    pub failure_streak: i32,
    /// Whether the tenant's delivery is paused: its records wait, in order, until the
    /// endpoint takes them (or, when disabled, until the sink is set again).
    pub paused: bool,
    /// The endpoint's circuit: `closed` (normal backoff), `open` (one probe per
    /// interval), `half_open` (a probe in flight).
    pub circuit: String,
    /// Set when a 410 Gone disabled the endpoint.
    pub disabled: Option<DisabledView>,
    /// While a secret rollover runs: until when the previous secret signs too.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// When the bridge last reported; absent until its first attempt.
    pub reported_at: Option<DateTime<Utc>>,
}

impl From<SinkHealth> for SinkHealthView {
    fn from(h: SinkHealth) -> Self {
        let last_failure = h.last_failure_at.map(|at| FailureView {
            at,
            status: h.last_failure_status,
            reason: h.last_failure_reason.unwrap_or_default(),
        });
        let disabled = h.disabled_by_410_at.map(|at| DisabledView {
            at,
            reason: h
                .disabled_by_410_reason
                .unwrap_or_else(|| "webhook answered 410 Gone".to_owned()),
        });
        Self {
            url: h.url,
            last_success_at: h.last_success_at,
            last_failure,
            failure_streak: h.failure_streak,
            paused: h.paused || disabled.is_some(),
            circuit: h.circuit,
            disabled,
            previous_secret_expires_at: h.previous_secret_expires_at,
            reported_at: h.reported_at,
        }
    }
}

/// The tenant's webhook endpoint health.
#[utoipa::path(
    get,
    path = "/v1/sink/health",
    operation_id = "get_sink_health",
    tag = "sinks",
    responses(
        (status = 200, description = "The endpoint's health.", body = SinkHealthView),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins read sink health.", body = ErrorBody),
        (status = 404, description = "`sink_not_found`: the tenant has no sink.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let health = state.store.sink_health(tenant).await?;
    Ok(axum::Json(SinkHealthView::from(health)))
}
