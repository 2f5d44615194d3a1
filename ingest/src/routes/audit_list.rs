//! GET /v1/audit: the audit log, newest first: a tenant admin's tenant, or for a platform
//! admin every row (optionally one tenant's).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use locus_session::audit::AuditRecord;
use locus_session::audit_feed::AuditScope;
use locus_wire::TenantId;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many rows (1 to 500, default 100; values outside are clamped).
    #[serde(default)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// Platform admins: only this tenant's rows. Tenant admins see their own tenant's
    /// whatever this says, and may leave it out.
    #[serde(default)]
    tenant: Option<String>,
}

/// One change, as the audit log records it. Never holds a secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Position in the log (newer rows have larger ids).
    pub id: i64,
    /// Stable id of the event (also on the tenant-events topic).
    #[schema(value_type = String, format = "uuid")]
    pub event_id: Uuid,
    /// The tenant; absent for platform changes (partners).
    pub tenant_id: Option<String>,
    /// Who: the token's subject.
    pub actor: String,
    /// The actor's role.
    pub actor_role: String,
    /// What: `partner.created`, `grant.created`, `grant.withdrawn`, `sink.set`,
    /// `sink.deleted`, `tenant.created`, `device.registered`...
    pub action: String,
    /// The kind of object changed.
    pub target_kind: String,
    /// Its id.
    pub target_id: String,
    /// The object before the change.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The object after the change.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            event_id: r.event_id,
            tenant_id: r.tenant_id,
            actor: r.actor,
            actor_role: r.actor_role,
            action: r.action,
            target_kind: r.target_kind,
            target_id: r.target_id,
            before: r.before,
            after: r.after,
            at: r.at,
        }
    }
}

/// Answer of `GET /v1/audit`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    /// The rows, newest first.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn invalid_cursor() -> ApiError {
    ApiError::coded(
        ErrorCode::InvalidCursor,
        "`cursor` is not one this API gave out; pass the `next_cursor` of the previous page unchanged, or leave it out for the first page",
    )
}

/// The audit log, newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log, newest first.", body = AuditList),
        (status = 400, description = "`invalid_cursor`, `invalid_query` or `invalid_id` (`tenant`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins read the audit log.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin", "platform_admin"]))
)]
#[tracing::instrument(skip_all)]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin, Role::PlatformAdmin])?;
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `limit` is a number from 1 to 500, `cursor` a `next_cursor` of this endpoint"
            ),
        )
    })?;
    let limit = query.limit.unwrap_or(100).clamp(1, 500);
    // The cursor is the last id of the previous page, as a decimal: ids only grow, so a
    // page never repeats or skips a row whatever is written meanwhile.
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(invalid_cursor)
        })
        .transpose()?;
    let wanted = query
        .tenant
        .map(|t| {
            TenantId::parse(t)
                .map_err(|e| ApiError::coded(ErrorCode::InvalidId, format!("`tenant`: {e}")))
        })
        .transpose()?;
    let page = match identity.role {
        Role::PlatformAdmin => {
            let scope = wanted
                .as_ref()
                .map_or(AuditScope::Platform, AuditScope::Tenant);
            state.store.audit_page(scope, before, limit).await?
        }
        _ => {
            let tenant = identity.tenant()?;
            // Another tenant's rows are not there for this caller: asking for them reads
            // as an empty log, as row-level security would make it anyway.
            if wanted.as_ref().is_some_and(|w| w != tenant) {
                return Ok(axum::Json(AuditList {
                    entries: Vec::new(),
                    next_cursor: None,
                }));
            }
            state
                .store
                .audit_page(AuditScope::Tenant(tenant), before, limit)
                .await?
        }
    };
    Ok(axum::Json(AuditList {
        entries: page.records.into_iter().map(AuditEntryView::from).collect(),
        next_cursor: page.next_before.map(|id| id.to_string()),
    }))
}
