//! GET /v1/partners: every partner, for platform admins.

use axum::extract::State;
use axum::response::IntoResponse;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared::PartnerView;

/// Answer of `GET /v1/partners`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartnerList {
    /// Every partner, by id (partners are few: platform contracts, not users).
    pub partners: Vec<PartnerView>,
}

/// List the partners.
#[utoipa::path(
    get,
    path = "/v1/partners",
    operation_id = "list_partners",
    tag = "partners",
    responses(
        (status = 200, description = "Every partner, by id.", body = PartnerList),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins list partners.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all)]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let partners = state.store.list_partners().await?;
    Ok(axum::Json(PartnerList {
        partners: partners.into_iter().map(PartnerView::from).collect(),
    }))
}
