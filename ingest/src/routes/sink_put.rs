//! PUT /v1/sink: a tenant admin sets the tenant's webhook sink. The signing secret is the
//! admin's own `whsec_` secret, or one generated here and shown in this answer only.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use locus_wire::webhook::SigningKey;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::body;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;
use crate::routes::partners_shared::{self, BODY_LIMIT, SinkView};

/// Body of `PUT /v1/sink`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSinkRequest {
    /// Where the stream bridge delivers the tenant's records: an absolute `https://` URL on
    /// a public host (`http://` only with `LOCUS_SINK_ALLOW_HTTP`, hosts on loopback or
    /// private addresses only with `LOCUS_SINK_ALLOW_PRIVATE`).
    #[schema(max_length = 2048, format = "uri")]
    pub url: String,
    /// The Standard Webhooks secret the bridge signs each delivery with: `whsec_` and the
    /// base64 of a 24 to 64 byte key (the HMAC-SHA256 key is the decoded bytes). Leave it
    /// out to have one generated (32 random bytes) and returned, once, in the answer.
    /// Stored, never returned otherwise, never written to the audit log.
    #[schema(
        min_length = 38,
        max_length = 94,
        write_only,
        example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    )]
    pub secret: Option<String>,
}

/// Answer of `PUT /v1/sink`: the sink, and the secret when it was generated.
#[derive(Serialize, ToSchema)]
pub struct PutSinkResponse {
    /// The sink.
    #[serde(flatten)]
    pub sink: SinkView,
    /// The generated secret (`whsec_<base64>`), present only when the request had none:
    /// this is the only time it is shown. Configure your receiver with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A fresh secret: 32 bytes from the operating system's generator.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    SigningKey::from_bytes(&key).to_secret()
}

/// Checks a secret a tenant admin chose: `whsec_` + base64 of 24 to 64 bytes.
pub fn check_secret(secret: &str) -> Result<(), String> {
    SigningKey::parse(secret).map_err(|why| {
        format!(
            "`secret` must be a Standard Webhooks secret, whsec_ and the base64 of a 24 to 64 \
             byte random key ({why}); leave it out to have one generated. A secret of the old \
             Locus format is whsec_ + base64 of its bytes"
        )
    })?;
    // A whsec_ secret always passes the edge's plain rule (printable, 32 to 512 bytes);
    // kept so that the rule stays one function.
    partners_shared::check_sink_secret(secret)
}

// By hand, so that a request logged with `{:?}` never shows the secret.
impl std::fmt::Debug for PutSinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSinkRequest")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Set the tenant's webhook sink.
///
/// 201 when the tenant had none, 200 when it replaced the one it had (the bridge picks the
/// change up at its next sink refresh). Setting the sink again is how an endpoint disabled
/// by a 410 Gone is turned back on. The answer holds the secret only when it was generated.
#[utoipa::path(
    put,
    path = "/v1/sink",
    operation_id = "put_sink",
    tag = "sinks",
    request_body(content = PutSinkRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The sink was set; the tenant had none. `secret` is there when it was generated.", body = PutSinkResponse),
        (status = 200, description = "The sink was replaced (a 410 that disabled it is cleared, a secret rollover ends).", body = PutSinkResponse),
        (status = 400, description = "`invalid_sink` (what is wrong is in `message`), `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only tenant admins set sinks.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`: the token's tenant is not registered.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
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
    let bytes = body::json_bytes(&headers, request, BODY_LIMIT, false).await?;
    let req: PutSinkRequest = body::parse(&bytes)?;
    partners_shared::check_sink_url(&req.url)
        .and_then(|()| req.secret.as_deref().map_or(Ok(()), check_secret))
        .map_err(|m| ApiError::invalid(ErrorCode::InvalidSink, m))?;
    // Told now rather than found at the first delivery; the bridge checks again at connect.
    partners_shared::check_sink_target(&req.url, state.config.sink_targets)
        .await
        .map_err(|m| ApiError::invalid(ErrorCode::InvalidSink, m))?;
    let generated = req.secret.is_none().then(generate_secret);
    let secret = req
        .secret
        .as_deref()
        .or(generated.as_deref())
        .unwrap_or_default();
    let outcome = state
        .store
        .put_sink(partners_shared::actor(&identity), tenant, &req.url, secret)
        .await?;
    tracing::info!(actor = %identity.subject, url = %outcome.sink.url, "Sink set.");
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        // The answer may hold a secret: no cache keeps it.
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        axum::Json(PutSinkResponse {
            sink: SinkView::from(outcome.sink),
            secret: generated,
        }),
    ))
}
