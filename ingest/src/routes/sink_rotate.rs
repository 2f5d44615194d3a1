//! POST /v1/sink/rotate-secret: a tenant admin replaces the sink's signing secret without
//! a gap. The old secret keeps signing (a second `v1,` signature in `webhook-signature`)
//! for the rollover window, so the partner can switch its receiver over at any moment of
//! it; the new secret is shown in this answer only.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::partners_shared::{self, BODY_LIMIT};
use crate::routes::sink_put::{check_secret, generate_secret};

/// Longest rollover a call may ask for: 30 days.
pub const MAX_ROLLOVER_SECS: u64 = 30 * 86_400;

/// Body of `POST /v1/sink/rotate-secret` (optional: an empty body generates a secret and
/// uses the configured rollover).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The new secret (`whsec_` + base64 of 24 to 64 bytes); generated when left out.
    #[schema(write_only)]
    pub secret: Option<String>,
    /// How long the old secret keeps signing, in seconds (0 ends it at once; at most 30
    /// days). Default: `LOCUS_WEBHOOK_ROLLOVER_SECS` (24 hours).
    #[schema(maximum = 2_592_000)]
    pub rollover_secs: Option<u64>,
}

// By hand, so that a request logged with `{:?}` never shows the secret.
impl std::fmt::Debug for RotateSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateSecretRequest")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("rollover_secs", &self.rollover_secs)
            .finish()
    }
}

/// Answer of `POST /v1/sink/rotate-secret`.
#[derive(Serialize, ToSchema)]
pub struct RotateSecretResponse {
    /// The new secret, shown only here (the one sent, or the one generated).
    pub secret: String,
    /// Until when the previous secret signs too.
    pub previous_secret_expires_at: DateTime<Utc>,
}

/// Rotate the sink's signing secret, with a rollover window.
///
/// From the bridge's next sink refresh on, each delivery carries two signatures, by the new
/// secret and by the previous one, until `previous_secret_expires_at`; then only the new
/// one. A second rotation during a rollover drops the oldest secret.
#[utoipa::path(
    post,
    path = "/v1/sink/rotate-secret",
    operation_id = "rotate_sink_secret",
    tag = "sinks",
    request_body(content = RotateSecretRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Rotated; the answer holds the new secret, once.", body = RotateSecretResponse),
        (status = 400, description = "`invalid_sink` (the secret or the rollover; what is wrong is in `message`), `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins rotate secrets.", body = ErrorBody),
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
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin])?;
    let tenant = identity.tenant()?;
    tracing::Span::current().record("tenant", tenant.as_str());
    let bytes = body::json_bytes(&headers, request, BODY_LIMIT, true).await?;
    let req: RotateSecretRequest = if bytes.is_empty() {
        RotateSecretRequest::default()
    } else {
        body::parse(&bytes)?
    };
    if let Some(secret) = &req.secret {
        check_secret(secret).map_err(|m| ApiError::invalid(ErrorCode::InvalidSink, m))?;
    }
    let rollover_secs = req
        .rollover_secs
        .unwrap_or(state.config.webhooks.rollover_secs);
    if rollover_secs > MAX_ROLLOVER_SECS {
        return Err(ApiError::invalid(
            ErrorCode::InvalidSink,
            format!("`rollover_secs` must be at most {MAX_ROLLOVER_SECS} (30 days)"),
        ));
    }
    let secret = req.secret.unwrap_or_else(generate_secret);
    let rotated = state
        .store
        .rotate_sink_secret(
            partners_shared::actor(&identity),
            tenant,
            &secret,
            std::time::Duration::from_secs(rollover_secs),
        )
        .await?;
    tracing::info!(
        actor = %identity.subject,
        previous_expires_at = %rotated.previous_expires_at,
        "Sink secret rotated."
    );
    Ok((
        // The answer holds a secret: no cache keeps it.
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(RotateSecretResponse {
            secret,
            previous_secret_expires_at: rotated.previous_expires_at,
        }),
    ))
}
