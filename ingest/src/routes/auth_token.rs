//! POST /v1/auth/token: a device exchanges its credential for a short-lived token.
//!
//! The one route that takes no token: the credential is the proof. Every refusal gets the
//! same 401 `invalid_credential` (unknown, malformed, revoked, the device revoked, the
//! tenant disabled), so a guessed or stolen credential learns nothing; the reason is
//! logged. While PostgreSQL is away, only a credential this replica exchanged within
//! `LOCUS_CREDENTIAL_CACHE_SECS` gets a token (crate::cache); any other gets 503, not 401.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::body;
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::registry::{self, REGISTRY_BODY_LIMIT};

/// Body of `POST /v1/auth/token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The device's credential, as issued by `POST /v1/devices` or
    /// `POST /v1/devices/{device_id}/credentials`.
    #[schema(min_length = 47, max_length = 47, pattern = "^lcd_[A-Za-z0-9_-]{43}$")]
    pub credential: String,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret, not even in a debug log.
        f.write_str("TokenRequest { credential: .. }")
    }
}

/// Answer of `POST /v1/auth/token`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The device token (a JWT): send it as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until it expires: get a new one with the same credential before then.
    pub expires_in: u64,
}

/// Exchange a device credential for a device token.
#[utoipa::path(
    post,
    path = "/v1/auth/token",
    operation_id = "exchange_credential",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A device token.", body = TokenResponse),
        (status = 400, description = "`invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`invalid_credential`: unknown, malformed or revoked (or its device is); ask the tenant admin for a new credential.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(())
)]
#[tracing::instrument(skip_all, fields(tenant, device))]
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = body::json_bytes(&headers, request, REGISTRY_BODY_LIMIT, false).await?;
    let req: TokenRequest = body::parse(&bytes)?;
    // A string of another shape is no credential: refused without a lookup.
    if !locus_identity::credential::looks_like(&req.credential) {
        tracing::info!(reason = "malformed", "Credential exchange refused.");
        return Err(registry::invalid_credential());
    }
    let hash = locus_identity::credential::hash(&req.credential);
    // PostgreSQL first; while it is away, this replica's earlier exchange of the same
    // credential within LOCUS_CREDENTIAL_CACHE_SECS (never for a revoked device), then 503.
    let (tenant, device) = crate::cache::exchange(&state, &hash).await?;
    let span = tracing::Span::current();
    span.record("tenant", tenant.as_str());
    span.record("device", device.as_str());
    let jwt = &state.config.jwt;
    let ttl = jwt.device_token_ttl_secs;
    let token = state.signer.sign_device_token(
        &jwt.issuer,
        &jwt.audience,
        &tenant,
        &device,
        i64::try_from(ttl).unwrap_or(i64::MAX),
    );
    tracing::debug!("Device token issued.");
    Ok((
        // RFC 6749 5.1: token answers are not cached.
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(TokenResponse {
            access_token: token,
            token_type: "Bearer".into(),
            expires_in: ttl,
        }),
    ))
}
