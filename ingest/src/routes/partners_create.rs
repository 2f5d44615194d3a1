//! POST /v1/partners: a platform admin creates a partner.

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
use crate::routes::partners_shared::{self, BODY_LIMIT, PartnerView};

/// Longest display name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// Body of `POST /v1/partners`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePartnerRequest {
    /// The partner's id: the `sub` of its tokens. 1 to 128 ASCII letters, digits, `-`,
    /// `_`, `.` or `:`; it never changes.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]+$")]
    pub partner_id: String,
    /// A display name (1 to 200 characters).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
}

/// Create a partner.
///
/// 201 with the partner; 409 if the id is taken. A partner reads nothing until a tenant
/// grants it (PUT /v1/grants/{partner_id}).
#[utoipa::path(
    post,
    path = "/v1/partners",
    operation_id = "create_partner",
    tag = "partners",
    request_body(content = CreatePartnerRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "The partner was created.", body = PartnerView),
        (status = 400, description = "`invalid_id`, `invalid_body` or `malformed_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins create partners.", body = ErrorBody),
        (status = 409, description = "`partner_exists`.", body = ErrorBody),
        (status = 413, description = "`body_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not JSON.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all, fields(partner))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    headers: HeaderMap,
    request: Body,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let bytes = body::json_bytes(&headers, request, BODY_LIMIT, false).await?;
    let req: CreatePartnerRequest = body::parse(&bytes)?;
    let id = partners_shared::partner_id(req.partner_id)?;
    tracing::Span::current().record("partner", id.as_str());
    if let Some(name) = &req.name {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                ErrorCode::InvalidBody,
                format!(
                    "`name` must be 1 to {MAX_NAME_CHARS} characters without control characters; leave it out for none"
                ),
            ));
        }
    }
    let partner = state
        .store
        .create_partner(partners_shared::actor(&identity), &id, req.name.as_deref())
        .await?;
    tracing::info!(actor = %identity.subject, "Partner created.");
    Ok((StatusCode::CREATED, axum::Json(PartnerView::from(partner))))
}
