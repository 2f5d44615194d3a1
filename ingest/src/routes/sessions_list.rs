//! GET /v1/sessions: the sessions visible to the caller, newest first, filtered and paged.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use locus_session::{Scope, SessionCursor, SessionFilter};
use locus_wire::DeviceId;
use locus_wire::api::{ErrorBody, SessionStatus, SessionView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::access::{self, Reader};
use crate::auth::Role;
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many sessions (1 to 500, default 50; values outside are clamped).
    #[serde(default)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[serde(default)]
    cursor: Option<String>,
    /// Only this device's sessions (a device sees only its own whatever this says).
    #[serde(default)]
    device_id: Option<String>,
    /// Only `active` or only `stopped` sessions.
    #[serde(default)]
    status: Option<SessionStatus>,
    /// Only sessions started at or after this instant (RFC 3339; write `+` as `%2B`).
    #[serde(default)]
    started_after: Option<DateTime<Utc>>,
    /// Only sessions started before this instant (RFC 3339).
    #[serde(default)]
    started_before: Option<DateTime<Utc>>,
    /// The tenant whose sessions to list: required for partners (one of the tenants that
    /// granted them); devices and tenant admins may leave it out (it must be their own).
    #[serde(default)]
    tenant: Option<String>,
}

/// Answer of `GET /v1/sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionPage {
    /// The sessions, newest first (by start time, then id).
    pub sessions: Vec<SessionView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn invalid_cursor() -> ApiError {
    ApiError::coded(
        ErrorCode::InvalidCursor,
        "`cursor` is not one this API gave out; pass the `next_cursor` of the previous page unchanged (with the same filters), or leave it out for the first page",
    )
}

/// The sessions visible to the caller, newest first.
///
/// 200 with `{ "sessions": [...], "next_cursor": ... }`; a device sees only its own, a
/// partner those of a tenant that granted it (`tenant` required). A page after the first
/// starts where the previous one ended: walking the cursors returns every matching
/// session once.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    operation_id = "list_sessions",
    tag = "sessions",
    params(ListQuery),
    responses(
        (status = 200, description = "The sessions, newest first.", body = SessionPage),
        (status = 400, description = "`invalid_query` (a parameter is not what it takes, or a partner left out `tenant`) or `invalid_cursor`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not list sessions.", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`: `tenant` is not the caller's, does not exist, or has not granted this partner (the same answer for each).", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["device", "tenant_admin", "partner"]))
)]
#[tracing::instrument(skip_all, fields(tenant = %reader.tenant_label()))]
pub async fn handler(
    State(state): State<AppState>,
    reader: Reader,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `limit` is a number from 1 to 500, `status` is active or stopped, `started_after` and `started_before` are RFC 3339 times (e.g. 2026-12-02T06:00:00Z)"
            ),
        )
    })?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| SessionCursor::decode(c).map_err(|_| invalid_cursor()))
        .transpose()?;
    let wanted_device = query
        .device_id
        .map(|d| {
            DeviceId::parse(d).map_err(|e| {
                ApiError::invalid(ErrorCode::InvalidQuery, format!("`device_id`: {e}"))
            })
        })
        .transpose()?;
    let mut filter = SessionFilter {
        tenant: None,
        device: wanted_device.clone(),
        status: query.status,
        started_after: query.started_after,
        started_before: query.started_before,
    };
    let page = match &reader {
        Reader::Tenant(caller) => {
            if query
                .tenant
                .as_deref()
                .is_some_and(|t| t != caller.tenant.as_str())
            {
                return Err(access::tenant_not_found());
            }
            if caller.role == Role::Device {
                // A device lists its own sessions; asking for another device's finds none.
                if wanted_device.as_ref().is_some_and(|d| *d != caller.subject) {
                    return Ok(axum::Json(SessionPage {
                        sessions: Vec::new(),
                        next_cursor: None,
                    }));
                }
                filter.device = Some(caller.subject.clone());
            }
            filter.tenant = Some(caller.tenant.clone());
            state
                .store
                .list_filtered(Scope::Tenant(&caller.tenant), &filter, cursor, limit)
                .await?
        }
        Reader::Partner(partner) => {
            let Some(tenant) = query.tenant.as_deref() else {
                return Err(ApiError::invalid(
                    ErrorCode::InvalidQuery,
                    "partners list one tenant's sessions at a time: add `tenant=<tenant id>` (a tenant that granted you access)",
                ));
            };
            let (tenant, granted) = access::granted_tenant(&state.store, partner, tenant).await?;
            filter.tenant = Some(tenant);
            state
                .store
                .list_filtered(Scope::Tenants(&granted), &filter, cursor, limit)
                .await?
        }
    };
    Ok(axum::Json(SessionPage {
        sessions: page.sessions.iter().map(|s| s.view()).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    }))
}
