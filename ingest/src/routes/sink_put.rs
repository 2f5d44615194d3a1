//! PUT /v1/sink: a tenant admin sets the tenant's webhook sink.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::Deserialize;
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
    /// Where the stream bridge delivers the tenant's records: an absolute `https://` URL
    /// (`http://` only to localhost, and only when the service runs in development mode).
    #[schema(max_length = 2048, format = "uri")]
    pub url: String,
    /// The key the bridge signs each delivery with (HMAC-SHA256): 32 to 512 printable
    /// ASCII characters. Stored, never returned, never written to the audit log.
    #[schema(min_length = 32, max_length = 512, write_only)]
    pub secret: String,
}

// By hand, so that a request logged with `{:?}` never shows the secret.
impl std::fmt::Debug for PutSinkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSinkRequest")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Set the tenant's webhook sink.
///
/// 201 when the tenant had none, 200 when it replaced the one it had (the bridge picks the
/// change up at its next sink refresh). The answer never holds the secret.
#[utoipa::path(
    put,
    path = "/v1/sink",
    operation_id = "put_sink",
    tag = "sinks",
    request_body(content = PutSinkRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The sink was set; the tenant had none.", body = SinkView),
        (status = 200, description = "The sink was replaced.", body = SinkView),
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
    // The plain rule of this issue: https, or http to loopback in development mode. The
    // full check of private addresses (SSRF, with DNS) is a later issue.
    partners_shared::check_sink_url(&req.url, state.config.jwt.dev_mode)
        .and_then(|()| partners_shared::check_sink_secret(&req.secret))
        .map_err(|m| ApiError::invalid(ErrorCode::InvalidSink, m))?;
    let outcome = state
        .store
        .put_sink(
            partners_shared::actor(&identity),
            tenant,
            &req.url,
            &req.secret,
        )
        .await?;
    tracing::info!(actor = %identity.subject, url = %outcome.sink.url, "Sink set.");
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(SinkView::from(outcome.sink))))
}
